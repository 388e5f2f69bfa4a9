// Test helpers for the CUDA backend: GPU detection, planted matrices with a known SVD,
// and device matrices in any storage type (fp64, fp32, fp16, bf16) and layout.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "accuracy.hpp"
#include "aclora/backends/cuda.cuh"
#include "planted.hpp"

namespace aclora::cuda_test {

namespace cu = aclora::backends::cuda;

/// True when a CUDA device can run kernels here.
inline bool gpu_available() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return count > 0;
}

#define ACLORA_REQUIRE_GPU()                                 \
  do {                                                       \
    if (!::aclora::cuda_test::gpu_available())               \
      GTEST_SKIP() << "no CUDA device: device test skipped"; \
  } while (0)

/// A rows x cols matrix in device memory (owning), filled from row-major doubles.
class DeviceMatrixHolder {
 public:
  DeviceMatrixHolder(const std::vector<double>& values, std::int64_t rows, std::int64_t cols,
                     cu::DType dtype, Layout layout)
      : rows_(rows), cols_(cols), dtype_(dtype) {
    switch (layout) {
      case Layout::row_major:
        row_stride_ = cols, col_stride_ = 1, elements_ = rows * cols;
        break;
      case Layout::col_major:
        row_stride_ = 1, col_stride_ = rows, elements_ = rows * cols;
        break;
      case Layout::padded:
        row_stride_ = cols + 3, col_stride_ = 1, elements_ = rows * (cols + 3);
        break;
      case Layout::strided:
        row_stride_ = 2, col_stride_ = 2 * rows + 1, elements_ = cols * (2 * rows + 1);
        break;
    }
    bytes_ = static_cast<std::size_t>(elements_) * cu::dtype_bytes(dtype);
    EXPECT_EQ(cudaMalloc(&data_, bytes_), cudaSuccess);
    std::vector<double> full(static_cast<std::size_t>(elements_), 7.25);  // sentinel padding
    for (std::int64_t i = 0; i < rows; ++i)
      for (std::int64_t j = 0; j < cols; ++j)
        full[i * row_stride_ + j * col_stride_] = values[i * cols + j];
    upload(full);
  }
  DeviceMatrixHolder(const DeviceMatrixHolder&) = delete;
  DeviceMatrixHolder& operator=(const DeviceMatrixHolder&) = delete;
  ~DeviceMatrixHolder() { cudaFree(data_); }

  cu::DeviceMatrix view() const {
    return cu::DeviceMatrix(data_, dtype_, rows_, cols_, row_stride_, col_stride_);
  }
  cu::DType dtype() const { return dtype_; }
  /// Current values, row-major doubles.
  std::vector<double> read() const {
    const std::vector<double> full = download();
    std::vector<double> out(static_cast<std::size_t>(rows_ * cols_));
    for (std::int64_t i = 0; i < rows_; ++i)
      for (std::int64_t j = 0; j < cols_; ++j)
        out[i * cols_ + j] = full[i * row_stride_ + j * col_stride_];
    return out;
  }
  /// Every storage byte (padding included).
  std::vector<unsigned char> bytes() const {
    std::vector<unsigned char> out(bytes_);
    EXPECT_EQ(cudaMemcpy(out.data(), data_, bytes_, cudaMemcpyDeviceToHost), cudaSuccess);
    return out;
  }
  /// Overwrites entry (i, j) (e.g. with NaN).
  void set(std::int64_t i, std::int64_t j, double value) {
    std::vector<double> full = download();
    full[i * row_stride_ + j * col_stride_] = value;
    upload(full);
  }

 private:
  void upload(const std::vector<double>& full) {
    std::vector<unsigned char> host(bytes_);
    for (std::size_t e = 0; e < full.size(); ++e) {
      const float f = static_cast<float>(full[e]);
      if (dtype_ == cu::DType::f64)
        reinterpret_cast<double*>(host.data())[e] = full[e];
      else if (dtype_ == cu::DType::f32)
        reinterpret_cast<float*>(host.data())[e] = f;
      else if (dtype_ == cu::DType::f16)
        reinterpret_cast<__half*>(host.data())[e] = __float2half_rn(f);
      else
        reinterpret_cast<__nv_bfloat16*>(host.data())[e] = __float2bfloat16_rn(f);
    }
    EXPECT_EQ(cudaMemcpy(data_, host.data(), bytes_, cudaMemcpyHostToDevice), cudaSuccess);
  }
  std::vector<double> download() const {
    std::vector<unsigned char> host = bytes();
    std::vector<double> full(static_cast<std::size_t>(elements_));
    for (std::size_t e = 0; e < full.size(); ++e) {
      if (dtype_ == cu::DType::f64)
        full[e] = reinterpret_cast<const double*>(host.data())[e];
      else if (dtype_ == cu::DType::f32)
        full[e] = reinterpret_cast<const float*>(host.data())[e];
      else if (dtype_ == cu::DType::f16)
        full[e] = __half2float(reinterpret_cast<const __half*>(host.data())[e]);
      else
        full[e] = __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(host.data())[e]);
    }
    return full;
  }

  std::int64_t rows_, cols_;
  cu::DType dtype_;
  std::int64_t row_stride_ = 0, col_stride_ = 0, elements_ = 0;
  std::size_t bytes_ = 0;
  void* data_ = nullptr;
};

}  // namespace aclora::cuda_test
