/// @file module_builder.hpp
/// @brief Validating one module's factors (shapes, rank, alpha) into a LoraModule.
#pragma once

#include <cmath>
#include <cstddef>
#include <optional>
#include <string>
#include <utility>

#include "aclora/adapters/lora/model.hpp"
#include "aclora/adapters/safetensors/convert.hpp"
#include "aclora/adapters/safetensors/shape.hpp"

namespace aclora::lora {

namespace detail {

inline std::string shape_text(const safetensors::TensorView& view) {
  return safetensors::shape_to_string(view.shape);
}

}  // namespace detail

/// The value of a scalar alpha tensor ([] or [1], any float or integer dtype).
/// @throws Error naming `where` when it is not a scalar or not finite.
inline double read_alpha(const safetensors::TensorView& view, const std::string& where) {
  if (view.numel() != 1 || view.shape.size() > 1) {
    throw Error(where + ": alpha '" + view.name + "' has shape " + detail::shape_text(view) +
                ", expected a scalar");
  }
  const double alpha = safetensors::convert_to<double>(view)[0];
  if (!std::isfinite(alpha))
    throw Error(where + ": alpha '" + view.name + "' is not finite");
  return alpha;
}

/// Builds a LoraModule from its factors; alpha = rank when `alpha` is empty.
/// @throws Error naming `where` and the module for non-float factors, shapes that do not
/// chain (up [out, r(, 1, 1)], down [r, in(, kh, kw)]), or rank 0.
inline LoraModule make_module(const std::string& where, std::string name, Component component,
                              std::string path, std::string source,
                              const safetensors::TensorView& down,
                              const safetensors::TensorView& up,
                              std::optional<safetensors::TensorView> alpha_tensor,
                              std::optional<double> alpha) {
  const std::string at = where + ": module '" + source + "'";
  if (!safetensors::is_floating(down.dtype) || !safetensors::is_floating(up.dtype)) {
    throw Error(at + ": factors must be floating point (down " +
                std::string(safetensors::dtype_name(down.dtype)) + ", up " +
                std::string(safetensors::dtype_name(up.dtype)) + ")");
  }
  const bool linear = down.shape.size() == 2 && up.shape.size() == 2;
  const bool conv = down.shape.size() == 4 && up.shape.size() == 4;
  if (!linear && !conv) {
    throw Error(at + ": down " + detail::shape_text(down) + " and up " + detail::shape_text(up) +
                " are neither both 2-D (linear) nor both 4-D (conv)");
  }
  if (conv && (up.shape[2] != 1 || up.shape[3] != 1)) {
    throw Error(at + ": conv up " + detail::shape_text(up) + " is not [out, r, 1, 1]");
  }
  if (down.shape[0] != up.shape[1]) {
    throw Error(at + ": down " + detail::shape_text(down) + " and up " + detail::shape_text(up) +
                " disagree on the rank");
  }
  if (down.shape[0] <= 0 || up.shape[0] <= 0 || down.numel() == 0) {
    throw Error(at + ": empty factor (down " + detail::shape_text(down) + ", up " +
                detail::shape_text(up) + ")");
  }
  LoraModule module;
  module.name = std::move(name);
  module.component = component;
  module.path = std::move(path);
  module.source = std::move(source);
  module.kind = conv ? ModuleKind::conv : ModuleKind::linear;
  module.down = down;
  module.up = up;
  module.rank = static_cast<std::size_t>(down.shape[0]);
  module.in_features = static_cast<std::size_t>(down.numel()) / module.rank;
  module.out_features = static_cast<std::size_t>(up.shape[0]);
  module.alpha_tensor = std::move(alpha_tensor);
  module.alpha = alpha ? *alpha : static_cast<double>(module.rank);
  if (!std::isfinite(module.alpha))
    throw Error(at + ": alpha is not finite");
  return module;
}

}  // namespace aclora::lora
