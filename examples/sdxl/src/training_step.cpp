#include "sdxl/training_step.hpp"

#include <cmath>
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

DiffusionLosses diffusion_losses(UNet& unet, const TrainBatch& batch, const StepDraws& draws,
                                 const torch::Tensor& alphas_cumprod, const LossOptions& options) {
  const int64_t steps = alphas_cumprod.numel();
  if (alphas_cumprod.dim() != 1 || alphas_cumprod.scalar_type() != torch::kFloat32 ||
      alphas_cumprod.device() != batch.latents.device())
    throw std::invalid_argument(
        "alphas_cumprod must be a 1-D float32 tensor on the latents' device");
  const auto [lowest, highest] = torch::aminmax(draws.timesteps);
  const torch::Tensor range = torch::stack({lowest, highest}).cpu();  // one device sync
  if (range[0].item<int64_t>() < 0 || range[1].item<int64_t>() >= steps)
    throw std::invalid_argument("timesteps outside [0, " + std::to_string(steps) + ")");
  if (draws.noise.sizes() != batch.latents.sizes())
    throw std::invalid_argument("noise and latents differ in shape");
  const torch::Tensor latents = batch.latents.to(torch::kFloat32);
  // diffusers' add_noise / get_velocity / compute_snr, in fp32.
  const torch::Tensor abar = alphas_cumprod.index_select(0, draws.timesteps);
  const torch::Tensor sqrt_abar = abar.pow(0.5).view({-1, 1, 1, 1});
  const torch::Tensor sqrt_one_minus = (1.0 - abar).pow(0.5).view({-1, 1, 1, 1});
  const torch::Tensor noisy = sqrt_abar * latents + sqrt_one_minus * draws.noise;
  const torch::Tensor target = options.target == PredictionTarget::epsilon
                                   ? draws.noise
                                   : sqrt_abar * draws.noise - sqrt_one_minus * latents;
  const auto model_dtype = batch.context.scalar_type();
  const torch::Tensor prediction =
      unet->forward(noisy.to(model_dtype), draws.timesteps.to(torch::kFloat32), batch.context,
                    AddedConditions{batch.pooled, batch.time_ids});
  if (options.min_snr_gamma <= 0.0) {
    const torch::Tensor loss = torch::mse_loss(prediction.to(torch::kFloat32), target);
    return {loss, loss.detach()};
  }
  const torch::Tensor per_sample = (prediction.to(torch::kFloat32) - target).pow(2).mean({1, 2, 3});
  const torch::Tensor snr = (sqrt_abar / sqrt_one_minus).pow(2).flatten();
  torch::Tensor weights = torch::clamp_max(snr, options.min_snr_gamma);
  weights = options.target == PredictionTarget::epsilon ? weights / snr : weights / (snr + 1.0);
  return {(per_sample * weights).mean(), per_sample.detach().mean()};
}

torch::Tensor diffusion_loss(UNet& unet, const TrainBatch& batch, const StepDraws& draws,
                             const torch::Tensor& alphas_cumprod, const LossOptions& options) {
  return diffusion_losses(unet, batch, draws, alphas_cumprod, options).weighted;
}

torch::Tensor LossScaler::scale(const torch::Tensor& loss) const {
  return enabled_ ? loss * scale_ : loss;
}

bool LossScaler::unscale(const std::vector<torch::Tensor>& parameters) {
  if (!enabled_)
    return true;
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> finite_flags;
  for (const auto& parameter : parameters) {
    if (!parameter.grad().defined())
      continue;
    parameter.grad().div_(scale_);
    finite_flags.push_back(parameter.grad().isfinite().all());
  }
  // One device sync for all gradients.
  const bool finite = finite_flags.empty() || torch::stack(finite_flags).all().item<bool>();
  if (!finite) {
    scale_ /= 2.0;
    good_steps_ = 0;
  } else if (++good_steps_ == 2000) {
    scale_ *= 2.0;
    good_steps_ = 0;
  }
  return finite;
}

torch::Tensor LossScaler::state() const {
  return torch::tensor({scale_, static_cast<double>(good_steps_)}, torch::kFloat64);
}

void LossScaler::restore(const torch::Tensor& state) {
  if (state.dim() != 1 || state.size(0) != 2 || state.scalar_type() != torch::kFloat64)
    throw std::invalid_argument("loss scaler state: expected [2] float64, got " +
                                c10::str(state.sizes()) + " " + c10::toString(state.scalar_type()));
  const double scale = state[0].item<double>(), good_steps = state[1].item<double>();
  if (!(std::isfinite(scale) && scale > 0.0))
    throw std::invalid_argument("loss scaler state: scale " + std::to_string(scale) +
                                " is not finite and positive");
  if (!(good_steps >= 0.0 && good_steps < 2000.0 && good_steps == std::floor(good_steps)))
    throw std::invalid_argument("loss scaler state: good-step count " + std::to_string(good_steps) +
                                " is not an integer in [0, 2000)");
  scale_ = scale;
  good_steps_ = static_cast<int>(good_steps);
}

}  // namespace sdxl
