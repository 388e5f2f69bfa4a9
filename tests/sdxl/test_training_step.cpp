// One SDXL LoRA training step (sdxl/training_step.hpp with LoRAs injected by
// aclora::train::LoraNetwork) against the same step in diffusers + PEFT
// (tests/fixtures/sdxl/train_step.safetensors, made by make_train_step_fixture.py).
#include <gtest/gtest.h>

#include <aclora/adapters/safetensors.hpp>
#include <aclora/adapters/train/network.hpp>
#include <aclora/adapters/train/tensor_io.hpp>

#include <string>

#include "reference_fixtures.hpp"
#include "sdxl/checkpoint.hpp"
#include "sdxl/scheduler.hpp"
#include "sdxl/training_step.hpp"

namespace {

double relative(const torch::Tensor& actual, const torch::Tensor& expected) {
  return ((actual.to(torch::kFloat64) - expected.to(torch::kFloat64)).norm() /
          expected.to(torch::kFloat64).norm())
      .item<double>();
}

}  // namespace

// With the same tiny UNet, LoRA factors, batch, noise and timesteps, the loss and the gradient
// of every one of the 132 LoRA factor pairs equal diffusers + PEFT's within 1e-4 relative, for
// epsilon and v-prediction, with and without min-SNR weighting (gamma 5).
TEST(TrainingStep, EqualsDiffusersAndPeft) {
  const auto fixture =
      aclora::safetensors::Reader::open(sdxl_test::sdxl_fixtures() / "train_step.safetensors");
  const auto tensor = [&](const std::string& name) {
    return aclora::train::tensor_from(fixture.tensor(name));
  };
  sdxl::SdxlModels models = sdxl::load_sdxl(sdxl_test::sdxl_fixtures() / "tiny-sdxl");
  aclora::train::LoraNetwork network;
  aclora::train::InjectOptions options;
  options.rank = 2;
  options.alpha = 1.0;
  options.naming = aclora::train::Naming::sdxl_unet();
  network.inject(*models.unet, aclora::train::Targets::sdxl_unet_linear(), options);
  ASSERT_EQ(network.size(), 132u);
  {
    torch::NoGradGuard no_grad;
    for (const auto& module : network.modules()) {
      module.adapter->down.copy_(tensor("init." + module.path + ".down"));
      module.adapter->up.copy_(tensor("init." + module.path + ".up"));
    }
  }
  const sdxl::TrainBatch batch{tensor("batch.latents"), tensor("batch.context"),
                               tensor("batch.pooled"), tensor("batch.time_ids")};
  const sdxl::StepDraws draws{tensor("batch.noise"), tensor("batch.timesteps")};
  const std::vector<float> abar = sdxl::NoiseSchedule{}.alphas_cumprod();
  for (const auto target : {sdxl::PredictionTarget::epsilon, sdxl::PredictionTarget::v}) {
    for (const double gamma : {0.0, 5.0}) {
      const std::string name =
          std::string(target == sdxl::PredictionTarget::epsilon ? "epsilon" : "v") + "_minsnr" +
          std::to_string(static_cast<int>(gamma));
      sdxl::LossOptions loss_options;
      loss_options.target = target;
      loss_options.min_snr_gamma = gamma;
      for (auto& factor : network.parameters())
        factor.mutable_grad() = torch::Tensor();
      const torch::Tensor loss =
          sdxl::diffusion_loss(models.unet, batch, draws, abar, loss_options);
      loss.backward();
      EXPECT_LT(relative(loss, tensor(name + ".loss").squeeze()), 1e-4) << name;
      double worst = 0.0;
      for (const auto& module : network.modules()) {
        worst = std::max(worst, relative(module.adapter->down.grad(),
                                         tensor(name + "." + module.path + ".down_grad")));
        worst = std::max(worst, relative(module.adapter->up.grad(),
                                         tensor(name + "." + module.path + ".up_grad")));
      }
      RecordProperty(name + "_worst_gradient_error", std::to_string(worst));
      EXPECT_LT(worst, 1e-4) << name;
    }
  }
}
