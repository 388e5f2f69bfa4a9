/// @file passes.cuh
/// @brief The analysis and write passes of a plan: which kernels, cuBLAS calls and
/// eigen-solves run in which order, with which arguments. Written once over an executor
/// (`Device`) that launches kernels and runs the library calls: cuda::StreamDevice on a GPU,
/// and a host emulation in the tests, so the same sequence runs in both.
///
/// A Device provides:
/// - `launch(kernel, grid, block, shared_bytes, args...)`: runs a kernel;
/// - `gemm(call, operands, results)`: the batched TF32 Gram products of a GemmCall, the
///   pointer arrays being device memory indexed from call.first_item;
/// - `eigen(run, matrices, values, infos, workspace, workspace_bytes)`: the fp64
///   eigen-decompositions of a run (column-major, lower triangle read), eigenvalues
///   ascending, eigenvectors over the matrices, a nonzero info per unconverged matrix;
/// - `zero(pointer, bytes)`: clears device memory.
#pragma once

#include <algorithm>
#include <cstdint>

#include "aclora/backends/cuda/analysis_kernels.cuh"
#include "aclora/backends/cuda/plan.hpp"
#include "aclora/backends/cuda/projection_kernels.cuh"

namespace aclora::backends::cuda {

namespace detail {

// Blocks along y for kernels that walk the R x R entries of each slot.
inline unsigned entry_tiles(std::int64_t max_rank) {
  const std::int64_t tiles = ceil_div(max_rank * max_rank, block_threads);
  return static_cast<unsigned>(std::clamp<std::int64_t>(tiles, 1, 64));
}

template <class Real, class Device>
void launch_gram(Device& device, const GramLaunch& launch, const LayerSlot* slots,
                 const WorkItem* items, const int* flags, const int* exponents,
                 unsigned char* scratch) {
  const dim3 grid(static_cast<unsigned>(launch.count), static_cast<unsigned>(launch.max_tiles));
  const WorkItem* first = items + launch.first_item;
  const int scaled_only = launch.scaled_only ? 1 : 0;
  switch (launch.tile) {
    case 16:
      return device.launch(kernels::gram_kernel<Real, 16>, grid, dim3(block_threads), 0, slots,
                           first, flags, exponents, scratch, scaled_only);
    case 32:
      return device.launch(kernels::gram_kernel<Real, 32>, grid, dim3(block_threads), 0, slots,
                           first, flags, exponents, scratch, scaled_only);
    default:
      return device.launch(kernels::gram_kernel<Real, 64>, grid, dim3(block_threads), 0, slots,
                           first, flags, exponents, scratch, scaled_only);
  }
}

template <class Real, class Device>
void run_analysis_as(Device& device, const Plan& plan, unsigned char* base) {
  const DeviceLayout& at = plan.layout;
  unsigned char* scratch = base + at.scratch;
  const auto* slots = reinterpret_cast<const LayerSlot*>(base + at.slots);
  const auto* items = reinterpret_cast<const WorkItem*>(base + at.items);
  auto* basis = reinterpret_cast<double*>(base + at.basis);
  auto* eigenvalues = reinterpret_cast<double*>(base + at.eigenvalues);
  auto* row_sums = reinterpret_cast<double*>(base + at.row_sums);
  auto* stats = reinterpret_cast<double*>(base + at.stats);
  auto* flags = reinterpret_cast<int*>(base + at.flags);
  auto* exponents = reinterpret_cast<int*>(base + at.exponents);
  auto* infos = reinterpret_cast<int*>(base + at.infos);
  const auto slot_count = static_cast<unsigned>(plan.slots.size());

  // 1. Row sums, largest entries, status and scale of every layer.
  device.zero(infos, plan.slots.size() * sizeof(int));
  device.launch(kernels::stats_kernel, dim3(static_cast<unsigned>(plan.items.size())),
                dim3(block_threads), 0, slots, items, stats);
  device.launch(kernels::layer_stats_kernel, dim3(slot_count), dim3(block_threads), 0, slots, stats,
                row_sums, flags, exponents);

  // 2. Gram rounds: chunk partials (cuBLAS, then the own kernel), reduced in fp64.
  const auto* gemm_a = reinterpret_cast<const void* const*>(base + at.gemm_a);
  auto* const* gemm_c = reinterpret_cast<void* const*>(base + at.gemm_c);
  for (const GramRound& round : plan.rounds) {
    for (const GemmCall& call : round.gemms)
      device.gemm(call, gemm_a + call.first_item, gemm_c + call.first_item);
    for (const GramLaunch& launch : round.launches)
      launch_gram<Real>(device, launch, slots, items, flags, exponents, scratch);
    const dim3 grid(static_cast<unsigned>(round.slot_count), entry_tiles(round.max_rank));
    device.launch(kernels::reduce_kernel<Real>, grid, dim3(block_threads), 0, slots,
                  static_cast<std::int32_t>(round.first_slot), scratch, flags, exponents, basis);
  }

  // 3. Batched fp64 eigen-solves, then the spectrum records.
  for (const EigenRun& run : plan.eigen_runs) {
    const LayerSlot& first = plan.slots[run.first_slot];
    device.eigen(run, basis + first.basis_offset, eigenvalues + first.vector_offset,
                 infos + run.first_slot, scratch, plan.solver_bytes);
  }
  device.launch(kernels::spectrum_kernel, dim3(slot_count), dim3(block_threads), 0, slots, basis,
                eigenvalues, row_sums, flags, exponents, infos,
                reinterpret_cast<double*>(base + at.records));
}

template <class Real, class Device>
void launch_projection(Device& device, const ProjectionLaunch& launch, const LayerSlot* slots,
                       const WriteSlot* writes, const WorkItem* tiles, const Real* kept_bases,
                       const int* exponents) {
  const dim3 grid(static_cast<unsigned>(launch.tile_count));
  const std::size_t bytes = projection_shared_bytes(launch.max_rank, sizeof(Real));
  const WorkItem* first = tiles + launch.first_tile;
  constexpr bool twice = sizeof(Real) == sizeof(double);
  switch (launch.shape.config) {
    case 0:
      return device.launch(kernels::project_write_kernel < twice ? 32 : 64, Real >, grid,
                           dim3(block_threads), bytes, slots, writes, first, kept_bases, exponents);
    case 1:
      return device.launch(kernels::project_write_kernel < twice ? 16 : 32, Real >, grid,
                           dim3(block_threads), bytes, slots, writes, first, kept_bases, exponents);
    case 2:
      return device.launch(kernels::project_write_kernel < twice ? 8 : 16, Real >, grid,
                           dim3(block_threads), bytes, slots, writes, first, kept_bases, exponents);
    default:
      return device.launch(kernels::project_write_kernel < twice ? 2 : 4, Real >, grid,
                           dim3(block_threads), bytes, slots, writes, first, kept_bases, exponents);
  }
}

template <class Real, class Device>
void run_write_as(Device& device, const Plan& plan, unsigned char* base) {
  const DeviceLayout& at = plan.layout;
  const auto* slots = reinterpret_cast<const LayerSlot*>(base + at.slots);
  const auto* writes = reinterpret_cast<const WriteSlot*>(base + at.writes);
  const auto* tiles = reinterpret_cast<const WorkItem*>(base + at.tiles);
  const auto* basis = reinterpret_cast<const double*>(base + at.basis);
  const auto* exponents = reinterpret_cast<const int*>(base + at.exponents);
  auto* kept_bases = reinterpret_cast<Real*>(base + at.scratch);
  for (const ApplyBatch& batch : plan.apply_batches) {
    const dim3 grid(static_cast<unsigned>(batch.slot_count), entry_tiles(batch.max_rank));
    device.launch(kernels::kept_basis_kernel<Real>, grid, dim3(block_threads), 0, slots, writes,
                  static_cast<std::int32_t>(batch.first_slot), basis, kept_bases);
    for (const ProjectionLaunch& launch : batch.launches)
      launch_projection<Real>(device, launch, slots, writes, tiles, kept_bases, exponents);
  }
}

}  // namespace detail

/// Enqueues the analysis of `plan` on `device` over the workspace at `base` (tables already
/// uploaded): statistics and scale of every layer, Gram rounds, eigen-solves, spectrum
/// records (at layout.records). Reads the matrices only.
template <class Device>
void run_analysis(Device& device, const Plan& plan, unsigned char* base) {
  if (plan.precision == Precision::fp64)
    detail::run_analysis_as<double>(device, plan, base);
  else
    detail::run_analysis_as<float>(device, plan, base);
}

/// Enqueues the write of every layer of the analysed `plan` (write parameters already at
/// layout.writes): M' = U_K U_K^T M + noise placed by each layer's policy, rounded once to
/// the storage type. Launches kernels only: nothing in it can fail for a valid plan.
template <class Device>
void run_write(Device& device, const Plan& plan, unsigned char* base) {
  if (plan.precision == Precision::fp64)
    detail::run_write_as<double>(device, plan, base);
  else
    detail::run_write_as<float>(device, plan, base);
}

}  // namespace aclora::backends::cuda
