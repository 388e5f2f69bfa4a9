/// @file analysis_kernels.cuh
/// @brief Kernels of the analysis pass: per-chunk row sums and largest entries, per-layer
/// statistics and scale, the own Gram kernel (fp64 or fp32 products of scaled entries), the
/// fp64 reduction of the chunk partials, and the spectrum records. Every sum runs in a fixed
/// order, so results depend neither on scheduling nor on how the work is batched.
#pragma once

#include <cstdint>

#include "aclora/backends/cuda/element.cuh"
#include "aclora/backends/cuda/plan.hpp"

namespace aclora::backends::cuda::kernels {
/// @cond INTERNAL (kernels: documented in the source, not part of the API)

// One block per item (slot, chunk) of the whole plan: the fp64 sums of each of the R rows
// of the view over the chunk's columns, and the chunk's largest |entry| (+Inf when it holds
// a NaN or an infinity), at stats[stats_offset + chunk * (R + 1)]: R sums, then the largest.
// Two access patterns keep the reads coalesced: a warp per row when columns are contiguous
// (or strides are general), a thread per row when rows are contiguous.
static __global__ void __launch_bounds__(block_threads)
    stats_kernel(const LayerSlot* slots, const WorkItem* items, double* stats) {
  __shared__ double partial[block_threads];
  __shared__ double largest[block_threads];
  const WorkItem item = items[blockIdx.x];
  const LayerSlot slot = slots[item.slot];
  const std::int64_t begin = static_cast<std::int64_t>(item.index) * slot.chunk_width;
  const std::int64_t end =
      begin + slot.chunk_width < slot.length ? begin + slot.chunk_width : slot.length;
  double* out = stats + slot.stats_offset + static_cast<std::int64_t>(item.index) * (slot.rank + 1);
  const int tid = threadIdx.x;
  double own_largest = 0.0;
  auto account = [&](double x) {
    const double magnitude = isfinite(x) ? fabs(x) : INFINITY;
    own_largest = magnitude > own_largest ? magnitude : own_largest;
    return x;
  };
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
          sum += account(load_view(slot, r, c));
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
        sum += account(load_view(slot, r, c));
      for (int offset = 16; offset > 0; offset /= 2)
        sum += __shfl_down_sync(0xffffffffu, sum, offset);
      if (lane == 0)
        out[r] = sum;
    }
  }
  // The maximum does not depend on the order of its operands.
  largest[tid] = own_largest;
  __syncthreads();
  for (int half = block_threads / 2; half > 0; half /= 2) {
    if (tid < half && largest[tid + half] > largest[tid])
      largest[tid] = largest[tid + half];
    __syncthreads();
  }
  if (tid == 0)
    out[slot.rank] = largest[0];
}

// One block per slot: the row sums over the chunks (fp64, chunk order), the status flags and
// the scale exponent e: the largest |entry| is m 2^e with m in [0.5, 1) (e = 0 for a zero
// or non-finite layer). A cuBLAS layer (tf32) whose e lies outside tf32_exponent_limit is
// flagged flag_scaled_gram: the own kernel recomputes its Gram on scaled entries.
static __global__ void __launch_bounds__(block_threads)
    layer_stats_kernel(const LayerSlot* slots, const double* stats, double* row_sums, int* flags,
                       int* exponents) {
  const LayerSlot slot = slots[blockIdx.x];
  const std::int64_t rank = slot.rank;
  const double* chunk_stats = stats + slot.stats_offset;
  for (std::int64_t r = threadIdx.x; r < rank; r += blockDim.x) {
    double sum = 0.0;
    for (std::int32_t chunk = 0; chunk < slot.chunks; ++chunk)
      sum += chunk_stats[chunk * (rank + 1) + r];
    row_sums[slot.vector_offset + r] = sum;
  }
  if (threadIdx.x == 0) {
    double largest = 0.0;
    for (std::int32_t chunk = 0; chunk < slot.chunks; ++chunk) {
      const double value = chunk_stats[chunk * (rank + 1) + rank];
      largest = value > largest ? value : largest;
    }
    int flag = 0, exponent = 0;
    if (!isfinite(largest)) {
      flag = flag_non_finite;
    } else if (largest > 0.0) {
      (void)frexp(largest, &exponent);
      if (static_cast<GramPath>(slot.path) == GramPath::cublas &&
          (exponent > tf32_exponent_limit || exponent < -tf32_exponent_limit))
        flag = flag_scaled_gram;
    }
    flags[blockIdx.x] = flag;
    exponents[blockIdx.x] = exponent;
  }
}

