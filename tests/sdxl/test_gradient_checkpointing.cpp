// Gradient checkpointing (sdxl::checkpointed) with random draws inside the recomputed blocks:
// LoRA dropout on the tiny SDXL UNet. The recompute must use the forward pass's dropout masks
// and leave the generators where a run without checkpointing leaves them.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <aclora/adapters/safetensors.hpp>
#include <aclora/adapters/train/network.hpp>
#include <aclora/adapters/train/tensor_io.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iomanip>
#include <mutex>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "reference_fixtures.hpp"
#include "sdxl/autocast.hpp"
#include "sdxl/blocks.hpp"
#include "sdxl/checkpoint.hpp"
#include "sdxl/scheduler.hpp"
#include "sdxl/training_step.hpp"

namespace {

constexpr std::uint64_t kSeed = 1234;
constexpr double kDropout = 0.25;

// The state of the default generator of `device` (LibTorch's CPU generator for the CPU).
torch::Tensor generator_state(torch::Device device) {
  at::Generator generator = device.is_cpu() ? at::detail::getDefaultCPUGenerator()
                                            : at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(generator.mutex());
  return generator.get_state();
}

// One training step's results: the loss, every LoRA factor's gradient (network order, down
// then up) and the default generators' states after backward.
struct StepResult {
  torch::Tensor loss;
  std::vector<torch::Tensor> gradients;
  torch::Tensor cpu_generator;
  torch::Tensor device_generator;
};

// The tiny SDXL UNet on `device`, in training mode, with LoRAs (rank 2, dropout kDropout) on
// every layer the kohya linear+conv preset selects, so that both kinds of checkpointed blocks
// (ResnetBlock2D, BasicTransformerBlock) draw dropout masks. The up factors are random (with
// the usual zero up factors every down gradient would be zero); the batch, noise and
// timesteps are the diffusers step fixture's, so dropout is the step's only random draw.
class DropoutTraining {
 public:
  explicit DropoutTraining(torch::Device device) : device_(device) {
    const auto fixture =
        aclora::safetensors::Reader::open(sdxl_test::sdxl_fixtures() / "train_step.safetensors");
    const auto tensor = [&](const std::string& name) {
      return aclora::train::tensor_from(fixture.tensor(name)).to(device);
    };
    unet_ = sdxl::load_sdxl(sdxl_test::sdxl_fixtures() / "tiny-sdxl").unet;
    unet_->to(device);
    unet_->train();
    torch::manual_seed(kSeed);
    aclora::train::InjectOptions options;
    options.rank = 2;
    options.alpha = 1.0;
    options.dropout = kDropout;
    options.naming = aclora::train::Naming::sdxl_unet();
    network_.inject(*unet_, aclora::train::Targets::sdxl_unet_linear_conv(), options);
    {
      torch::NoGradGuard no_grad;
      for (const auto& module : network_.modules())
        module.adapter->up.normal_(0.0, 0.1);
    }
    batch_ = {tensor("batch.latents"), tensor("batch.context"), tensor("batch.pooled"),
              tensor("batch.time_ids")};
    draws_ = {tensor("batch.noise"), tensor("batch.timesteps")};
    alphas_cumprod_ = sdxl::alphas_cumprod_on(sdxl::NoiseSchedule{}.alphas_cumprod(), device);
  }

  // Forward and backward from generators seeded with `seed`.
  StepResult step(bool checkpointing, std::uint64_t seed) {
    unet_->set_gradient_checkpointing(checkpointing);
    for (auto& factor : network_.parameters())
      factor.mutable_grad() = torch::Tensor();
    torch::manual_seed(seed);  // the CPU generator and every CUDA device's
    StepResult result;
    result.loss = sdxl::diffusion_loss(unet_, batch_, draws_, alphas_cumprod_, {});
    result.loss.backward();
    result.loss = result.loss.detach().cpu();
    for (const auto& module : network_.modules()) {
      result.gradients.push_back(module.adapter->down.grad().cpu());
      result.gradients.push_back(module.adapter->up.grad().cpu());
    }
    result.cpu_generator = generator_state(torch::kCPU);
    result.device_generator = generator_state(device_);
    return result;
  }

  // The UNet's skip connections: each up-block resnet takes one (layers_per_block + 1 a level).
  int64_t skip_connections() const {
    const auto& layers = unet_->config().layers_per_block;
    return std::accumulate(layers.begin(), layers.end(), int64_t{0}) +
           static_cast<int64_t>(layers.size());
  }

