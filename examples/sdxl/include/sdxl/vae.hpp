/// @file vae.hpp
/// The SDXL VAE (diffusers AutoencoderKL). Module paths equal the diffusers
/// parameter names. Images are [B, 3, H, W] in [-1, 1]; H and W multiples of
/// 2^(levels-1) (8 for SDXL).
#pragma once

#include "sdxl/blocks.hpp"
#include "sdxl/config.hpp"

#include <optional>

namespace sdxl {

/// Single-head self-attention over all pixels with its own GroupNorm and a
/// residual connection (the VAE mid-block attention; scale 1/sqrt(channels)).
class VaeAttentionImpl : public torch::nn::Module {
 public:
  /// @param channels width  @param groups GroupNorm groups  @param options dtype, device, init
  VaeAttentionImpl(int64_t channels, int64_t groups, const BuildOptions& options);
  /// @param x [B, channels, H, W]  @return the same shape
  torch::Tensor forward(const torch::Tensor& x);

  GroupNorm group_norm{nullptr};  ///< GroupNorm before the projections
  Linear to_q{nullptr};           ///< query projection
  Linear to_k{nullptr};           ///< key projection
  Linear to_v{nullptr};           ///< value projection
  torch::nn::ModuleList to_out;   ///< [Linear, placeholder for dropout]
};
/// Module holder (shared pointer) of VaeAttentionImpl.
TORCH_MODULE(VaeAttention);

/// One VAE level or mid block: resnets, optional attentions, optional
/// downsamplers (encoder) or upsamplers (decoder).
class VaeBlockImpl : public torch::nn::Module {
 public:
  torch::nn::ModuleList attentions;    ///< VaeAttention modules (mid block)
  torch::nn::ModuleList resnets;       ///< ResnetBlock2D modules
  torch::nn::ModuleList downsamplers;  ///< [Downsample2D] when the level downsamples
  torch::nn::ModuleList upsamplers;    ///< [Upsample2D] when the level upsamples

  std::vector<ResnetBlock2D> resnet_list;    ///< typed view of resnets
  std::vector<VaeAttention> attention_list;  ///< typed view of attentions
  Downsample2D downsampler{nullptr};         ///< downsamplers[0] or null
  Upsample2D upsampler{nullptr};             ///< upsamplers[0] or null

  /// Registers the non-empty lists; call once after filling the *_list members.
  void finish();
  /// Mid block: resnet, then (attention, resnet) pairs.
  torch::Tensor forward_mid(const torch::Tensor& x);
  /// Level: resnets, then the down- or upsampler.
  torch::Tensor forward_level(const torch::Tensor& x);
};
/// Module holder (shared pointer) of VaeBlockImpl.
TORCH_MODULE(VaeBlock);

/// Images -> 2 * latent_channels moments (mean, logvar), before quant_conv.
class VaeEncoderImpl : public torch::nn::Module {
 public:
  /// Builds the encoder for `config`.
  VaeEncoderImpl(const VaeConfig& config, const BuildOptions& options);
  /// @param images [B, in_channels, H, W]  @return moments [B, 2 latent_channels, h, w]
  torch::Tensor forward(const torch::Tensor& images);

  Conv2d conv_in{nullptr};            ///< input conv3x3
  torch::nn::ModuleList down_blocks;  ///< VaeBlock per level
  VaeBlock mid_block{nullptr};        ///< resnet, attention, resnet
  GroupNorm conv_norm_out{nullptr};   ///< output GroupNorm
  Conv2d conv_out{nullptr};           ///< output conv3x3
  std::vector<VaeBlock> down_list;    ///< typed view of down_blocks
};
/// Module holder (shared pointer) of VaeEncoderImpl.
TORCH_MODULE(VaeEncoder);

/// Latents (after post_quant_conv) -> images.
class VaeDecoderImpl : public torch::nn::Module {
 public:
  /// Builds the decoder for `config`.
  VaeDecoderImpl(const VaeConfig& config, const BuildOptions& options);
  /// @param latents [B, latent_channels, h, w]  @return images [B, out_channels, H, W]
  torch::Tensor forward(const torch::Tensor& latents);

  Conv2d conv_in{nullptr};           ///< input conv3x3
  VaeBlock mid_block{nullptr};       ///< resnet, attention, resnet
  torch::nn::ModuleList up_blocks;   ///< VaeBlock per level, deepest first
  GroupNorm conv_norm_out{nullptr};  ///< output GroupNorm
  Conv2d conv_out{nullptr};          ///< output conv3x3
  std::vector<VaeBlock> up_list;     ///< typed view of up_blocks
};
/// Module holder (shared pointer) of VaeDecoderImpl.
TORCH_MODULE(VaeDecoder);

/// Diagonal Gaussian over unscaled latents.
struct Posterior {
  torch::Tensor mean;    ///< [B, latent_channels, h, w]
  torch::Tensor logvar;  ///< same shape, clamped to [-30, 20]

  /// exp(logvar / 2)
  torch::Tensor std() const { return (0.5 * logvar).exp(); }
  /// mean + std * N(0, 1) drawn from `generator` (the default one when nullopt).
  torch::Tensor sample(c10::optional<at::Generator> generator = c10::nullopt) const;
};

/// AutoencoderKL: encoder, quant_conv, post_quant_conv, decoder.
class AutoencoderKLImpl : public torch::nn::Module {
 public:
  /// Builds the modules for `config` (validated; std::invalid_argument when inconsistent).
  AutoencoderKLImpl(const VaeConfig& config, const BuildOptions& options = {});

  /// @param images [B, in_channels, H, W] in [-1, 1]
  Posterior encode(const torch::Tensor& images);
  /// @param latents unscaled latents [B, latent_channels, h, w]
  /// @return images [B, out_channels, 8h, 8w] (SDXL), roughly in [-1, 1]
  torch::Tensor decode(const torch::Tensor& latents);
  /// The diffusion model's latents: unscaled * scaling_factor (0.13025 for SDXL).
  torch::Tensor scale(const torch::Tensor& unscaled) const {
    return unscaled * config_.scaling_factor;
  }
  /// The inverse of scale(): diffusion latents / scaling_factor.
  torch::Tensor unscale(const torch::Tensor& scaled) const {
    return scaled / config_.scaling_factor;
  }
  /// The configuration the VAE was built from.
  const VaeConfig& config() const { return config_; }

  VaeEncoder encoder{nullptr};      ///< images -> moments
  VaeDecoder decoder{nullptr};      ///< latents -> images
  Conv2d quant_conv{nullptr};       ///< 1x1 conv on the moments
  Conv2d post_quant_conv{nullptr};  ///< 1x1 conv on the latents

 private:
  VaeConfig config_;
};
/// Module holder (shared pointer) of AutoencoderKLImpl.
TORCH_MODULE(AutoencoderKL);

}  // namespace sdxl
