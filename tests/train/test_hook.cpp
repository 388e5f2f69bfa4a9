// The RESTART hook (aclora/adapters/train/hook.hpp) in a real training loop, and the
// optimizer-state policies (optimizer.hpp).
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <aclora/adapters/train/hook.hpp>
#include <aclora/adapters/train/layers.hpp>

#include <ATen/autocast_mode.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

using aclora::train::InjectOptions;
using aclora::train::LoraNetwork;
using aclora::train::Naming;
using aclora::train::OptimizerPolicy;
using aclora::train::RestartHook;
using aclora::train::Targets;

// Three linear layers with a tanh between them.
class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl() {
    a = register_module("a", aclora::train::Linear(16, 32));
    b = register_module("b", aclora::train::Linear(32, 32));
    c = register_module("c", aclora::train::Linear(32, 8));
  }
  torch::Tensor forward(const torch::Tensor& x) { return c(torch::tanh(b(torch::tanh(a(x))))); }
  aclora::train::Linear a{nullptr}, b{nullptr}, c{nullptr};
};
TORCH_MODULE(Mlp);

InjectOptions lora_options(std::int64_t rank) {
  InjectOptions o;
  o.rank = rank;
  o.naming = Naming::plain("lora");
  return o;
}

// A teacher: the student's base with a planted rank-2 change on layer b.
struct RegressionTask {
  Mlp student;
  Mlp teacher;
  torch::Tensor inputs;
  torch::Tensor targets;

  RegressionTask() {
    torch::manual_seed(11);
    student = Mlp();
    teacher = Mlp();
    torch::NoGradGuard no_grad;
    for (const auto& item : student->named_parameters())
      teacher->named_parameters()[item.key()].copy_(item.value());
    teacher->b->weight.add_(torch::matmul(torch::randn({32, 2}), torch::randn({2, 32})) * 0.3);
    inputs = torch::randn({64, 16});
    targets = teacher->forward(inputs);
  }
};

// K per module recomputed from full SVDs of the factors (torch::linalg_svdvals in float64),
// independently of the backend's Gram route: k_j = #{i : E_i < p T}, K = clamp(max k_j, 1, R).
// A module whose cumulative energy share E_i / T lies within 1e-9 of p is marked ambiguous
// (the two routes' energies agree to about 1e-12 relative, not exactly): its K is not compared.
struct ExpectedRank {
  std::size_t rank = 0;
  bool ambiguous = false;
};

std::vector<ExpectedRank> expected_ranks(const LoraNetwork& network, double p) {
  std::vector<ExpectedRank> ranks;
  for (const auto& module : network.modules()) {
    ExpectedRank expected;
    std::size_t kept = 0;
    for (const torch::Tensor& factor :
         {module.adapter->down_matrix(), module.adapter->up_matrix()}) {
      const torch::Tensor values = torch::linalg_svdvals(factor.detach().to(torch::kFloat64));
      const torch::Tensor energy = values.square().cumsum(0);
      const double total = energy[-1].item<double>();
      const auto count = static_cast<std::size_t>((energy < p * total).sum().item<std::int64_t>());
      kept = std::max(kept, count);
      if (((energy / total - p).abs() < 1e-9).any().item<bool>())
        expected.ambiguous = true;
    }
    expected.rank = std::clamp<std::size_t>(kept, 1, module.adapter->rank());
    ranks.push_back(expected);
  }
  return ranks;
}

}  // namespace

// A tiny regression trained for 20 epochs with a RESTART every 5: the loss falls, RESTARTs
// run exactly after epochs 0, 5, 10, 15 with p = 1 - L^alpha(e) from the losses recorded
// since the previous one, and each reported K equals K recomputed from the factors' spectra.
TEST(RestartHook, TrainingLoopRestartsOnScheduleWithTheExpectedRanks) {
  RegressionTask task;
  LoraNetwork network;
  network.inject(*task.student, Targets::patterns({"a", "b", "c"}), lora_options(8));
  torch::optim::AdamW optimizer(network.parameters(), torch::optim::AdamWOptions(3e-2));
  aclora::train::HookOptions options;
  options.schedule = {20, 5};
  options.restart.seed = 7;
  RestartHook hook(network, &optimizer, options);

  std::vector<int> restart_epochs;
  std::vector<double> window;
  double first_loss = 0.0, last_loss = 0.0;
  for (int epoch = 0; epoch < 20; ++epoch) {
    double sum = 0.0;
    for (int step = 0; step < 8; ++step) {
      const auto rows = torch::arange(step * 8, step * 8 + 8);
      optimizer.zero_grad();
      const torch::Tensor loss = torch::mse_loss(task.student->forward(task.inputs.index({rows})),
                                                 task.targets.index({rows}));
      loss.backward();
      optimizer.step();
      sum += loss.item<double>();
    }
    const double epoch_loss = sum / 8.0;
    if (epoch == 0)
      first_loss = epoch_loss;
    last_loss = epoch_loss;
    window.push_back(epoch_loss);
    double mean = 0.0;
    for (double value : window)
      mean += value;
    mean /= static_cast<double>(window.size());
    const double alpha = 1.0 + epoch / 19.0;
    const double p = std::clamp(1.0 - std::pow(mean, alpha), 0.0, 1.0);
    const std::vector<ExpectedRank> expected = expected_ranks(network, p);

    const auto outcome = hook.end_epoch(epoch, epoch_loss);
    if (!outcome) {
      EXPECT_NE(epoch % 5, 0);
      continue;
    }
    restart_epochs.push_back(epoch);
    window.clear();
    EXPECT_EQ(outcome->epoch, epoch);
    EXPECT_NEAR(outcome->report.threshold, p, 1e-12);
    EXPECT_NEAR(outcome->report.alpha, alpha, 1e-12);
    ASSERT_EQ(outcome->report.modules.size(), 3u);
    for (std::size_t m = 0; m < 3; ++m) {
      if (!expected[m].ambiguous)
        EXPECT_EQ(outcome->report.modules[m].module_rank, expected[m].rank) << "epoch " << epoch;
    }
    EXPECT_EQ(hook.module_ranks()[1], outcome->report.modules[1].module_rank);
    EXPECT_GE(outcome->seconds, 0.0);
  }
  EXPECT_EQ(restart_epochs, (std::vector<int>{0, 5, 10, 15}));
  EXPECT_EQ(hook.restart_count(), 4u);
  EXPECT_LT(last_loss, 0.5 * first_loss);
}