// The own Gram kernel. Grid (items of a launch, lower tiles of the largest R): the block
// computes the T x T tile (ti, tj), ti >= tj, of the chunk's partial Gram X X^T of the entries
// scaled by 2^-e, in Real arithmetic: each sum runs over the chunk's columns in order with one
// fused multiply-add per product. Writes the tile and its mirror into the chunk's R x R
// column-major partial. Skips non-finite slots; with `scaled_only`, all but the slots flagged
// flag_scaled_gram (whose cuBLAS partials it overwrites).
template <class Real, int T>
__global__ void __launch_bounds__(block_threads)
    gram_kernel(const LayerSlot* slots, const WorkItem* items, const int* flags,
                const int* exponents, unsigned char* scratch, int scaled_only) {
  constexpr int P = gram_panel;
  constexpr int M = T / 16;
  __shared__ Real panel_a[T][P + 1];
  __shared__ Real panel_b[T][P + 1];
  const WorkItem item = items[blockIdx.x];
  const LayerSlot slot = slots[item.slot];
  const int flag = flags[item.slot];
  if ((flag & flag_non_finite) != 0 || (scaled_only != 0 && (flag & flag_scaled_gram) == 0))
    return;
  const std::int64_t rank = slot.rank;
  const std::int64_t side = (rank + T - 1) / T;
  std::int64_t t = blockIdx.y;
  if (t >= side * (side + 1) / 2)
    return;
  std::int64_t ti = 0;
  while (t > ti) {
    t -= ti + 1;
    ++ti;
  }
  const std::int64_t tj = t;
  const bool diagonal = ti == tj;
  const std::int64_t a0 = ti * T, b0 = tj * T;
  const std::int64_t begin = static_cast<std::int64_t>(item.index) * slot.chunk_width;
  const std::int64_t end =
      begin + slot.chunk_width < slot.length ? begin + slot.chunk_width : slot.length;
  const int exponent = exponents[item.slot];
  const bool rank_fast = slot.rank_stride == 1 && rank > 1;
  const int tid = threadIdx.x;
  const int tx = tid % 16, ty = tid / 16;
  Real(*panel_other)[P + 1] = diagonal ? panel_a : panel_b;

  Real sums[M][M];
#pragma unroll
  for (int i = 0; i < M; ++i)
#pragma unroll
    for (int j = 0; j < M; ++j)
      sums[i][j] = Real(0);

  for (std::int64_t k0 = begin; k0 < end; k0 += P) {
    // Stage rows [a0, a0 + T) (and [b0, b0 + T)) x columns [k0, k0 + P), zero outside,
    // reading along the memory's contiguous direction.
    for (int e = tid; e < T * P; e += block_threads) {
      const int r = rank_fast ? e % T : e / P;
      const int k = rank_fast ? e / T : e % P;
      const std::int64_t col = k0 + k;
      const bool inside_col = col < end;
      panel_a[r][k] =
          inside_col && a0 + r < rank ? load_scaled<Real>(slot, a0 + r, col, exponent) : Real(0);
      if (!diagonal) {
        panel_b[r][k] =
            inside_col && b0 + r < rank ? load_scaled<Real>(slot, b0 + r, col, exponent) : Real(0);
      }
    }
    __syncthreads();
    for (int k = 0; k < P; ++k) {
      Real a[M], b[M];
#pragma unroll
      for (int i = 0; i < M; ++i) {
        a[i] = panel_a[ty + 16 * i][k];
        b[i] = panel_other[tx + 16 * i][k];
      }
#pragma unroll
      for (int i = 0; i < M; ++i)
#pragma unroll
        for (int j = 0; j < M; ++j)
          sums[i][j] = fused(a[i], b[j], sums[i][j]);
    }
    __syncthreads();
  }

  Real* partial =
      reinterpret_cast<Real*>(scratch + gram_partial_offset(slot, item.index, sizeof(Real)));
#pragma unroll
  for (int i = 0; i < M; ++i)
#pragma unroll
    for (int j = 0; j < M; ++j) {
      const std::int64_t r = a0 + ty + 16 * i, c = b0 + tx + 16 * j;
      if (r < rank && c < rank) {
        partial[r + c * rank] = sums[i][j];
        if (!diagonal)
          partial[c + r * rank] = sums[i][j];
      }
    }
}

