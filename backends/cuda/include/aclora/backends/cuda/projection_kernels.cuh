/// @file projection_kernels.cuh
/// @brief Kernels of the write pass: the kept directions U_K of each layer in fp32, and the
/// fused projection + noise write Y = U_K U_K^T X + sigma Z (or U_K U_K^T (X - sigma Z) +
/// sigma Z), with the Philox noise drawn inside the writing kernel and one rounding at the
/// store.
#pragma once

#include <cstdint>

#include "aclora/backends/cuda/element.cuh"
#include "aclora/backends/cuda/plan.hpp"
#include "aclora/noise.hpp"

namespace aclora::backends::cuda::kernels {
/// @cond INTERNAL (kernels: documented in the source, not part of the API)

/// Grid (slots of the batch, entry tiles): the kept directions in fp32, U_K[i + k R] =
/// u_k[i] for k < kept, where u_k is the eigenvector of the k-th largest eigenvalue
/// (column R - 1 - k of the slot's eigenvectors).
static __global__ void __launch_bounds__(block_threads)
    kept_basis_kernel(const LayerSlot* slots, const WriteSlot* writes, std::int32_t first_slot,
                      const double* basis_base, float* kept_base) {
  const std::int32_t slot_index = first_slot + static_cast<std::int32_t>(blockIdx.x);
  const LayerSlot slot = slots[slot_index];
  const std::int64_t rank = slot.rank;
  const std::int64_t kept = writes[slot_index].kept;
  const double* vectors = basis_base + slot.basis_offset;
  float* out = kept_base + slot.kept_basis_offset;
  for (std::int64_t e = blockIdx.y * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
       e < rank * kept; e += static_cast<std::int64_t>(gridDim.y) * blockDim.x) {
    const std::int64_t i = e % rank;
    const std::int64_t k = e / rank;
    out[e] = static_cast<float>(vectors[(rank - 1 - k) * rank + i]);
  }
}

/// The noise draw for view entry (r, c) of a slot, sigma included, reusing a cached Philox
/// block (four consecutive draws) between calls.
struct NoiseCursor {
  std::uint64_t cached_block = ~std::uint64_t{0};
  float draws[4];

  __device__ float operator()(const LayerSlot& slot, const WriteSlot& write, std::int64_t r,
                              std::int64_t c) {
    const auto index =
        static_cast<std::uint64_t>(r * slot.noise_rank_step + c * slot.noise_length_step);
    if (index / 4 != cached_block) {
      cached_block = index / 4;
      gaussian_block<float>(write.key, cached_block, draws);
    }
    // Constant indices keep the block in registers (no local-memory array).
    const unsigned lane = static_cast<unsigned>(index % 4);
    const float draw = lane == 0   ? draws[0]
                       : lane == 1 ? draws[1]
                       : lane == 2 ? draws[2]
                                   : draws[3];
    return write.sigma * draw;
  }
};

/// One block per tile (slot, column tile of width TW) of the R x n view, all R rows:
/// Y[:, tile] = U_K (U_K^T X[:, tile]) (+ noise by the policy), written in place. The block
/// stages its whole column strip in shared memory before its first write, and strips of
/// different blocks are disjoint, so the in-place write is safe. Work per entry is 4 K
/// flops (K kept directions), so the kernel stays memory-bound for the usual K << R.
/// Stores run along the memory's contiguous direction, four entries per thread, which
/// also lets four consecutive draws share one Philox block. Dynamic shared memory:
/// projection_shared_bytes(max R).
template <int TW>
__global__ void __launch_bounds__(block_threads)
    project_write_kernel(const LayerSlot* slots, const WriteSlot* writes, const WorkItem* tiles,
                         const float* kept_base) {
  constexpr int stride = TW + 1;
  const WorkItem tile = tiles[blockIdx.x];
  const LayerSlot slot = slots[tile.slot];
  const WriteSlot write = writes[tile.slot];
  const std::int64_t rank = slot.rank;
  const std::int64_t length = slot.length;
  const std::int64_t kept = write.kept;
  const std::int64_t col0 = static_cast<std::int64_t>(tile.index) * TW;
  const float* directions = kept_base + slot.kept_basis_offset;  // U_K, R x K column-major
  float* strip = dynamic_shared_floats();                        // [R][TW + 1]
  float* coefficients = strip + rank * stride;                   // [K][TW + 1]
  const int tid = threadIdx.x;
  const bool rank_fast = slot.rank_stride == 1 && rank > 1;
  const bool with_noise =
      write.policy != static_cast<std::int32_t>(NoisePolicy::none) && write.sigma > 0.0f;
  const bool subtract_noise =
      with_noise && write.policy == static_cast<std::int32_t>(NoisePolicy::discarded);

  // 1. The strip X[:, tile] (minus the noise for `discarded`), read along memory order.
  for (std::int64_t e = tid; e < rank * TW; e += block_threads) {
    const std::int64_t r = rank_fast ? e % rank : e / TW;
    const std::int64_t c = rank_fast ? e / rank : e % TW;
    const std::int64_t col = col0 + c;
    float value = 0.0f;
    if (col < length) {
      value = load_view(slot, r, col);
      if (subtract_noise) {
        NoiseCursor noise;
        value -= noise(slot, write, r, col);
      }
    }
    strip[r * stride + c] = value;
  }
  __syncthreads();

  // 2. Coefficients C = U_K^T strip (K x TW).
  for (std::int64_t e = tid; e < kept * TW; e += block_threads) {
    const std::int64_t k = e / TW;
    const std::int64_t c = e % TW;
    const float* u = directions + k * rank;
    float sum = 0.0f;
    for (std::int64_t i = 0; i < rank; ++i)
      sum += u[i] * strip[i * stride + c];
    coefficients[k * stride + c] = sum;
  }
  __syncthreads();

  // 3. Y = U_K C (+ noise), four entries per thread along the contiguous direction.
  const std::int64_t rank_quads = (rank + 3) / 4;
  const std::int64_t quads = rank_fast ? rank_quads * TW : rank * (TW / 4);
  for (std::int64_t quad = tid; quad < quads; quad += block_threads) {
    std::int64_t r, c;
    int dr, dc;
    if (rank_fast) {
      r = (quad % rank_quads) * 4;
      c = quad / rank_quads;
      dr = 1;
      dc = 0;
    } else {
      r = quad / (TW / 4);
      c = (quad % (TW / 4)) * 4;
      dr = 0;
      dc = 1;
    }
    NoiseCursor noise;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const std::int64_t row = r + e * dr;
      const std::int64_t col_in_tile = c + e * dc;
      const std::int64_t col = col0 + col_in_tile;
      if (row >= rank || col >= length)
        continue;
      float value = 0.0f;
      for (std::int64_t k = 0; k < kept; ++k)
        value += directions[k * rank + row] * coefficients[k * stride + col_in_tile];
      if (with_noise)
        value += noise(slot, write, row, col);
      store_element(slot.data, slot.dtype, row * slot.rank_stride + col * slot.length_stride,
                    value);
    }
  }
}

/// @endcond

}  // namespace aclora::backends::cuda::kernels
