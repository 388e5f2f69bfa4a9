// Truncation by the Eigen backend (NoisePolicy::none) equals the best rank-K
// approximation from a double-precision JacobiSVD, for every scalar, storage order,
// analysis route, rank-axis orientation and view kind.
#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <string>
#include <vector>

#include "aclora/backends/eigen.hpp"
#include "reference.hpp"

namespace {

using aclora::NoisePolicy;
using aclora::RankAxis;
using Backend = aclora::backends::EigenBackend;
using aclora::backends::eigen::Method;
using aclora_test::planted_matrix;
using aclora_test::Reference;
using Driver = aclora::Restart<Backend>;
using ViewModule = Driver::module_type;

// Largest |a - b| relative to the largest |b|.
double relative_max_error(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b) {
  return (a - b).cwiseAbs().maxCoeff() / b.cwiseAbs().maxCoeff();
}

// Tolerance on truncated entries: the write rounds once to the storage type.
template <class Scalar>
constexpr double entry_tolerance = std::is_same_v<Scalar, float> ? 1e-6 : 1e-10;

struct Case {
  bool single;     // float storage (else double)
  bool row_major;  // row-major storage (else column-major)
  Method method;
};

std::string case_name(const testing::TestParamInfo<Case>& info) {
  return std::string(info.param.single ? "Float" : "Double") +
         (info.param.row_major ? "RowMajor" : "ColMajor") +
         (info.param.method == Method::gram ? "Gram" : "DirectSvd");
}

// Planted rank-4 factors (down 12 x 300 with rank axis rows, up 200 x 12 with rank axis
// cols) plus 1e-2 noise, truncated to K = 4 (p = 0, min_rank = 4, no noise).
template <class Scalar, int Order>
void expect_reference_truncation(Method method) {
  using Stored = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Order>;
  Stored down = planted_matrix(12, 300, {40, 20, 10, 5}, 1e-2, 1).cast<Scalar>();
  Stored up = planted_matrix(200, 12, {30, 15, 8, 4}, 1e-2, 2).cast<Scalar>();
  const Reference down_reference(down.template cast<double>());
  const Reference up_reference(up.template cast<double>());

  std::vector<ViewModule> modules{ViewModule::lora("m", down, up)};
  Driver driver({.noise = NoisePolicy::none, .min_rank = 4},
                Backend({.method = method, .threads = 1}));
  const auto report = driver.at_threshold(modules, 0.0);

  ASSERT_EQ(report.modules[0].module_rank, 4u);
  EXPECT_LE(relative_max_error(down.template cast<double>(), down_reference.truncated(4)),
            entry_tolerance<Scalar>);
  EXPECT_LE(relative_max_error(up.template cast<double>(), up_reference.truncated(4)),
            entry_tolerance<Scalar>);
  // Singular values: the planted ones to 1e-10 relative, the noise tail to 1e-8 of d_1.
  for (const auto* reference : {&down_reference, &up_reference}) {
    const auto& values =
        report.modules[0].layers[reference == &down_reference ? 0 : 1].singular_values;
    ASSERT_EQ(values.size(), 12u);
    for (Eigen::Index i = 0; i < 12; ++i) {
      const double expected = reference->singular_values(i);
      const double tolerance = i < 4 ? 1e-10 * expected : 1e-8 * reference->singular_values(0);
      EXPECT_NEAR(values[i], expected, tolerance) << "component " << i;
    }
  }
}

class Truncation : public testing::TestWithParam<Case> {};

// The truncated factors equal the JacobiSVD rank-4 truncation within the storage
// tolerance (1e-6 of the largest entry for float, 1e-10 for double), both orientations.
TEST_P(Truncation, EqualsJacobiSvdReference) {
  const Case c = GetParam();
  if (c.single && c.row_major)
    expect_reference_truncation<float, Eigen::RowMajor>(c.method);
  else if (c.single)
    expect_reference_truncation<float, Eigen::ColMajor>(c.method);
  else if (c.row_major)
    expect_reference_truncation<double, Eigen::RowMajor>(c.method);
  else
    expect_reference_truncation<double, Eigen::ColMajor>(c.method);
}

INSTANTIATE_TEST_SUITE_P(
    AllLayouts, Truncation,
    testing::Values(Case{true, true, Method::gram}, Case{true, false, Method::gram},
                    Case{false, true, Method::gram}, Case{false, false, Method::gram},
                    Case{true, true, Method::direct_svd}, Case{true, false, Method::direct_svd},
                    Case{false, true, Method::direct_svd}, Case{false, false, Method::direct_svd}),
    case_name);

// Conv LoRA factors in their tensor memory: down [8, 16, 3, 3] viewed as 8 x 144 and
// up [32, 8, 1, 1] viewed as 32 x 8 through row-major Maps, truncated like the reference.
TEST(TruncationViews, ConvShapedFactorsThroughMaps) {
  using RowMajorMap =
      Eigen::Map<Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;
  const Eigen::MatrixXd down_values = planted_matrix(8, 16 * 3 * 3, {9, 5, 3}, 1e-2, 3);
  const Eigen::MatrixXd up_values = planted_matrix(32, 8, {7, 4, 2}, 1e-2, 4);
  std::vector<float> down_tensor(8 * 16 * 3 * 3), up_tensor(32 * 8 * 1 * 1);
  RowMajorMap down(down_tensor.data(), 8, 16 * 3 * 3);
  RowMajorMap up(up_tensor.data(), 32, 8);
  down = down_values.cast<float>();
  up = up_values.cast<float>();
  const Reference down_reference(down.cast<double>());
  const Reference up_reference(up.cast<double>());

  for (Method method : {Method::gram, Method::direct_svd}) {
    std::vector<float> down_copy = down_tensor, up_copy = up_tensor;
    RowMajorMap down_view(down_copy.data(), 8, 144), up_view(up_copy.data(), 32, 8);
    std::vector<ViewModule> modules{ViewModule::lora("conv", down_view, up_view)};
    Driver driver({.noise = NoisePolicy::none, .min_rank = 3}, Backend({.method = method}));
    ASSERT_EQ(driver.at_threshold(modules, 0.0).modules[0].module_rank, 3u);
    EXPECT_LE(relative_max_error(down_view.cast<double>(), down_reference.truncated(3)), 1e-6);
    EXPECT_LE(relative_max_error(up_view.cast<double>(), up_reference.truncated(3)), 1e-6);
  }
}

// Views with non-unit strides (every other element of a buffer) and blocks of a larger
// matrix are truncated in place; the memory around them is untouched.
TEST(TruncationViews, StridedMapAndBlockLeaveSurroundingsUntouched) {
  constexpr double sentinel = 7.25;
  std::vector<double> buffer(2 * 12 * 40, sentinel);
  Eigen::Map<Eigen::MatrixXd, 0, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>> strided(
      buffer.data(), 12, 40, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(24, 2));
  strided = planted_matrix(12, 40, {6, 3, 2}, 1e-2, 5);
  Eigen::MatrixXd big = Eigen::MatrixXd::Constant(40, 20, sentinel);
  auto block = big.block(3, 4, 30, 12);
  block = planted_matrix(30, 12, {5, 4, 1}, 1e-2, 6);
  const Reference strided_reference(strided), block_reference(block);

  std::vector<ViewModule> modules{ViewModule{"strided", {{strided, RankAxis::rows}}},
                                  ViewModule{"block", {{block, RankAxis::cols}}}};
  Driver driver({.noise = NoisePolicy::none, .min_rank = 3});
  driver.at_threshold(modules, 0.0);

  EXPECT_LE(relative_max_error(strided, strided_reference.truncated(3)), 1e-10);
  EXPECT_LE(relative_max_error(block, block_reference.truncated(3)), 1e-10);
  for (std::size_t i = 1; i < buffer.size(); i += 2)
    ASSERT_EQ(buffer[i], sentinel) << "buffer entry " << i;
  Eigen::MatrixXd outside = big;
  outside.block(3, 4, 30, 12).setConstant(sentinel);
  EXPECT_TRUE((outside.array() == sentinel).all());
}

// Per-layer counts k_j in the report equal the strict rule applied to the reference
// singular values at several thresholds, for both routes.
TEST(TruncationSelection, CountsMatchReferenceSpectrum) {
  const Eigen::MatrixXd down0 = planted_matrix(16, 256, {40, 20, 10, 5}, 1e-2, 7);
  const Eigen::MatrixXd up0 = planted_matrix(128, 16, {30, 25, 5}, 1e-2, 8);
  const Reference down_reference(down0), up_reference(up0);
  for (Method method : {Method::gram, Method::direct_svd}) {
    for (double p : {0.5, 0.8, 0.95, 0.99, 0.9995}) {
      Eigen::MatrixXd down = down0, up = up0;
      std::vector<ViewModule> modules{ViewModule::lora("m", down, up)};
      Driver driver({.noise = NoisePolicy::none, .min_rank = 0}, Backend({.method = method}));
      const auto report = driver.at_threshold(modules, p);
      const std::vector<double> down_values(down_reference.singular_values.begin(),
                                            down_reference.singular_values.end());
      const std::vector<double> up_values(up_reference.singular_values.begin(),
                                          up_reference.singular_values.end());
      const std::size_t k_down = aclora::signal_count(down_values, p);
      const std::size_t k_up = aclora::signal_count(up_values, p);
      EXPECT_EQ(report.modules[0].layers[0].signal_count, k_down) << "p = " << p;
      EXPECT_EQ(report.modules[0].layers[1].signal_count, k_up) << "p = " << p;
      EXPECT_EQ(report.modules[0].module_rank, std::max(k_down, k_up));
      const Eigen::Index k = static_cast<Eigen::Index>(std::max(k_down, k_up));
      EXPECT_LE((down - down_reference.truncated(k)).cwiseAbs().maxCoeff(),
                1e-10 * down0.cwiseAbs().maxCoeff())
          << "p = " << p;
    }
  }
}

// A panel width that does not divide the length (7 columns) gives the same result as
// one panel, up to double rounding; a width below 1 is refused.
TEST(TruncationPanels, PanelWidthDoesNotChangeTheResult) {
  const Eigen::MatrixXd original = planted_matrix(10, 100, {8, 4, 2}, 1e-2, 9);
  Eigen::MatrixXd narrow = original, wide = original;
  for (auto [matrix, width] : {std::pair{&narrow, 7}, std::pair{&wide, 256}}) {
    std::vector<ViewModule> modules{ViewModule{"m", {{*matrix, RankAxis::rows}}}};
    Driver driver({.noise = NoisePolicy::whole, .min_rank = 3, .seed = 1},
                  Backend({.panel_width = width}));
    driver.at_threshold(modules, 0.0);
  }
  EXPECT_LE(relative_max_error(narrow, wide), 1e-12);
  EXPECT_THROW(Backend({.panel_width = 0}), aclora::Error);
}

}  // namespace
