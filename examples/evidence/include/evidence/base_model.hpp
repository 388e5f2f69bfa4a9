/// @file base_model.hpp
/// The experiment's base model: a small class-conditioned SDXL-layout UNet (sdxl::UNet from
/// data/base_unet.json) on Fashion-MNIST. A 28 x 28 grey image is folded into a 4 x 14 x 14
/// "latent" (each 2 x 2 block of pixels becomes 4 channels, exactly invertible), so the UNet
/// sees SDXL's 4 input channels; a label conditioner stands in for the text encoders.
#pragma once

#include <torch/torch.h>
#include <sdxl/scheduler.hpp>
#include <sdxl/training_step.hpp>
#include <sdxl/unet.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>

#include "evidence/fashion_mnist.hpp"

namespace evidence {

/// Label slots: 0..9 are the Fashion-MNIST classes, 10 means "no label" (the unconditional
/// half of classifier-free guidance).
inline constexpr int64_t kNullLabel = 10;
/// Context tokens per label (the cross-attention sequence length).
inline constexpr int64_t kContextTokens = 4;

/// Replaces the text encoders: a learned context of kContextTokens x cross_attention_dim
/// values and a learned pooled vector per label slot (11 slots).
class LabelConditionerImpl : public torch::nn::Module {
 public:
  /// Tables for `context_width` (the UNet's cross_attention_dim) and `pooled_width`.
  LabelConditionerImpl(int64_t context_width, int64_t pooled_width);
  /// The context [N, kContextTokens, context_width] of int64 labels [N] (each in 0..10).
  torch::Tensor context(const torch::Tensor& labels);
  /// The pooled vector [N, pooled_width] of the labels.
  torch::Tensor pooled(const torch::Tensor& labels);

 private:
  int64_t context_width_;
  torch::nn::Embedding context_table_{nullptr}, pooled_table_{nullptr};
};
/// Module holder (shared pointer) of LabelConditionerImpl.
TORCH_MODULE(LabelConditioner);

/// The UNet and its label conditioner ("unet.*" and "conditioner.*" parameters).
class BaseModelImpl : public torch::nn::Module {
 public:
  /// A freshly initialised model (LibTorch's default initialisation, global generator).
  explicit BaseModelImpl(const sdxl::UNetConfig& config);

  /// What sdxl::diffusion_loss takes: the images folded to latents, the labels' context and
  /// pooled vectors, zero time ids. @param images float [N, 1, 28, 28] in [-1, 1]
  /// @param labels int64 [N] in 0..10
  sdxl::TrainBatch batch(const torch::Tensor& images, const torch::Tensor& labels);

  /// The predicted noise of latents [N, 4, 14, 14] at float timesteps [N] for labels [N].
  torch::Tensor predict_noise(const torch::Tensor& latents, const torch::Tensor& timesteps,
                              const torch::Tensor& labels);

  sdxl::UNet unet{nullptr};               ///< the UNet (LoRA targets)
  LabelConditioner conditioner{nullptr};  ///< the label tables
};
/// Module holder (shared pointer) of BaseModelImpl.
TORCH_MODULE(BaseModel);

/// Images [N, 1, 28, 28] to latents [N, 4, 14, 14] (pixel unshuffle by 2).
torch::Tensor to_latents(const torch::Tensor& images);
/// Latents [N, 4, 14, 14] back to images [N, 1, 28, 28] (pixel shuffle by 2).
torch::Tensor to_images(const torch::Tensor& latents);

/// The folder of the committed files: the configuration, base model and classifier
/// (examples/evidence/data in the source tree, or $ACLORA_EVIDENCE_DATA when set).
std::filesystem::path data_folder();

/// The UNet configuration of the base model (data/base_unet.json).
/// @throws std::runtime_error naming the file when it cannot be read.
sdxl::UNetConfig base_unet_config(const std::filesystem::path& folder = data_folder());

/// The training noise schedule: 1000 steps, linear betas from 1e-4 to 0.02 (DDPM's).
sdxl::NoiseSchedule base_schedule();

/// The base model of `file` (save_base_model's format) built from `config`.
/// @throws std::runtime_error naming the file and the tensor for anything that does not
/// match.
BaseModel load_base_model(const std::filesystem::path& file, const sdxl::UNetConfig& config);

/// Writes the model's parameters and `metadata` (the pretraining command, its seed, ...)
/// to `file` atomically. @throws std::runtime_error naming the file.
void save_base_model(const BaseModel& model, const std::filesystem::path& file,
                     const std::map<std::string, std::string>& metadata);

/// How pretrain_base_model trains.
struct Pretraining {
  int64_t steps = 5000;        ///< optimizer steps
  int64_t batch = 64;          ///< images per step
  double lr = 2e-3;            ///< AdamW's peak learning rate (linear warm-up, cosine decay)
  int64_t warmup_steps = 200;  ///< steps of the warm-up
  double label_dropout = 0.1;  ///< share of labels replaced by kNullLabel (for guidance)
  double ema_decay = 0.999;    ///< the returned weights are this exponential average
  int64_t held_out_class = 9;  ///< never trained: its label slot stays at its initial value
  uint64_t seed = 0;           ///< initialisation, data order, noise, timesteps, dropout
  /// Called every 100 steps with a line (step, mean loss, seconds) when set.
  std::function<void(const std::string&)> log;
};

/// Trains a fresh base model on `train` without the held-out class (epsilon prediction,
/// MSE, uniform timesteps over base_schedule()) and returns the averaged weights.
/// Deterministic for a given seed and thread count.
/// @throws std::invalid_argument for bad settings or an empty training set.
BaseModel pretrain_base_model(const ImageSet& train, const sdxl::UNetConfig& config,
                              const Pretraining& settings);

/// How sample_images samples.
struct Sampling {
  int steps = 20;         ///< Euler steps (trailing spacing)
  double guidance = 3.0;  ///< classifier-free guidance scale (1: none)
  uint64_t seed = 0;      ///< seeds the initial noise
  int64_t batch = 100;    ///< images per model call
};

/// Images [N, 1, 28, 28] in [-1, 1] generated for int64 labels [N] (no gradient, eval mode;
/// the model's training mode is restored); the initial noise comes from a generator seeded
/// by settings.seed.
torch::Tensor sample_images(BaseModel& model, const torch::Tensor& labels,
                            const Sampling& settings);

}  // namespace evidence
