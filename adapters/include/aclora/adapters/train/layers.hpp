/// @file layers.hpp
/// @brief Drop-in Linear and Conv2d with adapter slots, for models written in LibTorch C++.
///
/// Build a model with aclora::train::Linear / Conv2d where it would use torch::nn::Linear /
/// Conv2d (same parameter names "weight" and "bias", same initialisation); inject() then
/// attaches LoRAs to them at run time, with dropout, without touching their weights.
#pragma once

#include <torch/nn/init.h>
#include <torch/nn/pimpl.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdint>

#include "aclora/adapters/train/adaptable.hpp"

namespace aclora::train {

/// y = x W^T + b plus the adapters' deltas. W [out, in] and b [out] are initialised as
/// torch::nn::Linear does: U(+-1/sqrt(in)).
class LinearImpl : public AdaptableLayer {
 public:
  /// @param in_features input width  @param out_features output width
  /// @param bias whether b exists  @param options dtype and device of W and b
  LinearImpl(std::int64_t in_features, std::int64_t out_features, bool bias = true,
             const torch::TensorOptions& options = {})
      : in_features_(in_features), out_features_(out_features) {
    weight = register_parameter("weight", torch::empty({out_features, in_features}, options));
    if (bias)
      this->bias = register_parameter("bias", torch::empty({out_features}, options));
    torch::NoGradGuard no_grad;
    const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
    weight.uniform_(-bound, bound);
    if (bias)
      this->bias.uniform_(-bound, bound);
  }
  /// @param input [..., in]  @return [..., out]
  torch::Tensor forward(const torch::Tensor& input) {
    return with_adapter(input, torch::linear(input, weight, bias));
  }
  /// Linear, in -> out.
  LayerGeometry geometry() const override {
    return LayerGeometry{LayerKind::linear, in_features_, out_features_};
  }
  /// W.
  const torch::Tensor& base_weight() const override { return weight; }

  torch::Tensor weight;  ///< [out, in]
  torch::Tensor bias;    ///< [out], undefined without bias

 private:
  std::int64_t in_features_;
  std::int64_t out_features_;
};
/// Module holder of LinearImpl.
TORCH_MODULE(Linear);

/// 2-D convolution (square kernel, stride, zero padding) plus the adapters' deltas.
/// W [out, in, k, k] and b [out] are initialised as torch::nn::Conv2d does.
class Conv2dImpl : public AdaptableLayer {
 public:
  /// @param in_channels input channels  @param out_channels output channels
  /// @param kernel kernel size  @param stride stride  @param padding zero padding per side
  /// @param options dtype and device of W and b
  Conv2dImpl(std::int64_t in_channels, std::int64_t out_channels, std::int64_t kernel,
             std::int64_t stride = 1, std::int64_t padding = 0,
             const torch::TensorOptions& options = {})
      : stride_(stride), padding_(padding) {
    weight = register_parameter("weight",
                                torch::empty({out_channels, in_channels, kernel, kernel}, options));
    bias = register_parameter("bias", torch::empty({out_channels}, options));
    torch::NoGradGuard no_grad;
    const double bound = 1.0 / std::sqrt(static_cast<double>(in_channels * kernel * kernel));
    weight.uniform_(-bound, bound);
    bias.uniform_(-bound, bound);
  }
  /// @param input [B, in, H, W]  @return [B, out, H', W']
  torch::Tensor forward(const torch::Tensor& input) {
    return with_adapter(
        input, torch::conv2d(input, weight, bias, {stride_, stride_}, {padding_, padding_}));
  }
  /// Conv2d with this kernel, stride and padding.
  LayerGeometry geometry() const override { return conv2d_geometry(weight, stride_, padding_); }
  /// W.
  const torch::Tensor& base_weight() const override { return weight; }

  torch::Tensor weight;  ///< [out, in, k, k]
  torch::Tensor bias;    ///< [out]

 private:
  std::int64_t stride_;
  std::int64_t padding_;
};
/// Module holder of Conv2dImpl.
TORCH_MODULE(Conv2d);

}  // namespace aclora::train
