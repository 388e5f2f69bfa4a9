/// @file lora.hpp
/// @brief LoRA files applied to the SDXL models at inference: merged into the
/// weights, or kept as run-time adapters on the Linear layers.
#pragma once

#include <aclora/adapters/lora/model.hpp>

#include <cstddef>
#include <string>
#include <vector>

#include "sdxl/layers.hpp"
#include "sdxl/text_encoder.hpp"
#include "sdxl/unet.hpp"

namespace sdxl {

/// How a LoRA reaches the model.
enum class LoraMode {
  merge,    ///< W += multiplier * (alpha / r) * up @ down, once
  runtime,  ///< Linear layers get an adapter adding multiplier * (alpha / r) * up(down(x));
            ///< conv modules, which have no adapter hook, are merged
};

/// The models a LoRA may touch; null ones are skipped (their modules count as unmatched).
struct LoraTargets {
  UNet unet{nullptr};                     ///< target of lora_unet_ / unet. modules
  ClipTextModel text_encoder{nullptr};    ///< target of lora_te1_ / text_encoder. modules
  ClipTextModel text_encoder_2{nullptr};  ///< target of lora_te2_ / text_encoder_2. modules
};

/// What applying one file did.
struct LoraApplication {
  std::size_t applied = 0;               ///< modules merged or attached
  std::size_t merged_convolutions = 0;   ///< conv modules merged in runtime mode
  std::vector<std::string> unmatched;    ///< module names with no layer in the models
  std::vector<std::string> unsupported;  ///< LyCORIS modules and unknown keys, not applied
};

/// A run-time LoRA on a Linear: delta(x) = scale * (x down^T) up^T.
class LoraAdapter : public LinearAdapter {
 public:
  /// @param down [r, in] @param up [out, r] (in the Linear's dtype and device)
  /// @param scale multiplier * alpha / r
  LoraAdapter(torch::Tensor down, torch::Tensor up, double scale);
  /// scale * (input down^T) up^T
  torch::Tensor delta(const torch::Tensor& input) override;

  torch::Tensor down;  ///< [r, in]
  torch::Tensor up;    ///< [out, r]
  double scale;        ///< multiplier * alpha / r
};

/// Applies every module of `file` with the given multiplier. Shapes are checked for all
/// modules before any weight changes.
/// @throws aclora::lora::Error naming the module when a factor's shape does not fit
/// its layer or holds NaN / Inf; nothing is modified then.
LoraApplication apply_lora(const aclora::lora::LoraFile& file, const LoraTargets& targets,
                           double multiplier, LoraMode mode);

}  // namespace sdxl
