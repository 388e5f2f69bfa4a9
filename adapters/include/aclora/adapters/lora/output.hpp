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

/// The dtypes a module's factors are to be stored in; the alpha tensor of a kohya file takes
/// the up factor's.
struct FactorDtypes {
  safetensors::Dtype down = safetensors::Dtype::F32;  ///< dtype of down
  safetensors::Dtype up = safetensors::Dtype::F32;    ///< dtype of up (and of alpha)

  /// Same dtypes.
  friend bool operator==(const FactorDtypes&, const FactorDtypes&) = default;
};

/// The dtypes the module's factors have now.
inline FactorDtypes factor_dtypes(const OutputModule& module) {
  return FactorDtypes{module.down.dtype, module.up.dtype};
}

/// `value` as a tensor of `dtype` holds it (what a loader reads back): rounded to F16, BF16
/// or F32 (infinite beyond their range); F64 keeps it, any other dtype is stored as F32.
inline double stored_value(double value, safetensors::Dtype dtype) {
  using safetensors::Dtype;
  const auto as_float = static_cast<float>(value);
  switch (dtype) {
    case Dtype::F16:
      return safetensors::f16_to_f32(safetensors::f32_to_f16(as_float));
    case Dtype::BF16:
      return safetensors::bf16_to_f32(safetensors::f32_to_bf16(as_float));
    case Dtype::F64:
      return value;
    default:
      return as_float;
  }
}

namespace detail {

// Replaces the tensor by its values times `factor` (in double), encoded once as `dtype`;
// leaves it as it is when nothing changes.
inline void rescale(OutputTensor& tensor, double factor, safetensors::Dtype dtype) {
  if (factor == 1.0 && tensor.dtype == dtype)
    return;
  const safetensors::TensorView view{"", tensor.dtype, tensor.shape,
                                     std::span<const std::byte>(tensor.bytes)};
  std::vector<float> values = safetensors::convert_to<float>(view);
  if (factor != 1.0) {
    for (float& value : values)
      value = static_cast<float>(static_cast<double>(value) * factor);
  }
  tensor = encode_tensor(values, dtype, tensor.shape);
}

}  // namespace detail

/// Stores the module with factors of `dtypes` and the alpha `alpha` as a tensor of
/// `alpha_dtype` holds it (stored_value; F64 keeps it exact, for formats that write alpha as
/// text), keeping dW = alpha / rank * up @ down: up is multiplied by old alpha / stored alpha.
/// Each factor is decoded and encoded once (the product formed in double, then rounded to
/// float and to the dtype), so an F16 result is rounded to F16 once, not twice; factors whose
/// dtype and scale do not change keep their bytes. The alpha tensor is rewritten in
/// `alpha_dtype` (F16, BF16, F32 or F64; any other gives F32) unless it already holds that value
/// in that dtype.
/// @throws Error when `alpha_dtype` cannot hold `alpha` (beyond its range, or 0 for a module
///         whose scale is not 0).
inline void encode_module(OutputModule& module, FactorDtypes dtypes, double alpha,
                          safetensors::Dtype alpha_dtype) {
  using safetensors::Dtype;
  const double stored = stored_value(alpha, alpha_dtype);
  if (!std::isfinite(stored) || (stored == 0.0 && module.alpha != 0.0)) {
    throw Error("module '" + module.name + "': alpha " + std::to_string(alpha) +
                " cannot be stored as " + std::string(safetensors::dtype_name(alpha_dtype)) +
                " and carry the module's scale");
  }
  const double factor = stored == module.alpha ? 1.0 : module.alpha / stored;
  detail::rescale(module.down, 1.0, dtypes.down);
  detail::rescale(module.up, factor, dtypes.up);
  const bool alpha_kept =
      module.alpha_tensor && module.alpha_tensor->dtype == alpha_dtype && factor == 1.0;
  module.alpha = stored;
  if (alpha_kept)
    return;
  if (alpha_dtype == Dtype::F64) {
    OutputTensor tensor{Dtype::F64, {}, std::vector<std::byte>(sizeof stored)};
    std::memcpy(tensor.bytes.data(), &stored, sizeof stored);
    module.alpha_tensor = std::move(tensor);
  } else {
    module.alpha_tensor =
        encode_tensor(std::vector<float>{static_cast<float>(stored)}, alpha_dtype, {});
  }
}

/// The most common alpha of `modules` (ties: the smallest); 0 when there are none.
inline double most_common_alpha(const std::vector<OutputModule>& modules) {
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
  return common;
}

/// Gives every module the same alpha A, the most common one rounded so that every up dtype of
/// `dtypes` holds it exactly, and folds the difference into up: up' = up * alpha / A, so
/// alpha' / r = A / r and dW is unchanged. Needed by loaders that apply one alpha to all
/// modules (diffusers 0.42 mis-scales kohya files whose alpha varies per module). `dtypes`:
/// what each module is to be stored as (see encode_module: one rounding per factor, the
/// alpha tensor in the up factor's dtype); empty keeps the modules' dtypes. Factors that
/// change neither dtype nor scale keep their bytes.
inline void make_alpha_uniform(std::vector<OutputModule>& modules,
                               std::span<const FactorDtypes> dtypes = {}) {
  const auto dtypes_of = [&](std::size_t i) {
    return dtypes.empty() ? factor_dtypes(modules[i]) : dtypes[i];
  };
  double common = most_common_alpha(modules);
  if (common == 0.0)
    return;  // no scale to share
  // A value BF16 holds is also held by F16 (within F16's range) and F32: round to F16
  // first, then to BF16, as the dtypes present require.
  for (const safetensors::Dtype narrow : {safetensors::Dtype::F16, safetensors::Dtype::BF16}) {
    for (std::size_t i = 0; i < modules.size(); ++i) {
      if (dtypes_of(i).up == narrow) {
        common = stored_value(common, narrow);
        break;
      }
    }
  }
  for (std::size_t i = 0; i < modules.size(); ++i)
    encode_module(modules[i], dtypes_of(i), common, dtypes_of(i).up);
}

}  // namespace aclora::lora
