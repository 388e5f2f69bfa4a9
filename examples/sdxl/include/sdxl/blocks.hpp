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
/// fn again to get gradients for a, b and every parameter fn uses. Without
/// grad mode it is just fn(a, b).
///
/// The recompute runs with the forward pass's autocast state and replays its
/// random draws (dropout masks, as torch.utils.checkpoint does): the states of
/// LibTorch's default CPU generator and of the default CUDA generator of each
/// device among a and b are saved before the forward pass, set for the
/// recompute, and afterwards put back to what they were, so draws after the
/// backward pass are those of a run without checkpointing. fn must draw only
/// from those generators, otherwise be deterministic, and outlive the backward
/// pass.
torch::Tensor checkpointed(
    const std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&)>& fn,
    const torch::Tensor& a, const torch::Tensor& b);

/// GN, SiLU, conv3x3, (+ Linear(SiLU(temb)) over H, W), GN, SiLU, conv3x3, plus
/// the input (through a 1x1 conv when the channel count changes).
class ResnetBlock2DImpl : public torch::nn::Module {
 public:
  /// @param temb_channels width of the time embedding, 0 for none (VAE)
  /// @param in_channels input channels  @param out_channels output channels
  /// @param groups GroupNorm groups  @param eps GroupNorm epsilon
  /// @param options dtype, device, init
  ResnetBlock2DImpl(int64_t in_channels, int64_t out_channels, int64_t temb_channels,
                    int64_t groups, double eps, const BuildOptions& options);
  /// @param x [B, in_channels, H, W]
  /// @param temb [B, temb_channels], or undefined when built without it
  /// @return [B, out_channels, H, W]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& temb = {});

  GroupNorm norm1{nullptr};             ///< first GroupNorm (input channels)
  Conv2d conv1{nullptr};                ///< first conv3x3
  Linear time_emb_proj{nullptr};        ///< time embedding projection; null without temb
  GroupNorm norm2{nullptr};             ///< second GroupNorm
  Conv2d conv2{nullptr};                ///< second conv3x3
  Conv2d conv_shortcut{nullptr};        ///< 1x1 conv when channels change; null otherwise
  bool gradient_checkpointing = false;  ///< recompute in backward (see checkpointed)

 private:
  torch::Tensor compute(const torch::Tensor& x, const torch::Tensor& temb);
};
/// Module holder (shared pointer) of ResnetBlock2DImpl.
TORCH_MODULE(ResnetBlock2D);

/// conv3x3 stride 2. padding 1 (UNet) or 0 after padding right/bottom by one (VAE).
class Downsample2DImpl : public torch::nn::Module {
 public:
  /// @param channels channel count  @param padding 1 (UNet) or 0 (VAE, asymmetric)
  /// @param options dtype, device, init
  Downsample2DImpl(int64_t channels, int64_t padding, const BuildOptions& options);
  /// @param x [B, C, H, W]  @return [B, C, ceil(H/2), ceil(W/2)] (UNet), [B, C, H/2, W/2] (VAE)
  torch::Tensor forward(const torch::Tensor& x);

  int64_t padding;       ///< conv padding; 0 means pad right/bottom by one first
  Conv2d conv{nullptr};  ///< conv3x3 stride 2
};
/// Module holder (shared pointer) of Downsample2DImpl.
TORCH_MODULE(Downsample2D);

/// Nearest-neighbour upsampling (x2, or to a given size) then conv3x3.
class Upsample2DImpl : public torch::nn::Module {
 public:
  /// @param channels channel count  @param options dtype, device, init
  Upsample2DImpl(int64_t channels, const BuildOptions& options);
  /// @param x [B, C, H, W]
  /// @param size output height and width; empty: twice the input's
  torch::Tensor forward(const torch::Tensor& x, std::vector<int64_t> size = {});

  Conv2d conv{nullptr};  ///< conv3x3 after the upsampling
};
/// Module holder (shared pointer) of Upsample2DImpl.
TORCH_MODULE(Upsample2D);

/// Multi-head attention: to_q, to_k, to_v, to_out.0; scale 1/sqrt(head_dim), no mask.
class AttentionImpl : public torch::nn::Module {
 public:
  /// @param query_dim query input width  @param heads head count  @param head_dim head width
  /// @param context_dim key/value input width (query_dim for self-attention)
  /// @param qkv_bias whether to_q/to_k/to_v have biases  @param options dtype, device, init
  AttentionImpl(int64_t query_dim, int64_t context_dim, int64_t heads, int64_t head_dim,
                bool qkv_bias, const BuildOptions& options);
  /// @param x [B, N, query_dim]
  /// @param context [B, M, context_dim], or undefined for self-attention
  /// @return [B, N, query_dim]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context = {});

