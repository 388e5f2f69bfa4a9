/// @file layers.hpp
/// Leaf layers of the SDXL models (Linear, Conv2d, GroupNorm, LayerNorm) and the
/// options they are built with. Our own small modules instead of torch::nn ones:
/// they can be created on any device and dtype (including the meta device, for
/// counting parameters without memory), can skip random initialisation when a
/// checkpoint will overwrite them anyway, and a Linear can carry an adapter
/// (LoRA) whose output is added to its own. Parameter names are "weight" and
/// "bias", as in PyTorch, so module paths equal the diffusers keys.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

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

  torch::TensorOptions tensor_options() const {
    return torch::TensorOptions().dtype(dtype).device(device);
  }
  bool initializes() const { return initialize && device.type() != torch::kMeta; }
};

/// Something added to a Linear's output: y = W x + b + adapter.delta(x).
/// A LoRA implementation derives from it; its parameters appear under
/// "<linear path>.adapter.".
class LinearAdapter : public torch::nn::Module {
 public:
  /// @param input the Linear's input [..., in_features]
  /// @return the addition to the Linear's output [..., out_features]
  virtual torch::Tensor delta(const torch::Tensor& input) = 0;
};

/// y = x W^T + b (PyTorch's Linear, default initialisation U(+-1/sqrt(in))).
class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, bool with_bias,
             const BuildOptions& options);
  torch::Tensor forward(const torch::Tensor& input);

  /// Attaches (or, with nullptr, removes) the adapter whose delta is added to
  /// the output. The adapter is registered as the child module "adapter".
  void set_adapter(std::shared_ptr<LinearAdapter> adapter);
  const std::shared_ptr<LinearAdapter>& adapter() const { return adapter_; }

  int64_t in_features;
  int64_t out_features;
  torch::Tensor weight;  ///< [out_features, in_features]
  torch::Tensor bias;    ///< [out_features], undefined without bias

 private:
  std::shared_ptr<LinearAdapter> adapter_;
};
TORCH_MODULE(Linear);

/// 2-D convolution with square kernel, stride and symmetric zero padding.
class Conv2dImpl : public torch::nn::Module {
 public:
  Conv2dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride,
             int64_t padding, const BuildOptions& options);
  torch::Tensor forward(const torch::Tensor& input);

  int64_t stride;
  int64_t padding;
  torch::Tensor weight;  ///< [out, in, kernel, kernel]
  torch::Tensor bias;    ///< [out]
};
TORCH_MODULE(Conv2d);

/// Group normalisation over NC... input with affine weight and bias.
class GroupNormImpl : public torch::nn::Module {
 public:
  GroupNormImpl(int64_t groups, int64_t channels, double eps, const BuildOptions& options);
  torch::Tensor forward(const torch::Tensor& input);

  int64_t groups;
  double eps;
  torch::Tensor weight;
  torch::Tensor bias;
};
TORCH_MODULE(GroupNorm);

/// Layer normalisation over the last dimension with affine weight and bias.
class LayerNormImpl : public torch::nn::Module {
 public:
  LayerNormImpl(int64_t features, double eps, const BuildOptions& options);
  torch::Tensor forward(const torch::Tensor& input);

  int64_t features;
  double eps;
  torch::Tensor weight;
  torch::Tensor bias;
};
TORCH_MODULE(LayerNorm);

/// A module with no parameters and no effect, holding a slot in a ModuleList
/// (diffusers keeps Dropout layers there, e.g. to_out.1 and ff.net.1).
class PlaceholderImpl : public torch::nn::Module {};
TORCH_MODULE(Placeholder);

/// softmax(q k^T / sqrt(d)) v for q [B, H, N, d], k and v [B, H, M, d]; uses
/// scaled_dot_product_attention on LibTorch 2.x, the explicit product otherwise.
torch::Tensor dot_product_attention(const torch::Tensor& q, const torch::Tensor& k,
                                    const torch::Tensor& v);

/// Total element count of a module's parameters (works on the meta device).
int64_t count_parameters(const torch::nn::Module& module);

}  // namespace sdxl
