/// @file training_step.hpp
/// The diffusion loss of one SDXL training step, as diffusers' SDXL LoRA scripts and
/// sd-scripts compute it: noise added at uniform timesteps, epsilon or v-prediction target,
/// MSE in fp32 per sample, optional min-SNR weighting and noise offset.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "sdxl/unet.hpp"

namespace sdxl {

/// What the UNet predicts (the scheduler config's prediction_type).
enum class PredictionTarget {
  epsilon,  ///< the noise
  v,        ///< v = sqrt(abar) eps - sqrt(1 - abar) x0
};

/// The loss settings.
struct LossOptions {
  PredictionTarget target = PredictionTarget::epsilon;  ///< epsilon or v
  double min_snr_gamma = 0.0;   ///< > 0: weight min(SNR, gamma) / SNR (v: / (SNR + 1))
  double noise_offset = 0.0;    ///< > 0: noise += offset * N(0, 1) per sample and channel
  int64_t min_timestep = 0;     ///< timesteps drawn uniformly from [min, max)
  int64_t max_timestep = 1000;  ///< (exclusive)
};

/// One batch of cached inputs.
struct TrainBatch {
  torch::Tensor latents;   ///< [B, 4, h, w], VAE latents times the scaling factor
  torch::Tensor context;   ///< [B, 77, 2048] penultimate states of both encoders
  torch::Tensor pooled;    ///< [B, 1280] pooled, projected text embedding
  torch::Tensor time_ids;  ///< [B, 6] original size, crop top-left, target size (h, w)
};

/// The random draws of one step.
struct StepDraws {
  torch::Tensor noise;      ///< [B, 4, h, w] (noise offset included)
  torch::Tensor timesteps;  ///< [B] int64
};

/// Draws noise, the noise offset and timesteps from LibTorch's default generator (so a
/// restored generator state repeats them), on the latents' device.
StepDraws draw_step(const TrainBatch& batch, const LossOptions& options);

/// The loss of one step (a scalar, fp32): the UNet's prediction on the noised latents against
/// the target, MSE per sample, min-SNR weights, mean over the batch.
/// @param unet the UNet (its LoRAs trainable)
/// @param batch cached latents, text embeddings and time ids
/// @param draws the step's noise and timesteps (draw_step)
/// @param alphas_cumprod abar_t for t in [0, T) (fp32)
/// @param options prediction target, min-SNR gamma
/// @throws std::invalid_argument for timesteps outside [0, T) or mismatched shapes
torch::Tensor diffusion_loss(UNet& unet, const TrainBatch& batch, const StepDraws& draws,
                             const std::vector<float>& alphas_cumprod, const LossOptions& options);

}  // namespace sdxl
