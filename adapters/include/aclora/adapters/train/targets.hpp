/// @file targets.hpp
/// @brief Which layers of a module tree get a LoRA: target rules and the kohya SDXL presets.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "aclora/adapters/train/adaptable.hpp"

namespace aclora::train {

/// Layer kinds a rule accepts (a bit set).
enum LayerKinds : std::uint32_t {
  linear_layers = 1u << 0,        ///< Linear
  conv_1x1_layers = 1u << 1,      ///< Conv2d with a 1x1 kernel
  conv_spatial_layers = 1u << 2,  ///< Conv2d with a larger kernel (gets the conv rank)
  conv_layers = conv_1x1_layers | conv_spatial_layers,  ///< any Conv2d
  all_layers = linear_layers | conv_layers,             ///< Linear and Conv2d
};

/// One target rule. `pattern` matches a layer's qualified name (the dotted path from the
/// root the LoRA is injected into, as named_modules() gives it):
/// - with `*` (any run of characters, dots included) or `?` (one character): a glob over
///   the whole name, e.g. "*.attentions.*" or "down_blocks.?.attentions.*.to_q";
/// - otherwise PEFT's rule: the name equals the pattern or ends with "." + pattern, so
///   "to_q" matches every "....to_q" and "mid_block.attentions.0.proj_in" that one layer.
struct TargetRule {
  std::string pattern;                  ///< glob, exact name or suffix
  std::uint32_t kinds = linear_layers;  ///< LayerKinds the rule accepts
};

/// Whether `rule` selects a layer named `name` of `geometry`.
inline bool rule_matches(const TargetRule& rule, std::string_view name,
                         const LayerGeometry& geometry);

/// The rules of one injection. Every rule must select at least one layer and no layer may be
/// selected by two rules: both are errors before any layer changes (see inject()).
struct Targets {
  std::vector<TargetRule> rules;  ///< in order; a layer's rule is reported with it

  /// Rules from plain patterns, all accepting `kinds`.
  static Targets patterns(const std::vector<std::string>& patterns,
                          std::uint32_t kinds = linear_layers) {
    Targets targets;
    for (const auto& pattern : patterns)
      targets.rules.push_back(TargetRule{pattern, kinds});
    return targets;
  }

  /// sd-scripts' SDXL UNet default: every Linear inside a Transformer2D block (722 modules on
  /// SDXL base: 70 transformer blocks x 10 linears + proj_in / proj_out of 11 blocks).
  static Targets sdxl_unet_linear() { return Targets{{{"*.attentions.*", linear_layers}}}; }

  /// Attention projections only: to_q, to_k, to_v, to_out.0 of attn1 and attn2 (560
  /// modules on SDXL base).
  static Targets sdxl_unet_attention() {
    return Targets{{{"*.attentions.*.attn?.to_?", linear_layers},
                    {"*.attentions.*.attn?.to_out.0", linear_layers}}};
  }

  /// sdxl_unet_linear() plus the layers of the resnets, downsamplers and upsamplers
  /// (sd-scripts' "conv_dim" / LyCORIS LoCon): 3x3 convolutions get the conv rank, 1x1
  /// convolutions and the resnets' time-embedding linears the main rank.
  static Targets sdxl_unet_linear_conv() {
    Targets targets = sdxl_unet_linear();
    targets.rules.push_back({"*.resnets.*", all_layers});
    targets.rules.push_back({"*.downsamplers.*", conv_layers});
    targets.rules.push_back({"*.upsamplers.*", conv_layers});
    return targets;
  }

  /// The CLIP text encoders' attention and MLP linears (q/k/v/out_proj, fc1, fc2), as
  /// sd-scripts targets them.
  static Targets clip_text_encoder() {
    return Targets{{{"*.self_attn.?_proj", linear_layers},
                    {"*.self_attn.out_proj", linear_layers},
                    {"*.mlp.fc?", linear_layers}}};
  }
};

namespace detail {

// Glob match of `text` against `pattern` ('*' any run, '?' one character), iterative with
// backtracking to the last star: linear in practice, no recursion.
inline bool glob_match(std::string_view pattern, std::string_view text) {
  std::size_t p = 0, t = 0, star = std::string_view::npos, resume = 0;
  while (t < text.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == text[t])) {
      ++p;
      ++t;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      resume = t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*')
    ++p;
  return p == pattern.size();
}

inline std::uint32_t kind_bit(const LayerGeometry& geometry) {
  if (geometry.kind == LayerKind::linear)
    return linear_layers;
  return geometry.spatial() ? conv_spatial_layers : conv_1x1_layers;
}

}  // namespace detail

inline bool rule_matches(const TargetRule& rule, std::string_view name,
                         const LayerGeometry& geometry) {
  if ((rule.kinds & detail::kind_bit(geometry)) == 0)
    return false;
  const std::string_view pattern = rule.pattern;
  if (pattern.find_first_of("*?") != std::string_view::npos)
    return detail::glob_match(pattern, name);
  if (name == pattern)
    return true;
  return name.size() > pattern.size() && name.ends_with(pattern) &&
         name[name.size() - pattern.size() - 1] == '.';
}

}  // namespace aclora::train