// Policy reset: after a RESTART the rewritten factors' AdamW moments are zero, and the next
// step equals the step of a fresh optimizer on the same values and gradients, bit for bit.
TEST(RestartHook, ResetGivesTheRewrittenFactorsAFreshAdamWState) {
  RegressionTask task;
  LoraNetwork network;
  network.inject(*task.student, Targets::patterns({"b"}), lora_options(4));
  const auto adamw = torch::optim::AdamWOptions(1e-2).weight_decay(0.01);
  torch::optim::AdamW optimizer(network.parameters(), adamw);
  const auto train_step = [&](torch::optim::Optimizer& opt) {
    opt.zero_grad();
    torch::mse_loss(task.student->forward(task.inputs), task.targets).backward();
    opt.step();
  };
  for (int i = 0; i < 3; ++i)
    train_step(optimizer);
  aclora::train::HookOptions options;
  options.schedule = {10, 1};
  RestartHook hook(network, &optimizer, options);
  ASSERT_TRUE(hook.end_epoch(0, 0.05));
  for (const auto& factor : network.parameters()) {
    const auto& state = static_cast<torch::optim::AdamWParamState&>(
        *optimizer.state().at(aclora::train::detail::state_key(optimizer.state(), factor)));
    EXPECT_EQ(state.step(), 0);
    EXPECT_EQ(state.exp_avg().abs().max().item<float>(), 0.0f);
    EXPECT_EQ(state.exp_avg_sq().abs().max().item<float>(), 0.0f);
  }
  // The same step from a fresh optimizer on copies of the factors.
  std::vector<torch::Tensor> copies;
  for (const auto& factor : network.parameters())
    copies.push_back(factor.detach().clone().set_requires_grad(true));
  optimizer.zero_grad();
  torch::mse_loss(task.student->forward(task.inputs), task.targets).backward();
  for (std::size_t i = 0; i < copies.size(); ++i)
    copies[i].mutable_grad() = network.parameters()[i].grad().clone();
  optimizer.step();
  torch::optim::AdamW fresh(copies, adamw);
  fresh.step();
  for (std::size_t i = 0; i < copies.size(); ++i)
    EXPECT_TRUE(torch::equal(network.parameters()[i], copies[i])) << i;
}

