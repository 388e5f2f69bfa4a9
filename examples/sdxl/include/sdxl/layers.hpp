/// @file layers.hpp
/// Leaf layers of the SDXL models (Linear, Conv2d, GroupNorm, LayerNorm) and the
/// options they are built with. Our own small modules instead of torch::nn ones:
/// they can be created on any device and dtype (including the meta device, for
/// counting parameters without memory), can skip random initialisation when a
/// checkpoint will overwrite them anyway, and Linear and Conv2d carry adapter slots
/// (aclora::train::AdaptableLayer: LoRAs trained or loaded, whose outputs are added to
/// theirs). Parameter names are "weight" and "bias", as in PyTorch, so module paths
/// equal the diffusers keys.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>
#include <aclora/adapters/train/adaptable.hpp>

#include <cstdint>
#include <memory>
#include <string>

namespace sdxl {

/// How model parameters are created.
struct BuildOptions {
  torch::Dtype dtype = torch::kFloat32;  ///< parameter dtype
  torch::Device device = torch::kCPU;    ///< torch::kMeta builds shapes only
  /// false: parameters are left uninitialised (torch::empty), for models that are
  /// about to be loaded from a checkpoint. Always false on the meta device.
  bool initialize = true;

  /// The tensor options (dtype, device) parameters are created with.
  torch::TensorOptions tensor_options() const {
    return torch::TensorOptions().dtype(dtype).device(device);
  }
  /// True when parameters get their random initial values.
  bool initializes() const { return initialize && device.type() != torch::kMeta; }
};

/// y = x W^T + b (PyTorch's Linear, default initialisation U(+-1/sqrt(in))), plus the
/// deltas of its adapters.
class LinearImpl : public aclora::train::AdaptableLayer {
 public:
  /// @param in_features input width  @param out_features output width
  /// @param with_bias whether a bias is added  @param options dtype, device, init
  LinearImpl(int64_t in_features, int64_t out_features, bool with_bias,
             const BuildOptions& options);
  /// @param input [..., in_features]  @return [..., out_features]
  torch::Tensor forward(const torch::Tensor& input);
  /// Linear, in_features -> out_features.
  aclora::train::LayerGeometry geometry() const override;
  /// weight.
  const torch::Tensor& base_weight() const override { return weight; }

  int64_t in_features;   ///< input width
  int64_t out_features;  ///< output width
  torch::Tensor weight;  ///< [out_features, in_features]
  torch::Tensor bias;    ///< [out_features], undefined without bias
};
/// Module holder (shared pointer) of LinearImpl.
TORCH_MODULE(Linear);

/// 2-D convolution with square kernel, stride and symmetric zero padding, plus the
/// deltas of its adapters.
class Conv2dImpl : public aclora::train::AdaptableLayer {
 public:
  /// @param in_channels input channels  @param out_channels output channels
  /// @param kernel kernel size  @param stride stride  @param padding zero padding per side
  /// @param options dtype, device, init
  Conv2dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride,
             int64_t padding, const BuildOptions& options);
  /// @param input [B, in_channels, H, W]  @return [B, out_channels, H', W']
  torch::Tensor forward(const torch::Tensor& input);
  /// Conv2d with this kernel, stride and padding.
  aclora::train::LayerGeometry geometry() const override;
  /// weight.
  const torch::Tensor& base_weight() const override { return weight; }

  int64_t stride;        ///< stride in both directions
  int64_t padding;       ///< zero padding on every side
  torch::Tensor weight;  ///< [out, in, kernel, kernel]
  torch::Tensor bias;    ///< [out]
};
/// Module holder (shared pointer) of Conv2dImpl.
TORCH_MODULE(Conv2d);

/// Group normalisation over NC... input with affine weight and bias.
class GroupNormImpl : public torch::nn::Module {
 public:
  /// @param groups group count (divides channels, else std::invalid_argument)
  /// @param channels channel count  @param eps variance epsilon  @param options dtype, device
  GroupNormImpl(int64_t groups, int64_t channels, double eps, const BuildOptions& options);
  /// @param input [B, channels, ...]  @return the same shape
  torch::Tensor forward(const torch::Tensor& input);

  int64_t groups;        ///< group count
  double eps;            ///< variance epsilon
  torch::Tensor weight;  ///< [channels], initially 1
  torch::Tensor bias;    ///< [channels], initially 0
};
/// Module holder (shared pointer) of GroupNormImpl.
TORCH_MODULE(GroupNorm);

/// Layer normalisation over the last dimension with affine weight and bias.
class LayerNormImpl : public torch::nn::Module {
 public:
  /// @param features width of the last dimension  @param eps variance epsilon
  /// @param options dtype, device
  LayerNormImpl(int64_t features, double eps, const BuildOptions& options);
  /// @param input [..., features]  @return the same shape
  torch::Tensor forward(const torch::Tensor& input);

  int64_t features;      ///< normalised width
  double eps;            ///< variance epsilon
  torch::Tensor weight;  ///< [features], initially 1
  torch::Tensor bias;    ///< [features], initially 0
};
/// Module holder (shared pointer) of LayerNormImpl.
TORCH_MODULE(LayerNorm);

/// A module with no parameters and no effect, holding a slot in a ModuleList
/// (diffusers keeps Dropout layers there, e.g. to_out.1 and ff.net.1).
class PlaceholderImpl : public torch::nn::Module {};
/// Module holder (shared pointer) of PlaceholderImpl.
TORCH_MODULE(Placeholder);

/// softmax(q k^T / sqrt(d)) v for q [B, H, N, d], k and v [B, H, M, d]; uses
/// scaled_dot_product_attention on LibTorch 2.x, the explicit product otherwise.
torch::Tensor dot_product_attention(const torch::Tensor& q, const torch::Tensor& k,
                                    const torch::Tensor& v);

/// Total element count of a module's parameters (works on the meta device).
int64_t count_parameters(const torch::nn::Module& module);

}  // namespace sdxl
