/// @file matrix.cuh
/// @brief aclora::backends::cuda::DeviceMatrix: a view of one matrix in device memory
/// (raw pointer, shape, element strides, storage type), and its validation.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "aclora/backends/cuda/plan.hpp"

namespace aclora::backends::cuda {

/// A writable rows x cols matrix in device memory: entry (i, j) at
/// data[i * row_stride + j * col_stride] (strides in elements), stored as fp32, fp16 or
/// bf16. RESTART reads and writes it in place; the view must not overlap itself.
class DeviceMatrix {
 public:
  DeviceMatrix() = default;

  /// View of untyped device memory holding `dtype` entries (e.g. a tensor's data_ptr).
  DeviceMatrix(void* data, DType dtype, std::int64_t rows, std::int64_t cols,
               std::int64_t row_stride, std::int64_t col_stride)
      : data_(data),
        dtype_(dtype),
        rows_(rows),
        cols_(cols),
        row_stride_(row_stride),
        col_stride_(col_stride) {}

  /// View of typed device memory (float, __half or __nv_bfloat16).
  template <class T>
  requires(std::is_same_v<T, float> || std::is_same_v<T, __half> ||
           std::is_same_v<T, __nv_bfloat16>)
      DeviceMatrix(T* data, std::int64_t rows, std::int64_t cols, std::int64_t row_stride,
                   std::int64_t col_stride)
      : DeviceMatrix(static_cast<void*>(data), dtype_of<T>(), rows, cols, row_stride, col_stride) {}

  /// A contiguous row-major rows x cols matrix (the layout of torch tensors).
  template <class T>
  static DeviceMatrix row_major(T* data, std::int64_t rows, std::int64_t cols) {
    return DeviceMatrix(data, rows, cols, cols, 1);
  }

  void* data() const { return data_; }                     ///< first entry
  DType dtype() const { return dtype_; }                   ///< storage type
  std::int64_t rows() const { return rows_; }              ///< number of rows
  std::int64_t cols() const { return cols_; }              ///< number of columns
  std::int64_t row_stride() const { return row_stride_; }  ///< elements between rows
  std::int64_t col_stride() const { return col_stride_; }  ///< elements between columns

  /// The storage type of T.
  template <class T>
  static constexpr DType dtype_of() {
    if constexpr (std::is_same_v<T, __half>)
      return DType::f16;
    else if constexpr (std::is_same_v<T, __nv_bfloat16>)
      return DType::bf16;
    else
      return DType::f32;
  }

 private:
  void* data_ = nullptr;
  DType dtype_ = DType::f32;
  std::int64_t rows_ = 0;
  std::int64_t cols_ = 0;
  std::int64_t row_stride_ = 0;
  std::int64_t col_stride_ = 0;
};

/// Problems with a view that need no GPU to find: "" when none, else the reason.
inline std::string check_view(const DeviceMatrix& m) {
  if (m.data() == nullptr)
    return "null device pointer";
  if (!dtype_valid(m.dtype())) {
    return "unsupported storage type (code " + std::to_string(static_cast<int>(m.dtype())) +
           "); the CUDA backend stores fp32, fp16 or bf16";
  }
  if (m.rows() < 0 || m.cols() < 0)
    return "negative shape";
  constexpr std::int64_t int_max = 2147483647;
  if (m.rows() > int_max || m.cols() > int_max)
    return "a dimension exceeds 2^31 - 1";
  if ((m.rows() > 1 && m.row_stride() < 1) || (m.cols() > 1 && m.col_stride() < 1))
    return "strides must be positive (no broadcast or reversed views)";
  return {};
}

/// Full check: check_view, then the memory must be device (or managed) memory of the
/// current device. "" when usable, else the reason.
inline std::string check_matrix(const DeviceMatrix& m) {
  std::string problem = check_view(m);
  if (!problem.empty())
    return problem;
  int device = -1;
  cudaError_t status = cudaGetDevice(&device);
  if (status != cudaSuccess) {
    cudaGetLastError();
    return std::string("no usable CUDA device: ") + cudaGetErrorString(status);
  }
  cudaPointerAttributes attributes{};
  status = cudaPointerGetAttributes(&attributes, m.data());
  if (status != cudaSuccess) {
    cudaGetLastError();
    return std::string("cannot inspect the pointer: ") + cudaGetErrorString(status);
  }
  if (attributes.type == cudaMemoryTypeHost || attributes.type == cudaMemoryTypeUnregistered)
    return "host memory; the CUDA backend needs device memory";
  if (attributes.type == cudaMemoryTypeDevice && attributes.device != device) {
    return "memory of device " + std::to_string(attributes.device) +
           ", but the backend runs on device " + std::to_string(device);
  }
  return {};
}

}  // namespace aclora::backends::cuda
