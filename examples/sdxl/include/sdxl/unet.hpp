/// @file unet.hpp
/// The SDXL UNet (diffusers UNet2DConditionModel with "text_time" added
/// conditioning). Module paths equal the diffusers parameter names, so
/// named_parameters() of a UNet matches a diffusers unet/*.safetensors 1:1.
#pragma once

#include "sdxl/blocks.hpp"
#include "sdxl/config.hpp"

namespace sdxl {

/// Sinusoidal embedding of (possibly fractional) timesteps, computed in fp32:
/// frequencies exp(-ln(10000) k / (dim/2 - shift)), k < dim/2, output
/// [cos, sin] when flip_sin_to_cos (SDXL), [sin, cos] otherwise.
/// @param timesteps [N] (any shape; flattened)  @param dim embedding width
/// @param flip_sin_to_cos [cos, sin] order  @param shift frequency denominator shift
/// @return [N, dim] float32
torch::Tensor timestep_embedding(const torch::Tensor& timesteps, int64_t dim,
                                 bool flip_sin_to_cos = true, double shift = 0.0);

/// linear_1, SiLU, linear_2 (diffusers TimestepEmbedding).
class TimestepEmbeddingImpl : public torch::nn::Module {
 public:
  /// @param in input width  @param out output width  @param options dtype, device, init
  TimestepEmbeddingImpl(int64_t in, int64_t out, const BuildOptions& options);
  /// @param x [B, in]  @return [B, out]
  torch::Tensor forward(const torch::Tensor& x);

  Linear linear_1{nullptr};  ///< first Linear
  Linear linear_2{nullptr};  ///< second Linear
};
/// Module holder (shared pointer) of TimestepEmbeddingImpl.
TORCH_MODULE(TimestepEmbedding);

/// One UNet level (down, mid or up block): resnets, optional attentions
/// (Transformer2D) and optional downsamplers / upsamplers.
class UNetBlockImpl : public torch::nn::Module {
 public:
  torch::nn::ModuleList resnets;       ///< ResnetBlock2D modules
  torch::nn::ModuleList attentions;    ///< registered only when the block has attention
  torch::nn::ModuleList downsamplers;  ///< [Downsample2D] when the level downsamples
  torch::nn::ModuleList upsamplers;    ///< [Upsample2D] when the level upsamples

  std::vector<ResnetBlock2D> resnet_list;     ///< typed view of resnets
  std::vector<Transformer2D> attention_list;  ///< typed view of attentions
  Downsample2D downsampler{nullptr};          ///< downsamplers[0] or null
  Upsample2D upsampler{nullptr};              ///< upsamplers[0] or null

  /// Appends a resnet (resnets.N).
  void add_resnet(ResnetBlock2D resnet);
  /// Appends a Transformer2D (attentions.N).
  void add_attention(Transformer2D attention);
  /// Sets downsamplers.0.
  void add_downsampler(Downsample2D down);
  /// Sets upsamplers.0.
  void add_upsampler(Upsample2D up);
  /// Registers the non-empty lists; call once, after the add_* calls.
  void finish();
};
/// Module holder (shared pointer) of UNetBlockImpl.
TORCH_MODULE(UNetBlock);

/// SDXL's added conditioning.
struct AddedConditions {
  torch::Tensor text_embeds;  ///< pooled text embedding [B, pooled_dim] (1280 for SDXL)
  torch::Tensor time_ids;     ///< [B, 6]: orig h, orig w, crop top, crop left, target h, w
};

/// The UNet. Parameters are created per BuildOptions (meta device: shapes only).
class UNetImpl : public torch::nn::Module {
 public:
  /// Builds the modules for `config` (validated; std::invalid_argument when inconsistent).
  UNetImpl(const UNetConfig& config, const BuildOptions& options = {});

  /// Predicts the noise.
  /// @param sample latents [B, in_channels, H, W] (any H, W; odd sizes are handled
  ///        by upsampling to the skip tensors' sizes)
  /// @param timestep float tensor, a scalar or [B]
  /// @param context text context [B, M, cross_attention_dim]
  /// @param added pooled text embedding and time ids
  /// @return [B, out_channels, H, W] in the parameters' dtype (or autocast's)
  torch::Tensor forward(const torch::Tensor& sample, const torch::Tensor& timestep,
                        const torch::Tensor& context, const AddedConditions& added);

  /// Turns recomputation in backward on or off for every resnet and transformer block.
  void set_gradient_checkpointing(bool enabled);
  /// The configuration the UNet was built from.
  const UNetConfig& config() const { return config_; }

  Conv2d conv_in{nullptr};                    ///< conv3x3 in_channels -> block_out_channels[0]
  TimestepEmbedding time_embedding{nullptr};  ///< timestep MLP
  TimestepEmbedding add_embedding{nullptr};   ///< pooled text + time ids MLP
  torch::nn::ModuleList down_blocks;          ///< UNetBlock per level
  UNetBlock mid_block{nullptr};               ///< resnet, Transformer2D, resnet
  torch::nn::ModuleList up_blocks;            ///< UNetBlock per level, deepest first
  GroupNorm conv_norm_out{nullptr};           ///< output GroupNorm
  Conv2d conv_out{nullptr};                   ///< conv3x3 to out_channels

  std::vector<UNetBlock> down_list;  ///< typed view of down_blocks
  std::vector<UNetBlock> up_list;    ///< typed view of up_blocks

 private:
  UNetConfig config_;
};
/// Module holder (shared pointer) of UNetImpl.
TORCH_MODULE(UNet);

}  // namespace sdxl
