/// @file runtime.cuh
/// @brief CUDA runtime plumbing of the backend: status checks that raise aclora::Error,
/// owning device and pinned host buffers, the cuBLAS / cuSOLVER handles, and the precision
/// the current device resolves `automatic` to.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <cstddef>
#include <string>
#include <utility>

#include "aclora/error.hpp"
#include "aclora/precision.hpp"

namespace aclora::backends::cuda {

/// Throws aclora::Error naming `what` when a CUDA runtime call failed.
inline void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw Error(std::string("CUDA backend: ") + what + " failed: " + cudaGetErrorName(status) +
                " (" + cudaGetErrorString(status) + ")");
  }
}

/// Throws aclora::Error naming `what` when a cuBLAS call failed.
inline void check_cublas(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS) {
    throw Error(std::string("CUDA backend: ") + what + " failed: " + cublasGetStatusString(status));
  }
}

/// Throws aclora::Error naming `what` when a cuSOLVER call failed.
inline void check_cusolver(cusolverStatus_t status, const char* what) {
  if (status != CUSOLVER_STATUS_SUCCESS) {
    throw Error(std::string("CUDA backend: ") + what + " failed with cusolverStatus_t " +
                std::to_string(static_cast<int>(status)));
  }
}

/// The precision a request means on the current device: `automatic` becomes fp64 on GPUs
/// with full-rate float64 (compute capability 6.0, 7.0, 8.0, 9.0) and fp32 on the others.
/// @throws Error without a usable device (only when the request is `automatic`).
inline Precision device_precision(Precision requested) {
  if (requested != Precision::automatic)
    return requested;
  int device = 0, major = 0, minor = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  check_cuda(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device),
             "cudaDeviceGetAttribute (compute capability)");
  check_cuda(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device),
             "cudaDeviceGetAttribute (compute capability)");
  return resolve_precision(requested, full_rate_float64(major, minor));
}

/// Device memory: cudaMalloc / cudaFree.
struct DeviceMemory {
  /// Allocates `bytes`; throws aclora::Error when the device is out of memory.
  static void* allocate(std::size_t bytes) {
    void* data = nullptr;
    check_cuda(cudaMalloc(&data, bytes), "cudaMalloc of the workspace");
    return data;
  }
  /// Frees what allocate returned.
  static void free(void* data) noexcept { cudaFree(data); }
};

/// Page-locked host memory: cudaMallocHost / cudaFreeHost.
struct PinnedMemory {
  /// Allocates `bytes`; throws aclora::Error when none can be had.
  static void* allocate(std::size_t bytes) {
    void* data = nullptr;
    check_cuda(cudaMallocHost(&data, bytes), "cudaMallocHost of the staging buffer");
    return data;
  }
  /// Frees what allocate returned.
  static void free(void* data) noexcept { cudaFreeHost(data); }
};

/// An owning allocation of `Memory` (DeviceMemory or PinnedMemory) that only grows;
/// contents are not kept on growth.
template <class Memory>
class GrowingBuffer {
 public:
  GrowingBuffer() = default;
  GrowingBuffer(const GrowingBuffer&) = delete;
  GrowingBuffer& operator=(const GrowingBuffer&) = delete;
  /// Takes over `other`'s allocation.
  GrowingBuffer(GrowingBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  /// Swaps allocations with `other`.
  GrowingBuffer& operator=(GrowingBuffer&& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    return *this;
  }
  ~GrowingBuffer() { release(); }

  /// Makes room for `bytes` (at least); throws aclora::Error when that fails.
  void reserve(std::size_t bytes) {
    if (bytes <= size_)
      return;
    release();
    data_ = static_cast<unsigned char*>(Memory::allocate(bytes));
    size_ = bytes;
  }
  unsigned char* data() const { return data_; }  ///< first byte
  std::size_t size() const { return size_; }     ///< capacity in bytes

 private:
  void release() noexcept {
    if (data_ != nullptr)
      Memory::free(data_);
    data_ = nullptr;
    size_ = 0;
  }
  unsigned char* data_ = nullptr;
  std::size_t size_ = 0;
};

using DeviceBuffer = GrowingBuffer<DeviceMemory>;  ///< device workspace
using PinnedBuffer = GrowingBuffer<PinnedMemory>;  ///< page-locked staging memory

/// cuBLAS and cuSOLVER handles bound to one stream, created on first use.
class Handles {
 public:
  Handles() = default;
  Handles(const Handles&) = delete;
  Handles& operator=(const Handles&) = delete;
  ~Handles() {
    if (syevj_ != nullptr)
      cusolverDnDestroySyevjInfo(syevj_);
    if (params_ != nullptr)
      cusolverDnDestroyParams(params_);
    if (solver_ != nullptr)
      cusolverDnDestroy(solver_);
    if (blas_ != nullptr)
      cublasDestroy(blas_);
  }

  /// Creates the handles (once) and binds them to `stream`.
  void bind(cudaStream_t stream) {
    if (blas_ == nullptr)
      check_cublas(cublasCreate(&blas_), "cublasCreate");
    if (solver_ == nullptr)
      check_cusolver(cusolverDnCreate(&solver_), "cusolverDnCreate");
    if (params_ == nullptr)
      check_cusolver(cusolverDnCreateParams(&params_), "cusolverDnCreateParams");
    if (syevj_ == nullptr)
      check_cusolver(cusolverDnCreateSyevjInfo(&syevj_), "cusolverDnCreateSyevjInfo");
    check_cublas(cublasSetStream(blas_, stream), "cublasSetStream");
    check_cusolver(cusolverDnSetStream(solver_, stream), "cusolverDnSetStream");
  }

  cublasHandle_t blas() const { return blas_; }          ///< cuBLAS handle
  cusolverDnHandle_t solver() const { return solver_; }  ///< cuSOLVER dense handle
  cusolverDnParams_t params() const { return params_; }  ///< 64-bit API parameters
  syevjInfo_t syevj() const { return syevj_; }           ///< Jacobi solver settings

 private:
  cublasHandle_t blas_ = nullptr;
  cusolverDnHandle_t solver_ = nullptr;
  cusolverDnParams_t params_ = nullptr;
  syevjInfo_t syevj_ = nullptr;
};

}  // namespace aclora::backends::cuda
