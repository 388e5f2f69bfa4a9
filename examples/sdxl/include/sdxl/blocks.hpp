/// @file blocks.hpp
/// Building blocks shared by the SDXL UNet and VAE, named like their diffusers
/// counterparts (ResnetBlock2D, Downsample2D, Upsample2D, Attention,
/// FeedForward with GEGLU, BasicTransformerBlock, Transformer2DModel) so that
/// parameter paths equal the diffusers keys.
#pragma once

#include "sdxl/layers.hpp"

#include <functional>
#include <optional>
#include <vector>

namespace sdxl {

/// Runs fn(a, b) without keeping its intermediate activations: under grad
/// mode, the forward pass runs without recording and the backward pass runs
/// fn again (with the autocast state of the forward pass) to get gradients for
/// a, b and every parameter fn uses. Without grad mode it is just fn(a, b).
/// fn must be deterministic (no dropout) and must outlive the backward pass.
torch::Tensor checkpointed(
    const std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&)>& fn,
    const torch::Tensor& a, const torch::Tensor& b);

/// GN, SiLU, conv3x3, (+ Linear(SiLU(temb)) over H, W), GN, SiLU, conv3x3, plus
/// the input (through a 1x1 conv when the channel count changes).
class ResnetBlock2DImpl : public torch::nn::Module {
 public:
  /// @param temb_channels width of the time embedding, 0 for none (VAE)
  ResnetBlock2DImpl(int64_t in_channels, int64_t out_channels, int64_t temb_channels,
                    int64_t groups, double eps, const BuildOptions& options);
  /// @param temb [B, temb_channels], or undefined when built without it
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& temb = {});

  GroupNorm norm1{nullptr};
  Conv2d conv1{nullptr};
  Linear time_emb_proj{nullptr};
  GroupNorm norm2{nullptr};
  Conv2d conv2{nullptr};
  Conv2d conv_shortcut{nullptr};
  bool gradient_checkpointing = false;  ///< recompute in backward (see checkpointed)

 private:
  torch::Tensor compute(const torch::Tensor& x, const torch::Tensor& temb);
};
TORCH_MODULE(ResnetBlock2D);

/// conv3x3 stride 2. padding 1 (UNet) or 0 after padding right/bottom by one (VAE).
class Downsample2DImpl : public torch::nn::Module {
 public:
  Downsample2DImpl(int64_t channels, int64_t padding, const BuildOptions& options);
  torch::Tensor forward(const torch::Tensor& x);

  int64_t padding;
  Conv2d conv{nullptr};
};
TORCH_MODULE(Downsample2D);

/// Nearest-neighbour upsampling (x2, or to a given size) then conv3x3.
class Upsample2DImpl : public torch::nn::Module {
 public:
  Upsample2DImpl(int64_t channels, const BuildOptions& options);
  /// @param size output height and width; empty: twice the input's
  torch::Tensor forward(const torch::Tensor& x, std::vector<int64_t> size = {});

  Conv2d conv{nullptr};
};
TORCH_MODULE(Upsample2D);

/// Multi-head attention: to_q, to_k, to_v, to_out.0; scale 1/sqrt(head_dim), no mask.
class AttentionImpl : public torch::nn::Module {
 public:
  /// @param context_dim key/value input width (query_dim for self-attention)
  AttentionImpl(int64_t query_dim, int64_t context_dim, int64_t heads, int64_t head_dim,
                bool qkv_bias, const BuildOptions& options);
  /// @param x [B, N, query_dim]; @param context [B, M, context_dim] or undefined (self)
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context = {});

  int64_t heads;
  Linear to_q{nullptr};
  Linear to_k{nullptr};
  Linear to_v{nullptr};
  torch::nn::ModuleList to_out;  ///< [Linear(inner, query_dim), placeholder for dropout]
};
TORCH_MODULE(Attention);

/// proj: Linear(dim, 2 * inner); value * GELU(gate) with the exact (erf) GELU.
class GEGLUImpl : public torch::nn::Module {
 public:
  GEGLUImpl(int64_t dim, int64_t inner, const BuildOptions& options);
  torch::Tensor forward(const torch::Tensor& x);

  Linear proj{nullptr};
};
TORCH_MODULE(GEGLU);

/// net.0 GEGLU(dim -> 4 dim), net.1 (dropout slot), net.2 Linear(4 dim -> dim).
class FeedForwardImpl : public torch::nn::Module {
 public:
  FeedForwardImpl(int64_t dim, const BuildOptions& options);
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::ModuleList net;
  GEGLU geglu{nullptr};
  Linear out{nullptr};
};
TORCH_MODULE(FeedForward);

/// Pre-LN block: self-attention, cross-attention to the context, GEGLU MLP,
/// each added to the residual stream.
class BasicTransformerBlockImpl : public torch::nn::Module {
 public:
  BasicTransformerBlockImpl(int64_t dim, int64_t heads, int64_t head_dim, int64_t context_dim,
                            const BuildOptions& options);
  /// @param x [B, N, dim]; @param context [B, M, context_dim]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context);

  LayerNorm norm1{nullptr};
  Attention attn1{nullptr};
  LayerNorm norm2{nullptr};
  Attention attn2{nullptr};
  LayerNorm norm3{nullptr};
  FeedForward ff{nullptr};
  bool gradient_checkpointing = false;  ///< recompute in backward (see checkpointed)

 private:
  torch::Tensor compute(const torch::Tensor& x, const torch::Tensor& context);
};
TORCH_MODULE(BasicTransformerBlock);

/// GN(eps 1e-6), NCHW -> (B, HW, C), proj_in Linear, transformer blocks,
/// proj_out Linear, back to NCHW, plus the input. (Linear projection only.)
class Transformer2DImpl : public torch::nn::Module {
 public:
  Transformer2DImpl(int64_t channels, int64_t heads, int64_t depth, int64_t context_dim,
                    int64_t groups, const BuildOptions& options);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context);

  GroupNorm norm{nullptr};
  Linear proj_in{nullptr};
  torch::nn::ModuleList transformer_blocks;
  Linear proj_out{nullptr};
  std::vector<BasicTransformerBlock> blocks;  ///< typed view of transformer_blocks
};
TORCH_MODULE(Transformer2D);

}  // namespace sdxl
