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
  VaeAttentionImpl(int64_t channels, int64_t groups, const BuildOptions& options);
  torch::Tensor forward(const torch::Tensor& x);

  GroupNorm group_norm{nullptr};
  Linear to_q{nullptr};
  Linear to_k{nullptr};
  Linear to_v{nullptr};
  torch::nn::ModuleList to_out;  ///< [Linear, placeholder for dropout]
};
TORCH_MODULE(VaeAttention);

/// One VAE level or mid block: resnets, optional attentions, optional
/// downsamplers (encoder) or upsamplers (decoder).
class VaeBlockImpl : public torch::nn::Module {
 public:
  torch::nn::ModuleList attentions;
  torch::nn::ModuleList resnets;
  torch::nn::ModuleList downsamplers;
  torch::nn::ModuleList upsamplers;

  std::vector<ResnetBlock2D> resnet_list;
  std::vector<VaeAttention> attention_list;
  Downsample2D downsampler{nullptr};
  Upsample2D upsampler{nullptr};

  /// Registers the non-empty lists; call once after filling the *_list members.
  void finish();
  /// Mid block: resnet, then (attention, resnet) pairs.
  torch::Tensor forward_mid(const torch::Tensor& x);
  /// Level: resnets, then the down- or upsampler.
  torch::Tensor forward_level(const torch::Tensor& x);
};
TORCH_MODULE(VaeBlock);

/// Images -> 2 * latent_channels moments (mean, logvar), before quant_conv.
class VaeEncoderImpl : public torch::nn::Module {
 public:
  VaeEncoderImpl(const VaeConfig& config, const BuildOptions& options);
  torch::Tensor forward(const torch::Tensor& images);

  Conv2d conv_in{nullptr};
  torch::nn::ModuleList down_blocks;
  VaeBlock mid_block{nullptr};
  GroupNorm conv_norm_out{nullptr};
  Conv2d conv_out{nullptr};
  std::vector<VaeBlock> down_list;
};
TORCH_MODULE(VaeEncoder);

/// Latents (after post_quant_conv) -> images.
class VaeDecoderImpl : public torch::nn::Module {
 public:
  VaeDecoderImpl(const VaeConfig& config, const BuildOptions& options);
  torch::Tensor forward(const torch::Tensor& latents);

  Conv2d conv_in{nullptr};
  VaeBlock mid_block{nullptr};
  torch::nn::ModuleList up_blocks;
  GroupNorm conv_norm_out{nullptr};
  Conv2d conv_out{nullptr};
  std::vector<VaeBlock> up_list;
};
TORCH_MODULE(VaeDecoder);

/// Diagonal Gaussian over unscaled latents.
struct Posterior {
  torch::Tensor mean;    ///< [B, latent_channels, h, w]
  torch::Tensor logvar;  ///< same shape, clamped to [-30, 20]

  torch::Tensor std() const { return (0.5 * logvar).exp(); }
  /// mean + std * N(0, 1) drawn from `generator` (the default one when nullopt).
  torch::Tensor sample(c10::optional<at::Generator> generator = c10::nullopt) const;
};

/// AutoencoderKL: encoder, quant_conv, post_quant_conv, decoder.
class AutoencoderKLImpl : public torch::nn::Module {
 public:
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
  torch::Tensor unscale(const torch::Tensor& scaled) const {
    return scaled / config_.scaling_factor;
  }
  const VaeConfig& config() const { return config_; }

  VaeEncoder encoder{nullptr};
  VaeDecoder decoder{nullptr};
  Conv2d quant_conv{nullptr};
  Conv2d post_quant_conv{nullptr};

 private:
  VaeConfig config_;
};
TORCH_MODULE(AutoencoderKL);

}  // namespace sdxl
