/// @file conditioning.hpp
/// SDXL text conditioning: both tokenizers and text encoders turned into the
/// UNet's cross-attention context and pooled embedding, plus the six time ids.
#pragma once

#include <torch/types.h>

#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "sdxl/layers.hpp"
#include "sdxl/text_encoder.hpp"
#include "sdxl/tokenizer.hpp"

namespace sdxl {

/// Text conditioning of a batch of B prompts.
struct SdxlTextEmbeddings {
  /// [B, 77, H1 + H2]: the penultimate hidden states of encoder 1 (768) and
  /// encoder 2 (1280) concatenated on features (2048 for SDXL base).
  torch::Tensor context;
  /// [B, P]: encoder 2's projected pooled output (1280 for SDXL base).
  torch::Tensor pooled;
};

/// The two tokenizer + text encoder pairs of SDXL. encode() runs without gradients
/// (sampling, caches); encode_with_grad() records autograd history (training
/// text-encoder LoRAs). The outputs have encoder 1's dtype and device.
class SdxlTextConditioner {
 public:
  /// @throws std::invalid_argument when a part is missing, the tokenizers frame
  ///         to different lengths, a framed length exceeds its encoder's positions,
  ///         or encoder 2 has no projection.
  SdxlTextConditioner(std::shared_ptr<const ClipTokenizer> tokenizer_1, ClipTextModel encoder_1,
                      std::shared_ptr<const ClipTokenizer> tokenizer_2, ClipTextModel encoder_2);

  /// Loads tokenizer/, tokenizer_2/, text_encoder/ and text_encoder_2/ of a
  /// diffusers SDXL folder (config.json + model.safetensors, or
  /// model.fp16.safetensors when only that exists), with HF key names.
  /// @throws TokenizerError, WeightLoadError or std::runtime_error naming the file.
  static SdxlTextConditioner from_diffusers_folder(const std::filesystem::path& folder,
                                                   const BuildOptions& options = {});

  /// Encodes prompts (UTF-8). prompts_2, when given, feeds encoder 2 instead of
  /// `prompts` (diffusers' prompt_2) and must have the same count.
  /// @throws std::invalid_argument for an empty batch or mismatched counts.
  SdxlTextEmbeddings encode(const std::vector<std::string>& prompts,
                            const std::vector<std::string>& prompts_2 = {}) const;

  /// encode() with autograd history when gradients are enabled (the current grad mode
  /// decides), so that the loss reaches the encoders' trainable parameters (their LoRA
  /// factors). Runs in the current autocast state and the encoders' current training mode
  /// (LoRA dropout acts in training mode).
  /// @throws std::invalid_argument as encode().
  SdxlTextEmbeddings encode_with_grad(const std::vector<std::string>& prompts,
                                      const std::vector<std::string>& prompts_2 = {}) const;

  /// The negative (unconditional) embeddings for a batch of `batch` prompts:
  /// without negative prompts, all-zero context and pooled tensors (SDXL's
  /// force_zeros_for_empty_prompt); otherwise the encoded negatives, where an
  /// explicit "" is encoded like any prompt. One negative prompt is repeated for
  /// the whole batch; otherwise the count must equal `batch`.
  /// @throws std::invalid_argument for batch < 1 or a count mismatch.
  SdxlTextEmbeddings encode_negative(
      const std::optional<std::vector<std::string>>& negative_prompts, int64_t batch) const;

  /// Framed ids [B, 77] (int64, CPU) of tokenizer 1 or 2 (index 0 or 1).
  torch::Tensor token_ids(int index, const std::vector<std::string>& prompts) const;

  /// Tokenizer 1 or 2 (index 0 or 1). @throws std::invalid_argument otherwise.
  const ClipTokenizer& tokenizer(int index) const;
  /// Text encoder 1 or 2 (index 0 or 1). @throws std::invalid_argument otherwise.
  ClipTextModel encoder(int index) const;
  /// Drops this object's references to both text encoders (their memory is freed when no
  /// one else holds them); encode() then throws. The tokenizers stay.
  void release_encoders() { encoders_[0] = encoders_[1] = ClipTextModel(nullptr); }

 private:
  std::shared_ptr<const ClipTokenizer> tokenizers_[2];
  ClipTextModel encoders_[2]{nullptr, nullptr};
};

/// SDXL's added time ids as a float32 tensor [6]: original size, crop top-left,
/// target size, in pixels: [orig_h, orig_w, crop_top, crop_left, target_h, target_w].
/// @throws std::invalid_argument for negative values or non-positive sizes.
torch::Tensor sdxl_time_ids(int64_t original_height, int64_t original_width, int64_t crop_top,
                            int64_t crop_left, int64_t target_height, int64_t target_width);

}  // namespace sdxl
