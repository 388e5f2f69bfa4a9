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
/// @param alphas_cumprod abar_t for t in [0, T): [T] float32 on the latents' device (made once
///        by the caller, see alphas_cumprod_on)
/// @param options prediction target, min-SNR gamma
/// @throws std::invalid_argument for timesteps outside [0, T), mismatched shapes, or
///         alphas_cumprod of another shape, dtype or device
torch::Tensor diffusion_loss(UNet& unet, const TrainBatch& batch, const StepDraws& draws,
                             const torch::Tensor& alphas_cumprod, const LossOptions& options);

/// A step's loss two ways: the one to train on and the plain MSE.
struct DiffusionLosses {
  torch::Tensor weighted;    ///< what diffusion_loss returns (min-SNR weighted when on)
  torch::Tensor unweighted;  ///< the MSE against the target without min-SNR weights
                             ///< (detached; the same value as `weighted` when min-SNR is off)
};

/// diffusion_loss and, from the same forward pass, the unweighted MSE (a trainer may report
/// and act on the plain loss while it trains on the weighted one). Same parameters and
/// errors as diffusion_loss.
DiffusionLosses diffusion_losses(UNet& unet, const TrainBatch& batch, const StepDraws& draws,
                                 const torch::Tensor& alphas_cumprod, const LossOptions& options);

/// abar_t (a NoiseSchedule's alphas_cumprod()) as the [T] float32 tensor diffusion_loss takes.
inline torch::Tensor alphas_cumprod_on(const std::vector<float>& alphas_cumprod,
                                       torch::Device device) {
  return torch::tensor(alphas_cumprod, torch::kFloat32).to(device);
}

/// Dynamic loss scaling for fp16 training, as torch.cuda.amp.GradScaler does it: the loss is
/// multiplied by the scale (initially 2^16) before backward, the gradients divided by it
/// before the optimizer step; a step whose gradients are not all finite is skipped and halves
/// the scale, 2000 good steps in a row double it. Disabled, it changes nothing.
class LossScaler {
 public:
  /// A scaler; `enabled` false makes every call a no-op that reports finite gradients.
  explicit LossScaler(bool enabled) : enabled_(enabled) {}

  /// The loss times the scale (the loss itself when disabled).
  torch::Tensor scale(const torch::Tensor& loss) const;

  /// Divides every defined gradient by the scale and updates the scale.
  /// @return false when a gradient holds a NaN or an infinity (skip the optimizer step)
  bool unscale(const std::vector<torch::Tensor>& parameters);

  double value() const { return scale_; }  ///< the current scale

  /// The scale and the count of good steps, [2] float64, for a training state (so a resumed
  /// run scales as the uninterrupted one would).
  torch::Tensor state() const;

  /// Restores what state() returned.
  /// @throws std::invalid_argument for a tensor of another shape or dtype, a scale that is
  /// not finite and positive, or a step count outside [0, 2000)
  void restore(const torch::Tensor& state);

 private:
  bool enabled_;
  double scale_ = 65536.0;
  int good_steps_ = 0;
};

}  // namespace sdxl
