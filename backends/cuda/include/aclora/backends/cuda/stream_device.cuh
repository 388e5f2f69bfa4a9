/// @file stream_device.cuh
/// @brief aclora::backends::cuda::StreamDevice, the executor of the passes (passes.cuh) on
/// a CUDA stream: kernel launches, the TF32 Gram products (cuBLAS) and the batched fp64
/// eigen-solves (cuSOLVER).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "aclora/backends/cuda/plan.hpp"
#include "aclora/backends/cuda/runtime.cuh"

namespace aclora::backends::cuda {

/// Runs the passes on one stream with the backend's handles.
class StreamDevice {
 public:
  /// An executor on `stream` (handles bound to it); `solver_host` is cuSOLVER's host
  /// workspace (Plan::solver_host_bytes).
  StreamDevice(const Handles& handles, cudaStream_t stream, std::vector<unsigned char>& solver_host)
      : handles_(handles), stream_(stream), solver_host_(solver_host) {}

  /// Launches `kernel` on the stream. @throws Error when the launch fails.
  template <class... Parameters, class... Arguments>
  void launch(void (*kernel)(Parameters...), dim3 grid, dim3 block, std::size_t shared_bytes,
              Arguments... arguments) {
    kernel<<<grid, block, shared_bytes, stream_>>>(static_cast<Parameters>(arguments)...);
    check_cuda(cudaGetLastError(), "kernel launch");
  }

  /// Clears `bytes` of device memory at `data`.
  void zero(void* data, std::size_t bytes) {
    check_cuda(cudaMemsetAsync(data, 0, bytes, stream_), "cudaMemsetAsync");
  }

  /// The TF32 Gram products of a call: fp32 operands on TF32 tensor cores, fp16 / bf16
  /// operands on tensor cores with exact products; fp32 sums and results.
  void gemm(const GemmCall& call, const void* const* operands, void* const* results) {
    const GemmArguments args = gemm_arguments(call);
    const float one = 1.0f, zero = 0.0f;
    const cudaDataType_t type = call.dtype == DType::f16    ? CUDA_R_16F
                                : call.dtype == DType::bf16 ? CUDA_R_16BF
                                                            : CUDA_R_32F;
    const cublasComputeType_t compute =
        call.dtype == DType::f32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    check_cublas(cublasGemmBatchedEx(handles_.blas(), args.transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                                     args.transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N, args.m, args.n,
                                     args.k, &one, operands, type, args.lda, operands, type,
                                     args.ldb, &zero, results, CUDA_R_32F, args.ldc,
                                     static_cast<int>(call.count), compute, CUBLAS_GEMM_DEFAULT),
                 "cublasGemmBatchedEx (TF32 Gram partials)");
  }

  /// The fp64 eigen-decompositions of a run: Jacobi (syevjBatched) for R <= 32, else
  /// cusolverDnXsyevBatched.
  void eigen(const EigenRun& run, double* matrices, double* values, int* infos, void* workspace,
             std::size_t workspace_bytes) {
    if (run.rank <= 32) {
      check_cusolver(cusolverDnDsyevjBatched(handles_.solver(), CUSOLVER_EIG_MODE_VECTOR,
                                             CUBLAS_FILL_MODE_LOWER, run.rank, matrices, run.rank,
                                             values, static_cast<double*>(workspace),
                                             static_cast<int>(workspace_bytes / sizeof(double)),
                                             infos, handles_.syevj(), static_cast<int>(run.count)),
                     "cusolverDnDsyevjBatched");
    } else {
      check_cusolver(
          cusolverDnXsyevBatched(handles_.solver(), handles_.params(), CUSOLVER_EIG_MODE_VECTOR,
                                 CUBLAS_FILL_MODE_LOWER, run.rank, CUDA_R_64F, matrices, run.rank,
                                 CUDA_R_64F, values, CUDA_R_64F, workspace, workspace_bytes,
                                 solver_host_.empty() ? nullptr : solver_host_.data(),
                                 solver_host_.size(), infos, static_cast<std::int64_t>(run.count)),
          "cusolverDnXsyevBatched");
    }
  }

 private:
  const Handles& handles_;
  cudaStream_t stream_;
  std::vector<unsigned char>& solver_host_;
};

/// Workspace of the batched eigen-solver for `count` matrices of rank R: Jacobi
/// (syevjBatched) for R <= 32, else cusolverDnXsyevBatched, both in fp64.
inline SolverBytes solver_workspace(const Handles& handles, std::int32_t rank, std::size_t count) {
  // The size queries read only the shapes; a dummy non-null address stands for the data.
  auto* dummy = reinterpret_cast<double*>(std::uintptr_t{4096});
  SolverBytes bytes;
  if (rank <= 32) {
    int lwork = 0;
    check_cusolver(cusolverDnDsyevjBatched_bufferSize(
                       handles.solver(), CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, rank,
                       dummy, rank, dummy, &lwork, handles.syevj(), static_cast<int>(count)),
                   "cusolverDnDsyevjBatched_bufferSize");
    bytes.device = static_cast<std::size_t>(lwork) * sizeof(double);
  } else {
    check_cusolver(cusolverDnXsyevBatched_bufferSize(
                       handles.solver(), handles.params(), CUSOLVER_EIG_MODE_VECTOR,
                       CUBLAS_FILL_MODE_LOWER, rank, CUDA_R_64F, dummy, rank, CUDA_R_64F, dummy,
                       CUDA_R_64F, &bytes.device, &bytes.host, static_cast<std::int64_t>(count)),
                   "cusolverDnXsyevBatched_bufferSize");
  }
  return bytes;
}

}  // namespace aclora::backends::cuda
