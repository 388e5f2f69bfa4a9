/// @file pipeline.hpp
/// @brief Text-to-image sampling with the loaded SDXL models: prompt conditioning,
/// seeded initial noise, Euler steps with classifier-free guidance on the model's schedule,
/// VAE decoding.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "sdxl/checkpoint.hpp"
#include "sdxl/conditioning.hpp"
#include "sdxl/sampler.hpp"
#include "sdxl/scheduler.hpp"
#include "sdxl/tokenizer.hpp"

namespace sdxl {

/// Where the models and tokenizers come from, and in which precision they run.
struct PipelineOptions {
  LoadOptions load;  ///< dtype, device, fp16 variant, config folder for single files
  /// A diffusers folder holding tokenizer/ and tokenizer_2/, or a CLIP
  /// bpe_simple_vocab_16e6.txt.gz. Default: the model folder, else load.config_folder.
  std::optional<std::filesystem::path> tokenizer;
  /// The sampler's schedule. Default: scheduler_of(model, load.config_folder), i.e. the
  /// folder's scheduler/scheduler_config.json, else SDXL base's.
  std::optional<SchedulerConfig> scheduler;
};

/// One sampling request.
struct SampleOptions {
  std::string prompt;                   ///< what to draw (UTF-8)
  std::optional<std::string> negative;  ///< none: all-zero negative conditioning
  int steps = 30;                       ///< Euler steps
  double guidance = 5.0;       ///< classifier-free guidance; <= 1 runs the conditional pass only
  std::uint64_t seed = 0;      ///< the initial noise: same seed, same image
  std::int64_t height = 1024;  ///< image height in pixels
  std::int64_t width = 1024;   ///< image width in pixels
};

/// The SDXL text-to-image pipeline.
class SdxlPipeline {
 public:
  /// Loads a diffusers folder or a single-file checkpoint, the two tokenizers and the
  /// scheduler configuration.
  /// @throws WeightLoadError, TokenizerError, SchedulerConfigError or std::runtime_error
  ///         naming the file.
  static SdxlPipeline load(const std::filesystem::path& model, const PipelineOptions& options);

  /// A pipeline over already loaded parts (all four models must be present) and the
  /// sampler's schedule (default SDXL base's).
  SdxlPipeline(SdxlModels models, std::shared_ptr<const ClipTokenizer> tokenizer_1,
               std::shared_ptr<const ClipTokenizer> tokenizer_2, SchedulerConfig scheduler = {});

  /// Unit-variance initial noise [1, 4, height / f, width / f] (f = the VAE's
  /// downscale factor, 8 for SDXL), drawn on the CPU from `seed` in fp32 (so it does
  /// not depend on the device).
  /// @throws std::invalid_argument when the size is not a positive multiple of f.
  torch::Tensor initial_noise(const SampleOptions& request) const;

  /// Runs the sampler from `noise` and returns the final latents (fp32, scaled space).
  torch::Tensor sample_latents(const SampleOptions& request, const torch::Tensor& noise,
                               const StepCallback& on_step = {});

  /// Decodes scaled latents into images [B, 3, H, W] in about [-1, 1] (fp32, CPU).
  torch::Tensor decode(const torch::Tensor& latents);

  /// The models (to apply LoRAs, say).
  SdxlModels& models() { return models_; }
  /// The tokenizers and text encoders (to encode captions for training, say).
  const SdxlTextConditioner& conditioner() const { return conditioner_; }
  /// The sampler's schedule.
  const SchedulerConfig& scheduler() const { return scheduler_; }
  /// Frees the VAE and both text encoders (a trainer whose latents and text embeddings are
  /// cached needs only the UNet); sampling, decoding and encoding then throw.
  void release_vae_and_text_encoders() {
    models_.vae = AutoencoderKL(nullptr);
    models_.text_encoder = ClipTextModel(nullptr);
    models_.text_encoder_2 = ClipTextModel(nullptr);
    conditioner_.release_encoders();
  }

 private:
  SdxlModels models_;
  SdxlTextConditioner conditioner_;
  SchedulerConfig scheduler_;
};

}  // namespace sdxl
