/// @file lora_adapter.hpp
/// @brief aclora::train::LoraAdapter: the LoRA of one layer, trainable or loaded from a file.
#pragma once

#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/nn/init.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include "aclora/adapters/train/adaptable.hpp"

namespace aclora::train {

/// How the factors of a LoRA are created.
struct FactorOptions {
  torch::Dtype dtype = torch::kFloat32;  ///< factor dtype (fp32, bf16, fp16, fp64)
  /// Factor device; unset: the device of the layer's weight.
  std::optional<torch::Device> device;
  bool trainable = true;  ///< requires_grad of the factors
};

/// The LoRA of one layer: delta(x) = multiplier * (alpha / R) * up(down(dropout(x))).
///
/// Linear: down [R, in], up [out, R]. Convolution: down [R, in, kh, kw] with the layer's
/// stride, padding and dilation, up [out, R, 1, 1] (the kohya / LyCORIS layout). Fresh
/// factors are initialised as kohya and PEFT do: down Kaiming-uniform with a = sqrt(5)
/// (U(+-1/sqrt(fan_in)), drawn from LibTorch's default generator), up zero, so the
/// layer's output is unchanged until training moves up. The input is cast to the factor
/// dtype (outside autocast) and the delta back to the input's dtype.
class LoraAdapter : public LayerAdapter {
 public:
  /// Fresh factors of rank `rank` for a layer of `geometry`.
  /// @param geometry the layer's kind, widths and window  @param rank R
  /// @param alpha the kohya alpha (scale alpha / rank)  @param dropout probability in [0, 1)
  /// applied to the input in training mode  @param factors dtype and trainability
  /// @param device where the factors live
  /// @throws std::invalid_argument for rank < 1, a non-finite alpha or dropout outside [0, 1)
  LoraAdapter(const LayerGeometry& geometry, std::int64_t rank, double alpha, double dropout,
              const FactorOptions& factors, torch::Device device)
      : geometry_(geometry), rank_(rank), alpha_(alpha), dropout_(dropout) {
    validate();
    const auto options = torch::TensorOptions().dtype(factors.dtype).device(device);
    torch::Tensor down_init = torch::empty(down_shape(), options);
    {
      torch::NoGradGuard no_grad;
      torch::nn::init::kaiming_uniform_(down_init, std::sqrt(5.0));
    }
    down = register_parameter("down", down_init, factors.trainable);
    up = register_parameter("up", torch::zeros(up_shape(), options), factors.trainable);
  }

  /// Given factors (a file's): `down_factor` [R, in] or [R, in, kh, kw] (any shape with R x
  /// down_columns entries is viewed so), `up_factor` [out, R] or [out, R, 1, 1]. Not trainable
  /// unless `trainable`. @throws std::invalid_argument when the shapes do not fit the layer.
  LoraAdapter(const LayerGeometry& geometry, torch::Tensor down_factor, torch::Tensor up_factor,
              double alpha, bool trainable = false)
      : geometry_(geometry), rank_(down_factor.dim() > 0 ? down_factor.size(0) : 0), alpha_(alpha) {
    validate();
    if (down_factor.numel() != rank_ * geometry_.down_columns() ||
        up_factor.numel() != geometry_.out_features * rank_) {
      throw std::invalid_argument(
          "LoRA factors of " + std::to_string(up_factor.numel()) + " and " +
          std::to_string(down_factor.numel()) + " entries do not fit a " + geometry_.describe() +
          " layer " + std::to_string(geometry_.out_features) + " x " +
          std::to_string(geometry_.down_columns()) + " at rank " + std::to_string(rank_));
    }
    down = register_parameter("down", down_factor.reshape(down_shape()).contiguous(), trainable);
    up = register_parameter("up", up_factor.reshape(up_shape()).contiguous(), trainable);
  }