  int64_t heads;                 ///< head count
  Linear to_q{nullptr};          ///< query projection
  Linear to_k{nullptr};          ///< key projection
  Linear to_v{nullptr};          ///< value projection
  torch::nn::ModuleList to_out;  ///< [Linear(inner, query_dim), placeholder for dropout]
};
/// Module holder (shared pointer) of AttentionImpl.
TORCH_MODULE(Attention);

/// proj: Linear(dim, 2 * inner); value * GELU(gate) with the exact (erf) GELU.
class GEGLUImpl : public torch::nn::Module {
 public:
  /// @param dim input width  @param inner output width  @param options dtype, device, init
  GEGLUImpl(int64_t dim, int64_t inner, const BuildOptions& options);
  /// @param x [..., dim]  @return [..., inner]
  torch::Tensor forward(const torch::Tensor& x);

  Linear proj{nullptr};  ///< Linear(dim, 2 inner): value half, then gate half
};
/// Module holder (shared pointer) of GEGLUImpl.
TORCH_MODULE(GEGLU);

/// net.0 GEGLU(dim -> 4 dim), net.1 (dropout slot), net.2 Linear(4 dim -> dim).
class FeedForwardImpl : public torch::nn::Module {
 public:
  /// @param dim input and output width  @param options dtype, device, init
  FeedForwardImpl(int64_t dim, const BuildOptions& options);
  /// @param x [..., dim]  @return [..., dim]
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::ModuleList net;  ///< [GEGLU, placeholder, Linear]: the diffusers key layout
  GEGLU geglu{nullptr};       ///< net.0
  Linear out{nullptr};        ///< net.2
};
/// Module holder (shared pointer) of FeedForwardImpl.
TORCH_MODULE(FeedForward);

/// Pre-LN block: self-attention, cross-attention to the context, GEGLU MLP,
/// each added to the residual stream.
class BasicTransformerBlockImpl : public torch::nn::Module {
 public:
  /// @param dim width  @param heads head count  @param head_dim head width
  /// @param context_dim cross-attention context width  @param options dtype, device, init
  BasicTransformerBlockImpl(int64_t dim, int64_t heads, int64_t head_dim, int64_t context_dim,
                            const BuildOptions& options);
  /// @param x [B, N, dim]  @param context [B, M, context_dim]  @return [B, N, dim]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context);

  LayerNorm norm1{nullptr};             ///< before self-attention
  Attention attn1{nullptr};             ///< self-attention
  LayerNorm norm2{nullptr};             ///< before cross-attention
  Attention attn2{nullptr};             ///< cross-attention to the context
  LayerNorm norm3{nullptr};             ///< before the feed-forward
  FeedForward ff{nullptr};              ///< GEGLU feed-forward
  bool gradient_checkpointing = false;  ///< recompute in backward (see checkpointed)

 private:
  torch::Tensor compute(const torch::Tensor& x, const torch::Tensor& context);
};
/// Module holder (shared pointer) of BasicTransformerBlockImpl.
TORCH_MODULE(BasicTransformerBlock);

/// GN(eps 1e-6), NCHW -> (B, HW, C), proj_in Linear, transformer blocks,
/// proj_out Linear, back to NCHW, plus the input. (Linear projection only.)
class Transformer2DImpl : public torch::nn::Module {
 public:
  /// @param channels width (divisible by heads, else std::invalid_argument)
  /// @param heads head count  @param depth transformer block count
  /// @param context_dim context width  @param groups GroupNorm groups
  /// @param options dtype, device, init
  Transformer2DImpl(int64_t channels, int64_t heads, int64_t depth, int64_t context_dim,
                    int64_t groups, const BuildOptions& options);
  /// @param x [B, channels, H, W]  @param context [B, M, context_dim]  @return x's shape
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context);

  GroupNorm norm{nullptr};                    ///< input GroupNorm (eps 1e-6)
  Linear proj_in{nullptr};                    ///< Linear(channels, channels)
  torch::nn::ModuleList transformer_blocks;   ///< BasicTransformerBlock modules
  Linear proj_out{nullptr};                   ///< Linear(channels, channels)
  std::vector<BasicTransformerBlock> blocks;  ///< typed view of transformer_blocks
};
/// Module holder (shared pointer) of Transformer2DImpl.
TORCH_MODULE(Transformer2D);

}  // namespace sdxl
