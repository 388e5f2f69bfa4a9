// Edge cases of the Eigen backend: layers that share memory (refused) or interleave without
// sharing (accepted), and a matrix whose norm exceeds the float64 range (refused with nothing
// written). (Worker threads that cannot start: tests/core/parallel_test.cpp.)
#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "aclora/backends/eigen.hpp"
#include "reference.hpp"

namespace {

using Backend = aclora::backends::EigenBackend;
using Driver = aclora::Restart<Backend>;
using ViewModule = Driver::module_type;
using aclora::backends::eigen::MatrixView;
using RowMajor = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Two down factors that are overlapping row blocks of one buffer (rows 0-7 and 4-11): an
// error naming both modules, nothing written.
TEST(SharedMemory, OverlappingBlocksAreRefused) {
  RowMajor buffer = aclora_test::planted_matrix(12, 40, {3, 2, 1}, 0.05, 1);
  RowMajor up_a = aclora_test::planted_matrix(30, 8, {3, 2, 1}, 0.05, 2);
  RowMajor up_b = aclora_test::planted_matrix(30, 8, {3, 2, 1}, 0.05, 3);
  const RowMajor before = buffer;
  std::vector<ViewModule> modules{ViewModule::lora("a", buffer.topRows(8), up_a),
                                  ViewModule::lora("b", buffer.bottomRows(8), up_b)};
  Driver driver({.seed = 1}, Backend({.threads = 2}));
  try {
    driver.at_threshold(modules, 0.9);
    ADD_FAILURE() << "expected aclora::Error";
  } catch (const aclora::Error& error) {
    const std::string text = error.what();
    EXPECT_NE(text.find("'b' (#1), layer 0: shares memory with module 'a' (#0), layer 0"),
              std::string::npos)
        << text;
  }
  EXPECT_TRUE((buffer.array() == before.array()).all());
}

// A view with row stride 0 (one row repeated, as a broadcast) is refused: RESTART would
// write the same entries once per row.
TEST(SharedMemory, BroadcastViewIsRefused) {
  std::vector<double> row(40, 1.0);
  RowMajor up = aclora_test::planted_matrix(30, 4, {3, 2}, 0.05, 2);
  std::vector<ViewModule> modules{
      ViewModule::lora("broadcast", MatrixView(row.data(), 4, 40, 0, 1), up)};
  Driver driver;
  try {
    driver.at_threshold(modules, 0.9);
    ADD_FAILURE() << "expected aclora::Error";
  } catch (const aclora::Error& error) {
    EXPECT_NE(std::string(error.what()).find("overlap each other"), std::string::npos)
        << error.what();
  }
  EXPECT_EQ(row, std::vector<double>(40, 1.0));
}

// The two column halves of one row-major buffer interleave in memory without sharing an
// entry: accepted, with the same bits as restarting separate copies of the halves.
TEST(SharedMemory, InterleavedDisjointViewsAreAccepted) {
  RowMajor buffer = aclora_test::planted_matrix(8, 80, {3, 2, 1}, 0.05, 4);
  RowMajor left = buffer.leftCols(40), right = buffer.rightCols(40);
  RowMajor up_a = aclora_test::planted_matrix(30, 8, {3, 2, 1}, 0.05, 5), up_a_copy = up_a;
  RowMajor up_b = aclora_test::planted_matrix(30, 8, {3, 2, 1}, 0.05, 6), up_b_copy = up_b;
  std::vector<ViewModule> shared{ViewModule::lora("a", buffer.leftCols(40), up_a),
                                 ViewModule::lora("b", buffer.rightCols(40), up_b)};
  std::vector<ViewModule> separate{ViewModule::lora("a", left, up_a_copy),
                                   ViewModule::lora("b", right, up_b_copy)};
  Driver({.seed = 3}).at_threshold(shared, 0.9);
  Driver({.seed = 3}).at_threshold(separate, 0.9);
  const RowMajor left_after = buffer.leftCols(40), right_after = buffer.rightCols(40);
  EXPECT_EQ(std::memcmp(left_after.data(), left.data(), sizeof(double) * left.size()), 0);
  EXPECT_EQ(std::memcmp(right_after.data(), right.data(), sizeof(double) * right.size()), 0);
}

// Entries of 1e307 in an 8 x 64 factor: finite, but the Frobenius norm (2.3e308) exceeds
// the float64 range; an error naming the layer, nothing written. Entries of 1e300 work.
TEST(Range, NormBeyondFloat64IsRefusedWithNothingWritten) {
  RowMajor down = RowMajor::Constant(8, 64, 1e307);
  RowMajor up = aclora_test::planted_matrix(30, 8, {3, 2, 1}, 0.05, 7);
  const RowMajor down_before = down, up_before = up;
  std::vector<ViewModule> modules{ViewModule::lora("huge", down, up)};
  try {
    Driver().at_threshold(modules, 0.9);
    ADD_FAILURE() << "expected aclora::Error";
  } catch (const aclora::Error& error) {
    EXPECT_NE(std::string(error.what()).find("'huge' (#0), layer 0"), std::string::npos)
        << error.what();
    EXPECT_NE(std::string(error.what()).find("float64 range"), std::string::npos) << error.what();
  }
  EXPECT_TRUE((down.array() == down_before.array()).all());
  EXPECT_TRUE((up.array() == up_before.array()).all());
  down.setConstant(1e300);
  const auto report = Driver().at_threshold(modules, 0.9);
  EXPECT_NEAR(report.modules[0].layers[0].singular_values[0] / (1e300 * std::sqrt(512.0)), 1.0,
              1e-12);
  EXPECT_TRUE(down.allFinite());
}

}  // namespace
