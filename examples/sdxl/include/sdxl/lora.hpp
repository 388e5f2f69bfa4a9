/// @file lora.hpp
/// @brief LoRA files applied to the SDXL models at inference: merged into the
/// weights, or attached at run time as aclora::train::LoraAdapter (the same adapters
/// training injects).
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
  runtime,  ///< each Linear / Conv2d gets an adapter adding multiplier * (alpha / r) *
            ///< up(down(x)); several files stack
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
  std::vector<std::string> unmatched;    ///< module names with no layer in the models
  std::vector<std::string> unsupported;  ///< LyCORIS modules and unknown keys, not applied
};

/// Applies every module of `file` with the given multiplier. Shapes are checked for all
/// modules before any weight changes.
/// @throws aclora::lora::Error naming the module when a factor's shape does not fit
/// its layer or holds NaN / Inf; nothing is modified then.
LoraApplication apply_lora(const aclora::lora::LoraFile& file, const LoraTargets& targets,
                           double multiplier, LoraMode mode);

}  // namespace sdxl
