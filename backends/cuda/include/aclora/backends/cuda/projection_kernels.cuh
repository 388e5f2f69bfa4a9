/// @file projection_kernels.cuh
/// @brief Kernels of the write pass: the kept directions U_K of each layer in the arithmetic
/// type, and the fused projection + noise write Y = U_K U_K^T X + sigma Z (or
/// U_K U_K^T (X - sigma Z) + sigma Z), with the Philox noise drawn inside the writing kernel
/// and one rounding at the store.
#pragma once

#include <cstdint>

#include "aclora/backends/cuda/element.cuh"
#include "aclora/backends/cuda/plan.hpp"
#include "aclora/noise.hpp"

namespace aclora::backends::cuda::kernels {
/// @cond INTERNAL (kernels: documented in the source, not part of the API)

// Grid (slots of the batch, entry tiles): the kept directions in Real, U_K[i + k R] =
// u_k[i] for k < kept, where u_k is the eigenvector of the k-th largest eigenvalue
// (column R - 1 - k of the slot's eigenvectors).
template <class Real>
__global__ void __launch_bounds__(block_threads)
    kept_basis_kernel(const LayerSlot* slots, const WriteSlot* writes, std::int32_t first_slot,
                      const double* basis, Real* kept_base) {
  const std::int32_t slot_index = first_slot + static_cast<std::int32_t>(blockIdx.x);
  const LayerSlot slot = slots[slot_index];
  const std::int64_t rank = slot.rank;
  const std::int64_t kept = writes[slot_index].kept;
  const double* vectors = basis + slot.basis_offset;
  Real* out = kept_base + slot.kept_basis_offset;
  for (std::int64_t e = blockIdx.y * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
       e < rank * kept; e += static_cast<std::int64_t>(gridDim.y) * blockDim.x) {
    const std::int64_t i = e % rank;
    const std::int64_t k = e / rank;
    out[e] = static_cast<Real>(vectors[(rank - 1 - k) * rank + i]);
  }
}

// The standard normal draw for view entry (r, c) of a slot, reusing a cached Philox block
// (four consecutive draws) between calls.
template <class Real>
struct NoiseCursor {
  std::uint64_t cached_block = ~std::uint64_t{0};
  Real draws[4];

