// The backend's names do not hide LibTorch's: with `using aclora::backends::TorchBackend;` and
// `using namespace aclora::backends;` at file scope (as user code writes them), `torch::`
// still names ::torch (the backend's internals live in aclora::backends::libtorch). This
// file would not compile if the class were called Torch or the namespace torch.
#include <gtest/gtest.h>
#include <torch/types.h>

#include <vector>

#include "aclora/aclora.hpp"
#include "aclora/backends/torch.hpp"

using aclora::backends::TorchBackend;
using namespace aclora::backends;  // NOLINT: the point of this test

namespace {

// Restarted through the using-declared backend at p = 0.95, factors with singular values
// (3, 2, 1) and (1, 1, 1e-3) keep K = 2 (k = 2 and 1, paper eq. 3), i.e. lose exactly their
// third component; written with LibTorch's own names.
TEST(TorchBackendNames, LeaveTheTorchNamespaceVisible) {
  torch::Tensor down = torch::zeros({4, 6}, torch::kFloat64);
  torch::Tensor up = torch::zeros({5, 4}, torch::kFloat64);
  down[0][0] = 3.0, down[1][1] = 2.0, down[2][2] = 1.0;
  up[0][0] = 1.0, up[1][1] = 1.0, up[2][2] = 1e-3;
  torch::Tensor expected_down = down.clone(), expected_up = up.clone();
  expected_down[2][2] = 0.0, expected_up[2][2] = 0.0;

  using Driver = aclora::Restart<TorchBackend>;
  std::vector<Driver::module_type> modules{Driver::module_type::lora("m", down, up)};
  const auto report =
      Driver({.noise = aclora::NoisePolicy::none}, TorchBackend()).at_threshold(modules, 0.95);

  EXPECT_EQ(report.modules[0].module_rank, 2u);
  EXPECT_LT((down - expected_down).abs().max().item<double>(), 1e-12);
  EXPECT_LT((up - expected_up).abs().max().item<double>(), 1e-12);
}

}  // namespace
