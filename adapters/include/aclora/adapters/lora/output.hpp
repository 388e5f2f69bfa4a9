/// @file output.hpp
/// @brief Modules to be written: unchanged factors (bytes copied as stored) or new ones.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "aclora/adapters/lora/model.hpp"
#include "aclora/adapters/safetensors/convert.hpp"
#include "aclora/adapters/safetensors/dtype.hpp"
#include "aclora/adapters/safetensors/half.hpp"

namespace aclora::lora {

/// One tensor to write: dtype, shape and little-endian bytes.
struct OutputTensor {
  safetensors::Dtype dtype = safetensors::Dtype::F32;  ///< element type
  std::vector<std::int64_t> shape;                     ///< dimensions, outermost first
  std::vector<std::byte> bytes;                        ///< little-endian data
};

/// One module to write.
struct OutputModule {
  std::string name;                          ///< kohya name
  Component component = Component::unet;     ///< the model it adapts
  std::string path;                          ///< diffusers-tree path
  ModuleKind kind = ModuleKind::linear;      ///< linear or conv
  OutputTensor down;                         ///< [r, in] or [r, in, kh, kw]
  OutputTensor up;                           ///< [out, r] or [out, r, 1, 1]
  double alpha = 0.0;                        ///< effective alpha: dW = alpha / rank * up @ down
  std::size_t rank = 0;                      ///< r
  std::optional<OutputTensor> alpha_tensor;  ///< the source's alpha bytes, kept when unchanged

  /// alpha / rank.
  double scale() const { return alpha / static_cast<double>(rank); }
};

/// A copy of a tensor's stored bytes.
inline OutputTensor copy_tensor(const safetensors::TensorView& view) {
  return OutputTensor{view.dtype, view.shape,
                      std::vector<std::byte>(view.bytes.begin(), view.bytes.end())};
}

/// float values encoded as `dtype` (F32, F64, F16 or BF16; any other dtype gives F32).
inline OutputTensor encode_tensor(std::span<const float> values, safetensors::Dtype dtype,
                                  std::vector<std::int64_t> shape) {
  using safetensors::Dtype;
  OutputTensor out;
  out.shape = std::move(shape);
  switch (dtype) {
    case Dtype::F16:
    case Dtype::BF16: {
      out.dtype = dtype;
      out.bytes.resize(values.size() * 2);
      for (std::size_t i = 0; i < values.size(); ++i) {
        const std::uint16_t bits = dtype == Dtype::F16 ? safetensors::f32_to_f16(values[i])
                                                       : safetensors::f32_to_bf16(values[i]);
        std::memcpy(out.bytes.data() + 2 * i, &bits, 2);
      }
      break;
    }
    case Dtype::F64: {
      out.dtype = dtype;
      out.bytes.resize(values.size() * 8);
      for (std::size_t i = 0; i < values.size(); ++i) {
        const double value = values[i];
        std::memcpy(out.bytes.data() + 8 * i, &value, 8);
      }
      break;
    }
    default:
      out.dtype = Dtype::F32;
      out.bytes.resize(values.size() * 4);
      std::memcpy(out.bytes.data(), values.data(), values.size() * 4);
      break;
  }
  return out;
}

/// The module as stored, bytes unchanged.
inline OutputModule unchanged_module(const LoraModule& module) {
  OutputModule out;
  out.name = module.name;
  out.component = module.component;
  out.path = module.path;
  out.kind = module.kind;
  out.down = copy_tensor(module.down);
  out.up = copy_tensor(module.up);
  out.alpha = module.alpha;
  out.rank = module.rank;
  if (module.alpha_tensor)
    out.alpha_tensor = copy_tensor(*module.alpha_tensor);
  return out;
}

/// The module with new factors of rank K: up (out x K) and down (K x in), row-major float,
/// stored as `dtype` (F32 keeps the refactoring exact to float precision);
/// alpha' = alpha * K / r so that alpha' / K = alpha / r.
inline OutputModule refactored_module(const LoraModule& module, std::size_t rank,
                                      std::span<const float> up, std::span<const float> down,
                                      safetensors::Dtype dtype = safetensors::Dtype::F32) {
  OutputModule out;
  out.name = module.name;
  out.component = module.component;
  out.path = module.path;
  out.kind = module.kind;
  const auto k = static_cast<std::int64_t>(rank);
  std::vector<std::int64_t> down_shape = module.down.shape;
  std::vector<std::int64_t> up_shape = module.up.shape;
  down_shape[0] = k;
  up_shape[1] = k;
  out.down = encode_tensor(down, dtype, std::move(down_shape));
  out.up = encode_tensor(up, dtype, std::move(up_shape));
  out.rank = rank;
  out.alpha = module.alpha * static_cast<double>(rank) / static_cast<double>(module.rank);
  return out;
}

/// Gives every module the same alpha (the most common one, A) and folds the difference
/// into up: up' = up * alpha / A, so alpha' / r = A / r and dW is unchanged. Needed by
/// loaders that apply one alpha to all modules (diffusers 0.42 mis-scales kohya files whose
/// alpha varies per module). Changes the bytes of the rescaled up factors only.
inline void make_alpha_uniform(std::vector<OutputModule>& modules) {
  std::map<double, std::size_t> counts;
  for (const auto& module : modules)
    ++counts[module.alpha];
  double common = 0.0;
  std::size_t best = 0;
  for (const auto& [alpha, count] : counts) {
    if (count > best) {
      common = alpha;
      best = count;
    }
  }
  if (common == 0.0)
    return;  // no scale to share
  for (auto& module : modules) {
    if (module.alpha == common)
      continue;
    const double factor = module.alpha / common;
    safetensors::TensorView view{"", module.up.dtype, module.up.shape,
                                 std::span<const std::byte>(module.up.bytes)};
    std::vector<float> values = safetensors::convert_to<float>(view);
    for (float& value : values)
      value = static_cast<float>(value * factor);
    module.up = encode_tensor(values, module.up.dtype, module.up.shape);
    module.alpha = common;
    module.alpha_tensor.reset();
  }
}

}  // namespace aclora::lora
