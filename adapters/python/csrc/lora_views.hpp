/// @file lora_views.hpp
/// @brief LoRA factors as given from Python (PEFT / diffusers parameters) seen as the 2-D
/// matrices the Torch backend rewrites: down [R, in] or [R, in, kh, kw] as R x (in kh kw),
/// up [out, R] or [out, R, 1, 1] as out x R. The views share the parameters' storage.
#pragma once

#include <ATen/ATen.h>
#include <ATen/TensorUtils.h>

#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "aclora/error.hpp"
#include "aclora/layer.hpp"

namespace aclora::python {

/// One LoRA module as Python passes it: name, down factor, up factor.
using LoraInput = std::tuple<std::string, at::Tensor, at::Tensor>;

/// "[4, 16, 3, 3]" for a tensor's sizes.
inline std::string sizes_text(at::IntArrayRef sizes) {
  std::ostringstream text;
  text << '[';
  for (std::size_t i = 0; i < sizes.size(); ++i)
    text << (i ? ", " : "") << sizes[i];
  text << ']';
  return text.str();
}

namespace detail {

// A view of `factor` with the given sizes, or an Error naming the module and layer when the
// memory layout needs a copy (a copy would never reach the parameter).
inline at::Tensor view_as(const at::Tensor& factor, std::vector<std::int64_t> sizes,
                          const ErrorLocation& where, const char* role) {
  if (factor.dim() == 2)
    return factor;  // strided 2-D tensors are used as they are
  const auto strides =
      at::detail::computeStride(factor.sizes(), factor.strides(), at::IntArrayRef(sizes));
  if (!strides) {
    throw Error(where, std::string(role) + " factor of shape " + sizes_text(factor.sizes()) +
                           " has strides " + sizes_text(factor.strides()) +
                           " that cannot be viewed as a matrix without a copy; make the "
                           "parameter contiguous (param.data = param.data.contiguous())");
  }
  return factor.view(sizes);
}

}  // namespace detail

/// The matrix of a down factor: [R, ...] viewed as R x (product of the rest).
/// @throws Error (module and layer 0) for an undefined or 0-/1-D tensor, or an unviewable layout.
inline at::Tensor down_matrix(const at::Tensor& down, const ErrorLocation& where) {
  if (!down.defined())
    throw Error(where, "down factor is undefined (None)");
  if (down.dim() < 2) {
    throw Error(where, "down factor must be [R, in] or [R, in, kh, kw], got shape " +
                           sizes_text(down.sizes()));
  }
  if (down.layout() != c10::kStrided)
    throw Error(where, "down factor must be a dense (strided) tensor");
  const std::int64_t rank = down.size(0);
  const std::int64_t length = rank == 0 ? 0 : down.numel() / rank;
  return detail::view_as(down, {rank, length}, where, "down");
}

/// The matrix of an up factor: [out, R] or [out, R, 1, ...] viewed as out x R.
/// @throws Error (module and layer 1) for a wrong shape or an unviewable layout.
inline at::Tensor up_matrix(const at::Tensor& up, const ErrorLocation& where) {
  if (!up.defined())
    throw Error(where, "up factor is undefined (None)");
  bool trailing_ones = up.dim() >= 2;
  for (std::int64_t d = 2; d < up.dim(); ++d)
    trailing_ones = trailing_ones && up.size(d) == 1;
  if (!trailing_ones) {
    throw Error(
        where, "up factor must be [out, R] or [out, R, 1, 1], got shape " + sizes_text(up.sizes()));
  }
  if (up.layout() != c10::kStrided)
    throw Error(where, "up factor must be a dense (strided) tensor");
  return detail::view_as(up, {up.size(0), up.size(1)}, where, "up");
}

/// The modules as the Restart driver takes them (views; nothing is copied).
/// @throws Error naming module and layer for a factor that has no matrix view.
inline std::vector<Module<at::Tensor>> restart_modules(const std::vector<LoraInput>& inputs) {
  std::vector<Module<at::Tensor>> modules;
  modules.reserve(inputs.size());
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const auto& [name, down, up] = inputs[i];
    const at::Tensor down_view = down_matrix(down, ErrorLocation{name, i, 0});
    const at::Tensor up_view = up_matrix(up, ErrorLocation{name, i, 1});
    modules.push_back(Module<at::Tensor>::lora(name, down_view, up_view));
  }
  return modules;
}

}  // namespace aclora::python
