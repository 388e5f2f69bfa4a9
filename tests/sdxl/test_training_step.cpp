// One SDXL LoRA training step (sdxl/training_step.hpp with LoRAs injected by
// aclora::train::LoraNetwork) against the same step in diffusers + PEFT
// (tests/fixtures/sdxl/train_step.safetensors, made by make_train_step_fixture.py).
#include <gtest/gtest.h>

#include <aclora/adapters/safetensors.hpp>
#include <aclora/adapters/train/network.hpp>
#include <aclora/adapters/train/tensor_io.hpp>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "reference_fixtures.hpp"
#include "sdxl/checkpoint.hpp"
#include "sdxl/scheduler.hpp"
#include "sdxl/training_step.hpp"

using sdxl_test::relative_norm_error;

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
  const torch::Tensor abar =
      sdxl::alphas_cumprod_on(sdxl::NoiseSchedule{}.alphas_cumprod(), torch::kCPU);
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
      EXPECT_LT(relative_norm_error(loss, tensor(name + ".loss").squeeze()), 1e-4) << name;
      double worst = 0.0;
      for (const auto& module : network.modules()) {
        worst =
            std::max(worst, relative_norm_error(module.adapter->down.grad(),
                                                tensor(name + "." + module.path + ".down_grad")));
        worst = std::max(worst, relative_norm_error(module.adapter->up.grad(),
                                                    tensor(name + "." + module.path + ".up_grad")));
      }
      RecordProperty(name + "_worst_gradient_error", std::to_string(worst));
      EXPECT_LT(worst, 1e-4) << name;
    }
  }
}

// fp16 loss scaling: overflowed gradients skip the step and halve the scale, 2000 good steps
// double it; the state round-trips (a resumed run continues the same count), and a bad state
// is refused by name without changing the scaler.
TEST(LossScaler, ScalesUnscalesAndRoundTripsItsState) {
  sdxl::LossScaler scaler(true);
  torch::Tensor parameter = torch::ones({3}, torch::kFloat32).set_requires_grad(true);
  const auto backward_with = [&](float value) {
    parameter.mutable_grad() = torch::full({3}, value, torch::kFloat32);
  };
  EXPECT_EQ(scaler.scale(torch::tensor(2.0)).item<double>(), 2.0 * 65536.0);
  backward_with(65536.0f);
  EXPECT_TRUE(scaler.unscale({parameter}));
  EXPECT_EQ(parameter.grad()[0].item<float>(), 1.0f);
  backward_with(std::numeric_limits<float>::infinity());
  EXPECT_FALSE(scaler.unscale({parameter}));
  EXPECT_EQ(scaler.value(), 32768.0);
  for (int i = 0; i < 1999; ++i) {
    backward_with(1.0f);
    ASSERT_TRUE(scaler.unscale({parameter}));
  }
  EXPECT_EQ(scaler.value(), 32768.0);

  sdxl::LossScaler resumed(true);
  resumed.restore(scaler.state());
  backward_with(1.0f);
  ASSERT_TRUE(resumed.unscale({parameter}));
  EXPECT_EQ(resumed.value(), 65536.0);  // the 2000th good step, counted across the resume

  EXPECT_THROW(resumed.restore(torch::tensor({1.0, 0.0}, torch::kFloat32)), std::invalid_argument);
  EXPECT_THROW(resumed.restore(torch::tensor({-1.0, 0.0}, torch::kFloat64)), std::invalid_argument);
  EXPECT_THROW(resumed.restore(torch::tensor({1.0, 2000.0}, torch::kFloat64)),
               std::invalid_argument);
  EXPECT_EQ(resumed.value(), 65536.0);

  sdxl::LossScaler disabled(false);
  backward_with(std::numeric_limits<float>::infinity());
  EXPECT_TRUE(disabled.unscale({parameter}));
  EXPECT_EQ(disabled.scale(torch::tensor(2.0)).item<double>(), 2.0);
}

// diffusion_losses: `weighted` is diffusion_loss's value; `unweighted` is the plain MSE of the
// same prediction (diffusion_loss without min-SNR), for epsilon and v; without min-SNR both are
// the same number.
TEST(TrainingStep, LossesGiveTheWeightedAndThePlainMse) {
  const auto fixture =
      aclora::safetensors::Reader::open(sdxl_test::sdxl_fixtures() / "train_step.safetensors");
  const auto tensor = [&](const std::string& name) {
    return aclora::train::tensor_from(fixture.tensor(name));
  };
  sdxl::SdxlModels models = sdxl::load_sdxl(sdxl_test::sdxl_fixtures() / "tiny-sdxl");
  const sdxl::TrainBatch batch{tensor("batch.latents"), tensor("batch.context"),
                               tensor("batch.pooled"), tensor("batch.time_ids")};
  const sdxl::StepDraws draws{tensor("batch.noise"), tensor("batch.timesteps")};
  const torch::Tensor abar =
      sdxl::alphas_cumprod_on(sdxl::NoiseSchedule{}.alphas_cumprod(), torch::kCPU);
  torch::NoGradGuard no_grad;
  for (const auto target : {sdxl::PredictionTarget::epsilon, sdxl::PredictionTarget::v}) {
    sdxl::LossOptions plain;
    plain.target = target;
    sdxl::LossOptions weighted = plain;
    weighted.min_snr_gamma = 5.0;
    const double mse = sdxl::diffusion_loss(models.unet, batch, draws, abar, plain).item<double>();
    const sdxl::DiffusionLosses with_snr =
        sdxl::diffusion_losses(models.unet, batch, draws, abar, weighted);
    EXPECT_EQ(with_snr.weighted.item<double>(),
              sdxl::diffusion_loss(models.unet, batch, draws, abar, weighted).item<double>());
    // One fp32 mean over all elements against the mean of per-sample means: the rounding of
    // two fp32 summation orders (2 x log2(elements) units of 2^-24).
    const double rounding = 2 * std::log2(static_cast<double>(batch.latents.numel())) * 0x1p-24;
    EXPECT_NEAR(with_snr.unweighted.item<double>(), mse, rounding * mse);
    EXPECT_NE(with_snr.weighted.item<double>(), with_snr.unweighted.item<double>());
    const sdxl::DiffusionLosses without =
        sdxl::diffusion_losses(models.unet, batch, draws, abar, plain);
    EXPECT_EQ(without.weighted.item<double>(), mse);
    EXPECT_EQ(without.unweighted.item<double>(), mse);
  }
}
