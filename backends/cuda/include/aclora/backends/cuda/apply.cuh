/// @file apply.cuh
/// @brief The write pass over a whole model: one upload of the per-layer write parameters,
/// then per batch the kept directions U_K in fp32 and one fused projection + noise launch per rank
/// class. Everything that can fail for a reason other than a broken device is checked before the
/// first kernel that writes.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <span>

#include "aclora/backend.hpp"
#include "aclora/backends/cuda/analyze.cuh"
#include "aclora/backends/cuda/plan.hpp"
#include "aclora/backends/cuda/projection_kernels.cuh"
#include "aclora/backends/cuda/runtime.cuh"
#include "aclora/backends/cuda/workspace.cuh"

namespace aclora::backends::cuda {

namespace detail {

template <int TW>
void allow_shared_memory(std::size_t bytes) {
  check_cuda(
      cudaFuncSetAttribute(kernels::project_write_kernel<TW>,
                           cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
      "cudaFuncSetAttribute (projection shared memory)");
}

inline void allow_projection_shared_memory(const ProjectionLaunch& launch) {
  const std::size_t bytes = projection_shared_bytes(launch.max_rank);
  switch (launch.shape.config) {
    case 0:
      return allow_shared_memory<64>(bytes);
    case 1:
      return allow_shared_memory<32>(bytes);
    default:
      return allow_shared_memory<8>(bytes);
  }
}

inline void launch_projection(const ProjectionLaunch& launch, const LayerSlot* slots,
                              const WriteSlot* writes, const WorkItem* tiles,
                              const float* kept_bases, cudaStream_t stream) {
  const auto blocks = static_cast<unsigned>(launch.tile_count);
  const std::size_t bytes = projection_shared_bytes(launch.max_rank);
  const WorkItem* first = tiles + launch.first_tile;
  switch (launch.shape.config) {
    case 0:
      kernels::project_write_kernel<64>
          <<<blocks, block_threads, bytes, stream>>>(slots, writes, first, kept_bases);
      break;
    case 1:
      kernels::project_write_kernel<32>
          <<<blocks, block_threads, bytes, stream>>>(slots, writes, first, kept_bases);
      break;
    default:
      kernels::project_write_kernel<8>
          <<<blocks, block_threads, bytes, stream>>>(slots, writes, first, kept_bases);
      break;
  }
  check_launch("project_write_kernel");
}

}  // namespace detail

/// Writes every layer of the analysed plan in place: M' = U_K U_K^T M + noise placed by each
/// layer's policy, rounded once to the storage type. Synchronises the stream at the end.
inline void apply_plan(Workspace& w, cudaStream_t stream, std::span<const LayerPlan> plans) {
  const Plan& plan = w.plan;
  const DeviceLayout& at = plan.layout;
  unsigned char* base = w.device.data();
  for (const ApplyBatch& batch : plan.apply_batches)
    for (const ProjectionLaunch& launch : batch.launches)
      detail::allow_projection_shared_memory(launch);

  auto* host_writes = reinterpret_cast<WriteSlot*>(w.pinned.data() + w.pinned_writes);
  stage_writes(plan, plans, host_writes);
  check_cuda(cudaMemcpyAsync(base + at.writes, host_writes, plan.slots.size() * sizeof(WriteSlot),
                             cudaMemcpyHostToDevice, stream),
             "upload of the write parameters");

  const auto* slots = reinterpret_cast<const LayerSlot*>(base + at.slots);
  const auto* writes = reinterpret_cast<const WriteSlot*>(base + at.writes);
  const auto* tiles = reinterpret_cast<const WorkItem*>(base + at.tiles);
  const auto* basis = reinterpret_cast<const double*>(base + at.basis);
  auto* kept_bases = reinterpret_cast<float*>(base + at.scratch);
  for (const ApplyBatch& batch : plan.apply_batches) {
    const dim3 grid(static_cast<unsigned>(batch.slot_count), detail::entry_tiles(batch.max_rank));
    kernels::kept_basis_kernel<<<grid, block_threads, 0, stream>>>(
        slots, writes, static_cast<std::int32_t>(batch.first_slot), basis, kept_bases);
    detail::check_launch("kept_basis_kernel");
    for (const ProjectionLaunch& launch : batch.launches)
      detail::launch_projection(launch, slots, writes, tiles, kept_bases, stream);
  }
  check_cuda(cudaStreamSynchronize(stream), "write pass");
}

}  // namespace aclora::backends::cuda
