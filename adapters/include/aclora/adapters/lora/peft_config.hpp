/// @file peft_config.hpp
/// @brief The scale of PEFT-style LoRA modules: lora_alpha, alpha_pattern, use_rslora.
#pragma once

#include <cmath>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "aclora/adapters/json/value.hpp"

namespace aclora::lora {

/// The alpha-related part of a PEFT LoraConfig (adapter_config.json, or one component of
/// diffusers' lora_adapter_metadata).
struct PeftScaleConfig {
  std::optional<double> lora_alpha;  ///< missing: alpha = r
  json::Value alpha_pattern;         ///< object: module pattern -> alpha (may be null)
  bool use_rslora = false;           ///< scale alpha / sqrt(r) instead of alpha / r

  /// Reads the fields from a JSON object (other fields ignored, wrong kinds ignored).
  static PeftScaleConfig from_json(const json::Value& config) {
    PeftScaleConfig result;
    if (const auto* alpha = config.find("lora_alpha"); alpha && alpha->is_number())
      result.lora_alpha = alpha->as_double();
    if (const auto* pattern = config.find("alpha_pattern"); pattern && pattern->is_object())
      result.alpha_pattern = *pattern;
    if (const auto* rs = config.find("use_rslora"); rs && rs->is_bool())
      result.use_rslora = rs->as_bool();
    return result;
  }

  /// The effective kohya-style alpha (scale * r) of a module at `path` with rank r.
  /// alpha_pattern keys match the whole path or a dotted suffix of it (literal patterns;
  /// PEFT's regular-expression patterns beyond that are not interpreted).
  double effective_alpha(std::string_view path, std::size_t rank) const {
    double alpha = lora_alpha ? *lora_alpha : static_cast<double>(rank);
    if (alpha_pattern.is_object()) {
      for (const auto& [pattern, value] : alpha_pattern.as_object()) {
        if (!value.is_number())
          continue;
        const bool whole = path == pattern;
        const bool suffix = path.size() > pattern.size() &&
                            path.substr(path.size() - pattern.size()) == pattern &&
                            path[path.size() - pattern.size() - 1] == '.';
        if (whole || suffix)
          alpha = value.as_double();
      }
    }
    if (use_rslora)
      return alpha * std::sqrt(static_cast<double>(rank));
    return alpha;
  }
};

}  // namespace aclora::lora