 private:
  torch::Device device_;
  sdxl::UNet unet_{nullptr};
  aclora::train::LoraNetwork network_;
  sdxl::TrainBatch batch_;
  sdxl::StepDraws draws_;
  torch::Tensor alphas_cumprod_;
};

std::string scientific(double value) {
  std::ostringstream out;
  out << std::scientific << std::setprecision(3) << value;
  return out.str();
}

double norm_of(const torch::Tensor& tensor) {
  return tensor.to(torch::kFloat64).norm().item<double>();
}

// With the same seed, a checkpointed step and a plain one give the same loss, bit for bit
// (the no-grad forward pass is the plain forward pass: same operations, same masks), and the
// same LoRA gradients up to fp32 summation order, and leave the CPU generator and the
// device's in the same state (later draws are unaffected by the recompute).
//
// Why gradients are not compared bit for bit: the gradient reaching a tensor that feeds both a
// checkpointed block and a skip connection is a sum of contributions; the plain backward adds
// the block's inner contributions to the skip's one by one, the checkpointed backward adds the
// block's pre-summed input gradient, and fp32 addition is not associative. (Blocks after the
// last skip connection do come out bit-identical.) Each of the S skip connections rounds a
// gradient element differently by at most u = 2^-24 of the magnitudes summed there; these
// differences propagate linearly through the rest of the backward pass. The test allows every
// LoRA gradient tensor to differ by 16 S u times the norm of all LoRA gradients (16 covers
// the summed magnitudes exceeding the sum, and amplification through the layers); a wrong
// dropout mask changes a gradient by a fraction of its own size, orders of magnitude more.
// Gradients are measured against the whole gradient's norm because some are zero in exact
// arithmetic (a time embedding added per channel and then removed by a GroupNorm of one
// channel per group) and only rounding noise in fp32.
void expect_checkpointing_changes_nothing(torch::Device device) {
  DropoutTraining training(device);
  const StepResult plain = training.step(false, kSeed);
  const StepResult checkpointed = training.step(true, kSeed);

  // The dropout draws matter: another seed gives another loss.
  const StepResult reseeded = training.step(false, kSeed + 1);
  ASSERT_FALSE(torch::equal(reseeded.loss, plain.loss));

  EXPECT_TRUE(torch::equal(checkpointed.loss, plain.loss))
      << checkpointed.loss.item<double>() << " vs " << plain.loss.item<double>();

  ASSERT_EQ(checkpointed.gradients.size(), plain.gradients.size());
  double total_squared = 0.0;
  for (const auto& gradient : plain.gradients)
    total_squared += std::pow(norm_of(gradient), 2);
  const double scale = std::sqrt(total_squared);
  ASSERT_GT(scale, 0.0);
  const double u = std::ldexp(1.0, -24);
  const double bound = 16.0 * static_cast<double>(training.skip_connections()) * u;
  double worst = 0.0;
  int identical = 0;
  for (std::size_t i = 0; i < plain.gradients.size(); ++i) {
    const double error = norm_of(checkpointed.gradients[i] - plain.gradients[i]) / scale;
    EXPECT_LE(error, bound) << "gradient " << i << " (module " << i / 2 << ", "
                            << (i % 2 == 0 ? "down" : "up") << ")";
    worst = std::max(worst, error);
    identical += torch::equal(checkpointed.gradients[i], plain.gradients[i]) ? 1 : 0;
  }
  ::testing::Test::RecordProperty("worst_gradient_error", scientific(worst));
  ::testing::Test::RecordProperty("gradient_bound", scientific(bound));
  ::testing::Test::RecordProperty(
      "bit_identical_gradients",
      std::to_string(identical) + " of " + std::to_string(plain.gradients.size()));

  EXPECT_TRUE(torch::equal(checkpointed.cpu_generator, plain.cpu_generator));
  EXPECT_TRUE(torch::equal(checkpointed.device_generator, plain.device_generator));
}

}  // namespace

TEST(GradientCheckpointing, ReplaysDropoutMasksOnTheCpu) {
  expect_checkpointing_changes_nothing(torch::kCPU);
}

// The same with the UNet on a CUDA device (its default CUDA generator draws the masks).
TEST(GradientCheckpointing, ReplaysDropoutMasksOnCuda) {
  if (!torch::cuda::is_available())
    GTEST_SKIP() << "no CUDA device";
  expect_checkpointing_changes_nothing(torch::Device(torch::kCUDA, 0));
}

// One checkpointed function with a dropout and a matrix product, run under CPU bf16 autocast:
// the recompute replays both the mask and the autocast state (the product in bf16), so the
// output and the gradients of both inputs equal those without checkpointing bit for bit (a
// single block has no skip connection whose summation order could differ), and the CPU
// generator ends where it does without checkpointing.
TEST(GradientCheckpointing, ReplaysAutocastAndDropoutOfOneBlock) {
  const auto block = [](const torch::Tensor& a, const torch::Tensor& b) {
    return torch::mm(torch::dropout(a, kDropout, /*train=*/true), b);
  };
  torch::manual_seed(kSeed);
  const torch::Tensor a_values = torch::randn({8, 16});
  const torch::Tensor b_values = torch::randn({16, 4});
  const torch::Tensor output_gradient = torch::randn({8, 4});
  struct Result {
    torch::Tensor output, a_grad, b_grad, generator;
  };
  const auto run = [&](bool checkpointing) {
    torch::Tensor a = a_values.clone().requires_grad_(true);
    torch::Tensor b = b_values.clone().requires_grad_(true);
    torch::manual_seed(kSeed);
    torch::Tensor output;
    {
      sdxl::AutocastScope autocast(sdxl::AutocastState::on(/*cuda=*/false, torch::kBFloat16));
      output = checkpointing ? sdxl::checkpointed(block, a, b) : block(a, b);
    }
    output.backward(output_gradient.to(output.scalar_type()));
    return Result{output.detach(), a.grad(), b.grad(), generator_state(torch::kCPU)};
  };
  const Result plain = run(false);
  const Result checkpointed = run(true);
  ASSERT_EQ(plain.output.scalar_type(), torch::kBFloat16);  // autocast ran the product
  EXPECT_TRUE(torch::equal(checkpointed.output, plain.output));
  EXPECT_TRUE(torch::equal(checkpointed.a_grad, plain.a_grad));
  EXPECT_TRUE(torch::equal(checkpointed.b_grad, plain.b_grad));
  EXPECT_TRUE(torch::equal(checkpointed.generator, plain.generator));
}
