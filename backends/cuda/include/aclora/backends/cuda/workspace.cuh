/// @file workspace.cuh
/// @brief The backend's persistent state: handles, the cached plan of the last layer list,
/// its device workspace and pinned staging buffer. A plan is reused while the layer list
/// (pointers, shapes, strides, types) and the limit stay the same, so a training run pays
/// for planning, allocation and table uploads once.
#pragma once

#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "aclora/backends/cuda/plan.hpp"
#include "aclora/backends/cuda/runtime.cuh"

namespace aclora::backends::cuda {

/// Workspace of the batched eigen-solver: Jacobi (syevjBatched) for R <= 32, else
/// cusolverDnXsyevBatched, both in fp64.
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

/// Everything a backend object keeps between calls.
struct Workspace {
  Handles handles;                         ///< cuBLAS / cuSOLVER handles
  DeviceBuffer device;                     ///< the plan's device workspace
  PinnedBuffer pinned;                     ///< staging: tables, write parameters, records
  std::vector<unsigned char> solver_host;  ///< cuSOLVER host workspace
  Plan plan;                               ///< plan of the last layer list
  std::vector<PlanInput> inputs;           ///< the layer list the plan was made for
  std::size_t planned_limit = 0;           ///< the scratch limit it was made with
  bool planned = false;                    ///< plan, memory and tables are ready
  bool tables_uploaded = false;            ///< the tables are on the device
  std::uint64_t generation = 0;            ///< incremented by every analysis
  std::size_t pinned_writes = 0;           ///< byte offset of the write parameters (pinned)
  std::size_t pinned_records = 0;          ///< byte offset of the spectrum records (pinned)

  /// Makes (or reuses) the plan for `layer_inputs`, allocates its memory and stages its
  /// tables. Throws aclora::Error (nothing written anywhere) on failure.
  void prepare(const std::vector<PlanInput>& layer_inputs, std::size_t scratch_limit,
               cudaStream_t stream) {
    handles.bind(stream);
    if (planned && scratch_limit == planned_limit && layer_inputs == inputs)
      return;
    planned = false;
    plan = make_plan(layer_inputs, scratch_limit, [&](std::int32_t rank, std::size_t count) {
      return solver_workspace(handles, rank, count);
    });
    check_shared_memory();
    device.reserve(plan.device_bytes());
    pinned_writes = plan.layout.tables_end;
    pinned_records = pinned_writes + align_bytes(plan.slots.size() * sizeof(WriteSlot));
    pinned.reserve(pinned_records + align_bytes(plan.record_doubles * sizeof(double)));
    solver_host.resize(plan.solver_host_bytes);
    stage_tables();
    inputs = layer_inputs;
    planned_limit = scratch_limit;
    planned = true;
    tables_uploaded = false;
  }

 private:
  // The projection keeps R x tile outputs in shared memory: check the device allows it.
  void check_shared_memory() const {
    int device = 0, optin = 0;
    check_cuda(cudaGetDevice(&device), "cudaGetDevice");
    check_cuda(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
               "cudaDeviceGetAttribute");
    for (const ApplyBatch& batch : plan.apply_batches) {
      for (const ProjectionLaunch& launch : batch.launches) {
        if (projection_shared_bytes(launch.max_rank) > static_cast<std::size_t>(optin)) {
          throw Error("CUDA backend: rank axis " + std::to_string(launch.max_rank) + " needs " +
                      std::to_string(projection_shared_bytes(launch.max_rank)) +
                      " bytes of shared memory per block; this device allows " +
                      std::to_string(optin));
        }
      }
    }
  }

  // Writes slots, items, tiles and the cuBLAS pointer arrays into the pinned buffer at the
  // offsets they will have on the device.
  void stage_tables() {
    unsigned char* host = pinned.data();
    unsigned char* base = device.data();
    const DeviceLayout& at = plan.layout;
    std::memcpy(host + at.slots, plan.slots.data(), plan.slots.size() * sizeof(LayerSlot));
    std::memcpy(host + at.items, plan.items.data(), plan.items.size() * sizeof(WorkItem));
    std::memcpy(host + at.tiles, plan.tiles.data(), plan.tiles.size() * sizeof(WorkItem));
    auto* gemm_a = reinterpret_cast<const void**>(host + at.gemm_a);
    auto* gemm_c = reinterpret_cast<void**>(host + at.gemm_c);
    for (const AnalysisBatch& batch : plan.analysis_batches) {
      unsigned char* scratch = base + at.scratch;
      const auto* packed = reinterpret_cast<const float*>(scratch + batch.packed_at);
      for (std::size_t i = batch.first_item; i < batch.first_item + batch.item_count; ++i) {
        const WorkItem item = plan.items[i];
        const LayerSlot& slot = plan.slots[item.slot];
        gemm_a[i] = gram_operand(slot, item.index, packed);
        gemm_c[i] = gram_partial(slot, item.index, reinterpret_cast<float*>(scratch));
      }
    }
  }
};

}  // namespace aclora::backends::cuda