// Grid (slots of a round, entry tiles): Gram[e] = sum over chunks, in chunk order and in
// fp64, of the chunk partials (Real: float for fp32 and tf32, double for fp64) into the slot's
// basis region. Unscaled cuBLAS partials are brought to the scaled entries (times 2^-2e,
// exact). Non-finite slots get a zero Gram (the solver must see finite input); a non-finite
// sum is flagged.
template <class Real>
__global__ void __launch_bounds__(block_threads)
    reduce_kernel(const LayerSlot* slots, std::int32_t first_slot, const unsigned char* scratch,
                  int* flags, const int* exponents, double* basis) {
  const std::int32_t slot_index = first_slot + static_cast<std::int32_t>(blockIdx.x);
  const LayerSlot slot = slots[slot_index];
  const std::int64_t rank = slot.rank;
  const std::int64_t entries = rank * rank;
  const int flag = flags[slot_index];
  const bool unscaled =
      static_cast<GramPath>(slot.path) == GramPath::cublas && (flag & flag_scaled_gram) == 0;
  const int exponent = exponents[slot_index];
  const Real* partials = reinterpret_cast<const Real*>(scratch + slot.partial_offset);
  double* gram = basis + slot.basis_offset;
  bool overflow = false;
  for (std::int64_t e = blockIdx.y * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
       e < entries; e += static_cast<std::int64_t>(gridDim.y) * blockDim.x) {
    double sum = 0.0;
    if ((flag & flag_non_finite) == 0) {
      for (std::int32_t chunk = 0; chunk < slot.chunks; ++chunk) {
        const double value = static_cast<double>(partials[chunk * entries + e]);
        sum += unscaled ? scaled(value, -2 * exponent) : value;
      }
    }
    if (!isfinite(sum)) {
      sum = 0.0;
      overflow = true;
    }
    gram[e] = sum;
  }
  if (overflow)
    flags[slot_index] = flag | flag_gram_overflow;
}

// One block per slot: the spectrum record from the eigen-decomposition of the scaled Gram
// (eigenvalues ascending, eigenvectors as columns): singular values (times 2^e) and component
// sums in decreasing order (zero beyond q = min(R, n)), the entry sum, the status and e.
// Component i sums to (1^T u_i)(u_i^T s) with s the row sums of the view.
static __global__ void __launch_bounds__(block_threads)
    spectrum_kernel(const LayerSlot* slots, const double* basis, const double* eigenvalues,
                    const double* row_sums_base, const int* flags, const int* exponents,
                    const int* infos, double* records) {
  const std::int32_t slot_index = static_cast<std::int32_t>(blockIdx.x);
  const LayerSlot slot = slots[slot_index];
  const std::int64_t rank = slot.rank;
  const std::int64_t q = rank < slot.length ? rank : slot.length;
  const double* vectors = basis + slot.basis_offset;
  const double* values = eigenvalues + slot.vector_offset;
  const double* row_sums = row_sums_base + slot.vector_offset;
  const int exponent = exponents[slot_index];
  double* record = records + slot.record_offset;
  for (std::int64_t k = threadIdx.x; k < rank; k += blockDim.x) {
    double singular = 0.0, component = 0.0;
    if (k < q) {
      const std::int64_t source = rank - 1 - k;
      const double value = values[source];
      singular = value > 0.0 ? scaled(sqrt(value), exponent) : 0.0;
      const double* u = vectors + source * rank;
      double sum_u = 0.0, dot = 0.0;
      for (std::int64_t i = 0; i < rank; ++i) {
        sum_u += u[i];
        dot = fused(u[i], row_sums[i], dot);
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
    const int flag = flags[slot_index];
    SlotStatus status = SlotStatus::ok;
    if ((flag & flag_non_finite) != 0)
      status = SlotStatus::non_finite;
    else if ((flag & flag_gram_overflow) != 0)
      status = SlotStatus::gram_overflow;
    else if (infos[slot_index] != 0)
      status = SlotStatus::solver_failed;
    record[2 * rank] = entry_sum;
    record[2 * rank + 1] = static_cast<double>(static_cast<int>(status));
    record[2 * rank + 2] = static_cast<double>(exponent);
  }
}

/// @endcond
}  // namespace aclora::backends::cuda::kernels
