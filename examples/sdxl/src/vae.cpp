// The SDXL VAE (AutoencoderKL): encoder, decoder, posterior.
#include "sdxl/vae.hpp"

#include <cmath>
#include <sstream>
#include <stdexcept>

namespace sdxl {

namespace {

constexpr double kVaeEps = 1e-6;

VaeBlock make_mid_block(int64_t channels, int64_t groups, const BuildOptions& options) {
  VaeBlock block;
  block->resnet_list.emplace_back(channels, channels, 0, groups, kVaeEps, options);
  block->attention_list.emplace_back(channels, groups, options);
  block->resnet_list.emplace_back(channels, channels, 0, groups, kVaeEps, options);
  block->finish();
  return block;
}

void check_image_input(const torch::Tensor& x, int64_t channels, const char* what) {
  if (!x.defined() || x.dim() != 4 || x.size(1) != channels) {
    std::ostringstream shape;
    if (x.defined()) {
      shape << x.sizes();
    } else {
      shape << "undefined";
    }
    throw std::invalid_argument(std::string("VAE ") + what + ": input has shape " + shape.str() +
                                ", expected [B, " + std::to_string(channels) + ", H, W]");
  }
}

}  // namespace

VaeAttentionImpl::VaeAttentionImpl(int64_t channels, int64_t groups, const BuildOptions& options) {
  group_norm = register_module("group_norm", GroupNorm(groups, channels, kVaeEps, options));
  to_q = register_module("to_q", Linear(channels, channels, true, options));
  to_k = register_module("to_k", Linear(channels, channels, true, options));
  to_v = register_module("to_v", Linear(channels, channels, true, options));
  to_out->push_back(Linear(channels, channels, true, options));
  to_out->push_back(Placeholder());
  register_module("to_out", to_out);
}

torch::Tensor VaeAttentionImpl::forward(const torch::Tensor& x) {
  const int64_t batch = x.size(0), channels = x.size(1), height = x.size(2), width = x.size(3);
  torch::Tensor h = group_norm(x).reshape({batch, channels, height * width}).transpose(1, 2);
  // One head: [B, 1, HW, C].
  torch::Tensor q = to_q(h).unsqueeze(1);
  torch::Tensor k = to_k(h).unsqueeze(1);
  torch::Tensor v = to_v(h).unsqueeze(1);
  h = dot_product_attention(q, k, v).squeeze(1);
  h = to_out[0]->as<LinearImpl>()->forward(h);
  return h.transpose(1, 2).reshape({batch, channels, height, width}) + x;
}

void VaeBlockImpl::finish() {
  for (const auto& attention : attention_list) {
    attentions->push_back(attention);
  }
  for (const auto& resnet : resnet_list) {
    resnets->push_back(resnet);
  }
  if (!attention_list.empty()) {
    register_module("attentions", attentions);
  }
  register_module("resnets", resnets);
  if (downsampler) {
    downsamplers->push_back(downsampler);
    register_module("downsamplers", downsamplers);
  }
  if (upsampler) {
    upsamplers->push_back(upsampler);
    register_module("upsamplers", upsamplers);
  }
}

torch::Tensor VaeBlockImpl::forward_mid(const torch::Tensor& x) {
  torch::Tensor h = resnet_list[0]->forward(x);
  for (std::size_t k = 0; k < attention_list.size(); ++k) {
    h = attention_list[k](h);
    h = resnet_list[k + 1]->forward(h);
  }
  return h;
}

torch::Tensor VaeBlockImpl::forward_level(const torch::Tensor& x) {
  torch::Tensor h = x;
  for (auto& resnet : resnet_list) {
    h = resnet->forward(h);
  }
  if (downsampler) {
    h = downsampler(h);
  }
  if (upsampler) {
    h = upsampler->forward(h);
  }
  return h;
}

VaeEncoderImpl::VaeEncoderImpl(const VaeConfig& config, const BuildOptions& options) {
  const auto& channels = config.block_out_channels;
  const int64_t groups = config.norm_num_groups;
  const std::size_t levels = channels.size();
  conv_in = register_module("conv_in", Conv2d(config.in_channels, channels[0], 3, 1, 1, options));
  int64_t output_channels = channels[0];
  for (std::size_t i = 0; i < levels; ++i) {
    const int64_t input_channels = output_channels;
    output_channels = channels[i];
    VaeBlock block;
    for (int64_t j = 0; j < config.layers_per_block; ++j) {
      block->resnet_list.emplace_back(j == 0 ? input_channels : output_channels, output_channels, 0,
                                      groups, kVaeEps, options);
    }
    if (i + 1 < levels) {
      block->downsampler = Downsample2D(output_channels, 0, options);
    }
    block->finish();
    down_blocks->push_back(block);
    down_list.push_back(block);
  }
  register_module("down_blocks", down_blocks);
  mid_block = register_module("mid_block", make_mid_block(channels.back(), groups, options));
  conv_norm_out =
      register_module("conv_norm_out", GroupNorm(groups, channels.back(), kVaeEps, options));
  conv_out = register_module("conv_out",
                             Conv2d(channels.back(), 2 * config.latent_channels, 3, 1, 1, options));
}

torch::Tensor VaeEncoderImpl::forward(const torch::Tensor& images) {
  torch::Tensor h = conv_in(images);
  for (auto& block : down_list) {
    h = block->forward_level(h);
  }
  h = mid_block->forward_mid(h);
  return conv_out(torch::silu(conv_norm_out(h)));
}

VaeDecoderImpl::VaeDecoderImpl(const VaeConfig& config, const BuildOptions& options) {
  const auto& channels = config.block_out_channels;
  const int64_t groups = config.norm_num_groups;
  const std::size_t levels = channels.size();
  conv_in =
      register_module("conv_in", Conv2d(config.latent_channels, channels.back(), 3, 1, 1, options));
  mid_block = register_module("mid_block", make_mid_block(channels.back(), groups, options));
  int64_t output_channels = channels.back();
  for (std::size_t i = 0; i < levels; ++i) {
    const int64_t input_channels = output_channels;
    output_channels = channels[levels - 1 - i];
    VaeBlock block;
    for (int64_t j = 0; j < config.layers_per_block + 1; ++j) {
      block->resnet_list.emplace_back(j == 0 ? input_channels : output_channels, output_channels, 0,
                                      groups, kVaeEps, options);
    }
    if (i + 1 < levels) {
      block->upsampler = Upsample2D(output_channels, options);
    }
    block->finish();
    up_blocks->push_back(block);
    up_list.push_back(block);
  }
  register_module("up_blocks", up_blocks);
  conv_norm_out =
      register_module("conv_norm_out", GroupNorm(groups, channels[0], kVaeEps, options));
  conv_out =
      register_module("conv_out", Conv2d(channels[0], config.out_channels, 3, 1, 1, options));
}

torch::Tensor VaeDecoderImpl::forward(const torch::Tensor& latents) {
  torch::Tensor h = mid_block->forward_mid(conv_in(latents));
  for (auto& block : up_list) {
    h = block->forward_level(h);
  }
  return conv_out(torch::silu(conv_norm_out(h)));
}

torch::Tensor Posterior::sample(c10::optional<at::Generator> generator) const {
  torch::Tensor noise = torch::randn(mean.sizes(), generator, mean.options());
  return mean + std() * noise;
}

AutoencoderKLImpl::AutoencoderKLImpl(const VaeConfig& config, const BuildOptions& options)
    : config_(config) {
  config_.validate();
  const int64_t moments = 2 * config_.latent_channels;
  encoder = register_module("encoder", VaeEncoder(config_, options));
  decoder = register_module("decoder", VaeDecoder(config_, options));
  quant_conv = register_module("quant_conv", Conv2d(moments, moments, 1, 1, 0, options));
  post_quant_conv =
      register_module("post_quant_conv",
                      Conv2d(config_.latent_channels, config_.latent_channels, 1, 1, 0, options));
}

Posterior AutoencoderKLImpl::encode(const torch::Tensor& images) {
  check_image_input(images, config_.in_channels, "encode");
  torch::Tensor moments = quant_conv(encoder(images));
  auto halves = moments.chunk(2, 1);
  return {halves[0], halves[1].clamp(-30.0, 20.0)};
}

torch::Tensor AutoencoderKLImpl::decode(const torch::Tensor& latents) {
  check_image_input(latents, config_.latent_channels, "decode");
  return decoder(post_quant_conv(latents));
}

}  // namespace sdxl