  __device__ Real operator()(const LayerSlot& slot, const WriteSlot& write, std::int64_t r,
                             std::int64_t c) {
    const auto index =
        static_cast<std::uint64_t>(r * slot.noise_rank_step + c * slot.noise_length_step);
    if (index / 4 != cached_block) {
      cached_block = index / 4;
      gaussian_block<Real>(write.key, cached_block, draws);
    }
    // Constant indices keep the block in registers (no local-memory array).
    const unsigned lane = static_cast<unsigned>(index % 4);
    return lane == 0 ? draws[0] : lane == 1 ? draws[1] : lane == 2 ? draws[2] : draws[3];
  }
};

// sum_i a(i) b(i) for i < count: in double with one fused multiply-add per term, or for
// float in chunks of projection_sum_chunk terms summed in float, the chunks summed in double.
template <class Real, class A, class B>
__device__ inline Real dot_product(std::int64_t count, A a, B b) {
  if constexpr (sizeof(Real) == sizeof(double)) {
    double sum = 0.0;
    for (std::int64_t i = 0; i < count; ++i)
      sum = fused(a(i), b(i), sum);
    return sum;
  } else {
    double sum = 0.0;
    for (std::int64_t first = 0; first < count; first += projection_sum_chunk) {
      const std::int64_t last =
          first + projection_sum_chunk < count ? first + projection_sum_chunk : count;
      float chunk = 0.0f;
      for (std::int64_t i = first; i < last; ++i)
        chunk = fused(a(i), b(i), chunk);
      sum += static_cast<double>(chunk);
    }
    return static_cast<float>(sum);
  }
}

// One block per tile (slot, column tile of width TW) of the R x n view, all R rows:
// Y[:, tile] = U_K (U_K^T X[:, tile]) (+ noise by the policy), written in place, computed on
// the entries scaled by 2^-e of the analysis (so no intermediate overflows) in Real. The
// block stages its whole column strip in shared memory before its first write, and strips of
// different blocks are disjoint, so the in-place write is safe. Work per entry is 4 K flops
// (K kept directions), so the kernel stays memory-bound for the usual K << R. Stores run
// along the memory's contiguous direction, up to four entries per thread, which also lets
// consecutive draws share one Philox block. Dynamic shared memory:
// projection_shared_bytes(max R, sizeof(Real)).
template <int TW, class Real>
__global__ void __launch_bounds__(block_threads)
    project_write_kernel(const LayerSlot* slots, const WriteSlot* writes, const WorkItem* tiles,
                         const Real* kept_base, const int* exponents) {
  constexpr int stride = TW + 1;
  constexpr int group = TW < 4 ? TW : 4;  // entries per thread along the length axis
  const WorkItem tile = tiles[blockIdx.x];
  const LayerSlot slot = slots[tile.slot];
  const WriteSlot write = writes[tile.slot];
  const std::int64_t rank = slot.rank;
  const std::int64_t length = slot.length;
  const std::int64_t kept = write.kept;
  const std::int64_t col0 = static_cast<std::int64_t>(tile.index) * TW;
  const int exponent = exponents[tile.slot];
  const Real* directions = kept_base + slot.kept_basis_offset;     // U_K, R x K column-major
  Real* strip = reinterpret_cast<Real*>(dynamic_shared_floats());  // [R][TW + 1]
  Real* coefficients = strip + rank * stride;                      // [K][TW + 1]
  const int tid = threadIdx.x;
  const bool rank_fast = slot.rank_stride == 1 && rank > 1;
  const bool with_noise =
      write.policy != static_cast<std::int32_t>(NoisePolicy::none) && write.sigma > 0.0;
  const bool subtract_noise =
      with_noise && write.policy == static_cast<std::int32_t>(NoisePolicy::discarded);
  const auto sigma = static_cast<Real>(scaled(write.sigma, -exponent));

  // 1. The scaled strip X[:, tile] (minus the noise for `discarded`), read along memory order.
  for (std::int64_t e = tid; e < rank * TW; e += block_threads) {
    const std::int64_t r = rank_fast ? e % rank : e / TW;
    const std::int64_t c = rank_fast ? e / rank : e % TW;
    const std::int64_t col = col0 + c;
    Real value = Real(0);
    if (col < length) {
      value = load_scaled<Real>(slot, r, col, exponent);
      if (subtract_noise) {
        NoiseCursor<Real> noise;
        value = fused(-sigma, noise(slot, write, r, col), value);
      }
    }
    strip[r * stride + c] = value;
  }
  __syncthreads();

  // 2. Coefficients C = U_K^T strip (K x TW).
  for (std::int64_t e = tid; e < kept * TW; e += block_threads) {
    const std::int64_t k = e / TW;
    const std::int64_t c = e % TW;
    const Real* u = directions + k * rank;
    coefficients[k * stride + c] = dot_product<Real>(
        rank, [&](std::int64_t i) { return u[i]; },
        [&](std::int64_t i) { return strip[i * stride + c]; });
  }
  __syncthreads();

  // 3. Y = U_K C (+ noise), `group` entries per thread along the contiguous direction.
  const std::int64_t rank_groups = (rank + 3) / 4;
  const std::int64_t groups = rank_fast ? rank_groups * TW : rank * (TW / group);
  for (std::int64_t g = tid; g < groups; g += block_threads) {
    std::int64_t r, c;
    int dr, dc, count;
    if (rank_fast) {
      r = (g % rank_groups) * 4;
      c = g / rank_groups;
      dr = 1;
      dc = 0;
      count = 4;
    } else {
      r = g / (TW / group);
      c = (g % (TW / group)) * group;
      dr = 0;
      dc = 1;
      count = group;
    }
    NoiseCursor<Real> noise;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const std::int64_t row = r + e * dr;
      const std::int64_t col_in_tile = c + e * dc;
      const std::int64_t col = col0 + col_in_tile;
      if (e >= count || row >= rank || col >= length)
        continue;
      Real value = dot_product<Real>(
          kept, [&](std::int64_t k) { return directions[k * rank + row]; },
          [&](std::int64_t k) { return coefficients[k * stride + col_in_tile]; });
      if (with_noise)
        value = fused(sigma, noise(slot, write, row, col), value);
      store_scaled<Real>(slot, row, col, value, exponent);
    }
  }
}

/// @endcond
}  // namespace aclora::backends::cuda::kernels
