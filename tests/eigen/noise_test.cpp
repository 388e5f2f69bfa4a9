// Noise reinjection by the Eigen backend: sigma is the residual's population std, the
// added noise has that std and mean 0, `discarded` noise avoids the kept directions,
// `none` adds nothing, and entry (i, j) uses draw i * cols + j of the layer's stream.
#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <cmath>
#include <vector>

#include "aclora/backends/eigen.hpp"
#include "reference.hpp"

namespace {

using aclora::NoisePolicy;
using Backend = aclora::backends::EigenBackend;
using aclora::backends::eigen::Method;
using aclora_test::planted_matrix;
using aclora_test::population_std;
using aclora_test::Reference;
using Driver = aclora::Restart<Backend>;
using ViewModule = Driver::module_type;

// One LoRA module (down R x n, up n x R) with a planted rank-3 spectrum and noise of
// std 0.05, stored as Scalar; restarted with K = 3 under `policy`.
template <class Scalar>
struct RestartedModule {
  using Stored = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  Stored down, up;
  Eigen::MatrixXd down_original, up_original;  // before the restart, in double
  Reference down_reference, up_reference;
  aclora::RestartReport report;

  RestartedModule(Eigen::Index rank, Eigen::Index length, NoisePolicy policy, Method method,
                  std::uint64_t seed = 11)
      : down(planted_matrix(rank, length, {20, 10, 5}, 0.05, 21).cast<Scalar>()),
        up(planted_matrix(length, rank, {15, 8, 4}, 0.05, 22).cast<Scalar>()),
        down_original(down.template cast<double>()),
        up_original(up.template cast<double>()),
        down_reference(down_original),
        up_reference(up_original) {
    std::vector<ViewModule> modules{ViewModule::lora("lora", down, up)};
    Driver driver({.noise = policy, .min_rank = 3, .seed = seed}, Backend({.method = method}));
    report = driver.at_threshold(modules, 0.0);
  }
  // What was added to the truncation: M' - M_K (reference).
  Eigen::MatrixXd added_down() const {
    return down.template cast<double>() - down_reference.truncated(3);
  }
  Eigen::MatrixXd added_up() const {
    return up.template cast<double>() - up_reference.truncated(3);
  }
};

// The reported sigma equals the population std of M - M_K computed from the JacobiSVD
// reference (relative 1e-6), for float and double and both routes.
TEST(NoiseSigma, EqualsPopulationStdOfResidual) {
  for (Method method : {Method::gram, Method::direct_svd}) {
    const RestartedModule<float> single(24, 500, NoisePolicy::whole, method);
    const RestartedModule<double> twice(24, 500, NoisePolicy::whole, method);
    const auto expect_sigma = [](const aclora::RestartReport& report, int layer,
                                 const Eigen::MatrixXd& original, const Reference& reference) {
      const double expected = population_std(original - reference.truncated(3));
      EXPECT_NEAR(report.modules[0].layers[layer].sigma, expected, 1e-6 * expected);
    };
    expect_sigma(single.report, 0, single.down_original, single.down_reference);
    expect_sigma(single.report, 1, single.up_original, single.up_reference);
    expect_sigma(twice.report, 0, twice.down_original, twice.down_reference);
    expect_sigma(twice.report, 1, twice.up_original, twice.up_reference);
  }
}

// `whole`: the added noise over 32 x 4096 entries has mean within 5 standard errors of 0
// and std within 2% of sigma, in both orientations.
TEST(NoiseWhole, MeanZeroAndStdSigma) {
  const RestartedModule<float> m(32, 4096, NoisePolicy::whole, Method::gram);
  for (int layer : {0, 1}) {
    const Eigen::MatrixXd added = layer == 0 ? m.added_down() : m.added_up();
    const double sigma = m.report.modules[0].layers[layer].sigma;
    ASSERT_GT(sigma, 0.0);
    EXPECT_NEAR(added.mean(), 0.0, 5.0 * sigma / std::sqrt(static_cast<double>(added.size())));
    EXPECT_NEAR(population_std(added) / sigma, 1.0, 0.02);
  }
}

// `discarded`: the noise is orthogonal to the kept directions along the rank axis
// (U_K^T (M' - M_K) ~ 0 for down, (M' - M_K) V_K ~ 0 for up) and its std is
// sigma * sqrt((R - K) / R) within 3%.
TEST(NoiseDiscarded, OrthogonalToKeptDirections) {
  const RestartedModule<double> m(16, 3000, NoisePolicy::discarded, Method::gram);
  const Eigen::MatrixXd down_added = m.added_down(), up_added = m.added_up();
  const double down_sigma = m.report.modules[0].layers[0].sigma;
  const double up_sigma = m.report.modules[0].layers[1].sigma;
  const Eigen::MatrixXd down_overlap = m.down_reference.u.leftCols(3).transpose() * down_added;
  const Eigen::MatrixXd up_overlap = up_added * m.up_reference.v.leftCols(3);
  EXPECT_LE(down_overlap.cwiseAbs().maxCoeff(), 1e-9 * down_sigma * std::sqrt(3000.0));
  EXPECT_LE(up_overlap.cwiseAbs().maxCoeff(), 1e-9 * up_sigma * std::sqrt(3000.0));
  const double share = std::sqrt((16.0 - 3.0) / 16.0);
  EXPECT_NEAR(population_std(down_added) / (down_sigma * share), 1.0, 0.03);
  EXPECT_NEAR(population_std(up_added) / (up_sigma * share), 1.0, 0.03);
}

// `none`: M' is the truncation alone (nothing added) while the report still gives the
// residual's sigma.
TEST(NoiseNone, AddsNothing) {
  const RestartedModule<double> m(16, 600, NoisePolicy::none, Method::gram);
  EXPECT_LE(m.added_down().cwiseAbs().maxCoeff(), 1e-12 * m.down.cwiseAbs().maxCoeff());
  EXPECT_LE(m.added_up().cwiseAbs().maxCoeff(), 1e-12 * m.up.cwiseAbs().maxCoeff());
  EXPECT_GT(m.report.modules[0].layers[0].sigma, 0.0);
}

// Entry (i, j) of a rows x cols layer receives sigma * gaussian_at(key, i * cols + j)
// with key = noise_key(seed, restart, module_identity(name, position), layer), whatever
// the rank axis: the numbering every backend shares.
TEST(NoiseNumbering, EntryUsesLogicalRowMajorDraw) {
  const RestartedModule<double> m(8, 50, NoisePolicy::whole, Method::gram, 99);
  for (int layer : {0, 1}) {
    const Eigen::MatrixXd added = layer == 0 ? m.added_down() : m.added_up();
    const double sigma = m.report.modules[0].layers[layer].sigma;
    const auto key = aclora::noise_key(99, 0, aclora::module_identity("lora", 0), layer);
    for (Eigen::Index i = 0; i < added.rows(); ++i) {
      for (Eigen::Index j = 0; j < added.cols(); ++j) {
        const double draw =
            aclora::gaussian_at<double>(key, static_cast<std::uint64_t>(i * added.cols() + j));
        ASSERT_NEAR(added(i, j), sigma * draw, 1e-9 * sigma)
            << "layer " << layer << " (" << i << ", " << j << ")";
      }
    }
  }
}

// Float storage uses the float Box-Muller transform evaluated with Eigen's vectorised
// functions: the same draw numbering, values within float accuracy of gaussian_at<float>.
TEST(NoiseNumbering, FloatStorageUsesTheSameDraws) {
  const RestartedModule<float> m(8, 50, NoisePolicy::whole, Method::gram, 99);
  for (int layer : {0, 1}) {
    const Eigen::MatrixXd added = layer == 0 ? m.added_down() : m.added_up();
    const double largest = (layer == 0 ? m.down_original : m.up_original).cwiseAbs().maxCoeff();
    const double sigma = m.report.modules[0].layers[layer].sigma;
    const auto key = aclora::noise_key(99, 0, aclora::module_identity("lora", 0), layer);
    for (Eigen::Index i = 0; i < added.rows(); ++i) {
      for (Eigen::Index j = 0; j < added.cols(); ++j) {
        const double draw =
            aclora::gaussian_at<float>(key, static_cast<std::uint64_t>(i * added.cols() + j));
        const double tolerance = 1e-5 * sigma * (1.0 + std::abs(draw)) + 2e-7 * largest;
        ASSERT_NEAR(added(i, j), sigma * draw, tolerance)
            << "layer " << layer << " (" << i << ", " << j << ")";
      }
    }
  }
}

}  // namespace
