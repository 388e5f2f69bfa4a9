#include "sdxl/training_step.hpp"

#include <stdexcept>
#include <string>

namespace sdxl {

StepDraws draw_step(const TrainBatch& batch, const LossOptions& options) {
  if (options.min_timestep < 0 || options.max_timestep <= options.min_timestep)
    throw std::invalid_argument("timesteps must be drawn from a non-empty [min, max)");
  const auto float_options = batch.latents.options().dtype(torch::kFloat32);
  StepDraws draws;
  draws.noise = torch::randn(batch.latents.sizes(), float_options);
  if (options.noise_offset > 0.0) {
    draws.noise = draws.noise + options.noise_offset * torch::randn({batch.latents.size(0),
                                                                     batch.latents.size(1), 1, 1},
                                                                    float_options);
  }
  draws.timesteps =
      torch::randint(options.min_timestep, options.max_timestep, {batch.latents.size(0)},
                     batch.latents.options().dtype(torch::kInt64));
  return draws;
}

torch::Tensor diffusion_loss(UNet& unet, const TrainBatch& batch, const StepDraws& draws,
                             const std::vector<float>& alphas_cumprod, const LossOptions& options) {
  const int64_t steps = static_cast<int64_t>(alphas_cumprod.size());
  if (draws.timesteps.min().item<int64_t>() < 0 || draws.timesteps.max().item<int64_t>() >= steps)
    throw std::invalid_argument("timesteps outside [0, " + std::to_string(steps) + ")");
  if (draws.noise.sizes() != batch.latents.sizes())
    throw std::invalid_argument("noise and latents differ in shape");
  const auto device = batch.latents.device();
  const torch::Tensor abar =
      torch::tensor(alphas_cumprod, torch::TensorOptions().dtype(torch::kFloat32)).to(device);
  const torch::Tensor latents = batch.latents.to(torch::kFloat32);
  // diffusers' add_noise / get_velocity / compute_snr, in fp32.
  const torch::Tensor sqrt_abar =
      abar.index_select(0, draws.timesteps).pow(0.5).view({-1, 1, 1, 1});
  const torch::Tensor sqrt_one_minus =
      (1.0 - abar.index_select(0, draws.timesteps)).pow(0.5).view({-1, 1, 1, 1});
  const torch::Tensor noisy = sqrt_abar * latents + sqrt_one_minus * draws.noise;
  const torch::Tensor target = options.target == PredictionTarget::epsilon
                                   ? draws.noise
                                   : sqrt_abar * draws.noise - sqrt_one_minus * latents;
  const auto model_dtype = batch.context.scalar_type();
  const torch::Tensor prediction =
      unet->forward(noisy.to(model_dtype), draws.timesteps.to(torch::kFloat32), batch.context,
                    AddedConditions{batch.pooled, batch.time_ids});
  if (options.min_snr_gamma <= 0.0)
    return torch::mse_loss(prediction.to(torch::kFloat32), target);
  const torch::Tensor per_sample = (prediction.to(torch::kFloat32) - target).pow(2).mean({1, 2, 3});
  const torch::Tensor snr = (sqrt_abar / sqrt_one_minus).pow(2).flatten();
  torch::Tensor weights = torch::clamp_max(snr, options.min_snr_gamma);
  weights = options.target == PredictionTarget::epsilon ? weights / snr : weights / (snr + 1.0);
  return (per_sample * weights).mean();
}

}  // namespace sdxl