// Policy keep leaves the optimizer state as it was; SGD's momentum is dropped by reset so
// its next step equals a fresh SGD's; an optimizer reset does not know is refused up front.
TEST(RestartHook, KeepSgdAndUnknownOptimizers) {
  RegressionTask task;
  LoraNetwork network;
  network.inject(*task.student, Targets::patterns({"b"}), lora_options(4));
  torch::optim::AdamW adamw(network.parameters(), torch::optim::AdamWOptions(1e-2));
  adamw.zero_grad();
  torch::mse_loss(task.student->forward(task.inputs), task.targets).backward();
  adamw.step();
  const auto key = aclora::train::detail::state_key(adamw.state(), network.parameters()[0]);
  const torch::Tensor moment =
      static_cast<torch::optim::AdamWParamState&>(*adamw.state().at(key)).exp_avg().clone();
  aclora::train::HookOptions keep;
  keep.schedule = {10, 1};
  keep.optimizer_policy = OptimizerPolicy::keep;
  RestartHook keeping(network, &adamw, keep);
  ASSERT_TRUE(keeping.end_epoch(0, 0.05));
  const auto& kept = static_cast<torch::optim::AdamWParamState&>(*adamw.state().at(key));
  EXPECT_TRUE(torch::equal(kept.exp_avg(), moment));
  EXPECT_EQ(kept.step(), 1);

  const auto sgd_options = torch::optim::SGDOptions(1e-2).momentum(0.9).dampening(0.1);
  torch::optim::SGD sgd(network.parameters(), sgd_options);
  const auto backward = [&] {
    sgd.zero_grad();
    torch::mse_loss(task.student->forward(task.inputs), task.targets).backward();
  };
  backward();
  sgd.step();
  aclora::train::reset_optimizer_state(sgd, network.parameters());
  EXPECT_TRUE(sgd.state().empty());
  std::vector<torch::Tensor> copies;
  for (const auto& factor : network.parameters())
    copies.push_back(factor.detach().clone().set_requires_grad(true));
  backward();
  for (std::size_t i = 0; i < copies.size(); ++i)
    copies[i].mutable_grad() = network.parameters()[i].grad().clone();
  sgd.step();
  torch::optim::SGD fresh(copies, sgd_options);
  fresh.step();
  for (std::size_t i = 0; i < copies.size(); ++i)
    EXPECT_TRUE(torch::equal(network.parameters()[i], copies[i])) << i;

  torch::optim::RMSprop rmsprop(network.parameters(), torch::optim::RMSpropOptions(1e-2));
  aclora::train::HookOptions reset;
  reset.schedule = {10, 1};
  try {
    RestartHook refused(network, &rmsprop, reset);
    ADD_FAILURE() << "RMSprop accepted for policy reset";
  } catch (const aclora::train::Error& error) {
    EXPECT_NE(std::string(error.what()).find("AdamW, Adam and SGD"), std::string::npos);
  }
}

// A RESTART inside a bf16 autocast region with bf16 factors: it runs (the analysis in
// float64, autocast off), the factors stay bf16 leaves that require grad, no graph is made.
TEST(RestartHook, RunsInsideAutocastOnBf16Factors) {
  RegressionTask task;
  LoraNetwork network;
  InjectOptions o = lora_options(8);
  o.factors.dtype = torch::kBFloat16;
  network.inject(*task.student, Targets::patterns({"a", "b"}), o);
  {
    torch::NoGradGuard no_grad;
    for (auto& module : network.modules())
      module.adapter->up.normal_();
  }
  aclora::train::HookOptions options;
  options.schedule = {4, 2};
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  at::autocast::set_autocast_enabled(at::kCPU, true);
#else
  at::autocast::set_cpu_enabled(true);
#endif
  RestartHook hook(network, nullptr, options);
  const auto outcome = hook.end_epoch(0, 0.2);
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  at::autocast::set_autocast_enabled(at::kCPU, false);
#else
  at::autocast::set_cpu_enabled(false);
#endif
  ASSERT_TRUE(outcome);
  for (const auto& factor : network.parameters()) {
    EXPECT_EQ(factor.scalar_type(), torch::kBFloat16);
    EXPECT_TRUE(factor.is_leaf());
    EXPECT_TRUE(factor.requires_grad());
    EXPECT_FALSE(factor.grad_fn());
  }
  EXPECT_LT(outcome->report.modules[0].module_rank, 8u);
}

// A factor holding NaN: the RESTART error names the module and layer, and no factor and no
// optimizer state changed.
TEST(RestartHook, FailedRestartChangesNothing) {
  RegressionTask task;
  LoraNetwork network;
  network.inject(*task.student, Targets::patterns({"a", "b"}), lora_options(4));
  torch::optim::AdamW optimizer(network.parameters(), torch::optim::AdamWOptions(1e-2));
  optimizer.zero_grad();
  torch::mse_loss(task.student->forward(task.inputs), task.targets).backward();
  optimizer.step();
  {
    torch::NoGradGuard no_grad;
    network.modules()[1].adapter->up[0][0] = std::nan("");
  }
  std::vector<torch::Tensor> before;
  for (const auto& factor : network.parameters())
    before.push_back(factor.detach().clone());
  aclora::train::HookOptions options;
  options.schedule = {10, 1};
  RestartHook hook(network, &optimizer, options);
  try {
    hook.end_epoch(0, 0.1);
    ADD_FAILURE() << "no error";
  } catch (const aclora::Error& error) {
    EXPECT_NE(std::string(error.what()).find("module 'lora_b' (#1), layer 1"), std::string::npos)
        << error.what();
  }
  for (std::size_t i = 0; i < before.size(); ++i)  // NaN compares unequal: compare bit images
    EXPECT_TRUE(torch::equal(before[i].nan_to_num(0.5), network.parameters()[i].nan_to_num(0.5)));
  const auto& state = static_cast<torch::optim::AdamWParamState&>(*optimizer.state().at(
      aclora::train::detail::state_key(optimizer.state(), network.parameters()[0])));
  EXPECT_EQ(state.step(), 1);
  EXPECT_EQ(hook.loss_window().size(), 1u);  // the loss is kept for a run that goes on
  EXPECT_THROW(hook.end_epoch(1, std::nan("")), aclora::Error);
}
