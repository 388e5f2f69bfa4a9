/// @file matrix.hpp
/// @brief What the Torch backend accepts as a matrix, and how layers are grouped.
///
/// A matrix is a 2-D torch::Tensor that shares storage with the user's parameter:
/// the parameter itself (a LoRA linear factor) or a view of it (a conv factor:
/// `down.view({R, -1})`, `up.view({out, R})`). RESTART writes through the view with
/// copy_, so the parameter object, its data pointer, its autograd identity and the
/// optimizer's references stay valid. A reshape that had to copy (reshape() of a
/// non-viewable layout) is NOT a view: writes to it never reach the parameter.
#pragma once

#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>
#include <c10/core/InferenceMode.h>

#include <compare>
#include <cstddef>
#include <cstdint>
#include <string>

#include "aclora/layer.hpp"
#include "aclora/memory.hpp"

namespace aclora::backends::libtorch {

/// True for the storage types the backend processes: float32, float64, float16, bfloat16.
inline bool supported_dtype(c10::ScalarType type) {
  return type == c10::ScalarType::Float || type == c10::ScalarType::Double ||
         type == c10::ScalarType::Half || type == c10::ScalarType::BFloat16;
}

/// Empty when the backend can process `matrix`, else the reason. Everything RESTART needs
/// of a matrix is checked here, so that nothing fails in the write.
inline std::string check_matrix(const at::Tensor& matrix) {
  if (!matrix.defined())
    return "undefined tensor";
  if (matrix.layout() != c10::kStrided || matrix.is_sparse())
    return "tensor layout must be strided (dense); sparse and other layouts are not supported";
  if (matrix.dim() != 2) {
    return "expected a 2-D tensor, got " + std::to_string(matrix.dim()) +
           "-D (view conv factors as 2-D: down.view({R, -1}), up.view({out, R}))";
  }
  if (!supported_dtype(matrix.scalar_type())) {
    return std::string("unsupported dtype ") + c10::toString(matrix.scalar_type()) +
           " (expected float32, float64, float16 or bfloat16)";
  }
  const c10::DeviceType device = matrix.device().type();
  if (device == c10::DeviceType::Meta)
    return "tensor on the meta device has no data";
  if (device == c10::DeviceType::MPS)
    return "MPS tensors are not supported (the analysis needs float64)";
  if (matrix.is_neg())
    return "tensor is a negative view (its negative bit is set); pass resolve_neg() of it";
  if (matrix._is_zerotensor())
    return "tensor is a zero tensor without memory; it cannot be written";
  if (matrix.is_inference() && !c10::InferenceMode::is_enabled()) {
    return "tensor was created in InferenceMode; LibTorch allows writing it in place only "
           "inside InferenceMode (run RESTART there, or pass a normal tensor)";
  }
  if (matrix.numel() > 0 && !matrix.unsafeGetTensorImpl()->has_storage())
    return "tensor has no storage (a wrapper or lazy tensor); pass a materialised tensor";
  if (matrix.numel() > 0 && at::has_internal_overlap(matrix) == at::MemOverlap::Yes)
    return "tensor has overlapping entries (an expanded / broadcast view cannot be written)";
  return {};
}

/// Where the tensor's entries lie, for the driver's check that no two layers share memory:
/// address space 0 for the CPU, one per other device; the data pointer (storage offset
/// included), element size and strides.
inline MemoryRegion memory_region(const at::Tensor& matrix) {
  const at::Device device = matrix.device();
  const std::uintptr_t space =
      device.is_cpu()
          ? 0
          : ((static_cast<std::uintptr_t>(static_cast<std::uint16_t>(device.type())) << 16) |
             static_cast<std::uint16_t>(device.index())) +
                1;
  return MemoryRegion{space,
                      reinterpret_cast<std::uintptr_t>(matrix.data_ptr()),
                      static_cast<std::size_t>(matrix.element_size()),
                      static_cast<std::size_t>(matrix.size(0)),
                      static_cast<std::size_t>(matrix.size(1)),
                      static_cast<std::ptrdiff_t>(matrix.stride(0)),
                      static_cast<std::ptrdiff_t>(matrix.stride(1))};
}

/// Rows and columns of a 2-D tensor.
inline MatrixShape matrix_shape(const at::Tensor& matrix) {
  return MatrixShape{static_cast<std::size_t>(matrix.size(0)),
                     static_cast<std::size_t>(matrix.size(1))};
}

/// The layer seen as R x n (rank axis first): the tensor itself or its transpose (a view).
inline at::Tensor rank_major(const at::Tensor& matrix, RankAxis axis) {
  return axis == RankAxis::rows ? matrix : matrix.t();
}

/// Layers that are processed together in one batch: same rank-major shape R x n, same
/// storage dtype, same device.
struct GroupKey {
  std::int64_t rank = 0;          ///< R
  std::int64_t length = 0;        ///< n
  std::int32_t dtype = 0;         ///< c10::ScalarType
  std::int32_t device_type = 0;   ///< c10::DeviceType
  std::int32_t device_index = 0;  ///< c10::DeviceIndex (-1: the current device)

  /// The key of a layer.
  static GroupKey of(const at::Tensor& matrix, RankAxis axis) {
    const at::Tensor view = rank_major(matrix, axis);
    return GroupKey{view.size(0), view.size(1), static_cast<std::int32_t>(matrix.scalar_type()),
                    static_cast<std::int32_t>(matrix.device().type()),
                    static_cast<std::int32_t>(matrix.device().index())};
  }
  /// Member-wise ordering, so keys can index a std::map.
  auto operator<=>(const GroupKey&) const = default;
};

}  // namespace aclora::backends::libtorch
