/// @file sdxl_shapes.hpp
/// @brief The LoRA target linears of the SDXL base UNet (sdxl.md): the benchmark
/// workload of performance.md, shared by every benchmark and example.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace aclora::workload {

/// One family of identical LoRA targets: `count` linears of in_features -> out_features.
struct LinearFamily {
  std::string group;     ///< e.g. "1280.attn2.to_k"
  std::size_t channels;  ///< 640 or 1280: the Transformer2D width
  std::size_t in_features;
  std::size_t out_features;
  std::size_t count;
  bool attention;  ///< part of the attention-only target set
};

/// The SDXL UNet's Transformer2D linears: 722 modules (all linears) or 560 (attention only).
inline std::vector<LinearFamily> sdxl_unet_linears(bool attention_only) {
  std::vector<LinearFamily> families;
  for (std::size_t channels : {std::size_t{640}, std::size_t{1280}}) {
    const std::size_t blocks = channels == 640 ? 10 : 60;      // transformer blocks
    const std::size_t transformers = channels == 640 ? 5 : 6;  // Transformer2D (proj_in/out)
    const std::string prefix = std::to_string(channels) + ".";
    families.push_back({prefix + "attn1.qkvo", channels, channels, channels, 4 * blocks, true});
    families.push_back({prefix + "attn2.q_out", channels, channels, channels, 2 * blocks, true});
    families.push_back({prefix + "attn2.k_v", channels, 2048, channels, 2 * blocks, true});
    if (attention_only)
      continue;
    families.push_back({prefix + "ff.net.0.proj", channels, channels, 8 * channels, blocks, false});
    families.push_back({prefix + "ff.net.2", channels, 4 * channels, channels, blocks, false});
    families.push_back(
        {prefix + "proj_in_out", channels, channels, channels, 2 * transformers, false});
  }
  return families;
}

/// LoRA parameters per unit of rank: sum over modules of (in + out). 2,659,840 for all
/// linears, 1,451,520 for attention only.
inline std::size_t parameters_per_rank(const std::vector<LinearFamily>& families) {
  std::size_t total = 0;
  for (const auto& family : families)
    total += (family.in_features + family.out_features) * family.count;
  return total;
}

}  // namespace aclora::workload
