/// @file analysis_kernels.cuh
/// @brief Kernels of the analysis pass: packing of strided layers, partial row sums, the
/// fp64 reduction of the partial Grams and row sums, and the spectrum records.
/// All reductions run in a fixed order, so results do not depend on scheduling.
#pragma once

#include <cstdint>

#include "aclora/backends/cuda/element.cuh"
#include "aclora/backends/cuda/plan.hpp"

namespace aclora::backends::cuda::kernels {
/// @cond INTERNAL (kernels: documented in the source, not part of the API)

/// Copies slot `slot_index` (any strides) into a contiguous fp32 R x n buffer with
/// leading dimension R (column c at packed + c * R).
static __global__ void pack_kernel(const LayerSlot* slots, std::int32_t slot_index,
                                   float* packed_base) {
  const LayerSlot slot = slots[slot_index];
  float* packed = packed_base + slot.packed_offset;
  const std::int64_t count = static_cast<std::int64_t>(slot.rank) * slot.length;
  for (std::int64_t e = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; e < count;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = e % slot.rank;
    const std::int64_t c = e / slot.rank;
    packed[e] = load_view(slot, r, c);
  }
}

/// One block per item (slot, chunk): the fp64 sums of each of the R rows of the view over
/// the chunk's columns, written to row_sums_base[row_sum_offset + chunk * R + r].
/// Two access patterns keep the reads coalesced: a warp per row when columns are
/// contiguous (or strides are general), a thread per row when rows are contiguous.
static __global__ void __launch_bounds__(block_threads)
    row_sum_kernel(const LayerSlot* slots, const WorkItem* items, double* row_sums_base) {
  __shared__ double partial[block_threads];
  const WorkItem item = items[blockIdx.x];
  const LayerSlot slot = slots[item.slot];
  const std::int64_t begin = static_cast<std::int64_t>(item.index) * slot.chunk_width;
  const std::int64_t end =
      begin + slot.chunk_width < slot.length ? begin + slot.chunk_width : slot.length;
  double* out =
      row_sums_base + slot.row_sum_offset + static_cast<std::int64_t>(item.index) * slot.rank;
  const int tid = threadIdx.x;
  if (slot.rank_stride == 1 && slot.rank > 1) {
    // Thread per row: threads t and t + rows_per_pass share a row, in `phases` phases.
    const int rows_per_pass = slot.rank < block_threads ? slot.rank : block_threads;
    const int phases = block_threads / rows_per_pass;
    const int local_row = tid % rows_per_pass;
    const int phase = tid / rows_per_pass;
    for (int row_base = 0; row_base < slot.rank; row_base += rows_per_pass) {
      const int r = row_base + local_row;
      double sum = 0.0;
      if (phase < phases && r < slot.rank) {
        for (std::int64_t c = begin + phase; c < end; c += phases)
          sum += static_cast<double>(load_view(slot, r, c));
      }
      partial[tid] = sum;
      __syncthreads();
      if (phase == 0 && r < slot.rank) {
        double total = 0.0;
        for (int p = 0; p < phases; ++p)
          total += partial[local_row + p * rows_per_pass];
        out[r] = total;
      }
      __syncthreads();
    }
  } else {
    // Warp per row, lanes over columns, fixed-order shuffle reduction.
    const int warp = tid / 32;
    const int lane = tid % 32;
    for (int r = warp; r < slot.rank; r += block_threads / 32) {
      double sum = 0.0;
      for (std::int64_t c = begin + lane; c < end; c += 32)
        sum += static_cast<double>(load_view(slot, r, c));
      for (int offset = 16; offset > 0; offset /= 2)
        sum += __shfl_down_sync(0xffffffffu, sum, offset);
      if (lane == 0)
        out[r] = sum;
    }
  }
}

/// Grid (slots of the batch, entry tiles): Gram[e] = sum over chunks of the fp32 partial
/// Grams, in fp64, into the slot's basis region; blocks of tile 0 also sum the row sums.
/// Non-finite Gram entries are zeroed (the solver must see finite input) and flagged.
static __global__ void __launch_bounds__(block_threads)
    reduce_kernel(const LayerSlot* slots, std::int32_t first_slot, const float* partials_base,
                  const double* row_sum_partials_base, double* basis_base, double* row_sums_base,
                  int* gram_flags) {
  const std::int32_t slot_index = first_slot + static_cast<std::int32_t>(blockIdx.x);
  const LayerSlot slot = slots[slot_index];
  const std::int64_t rank = slot.rank;
  const std::int64_t entries = rank * rank;
  const float* partials = partials_base + slot.partial_offset;
  double* gram = basis_base + slot.basis_offset;
  for (std::int64_t e = blockIdx.y * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
       e < entries; e += static_cast<std::int64_t>(gridDim.y) * blockDim.x) {
    double sum = 0.0;
    for (std::int32_t chunk = 0; chunk < slot.chunks; ++chunk)
      sum += static_cast<double>(partials[chunk * entries + e]);
    if (!isfinite(sum)) {
      sum = 0.0;
      gram_flags[slot_index] = 1;
    }
    gram[e] = sum;
  }
  if (blockIdx.y == 0) {
    const double* row_partials = row_sum_partials_base + slot.row_sum_offset;
    for (std::int64_t r = threadIdx.x; r < rank; r += blockDim.x) {
      double sum = 0.0;
      for (std::int32_t chunk = 0; chunk < slot.chunks; ++chunk)
        sum += row_partials[chunk * rank + r];
      row_sums_base[slot.vector_offset + r] = sum;
    }
  }
}

/// One block per slot of the batch: the spectrum record from the eigen-decomposition of
/// the Gram (eigenvalues ascending, eigenvectors as columns): singular values and
/// component sums in decreasing order (zero beyond q = min(R, n)), the entry sum, status.
/// Component i sums to (1^T u_i)(u_i^T s) with s the row sums of the view.
static __global__ void __launch_bounds__(block_threads)
    spectrum_kernel(const LayerSlot* slots, std::int32_t first_slot, const double* basis_base,
                    const double* eigenvalues_base, const double* row_sums_base,
                    const int* gram_flags, const int* infos, double* records_base) {
  const std::int32_t slot_index = first_slot + static_cast<std::int32_t>(blockIdx.x);
  const LayerSlot slot = slots[slot_index];
  const std::int64_t rank = slot.rank;
  const std::int64_t q = rank < slot.length ? rank : slot.length;
  const double* vectors = basis_base + slot.basis_offset;
  const double* values = eigenvalues_base + slot.vector_offset;
  const double* row_sums = row_sums_base + slot.vector_offset;
  double* record = records_base + slot.record_offset;
  for (std::int64_t k = threadIdx.x; k < rank; k += blockDim.x) {
    double singular = 0.0, component = 0.0;
    if (k < q) {
      const std::int64_t source = rank - 1 - k;
      const double value = values[source];
      singular = value > 0.0 ? sqrt(value) : 0.0;
      const double* u = vectors + source * rank;
      double sum_u = 0.0, dot = 0.0;
      for (std::int64_t i = 0; i < rank; ++i) {
        sum_u += u[i];
        dot += u[i] * row_sums[i];
      }
      component = sum_u * dot;
    }
    record[k] = singular;
    record[rank + k] = component;
  }
  if (threadIdx.x == 0) {
    double entry_sum = 0.0;
    for (std::int64_t r = 0; r < rank; ++r)
      entry_sum += row_sums[r];
    SlotStatus status = SlotStatus::ok;
    if (!isfinite(entry_sum))
      status = SlotStatus::non_finite;
    else if (gram_flags[slot_index] != 0)
      status = SlotStatus::gram_overflow;
    else if (infos[slot_index] != 0)
      status = SlotStatus::solver_failed;
    record[2 * rank] = entry_sum;
    record[2 * rank + 1] = static_cast<double>(static_cast<int>(status));
  }
}

/// @endcond

}  // namespace aclora::backends::cuda::kernels
