// The backend's names do not hide Eigen's: with `using aclora::backends::EigenBackend;` and
// `using namespace aclora::backends;` at file scope (as user code writes them), `Eigen::`
// still names ::Eigen. This file would not compile if the backend class were called Eigen.
#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <vector>

#include "aclora/backends/eigen.hpp"

using aclora::backends::EigenBackend;
using namespace aclora::backends;  // NOLINT: the point of this test

namespace {

// Restarted through the using-declared backend at p = 0.95, factors with singular values
// (3, 2, 1) and (1, 1, 1e-3) keep K = 2 (k = 2 and 1, paper eq. 3), i.e. lose exactly their
// third component; written with Eigen's own names.
TEST(EigenBackendNames, LeaveTheEigenNamespaceVisible) {
  Eigen::MatrixXd down = Eigen::MatrixXd::Zero(4, 6);
  Eigen::MatrixXd up = Eigen::MatrixXd::Zero(5, 4);
  down(0, 0) = 3.0, down(1, 1) = 2.0, down(2, 2) = 1.0;
  up(0, 0) = 1.0, up(1, 1) = 1.0, up(2, 2) = 1e-3;
  Eigen::MatrixXd expected_down = down, expected_up = up;
  expected_down(2, 2) = 0.0, expected_up(2, 2) = 0.0;

  using Driver = aclora::Restart<EigenBackend>;
  std::vector<Driver::module_type> modules{Driver::module_type::lora("m", down, up)};
  const auto report =
      Driver({.noise = aclora::NoisePolicy::none}, EigenBackend()).at_threshold(modules, 0.95);

  EXPECT_EQ(report.modules[0].module_rank, 2u);
  EXPECT_LT((down - expected_down).cwiseAbs().maxCoeff(), 1e-12);
  EXPECT_LT((up - expected_up).cwiseAbs().maxCoeff(), 1e-12);
}

}  // namespace
