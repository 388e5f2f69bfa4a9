// Determinism of the Eigen backend: the same inputs and seed give the same bits for any
// thread count, module order (named modules) or storage order; another seed gives other
// noise; unnamed modules are keyed by position.
#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <cstring>
#include <numeric>
#include <vector>

#include "aclora/backends/eigen.hpp"
#include "reference.hpp"

namespace {

using Backend = aclora::backends::EigenBackend;
using aclora::backends::eigen::Method;
using Driver = aclora::Restart<Backend>;
using ViewModule = Driver::module_type;
template <int Order>
using FloatMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Order>;

// Six LoRA modules of different shapes (R = 4..14) with planted rank-3 spectra.
template <int Order = Eigen::RowMajor>
struct Model {
  std::vector<FloatMatrix<Order>> downs, ups;

  Model() {
    for (int m = 0; m < 6; ++m) {
      const int rank = 4 + 2 * m;
      downs.push_back(
          aclora_test::planted_matrix(rank, 64 + 16 * m, {5, 3, 1}, 0.05, 100 + m).cast<float>());
      ups.push_back(
          aclora_test::planted_matrix(48 + 8 * m, rank, {4, 2, 1}, 0.05, 200 + m).cast<float>());
    }
  }

  // Restarts the modules listed in `order` (named "module<i>" or unnamed).
  void restart(const std::vector<int>& order, unsigned threads, std::uint64_t seed, bool named,
               Method method = Method::gram,
               aclora::Precision precision = aclora::Precision::automatic) {
    std::vector<ViewModule> modules;
    for (int m : order) {
      modules.push_back(
          ViewModule::lora(named ? "module" + std::to_string(m) : "", downs[m], ups[m]));
    }
    Driver driver({.seed = seed},
                  Backend({.method = method, .threads = threads, .precision = precision}));
    driver.at_threshold(modules, 0.9);
  }
};

template <class A, class B>
bool same_bits(const A& a, const B& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         std::memcmp(a.data(), b.data(), sizeof(float) * a.size()) == 0;
}

template <class A, class B>
bool same_values(const A& a, const B& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() && (a.array() == b.array()).all();
}

const std::vector<int> in_order{0, 1, 2, 3, 4, 5};
const std::vector<int> reversed{5, 4, 3, 2, 1, 0};

// 1, 2 and 3 worker threads give bit-identical factors, for both routes and for the Gram
// route's fp32 arithmetic.
TEST(Determinism, ThreadCountDoesNotChangeBits) {
  using aclora::Precision;
  for (auto [method, precision] : {std::pair{Method::gram, Precision::fp64},
                                   {Method::direct_svd, Precision::fp64},
                                   {Method::gram, Precision::fp32}}) {
    Model one, two, three;
    one.restart(in_order, 1, 7, true, method, precision);
    two.restart(in_order, 2, 7, true, method, precision);
    three.restart(in_order, 3, 7, true, method, precision);
    for (int m = 0; m < 6; ++m) {
      EXPECT_TRUE(same_bits(one.downs[m], two.downs[m]) && same_bits(one.ups[m], two.ups[m]))
          << "module " << m;
      EXPECT_TRUE(same_bits(one.downs[m], three.downs[m]) && same_bits(one.ups[m], three.ups[m]))
          << "module " << m;
    }
  }
}

// Reversing a list of named modules leaves every module's result bit-identical.
TEST(Determinism, NamedModulesKeepTheirNoiseWhenReordered) {
  Model forward, backward;
  forward.restart(in_order, 2, 7, true);
  backward.restart(reversed, 2, 7, true);
  for (int m = 0; m < 6; ++m) {
    EXPECT_TRUE(same_bits(forward.downs[m], backward.downs[m])) << "module " << m;
    EXPECT_TRUE(same_bits(forward.ups[m], backward.ups[m])) << "module " << m;
  }
}

// A different seed changes every layer (the truncation is the same, the noise is not).
TEST(Determinism, AnotherSeedChangesTheNoise) {
  Model first, second;
  first.restart(in_order, 2, 7, true);
  second.restart(in_order, 2, 8, true);
  for (int m = 0; m < 6; ++m) {
    EXPECT_FALSE(same_values(first.downs[m], second.downs[m])) << "module " << m;
    EXPECT_FALSE(same_values(first.ups[m], second.ups[m])) << "module " << m;
  }
}

// Unnamed modules are keyed by position: the same list twice gives the same bits, a
// reordered list gives every moved module other noise.
TEST(Determinism, UnnamedModulesAreKeyedByPosition) {
  Model once, again, moved;
  once.restart(in_order, 2, 7, false);
  again.restart(in_order, 2, 7, false);
  moved.restart(reversed, 2, 7, false);
  for (int m = 0; m < 6; ++m) {
    EXPECT_TRUE(same_bits(once.downs[m], again.downs[m])) << "module " << m;
    EXPECT_FALSE(same_values(once.downs[m], moved.downs[m])) << "module " << m;
  }
}

// The same values stored column-major and row-major give the same bits: the noise
// numbering is logical, not by memory order.
TEST(Determinism, StorageOrderDoesNotChangeBits) {
  Model<Eigen::RowMajor> rows;
  Model<Eigen::ColMajor> cols;
  rows.restart(in_order, 2, 7, true);
  cols.restart(in_order, 2, 7, true);
  for (int m = 0; m < 6; ++m) {
    EXPECT_TRUE(same_values(rows.downs[m], cols.downs[m])) << "module " << m;
    EXPECT_TRUE(same_values(rows.ups[m], cols.ups[m])) << "module " << m;
  }
}

}  // namespace