  /// multiplier * (alpha / R) * up(down(dropout(x))), in the input's dtype.
  torch::Tensor delta(const torch::Tensor& input) override {
    torch::Tensor x = input;
    if (dropout_ > 0.0 && is_training())
      x = torch::dropout(x, dropout_, /*train=*/true);
    if (x.scalar_type() != down.scalar_type() && !autocast_active(x))
      x = x.to(down.scalar_type());
    torch::Tensor out;
    if (geometry_.kind == LayerKind::linear) {
      out = torch::linear(torch::linear(x, down), up);
    } else {
      const torch::Tensor inner = torch::conv2d(
          x, down, {}, {geometry_.stride_h, geometry_.stride_w},
          {geometry_.padding_h, geometry_.padding_w}, {geometry_.dilation_h, geometry_.dilation_w});
      out = torch::conv2d(inner, up);
    }
    out = out * scale();
    return out.scalar_type() == input.scalar_type() || autocast_active(input)
               ? out
               : out.to(input.scalar_type());
  }

  /// R, the allocated rank.
  std::int64_t rank() const { return rank_; }
  /// The kohya alpha.
  double alpha() const { return alpha_; }
  /// The run-time strength (1 in training; a LoRA file's weight at inference).
  double multiplier() const { return multiplier_; }
  /// Sets the run-time strength.
  void set_multiplier(double multiplier) { multiplier_ = multiplier; }
  /// multiplier * alpha / R.
  double scale() const { return multiplier_ * alpha_ / static_cast<double>(rank_); }
  /// Dropout probability on the input (training mode only).
  double dropout() const { return dropout_; }
  /// The layer's geometry.
  const LayerGeometry& geometry() const { return geometry_; }

  /// down seen as an R x (in kh kw) matrix (a view: writes reach the parameter).
  torch::Tensor down_matrix() const { return down.view({rank_, -1}); }
  /// up seen as an out x R matrix (a view).
  torch::Tensor up_matrix() const { return up.view({geometry_.out_features, rank_}); }
  /// The update scale * up @ down, shaped like the layer's weight, in float32.
  torch::Tensor weight_delta() const {
    torch::NoGradGuard no_grad;
    const torch::Tensor product =
        torch::matmul(up_matrix().to(torch::kFloat32), down_matrix().to(torch::kFloat32));
    return (product * scale()).view(weight_shape());
  }

  torch::Tensor down;  ///< [R, in] or [R, in, kh, kw]
  torch::Tensor up;    ///< [out, R] or [out, R, 1, 1]

 private:
  // True inside an autocast region for the tensor's device (autocast then picks the
  // compute dtype itself, so neither the input nor the delta is cast here).
  static bool autocast_active(const torch::Tensor& tensor) {
    const c10::DispatchKey key =
        tensor.is_cuda() ? c10::DispatchKey::AutocastCUDA : c10::DispatchKey::AutocastCPU;
    return !c10::impl::tls_is_dispatch_key_excluded(key);
  }

  void validate() const {
    if (rank_ < 1)
      throw std::invalid_argument("LoRA rank must be >= 1, got " + std::to_string(rank_));
    if (!std::isfinite(alpha_))
      throw std::invalid_argument("LoRA alpha must be finite");
    if (!(dropout_ >= 0.0 && dropout_ < 1.0))
      throw std::invalid_argument("LoRA dropout must lie in [0, 1), got " +
                                  std::to_string(dropout_));
  }
  std::vector<std::int64_t> down_shape() const {
    if (geometry_.kind == LayerKind::linear)
      return {rank_, geometry_.in_features};
    return {rank_, geometry_.in_features, geometry_.kernel_h, geometry_.kernel_w};
  }
  std::vector<std::int64_t> up_shape() const {
    if (geometry_.kind == LayerKind::linear)
      return {geometry_.out_features, rank_};
    return {geometry_.out_features, rank_, 1, 1};
  }
  std::vector<std::int64_t> weight_shape() const {
    if (geometry_.kind == LayerKind::linear)
      return {geometry_.out_features, geometry_.in_features};
    return {geometry_.out_features, geometry_.in_features, geometry_.kernel_h, geometry_.kernel_w};
  }

  LayerGeometry geometry_;
  std::int64_t rank_ = 0;
  double alpha_ = 0.0;
  double dropout_ = 0.0;
  double multiplier_ = 1.0;
};

}  // namespace aclora::train
