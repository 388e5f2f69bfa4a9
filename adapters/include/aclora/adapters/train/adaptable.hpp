/// @file adaptable.hpp
/// @brief Layers that carry an adapter (a LoRA) whose output is added to their own.
///
/// LibTorch modules cannot be wrapped after construction: a parent calls its children
/// through its own members, so replacing a child in the module registry changes
/// nothing. A layer therefore offers a slot: it derives from AdaptableLayer and ends
/// its forward with `return with_adapter(input, output);`. aclora::train::inject fills
/// the slots; stock torch::nn::Linear / Conv2d layers are handled by reparametrising
/// their weight instead (see network.hpp).
#pragma once

#include <torch/nn/module.h>
#include <torch/types.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace aclora::train {

/// The kind of layer an adapter attaches to.
enum class LayerKind {
  linear,  ///< y = x W^T + b, W [out, in]
  conv2d,  ///< 2-D convolution, W [out, in, kh, kw]
};

/// What an adapter needs to know about its layer: kind, widths and, for convolutions,
/// the window (the LoRA's down convolution uses the same kernel, stride, padding and
/// dilation; its up convolution is 1x1).
struct LayerGeometry {
  LayerKind kind = LayerKind::linear;  ///< linear or conv2d
  std::int64_t in_features = 0;        ///< input width (conv: input channels)
  std::int64_t out_features = 0;       ///< output width (conv: output channels)
  std::int64_t kernel_h = 1;           ///< kernel height (conv)
  std::int64_t kernel_w = 1;           ///< kernel width (conv)
  std::int64_t stride_h = 1;           ///< vertical stride (conv)
  std::int64_t stride_w = 1;           ///< horizontal stride (conv)
  std::int64_t padding_h = 0;          ///< zero padding top and bottom (conv)
  std::int64_t padding_w = 0;          ///< zero padding left and right (conv)
  std::int64_t dilation_h = 1;         ///< vertical dilation (conv)
  std::int64_t dilation_w = 1;         ///< horizontal dilation (conv)

  /// Columns of the LoRA down factor seen as a matrix: in (linear) or in * kh * kw (conv).
  std::int64_t down_columns() const { return in_features * kernel_h * kernel_w; }
  /// True for a convolution with a kernel larger than 1x1 (LyCORIS' "conv rank" applies).
  bool spatial() const { return kind == LayerKind::conv2d && (kernel_h > 1 || kernel_w > 1); }
  /// "linear", "conv 1x1" or "conv 3x3" (the kernel's size), for messages and listings.
  std::string describe() const {
    if (kind == LayerKind::linear)
      return "linear";
    return "conv " + std::to_string(kernel_h) + "x" + std::to_string(kernel_w);
  }
};

/// The geometry of a square-window convolution with weight [out, in, kh, kw], the same
/// stride and zero padding in both directions, no dilation.
inline LayerGeometry conv2d_geometry(const torch::Tensor& weight, std::int64_t stride,
                                     std::int64_t padding) {
  LayerGeometry geometry;
  geometry.kind = LayerKind::conv2d;
  geometry.in_features = weight.size(1);
  geometry.out_features = weight.size(0);
  geometry.kernel_h = weight.size(2);
  geometry.kernel_w = weight.size(3);
  geometry.stride_h = geometry.stride_w = stride;
  geometry.padding_h = geometry.padding_w = padding;
  return geometry;
}

/// Something added to a layer's output: y = layer(x) + delta(x).
class LayerAdapter : public torch::nn::Module {
 public:
  /// @param input the layer's input  @return the addition to the layer's output
  virtual torch::Tensor delta(const torch::Tensor& input) = 0;
};

/// Base of layers with adapter slots. A derived layer reports its geometry and weight
/// and ends its forward with `return with_adapter(input, output);`. Adapters are summed;
/// the first is registered as the child module "adapter", later ones as "adapter_1",
/// "adapter_2"..., so their parameters appear as "<layer path>.adapter.<name>".
class AdaptableLayer : public torch::nn::Module {
 public:
  /// The layer's kind, widths and window.
  virtual LayerGeometry geometry() const = 0;
  /// The layer's own (base) weight: [out, in] or [out, in, kh, kw].
  virtual const torch::Tensor& base_weight() const = 0;

  /// Adds `adapter` (not null) after the ones already attached.
  void add_adapter(std::shared_ptr<LayerAdapter> adapter) {
    if (!adapter)
      throw std::invalid_argument("add_adapter: null adapter");
    const std::string name =
        adapters_.empty() ? std::string("adapter") : "adapter_" + std::to_string(slot_counter_);
    ++slot_counter_;
    register_module(name, adapter);
    adapters_.push_back({name, std::move(adapter)});
  }
  /// Removes `adapter` when it is attached; returns whether it was.
  bool remove_adapter(const std::shared_ptr<LayerAdapter>& adapter) {
    for (auto it = adapters_.begin(); it != adapters_.end(); ++it) {
      if (it->adapter == adapter) {
        unregister_module(it->name);
        adapters_.erase(it);
        return true;
      }
    }
    return false;
  }
  /// Removes every adapter.
  void clear_adapters() {
    for (const auto& slot : adapters_)
      unregister_module(slot.name);
    adapters_.clear();
  }
  /// The number of attached adapters.
  std::size_t adapter_count() const { return adapters_.size(); }
  /// The attached adapter at `index` (in the order they were added).
  const std::shared_ptr<LayerAdapter>& adapter(std::size_t index = 0) const {
    return adapters_.at(index).adapter;
  }

 protected:
  /// `output` plus every adapter's delta of `input` (just `output` without adapters).
  torch::Tensor with_adapter(const torch::Tensor& input, torch::Tensor output) const {
    for (const auto& slot : adapters_)
      output = output + slot.adapter->delta(input);
    return output;
  }

 private:
  struct Slot {
    std::string name;
    std::shared_ptr<LayerAdapter> adapter;
  };
  std::vector<Slot> adapters_;
  std::size_t slot_counter_ = 0;
};

/// True when a qualified parameter name lies inside an adapter slot (a path segment
/// "adapter" or "adapter_N"), i.e. belongs to an attached LoRA, not to the model.
inline bool is_adapter_parameter(std::string_view name) {
  std::size_t start = 0;
  while (start < name.size()) {
    const std::size_t end = std::min(name.find('.', start), name.size());
    const std::string_view segment = name.substr(start, end - start);
    if (segment == "adapter")
      return true;
    if (segment.size() > 8 && segment.substr(0, 8) == "adapter_" &&
        segment.find_first_not_of("0123456789", 8) == std::string_view::npos)
      return true;
    start = end + 1;
  }
  return false;
}

}  // namespace aclora::train
