/// @file config.hpp
/// Architecture configurations of the SDXL UNet and VAE: the fields of the
/// diffusers config.json files that matter, the SDXL base 1.0 values as
/// defaults, and readers for config.json. No LibTorch dependency.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace sdxl {

/// UNet2DConditionModel configuration (SDXL "text_time" conditioning only).
struct UNetConfig {
  int64_t in_channels = 4;                                  ///< input channels
  int64_t out_channels = 4;                                 ///< output channels
  std::vector<int64_t> block_out_channels{320, 640, 1280};  ///< channels per level
  /// Resnets per down block (up blocks have one more). One value per block.
  std::vector<int64_t> layers_per_block{2, 2, 2};
  /// DownBlock2D or CrossAttnDownBlock2D per level.
  std::vector<std::string> down_block_types{"DownBlock2D", "CrossAttnDownBlock2D",
                                            "CrossAttnDownBlock2D"};
  /// UpBlock2D or CrossAttnUpBlock2D per up block (deepest first).
  std::vector<std::string> up_block_types{"CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"};
  /// Attention head COUNTS per down block (diffusers' "attention_head_dim" key,
  /// or "num_attention_heads" when present).
  std::vector<int64_t> attention_heads{5, 10, 20};
  /// Transformer blocks per Transformer2D, per down block; the mid block uses the last.
  std::vector<int64_t> transformer_layers_per_block{1, 2, 10};
  /// Per up block; empty means transformer_layers_per_block reversed.
  std::vector<int64_t> reverse_transformer_layers_per_block;
  int64_t cross_attention_dim = 2048;                    ///< context width (2048 for SDXL)
  int64_t addition_time_embed_dim = 256;                 ///< sinusoid width per time id
  int64_t projection_class_embeddings_input_dim = 2816;  ///< pooled + 6 * time-id width
  int64_t norm_num_groups = 32;                          ///< GroupNorm groups
  double norm_eps = 1e-5;                                ///< resnet GroupNorm epsilon
  bool flip_sin_to_cos = true;                           ///< time sinusoid order [cos, sin]
  double freq_shift = 0.0;                               ///< time sinusoid frequency shift

  /// SDXL base 1.0 (the defaults above).
  static UNetConfig sdxl_base() { return {}; }
  /// Reads a diffusers unet/config.json; fields it lacks keep the SDXL base
  /// values. Throws std::runtime_error naming the file and the field for an
  /// unreadable file, a wrong type, or a value this implementation does not
  /// support (other conditioning, conv projection, other block types, ...).
  static UNetConfig from_json_file(const std::filesystem::path& path);
  /// Throws std::invalid_argument when the fields are inconsistent.
  void validate() const;

  /// Time embedding width: 4 x block_out_channels[0].
  int64_t time_embed_dim() const { return block_out_channels.at(0) * 4; }
  /// Pooled text embedding width implied by the projection input width.
  int64_t pooled_dim() const {
    return projection_class_embeddings_input_dim - 6 * addition_time_embed_dim;
  }
  /// Whether down level `down_block` has Transformer2D modules.
  bool has_cross_attention(std::size_t down_block) const {
    return down_block_types.at(down_block) == "CrossAttnDownBlock2D";
  }
  /// Transformer blocks per Transformer2D in up block `up_block` (0 = deepest).
  int64_t up_transformer_layers(std::size_t up_block) const;
};

/// AutoencoderKL configuration.
struct VaeConfig {
  int64_t in_channels = 3;                                      ///< input channels
  int64_t out_channels = 3;                                     ///< output channels
  int64_t latent_channels = 4;                                  ///< latent channels
  std::vector<int64_t> block_out_channels{128, 256, 512, 512};  ///< channels per level
  int64_t layers_per_block = 2;     ///< encoder resnets per block; the decoder has one more
  int64_t norm_num_groups = 32;     ///< GroupNorm groups
  double scaling_factor = 0.13025;  ///< latent scale (0.13025 for SDXL)

  /// The SDXL base VAE (the defaults above).
  static VaeConfig sdxl_base() { return {}; }
  /// Reads a diffusers vae/config.json (same rules as UNetConfig::from_json_file).
  static VaeConfig from_json_file(const std::filesystem::path& path);
  /// Throws std::invalid_argument when the fields are inconsistent.
  void validate() const;
};

}  // namespace sdxl
