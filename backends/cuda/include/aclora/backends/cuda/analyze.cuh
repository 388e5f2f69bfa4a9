/// @file analyze.cuh
/// @brief The analysis pass over a whole model, stream-ordered with one synchronisation:
/// per batch, partial row sums (own kernel), fp32 partial Grams over column chunks
/// (cuBLAS batched, one call per shape group), their fp64 reduction, a batched fp64
/// eigen-solve per rank, and the spectrum records; then one copy of all records to the host.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>

#include "aclora/backends/cuda/analysis_kernels.cuh"
#include "aclora/backends/cuda/plan.hpp"
#include "aclora/backends/cuda/runtime.cuh"
#include "aclora/backends/cuda/workspace.cuh"
#include "aclora/error.hpp"
#include "aclora/spectrum.hpp"

namespace aclora::backends::cuda {

namespace detail {

inline cudaDataType_t cuda_data_type(DType dtype) {
  switch (dtype) {
    case DType::f16:
      return CUDA_R_16F;
    case DType::bf16:
      return CUDA_R_16BF;
    default:
      return CUDA_R_32F;
  }
}

inline void check_launch(const char* kernel) {
  check_cuda(cudaGetLastError(), kernel);
}

// Blocks along y for kernels that walk the R x R entries of each slot.
inline unsigned entry_tiles(std::int64_t max_rank) {
  const std::int64_t tiles = ceil_div(max_rank * max_rank, block_threads);
  return static_cast<unsigned>(std::clamp<std::int64_t>(tiles, 1, 64));
}

inline std::int64_t batch_max_rank(const Plan& plan, std::size_t first, std::size_t count) {
  std::int64_t rank = 1;
  for (std::size_t s = first; s < first + count; ++s)
    rank = std::max<std::int64_t>(rank, plan.slots[s].rank);
  return rank;
}

inline void run_analysis_batch(Workspace& w, const AnalysisBatch& batch, cudaStream_t stream,
                               bool tf32_gram) {
  const Plan& plan = w.plan;
  const DeviceLayout& at = plan.layout;
  unsigned char* base = w.device.data();
  unsigned char* scratch = base + at.scratch;
  const auto* slots = reinterpret_cast<const LayerSlot*>(base + at.slots);
  const auto* items = reinterpret_cast<const WorkItem*>(base + at.items);
  auto* basis = reinterpret_cast<double*>(base + at.basis);
  auto* eigenvalues = reinterpret_cast<double*>(base + at.eigenvalues);
  auto* row_sums = reinterpret_cast<double*>(base + at.row_sums);
  auto* flags = reinterpret_cast<int*>(base + at.flags);
  auto* infos = reinterpret_cast<int*>(base + at.infos);
  auto* partials = reinterpret_cast<float*>(scratch);
  auto* row_sum_partials = reinterpret_cast<double*>(scratch + batch.row_sums_at);

  for (std::size_t s = batch.first_slot; s < batch.first_slot + batch.slot_count; ++s) {
    const LayerSlot& slot = plan.slots[s];
    if (static_cast<GramSource>(slot.source) != GramSource::packed)
      continue;
    const std::int64_t entries = static_cast<std::int64_t>(slot.rank) * slot.length;
    const auto blocks =
        static_cast<unsigned>(std::clamp<std::int64_t>(ceil_div(entries, block_threads), 1, 4096));
    kernels::pack_kernel<<<blocks, block_threads, 0, stream>>>(
        slots, static_cast<std::int32_t>(s), reinterpret_cast<float*>(scratch + batch.packed_at));
    check_launch("pack_kernel");
  }

  kernels::row_sum_kernel<<<static_cast<unsigned>(batch.item_count), block_threads, 0, stream>>>(
      slots, items + batch.first_item, row_sum_partials);
  check_launch("row_sum_kernel");

  const float one = 1.0f, zero = 0.0f;
  const auto* gemm_a = reinterpret_cast<const void* const*>(base + at.gemm_a);
  auto* const* gemm_c = reinterpret_cast<void* const*>(base + at.gemm_c);
  for (const GemmCall& call : batch.gemms) {
    const cudaDataType_t type = cuda_data_type(call.dtype);
    const GemmArguments args = gemm_arguments(call);
    const cublasComputeType_t compute =
        tf32_gram && call.dtype == DType::f32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    check_cublas(cublasGemmBatchedEx(w.handles.blas(), args.transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                                     args.transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N, args.m, args.n,
                                     args.k, &one, gemm_a + call.first_item, type, args.lda,
                                     gemm_a + call.first_item, type, args.ldb, &zero,
                                     gemm_c + call.first_item, CUDA_R_32F, args.ldc,
                                     static_cast<int>(call.count), compute, CUBLAS_GEMM_DEFAULT),
                 "cublasGemmBatchedEx (Gram partials)");
  }

  const std::int64_t max_rank = batch_max_rank(plan, batch.first_slot, batch.slot_count);
  const dim3 reduce_grid(static_cast<unsigned>(batch.slot_count), entry_tiles(max_rank));
  kernels::reduce_kernel<<<reduce_grid, block_threads, 0, stream>>>(
      slots, static_cast<std::int32_t>(batch.first_slot), partials, row_sum_partials, basis,
      row_sums, flags);
  check_launch("reduce_kernel");

  for (const EigenRun& run : batch.eigen_runs) {
    const LayerSlot& first = plan.slots[run.first_slot];
    double* matrices = basis + first.basis_offset;
    double* values = eigenvalues + first.vector_offset;
    int* info = infos + run.first_slot;
    void* solver_workspace = scratch + batch.solver_at;
    if (run.rank <= 32) {
      check_cusolver(cusolverDnDsyevjBatched(w.handles.solver(), CUSOLVER_EIG_MODE_VECTOR,
                                             CUBLAS_FILL_MODE_LOWER, run.rank, matrices, run.rank,
                                             values, static_cast<double*>(solver_workspace),
                                             static_cast<int>(batch.solver_bytes / sizeof(double)),
                                             info, w.handles.syevj(), static_cast<int>(run.count)),
                     "cusolverDnDsyevjBatched");
    } else {
      check_cusolver(cusolverDnXsyevBatched(
                         w.handles.solver(), w.handles.params(), CUSOLVER_EIG_MODE_VECTOR,
                         CUBLAS_FILL_MODE_LOWER, run.rank, CUDA_R_64F, matrices, run.rank,
                         CUDA_R_64F, values, CUDA_R_64F, solver_workspace, batch.solver_bytes,
                         w.solver_host.empty() ? nullptr : w.solver_host.data(),
                         batch.solver_host_bytes, info, static_cast<std::int64_t>(run.count)),
                     "cusolverDnXsyevBatched");
    }
  }

  kernels::spectrum_kernel<<<static_cast<unsigned>(batch.slot_count), 128, 0, stream>>>(
      slots, static_cast<std::int32_t>(batch.first_slot), basis, eigenvalues, row_sums, flags,
      infos, reinterpret_cast<double*>(base + at.records));
  check_launch("spectrum_kernel");
}

}  // namespace detail

/// Runs the analysis of the prepared plan and fills spectra[layer] for every layer (in the
/// caller's order). Reads the matrices only. Sets spectrum.finite = false for layers with
/// NaN or Inf entries. @throws Error on a CUDA failure, on a solver that did not converge,
/// or on finite entries too large for fp32 Gram products. `tf32_gram` lets cuBLAS use TF32
/// tensor cores for the Gram products of fp32 layers.
inline void analyze_plan(Workspace& w, cudaStream_t stream, std::span<LayerSpectrum> spectra,
                         bool tf32_gram = false) {
  const Plan& plan = w.plan;
  const DeviceLayout& at = plan.layout;
  unsigned char* base = w.device.data();
  if (!w.tables_uploaded) {
    check_cuda(
        cudaMemcpyAsync(base, w.pinned.data(), at.tables_end, cudaMemcpyHostToDevice, stream),
        "upload of the plan tables");
    w.tables_uploaded = true;
  }
  check_cuda(cudaMemsetAsync(base + at.flags, 0, plan.slots.size() * sizeof(int), stream),
             "cudaMemsetAsync");
  check_cuda(cudaMemsetAsync(base + at.infos, 0, plan.slots.size() * sizeof(int), stream),
             "cudaMemsetAsync");
  for (const AnalysisBatch& batch : plan.analysis_batches)
    detail::run_analysis_batch(w, batch, stream, tf32_gram);
  check_cuda(cudaMemcpyAsync(w.pinned.data() + w.pinned_records, base + at.records,
                             plan.record_doubles * sizeof(double), cudaMemcpyDeviceToHost, stream),
             "download of the spectra");
  check_cuda(cudaStreamSynchronize(stream), "analysis");
  ++w.generation;

  const auto* records = reinterpret_cast<const double*>(w.pinned.data() + w.pinned_records);
  for (const LayerSlot& slot : plan.slots) {
    const double* record = records + slot.record_offset;
    const std::int64_t rank = slot.rank;
    const std::int64_t q = std::min<std::int64_t>(rank, slot.length);
    const auto status = static_cast<SlotStatus>(static_cast<int>(record[2 * rank + 1]));
    LayerSpectrum& spectrum = spectra[static_cast<std::size_t>(slot.layer)];
    spectrum = LayerSpectrum{};
    if (status == SlotStatus::non_finite) {
      spectrum.finite = false;
      continue;
    }
    const std::string where = "CUDA backend: layer " + std::to_string(slot.layer) + " of the batch";
    if (status == SlotStatus::gram_overflow) {
      throw Error(where + ": entries too large for fp32 Gram products (|x| above about 1e19)");
    }
    if (status == SlotStatus::solver_failed)
      throw Error(where + ": the batched eigen-solver did not converge");
    spectrum.singular_values.assign(record, record + q);
    spectrum.component_sums.assign(record + rank, record + rank + q);
    spectrum.entry_sum = record[2 * rank];
  }
}

}  // namespace aclora::backends::cuda
