/// @file detect.hpp
/// @brief Which LoRA layout a list of tensor names follows.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "aclora/adapters/lora/model.hpp"

namespace aclora::lora {

namespace detail {

inline bool starts_with(std::string_view text, std::string_view prefix) {
  return text.substr(0, prefix.size()) == prefix;
}
inline bool ends_with(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}
inline bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

inline bool has_kohya_prefix(std::string_view key) {
  return starts_with(key, "lora_unet_") || starts_with(key, "lora_te1_") ||
         starts_with(key, "lora_te2_") || starts_with(key, "lora_te_");
}

inline bool is_lycoris_suffix(std::string_view suffix) {
  return starts_with(suffix, "hada_") || starts_with(suffix, "lokr_");
}

// The diffusers factor suffixes: (suffix, is_down).
inline constexpr std::pair<std::string_view, bool> kDiffusersFactors[] = {
    {".lora_A.weight", true},
    {".lora_B.weight", false},
    {".lora.down.weight", true},
    {".lora.up.weight", false},
    {".lora_linear_layer.down.weight", true},
    {".lora_linear_layer.up.weight", false},
};

inline bool is_diffusers_component(std::string_view key) {
  return starts_with(key, "unet.") || starts_with(key, "text_encoder.") ||
         starts_with(key, "text_encoder_2.");
}

}  // namespace detail

/// Key counts per layout, and the layout chosen.
struct Detection {
  std::size_t kohya = 0;      ///< lora_down / lora_up keys under kohya prefixes
  std::size_t lycoris = 0;    ///< hada_* / lokr_* keys under kohya prefixes
  std::size_t peft = 0;       ///< base_model.model.*.lora_A / lora_B keys
  std::size_t diffusers = 0;  ///< unet. / text_encoder(_2). factor keys
  /// The layout with the most keys (kohya when it has LoRA factors beside LyCORIS ones);
  /// empty when no key follows any layout.
  std::optional<Format> format;
};

/// Classifies tensor names. Pure; never throws.
inline Detection detect_format(const std::vector<std::string>& names) {
  Detection d;
  for (const std::string& key : names) {
    if (detail::has_kohya_prefix(key)) {
      const std::size_t dot = key.find('.');
      if (dot == std::string::npos)
        continue;
      const std::string_view suffix = std::string_view(key).substr(dot + 1);
      if (suffix == "lora_down.weight" || suffix == "lora_up.weight")
        ++d.kohya;
      else if (detail::is_lycoris_suffix(suffix))
        ++d.lycoris;
    } else if (detail::starts_with(key, "base_model.model.")) {
      if (detail::ends_with(key, ".lora_A.weight") || detail::ends_with(key, ".lora_B.weight"))
        ++d.peft;
    } else if (detail::is_diffusers_component(key)) {
      for (const auto& [suffix, is_down] : detail::kDiffusersFactors) {
        if (detail::ends_with(key, suffix)) {
          ++d.diffusers;
          break;
        }
      }
    }
  }
  const std::size_t kohya_family = d.kohya + d.lycoris;
  const std::size_t best = std::max({kohya_family, d.peft, d.diffusers});
  if (best == 0)
    return d;
  if (best == kohya_family)
    d.format = d.kohya > 0 ? Format::kohya : Format::lycoris;
  else if (best == d.peft)
    d.format = Format::peft;
  else
    d.format = Format::diffusers;
  return d;
}

}  // namespace aclora::lora
