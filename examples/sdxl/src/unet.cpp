// The SDXL UNet: time and added-condition embeddings, down / mid / up blocks
// with skip bookkeeping, output head.
#include "sdxl/unet.hpp"

#include <cmath>
#include <sstream>
#include <stdexcept>

namespace sdxl {

namespace {

std::string shape_string(const torch::Tensor& t) {
  if (!t.defined()) {
    return "undefined";
  }
  std::ostringstream out;
  out << t.sizes();
  return out.str();
}

[[noreturn]] void bad_input(const std::string& what, const torch::Tensor& t,
                            const std::string& expected) {
  throw std::invalid_argument("UNet forward: " + what + " has shape " + shape_string(t) +
                              ", expected " + expected);
}

}  // namespace

torch::Tensor timestep_embedding(const torch::Tensor& timesteps, int64_t dim, bool flip_sin_to_cos,
                                 double shift) {
  const int64_t half = dim / 2;
  auto options = torch::TensorOptions().dtype(torch::kFloat32).device(timesteps.device());
  torch::Tensor exponent =
      torch::arange(half, options) * (-std::log(10000.0) / (static_cast<double>(half) - shift));
  torch::Tensor angles = timesteps.to(torch::kFloat32).reshape({-1, 1}) * exponent.exp();
  torch::Tensor embedding = flip_sin_to_cos ? torch::cat({angles.cos(), angles.sin()}, -1)
                                            : torch::cat({angles.sin(), angles.cos()}, -1);
  if (dim % 2 == 1) {
    embedding = torch::constant_pad_nd(embedding, {0, 1}, 0);
  }
  return embedding;
}

TimestepEmbeddingImpl::TimestepEmbeddingImpl(int64_t in, int64_t out, const BuildOptions& options) {
  linear_1 = register_module("linear_1", Linear(in, out, true, options));
  linear_2 = register_module("linear_2", Linear(out, out, true, options));
}

torch::Tensor TimestepEmbeddingImpl::forward(const torch::Tensor& x) {
  return linear_2(torch::silu(linear_1(x)));
}

void UNetBlockImpl::add_resnet(ResnetBlock2D resnet) {
  resnets->push_back(resnet);
  resnet_list.push_back(std::move(resnet));
}

void UNetBlockImpl::add_attention(Transformer2D attention) {
  attentions->push_back(attention);
  attention_list.push_back(std::move(attention));
}

void UNetBlockImpl::add_downsampler(Downsample2D down) {
  downsamplers->push_back(down);
  downsampler = std::move(down);
}

void UNetBlockImpl::add_upsampler(Upsample2D up) {
  upsamplers->push_back(up);
  upsampler = std::move(up);
}

void UNetBlockImpl::finish() {
  // diffusers registers "attentions" before "resnets"; the order of
  // named_parameters() follows registration, so keep theirs.
  if (!attention_list.empty()) {
    register_module("attentions", attentions);
  }
  register_module("resnets", resnets);
  if (downsampler) {
    register_module("downsamplers", downsamplers);
  }
  if (upsampler) {
    register_module("upsamplers", upsamplers);
  }
}

UNetImpl::UNetImpl(const UNetConfig& config, const BuildOptions& options) : config_(config) {
  config_.validate();
  const auto& channels = config_.block_out_channels;
  const int64_t levels = static_cast<int64_t>(channels.size());
  const int64_t groups = config_.norm_num_groups;
  const double eps = config_.norm_eps;
  const int64_t temb = config_.time_embed_dim();
  const int64_t context_dim = config_.cross_attention_dim;

  conv_in = register_module("conv_in", Conv2d(config_.in_channels, channels[0], 3, 1, 1, options));
  time_embedding = register_module("time_embedding", TimestepEmbedding(channels[0], temb, options));
  add_embedding = register_module(
      "add_embedding",
      TimestepEmbedding(config_.projection_class_embeddings_input_dim, temb, options));

  int64_t output_channels = channels[0];
  for (int64_t i = 0; i < levels; ++i) {
    const int64_t input_channels = output_channels;
    output_channels = channels[i];
    UNetBlock block;
    for (int64_t j = 0; j < config_.layers_per_block[i]; ++j) {
      block->add_resnet(ResnetBlock2D(j == 0 ? input_channels : output_channels, output_channels,
                                      temb, groups, eps, options));
      if (config_.has_cross_attention(i)) {
        block->add_attention(Transformer2D(output_channels, config_.attention_heads[i],
                                           config_.transformer_layers_per_block[i], context_dim,
                                           groups, options));
      }
    }
    if (i + 1 < levels) {
      block->add_downsampler(Downsample2D(output_channels, 1, options));
    }
    block->finish();
    down_blocks->push_back(block);
    down_list.push_back(block);
  }
  register_module("down_blocks", down_blocks);

  const int64_t deepest = channels.back();
  mid_block = UNetBlock();
  mid_block->add_resnet(ResnetBlock2D(deepest, deepest, temb, groups, eps, options));
  mid_block->add_attention(Transformer2D(deepest, config_.attention_heads.back(),
                                         config_.transformer_layers_per_block.back(), context_dim,
                                         groups, options));
  mid_block->add_resnet(ResnetBlock2D(deepest, deepest, temb, groups, eps, options));
  mid_block->finish();
  register_module("mid_block", mid_block);

  int64_t previous_channels = deepest;
  for (int64_t i = 0; i < levels; ++i) {
    const int64_t level = levels - 1 - i;  // the down level this up block mirrors
    const int64_t out = channels[level];
    const int64_t skip_level_channels = channels[std::max<int64_t>(level - 1, 0)];
    const int64_t resnet_count = config_.layers_per_block[level] + 1;
    const bool cross = config_.up_block_types[i] == "CrossAttnUpBlock2D";
    UNetBlock block;
    for (int64_t j = 0; j < resnet_count; ++j) {
      const int64_t skip = j == resnet_count - 1 ? skip_level_channels : out;
      const int64_t in = j == 0 ? previous_channels : out;
      block->add_resnet(ResnetBlock2D(in + skip, out, temb, groups, eps, options));
      if (cross) {
        block->add_attention(Transformer2D(out, config_.attention_heads[level],
                                           config_.up_transformer_layers(i), context_dim, groups,
                                           options));
      }
    }
    if (i + 1 < levels) {
      block->add_upsampler(Upsample2D(out, options));
    }
    block->finish();
    up_blocks->push_back(block);
    up_list.push_back(block);
    previous_channels = out;
  }
  register_module("up_blocks", up_blocks);

  conv_norm_out = register_module("conv_norm_out", GroupNorm(groups, channels[0], eps, options));
  conv_out =
      register_module("conv_out", Conv2d(channels[0], config_.out_channels, 3, 1, 1, options));
}

torch::Tensor UNetImpl::forward(const torch::Tensor& sample, const torch::Tensor& timestep,
                                const torch::Tensor& context, const AddedConditions& added) {
  if (!sample.defined() || sample.dim() != 4 || sample.size(1) != config_.in_channels) {
    bad_input("sample", sample, "[B, " + std::to_string(config_.in_channels) + ", H, W]");
  }
  const int64_t batch = sample.size(0);
  if (!context.defined() || context.dim() != 3 || context.size(0) != batch ||
      context.size(2) != config_.cross_attention_dim) {
    bad_input(
        "context", context,
        "[" + std::to_string(batch) + ", M, " + std::to_string(config_.cross_attention_dim) + "]");
  }
  if (!added.text_embeds.defined() || added.text_embeds.dim() != 2 ||
      added.text_embeds.size(0) != batch || added.text_embeds.size(1) != config_.pooled_dim()) {
    bad_input("text_embeds", added.text_embeds,
              "[" + std::to_string(batch) + ", " + std::to_string(config_.pooled_dim()) + "]");
  }
  if (!added.time_ids.defined() || added.time_ids.dim() != 2 || added.time_ids.size(0) != batch ||
      added.time_ids.size(1) != 6) {
    bad_input("time_ids", added.time_ids, "[" + std::to_string(batch) + ", 6]");
  }
  if (!timestep.defined() || (timestep.numel() != 1 && timestep.numel() != batch)) {
    bad_input("timestep", timestep, "a scalar or [" + std::to_string(batch) + "]");
  }

  torch::Tensor steps = timestep.reshape({-1}).to(sample.device());
  if (steps.numel() == 1) {
    steps = steps.expand({batch});
  }
  const auto channels0 = config_.block_out_channels[0];
  torch::Tensor t_emb =
      timestep_embedding(steps, channels0, config_.flip_sin_to_cos, config_.freq_shift)
          .to(sample.scalar_type());
  torch::Tensor emb = time_embedding(t_emb);
  torch::Tensor time_embeds =
      timestep_embedding(added.time_ids.reshape({-1}), config_.addition_time_embed_dim,
                         config_.flip_sin_to_cos, config_.freq_shift)
          .reshape({batch, -1});
  torch::Tensor add_embeds =
      torch::cat({added.text_embeds, time_embeds.to(added.text_embeds.scalar_type())}, -1)
          .to(emb.scalar_type());
  emb = emb + add_embedding(add_embeds);

  torch::Tensor h = conv_in(sample);
  std::vector<torch::Tensor> skips{h};
  for (auto& block : down_list) {
    for (std::size_t j = 0; j < block->resnet_list.size(); ++j) {
      h = block->resnet_list[j](h, emb);
      if (!block->attention_list.empty()) {
        h = block->attention_list[j](h, context);
      }
      skips.push_back(h);
    }
    if (block->downsampler) {
      h = block->downsampler(h);
      skips.push_back(h);
    }
  }

  h = mid_block->resnet_list[0](h, emb);
  for (std::size_t k = 0; k < mid_block->attention_list.size(); ++k) {
    h = mid_block->attention_list[k](h, context);
    h = mid_block->resnet_list[k + 1](h, emb);
  }

  for (auto& block : up_list) {
    for (std::size_t j = 0; j < block->resnet_list.size(); ++j) {
      h = torch::cat({h, skips.back()}, 1);
      skips.pop_back();
      h = block->resnet_list[j](h, emb);
      if (!block->attention_list.empty()) {
        h = block->attention_list[j](h, context);
      }
    }
    if (block->upsampler) {
      // Upsample to the next skip's size, which also covers odd latent sizes.
      h = block->upsampler->forward(h, {skips.back().size(2), skips.back().size(3)});
    }
  }

  return conv_out(torch::silu(conv_norm_out(h)));
}

void UNetImpl::set_gradient_checkpointing(bool enabled) {
  auto set_block = [enabled](UNetBlock& block) {
    for (auto& resnet : block->resnet_list) {
      resnet->gradient_checkpointing = enabled;
    }
    for (auto& attention : block->attention_list) {
      for (auto& transformer : attention->blocks) {
        transformer->gradient_checkpointing = enabled;
      }
    }
  };
  for (auto& block : down_list) {
    set_block(block);
  }
  set_block(mid_block);
  for (auto& block : up_list) {
    set_block(block);
  }
}

}  // namespace sdxl
