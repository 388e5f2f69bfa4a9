/// @file matrix.cuh
/// @brief aclora::backends::cuda::DeviceMatrix: a view of one matrix in device memory
/// (raw pointer, shape, element strides, storage type), and its validation: everything the
/// backend could refuse is found here, before a RESTART does any work.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>

#include "aclora/backends/cuda/plan.hpp"
#include "aclora/layer.hpp"
#include "aclora/memory.hpp"

namespace aclora::backends::cuda {

/// A writable rows x cols matrix in device memory: entry (i, j) at
/// data[i * row_stride + j * col_stride] (strides in elements), stored as fp64, fp32, fp16
/// or bf16. RESTART reads and writes it in place; the view must not overlap itself.
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

  /// View of typed device memory (double, float, __half or __nv_bfloat16).
  template <class T>
  requires(std::is_same_v<T, double> || std::is_same_v<T, float> || std::is_same_v<T, __half> ||
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
    else if constexpr (std::is_same_v<T, double>)
      return DType::f64;
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

/// Problems with a view that need no GPU to find: "" when none, else the reason. (Views
/// whose entries overlap each other are refused by the driver, from memory_region().)
inline std::string check_view(const DeviceMatrix& m) {
  if (m.data() == nullptr)
    return "null device pointer";
  if (!dtype_valid(m.dtype())) {
    return "unsupported storage type (code " + std::to_string(static_cast<int>(m.dtype())) +
           "); the CUDA backend stores fp64, fp32, fp16 or bf16";
  }
  if (m.rows() < 0 || m.cols() < 0)
    return "negative shape";
  constexpr std::int64_t int_max = 2147483647;
  if (m.rows() > int_max || m.cols() > int_max)
    return "a dimension exceeds 2^31 - 1";
  if ((m.rows() > 1 && m.row_stride() < 1) || (m.cols() > 1 && m.col_stride() < 1))
    return "strides must be positive (no broadcast or reversed views)";
  const auto address = reinterpret_cast<std::uintptr_t>(m.data());
  if (address % dtype_bytes(m.dtype()) != 0) {
    return "the data pointer is not aligned to its " + std::to_string(dtype_bytes(m.dtype())) +
           "-byte " + dtype_name(m.dtype()) + " entries";
  }
  return {};
}

/// Problems with a layer that need no GPU to find: check_view, then the rank axis must not
/// exceed max_rank. "" when none, else the reason.
inline std::string check_layer_view(const DeviceMatrix& m, RankAxis axis) {
  std::string problem = check_view(m);
  if (!problem.empty())
    return problem;
  const std::int64_t rank = axis == RankAxis::rows ? m.rows() : m.cols();
  if (rank > max_rank) {
    return "rank axis of length " + std::to_string(rank) + "; the CUDA backend handles at most " +
           std::to_string(max_rank);
  }
  return {};
}

/// Problems with the memory behind a view, found with the CUDA runtime: no usable device,
/// host memory, memory of another device. "" when usable, else the reason.
inline std::string check_memory(const DeviceMatrix& m) {
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

/// Where the entries of a view lie, for the driver's overlap checks: CUDA's unified address
/// space (space 1), element strides as given.
inline MemoryRegion memory_region(const DeviceMatrix& m) {
  return MemoryRegion{1,
                      reinterpret_cast<std::uintptr_t>(m.data()),
                      dtype_valid(m.dtype()) ? dtype_bytes(m.dtype()) : 1,
                      static_cast<std::size_t>(std::max<std::int64_t>(m.rows(), 0)),
                      static_cast<std::size_t>(std::max<std::int64_t>(m.cols(), 0)),
                      static_cast<std::ptrdiff_t>(m.row_stride()),
                      static_cast<std::ptrdiff_t>(m.col_stride())};
}

/// Full check of a view: check_view, then check_memory. "" when usable, else the reason.
inline std::string check_matrix(const DeviceMatrix& m) {
  std::string problem = check_view(m);
  return problem.empty() ? check_memory(m) : problem;
}

/// Full check of a layer: check_layer_view, then check_memory. "" when usable, else the
/// reason.
inline std::string check_layer(const DeviceMatrix& m, RankAxis axis) {
  std::string problem = check_layer_view(m, axis);
  return problem.empty() ? check_memory(m) : problem;
}

}  // namespace aclora::backends::cuda
