/// @file projection_kernels.cuh
/// @brief Kernels of the write pass: the projector P = U_K U_K^T of each layer, and the
/// fused projection + noise write Y = P X + sigma Z (or P (X - sigma Z) + sigma Z), with
/// the Philox noise drawn inside the writing kernel and one rounding at the store.
#pragma once

#include <cstdint>

#include "aclora/backends/cuda/element.cuh"
#include "aclora/backends/cuda/plan.hpp"
#include "aclora/noise.hpp"

namespace aclora::backends::cuda::kernels {

/// Grid (slots of the batch, entry tiles): P[i + j R] = sum_{k < kept} u_k[i] u_k[j] in
/// fp64, stored fp32, where u_k is the eigenvector of the k-th largest eigenvalue (column
/// R - 1 - k of the slot's eigenvectors). P is symmetric, so the layout is immaterial.
static __global__ void __launch_bounds__(block_threads)
    projector_kernel(const LayerSlot* slots, const WriteSlot* writes, std::int32_t first_slot,
                     const double* basis_base, float* projectors_base) {
  const std::int32_t slot_index = first_slot + static_cast<std::int32_t>(blockIdx.x);
  const LayerSlot slot = slots[slot_index];
  const std::int64_t rank = slot.rank;
  const std::int64_t kept = writes[slot_index].kept;
  const double* vectors = basis_base + slot.basis_offset;
  float* projector = projectors_base + slot.projector_offset;
  for (std::int64_t e = blockIdx.y * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
       e < rank * rank; e += static_cast<std::int64_t>(gridDim.y) * blockDim.x) {
    const std::int64_t i = e % rank;
    const std::int64_t j = e / rank;
    double sum = 0.0;
    for (std::int64_t k = 0; k < kept; ++k) {
      const double* u = vectors + (rank - 1 - k) * rank;
      sum += u[i] * u[j];
    }
    projector[e] = static_cast<float>(sum);
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
    return write.sigma * draws[index % 4];
  }
};

/// One block per tile (slot, column tile of width TW) of the R x n view, all R rows:
/// Y[:, tile] = P X[:, tile] (+ noise by the policy), written in place. The block reads
/// its whole column strip before its first write, and strips of different blocks are
/// disjoint, so the in-place write is safe. Each of the 256 threads owns MR x 4 outputs
/// of a TR-row pass; results are staged in shared memory and stored along the memory's
/// contiguous direction. Dynamic shared memory: projection_shared_bytes(max R).
template <int TR, int TW, int MR>
__global__ void __launch_bounds__(block_threads)
    project_write_kernel(const LayerSlot* slots, const WriteSlot* writes, const WorkItem* tiles,
                         const float* projectors_base) {
  static_assert((TR / MR) * (TW / 4) == block_threads, "micro-tiles must cover the tile");
  constexpr int KC = projection_k_chunk;
  float* p_slice = dynamic_shared_floats();  // [KC][TR]
  float* x_slice = p_slice + KC * TR;        // [KC][TW]
  float* output = x_slice + KC * TW;         // [padded R][TW + 1]
  constexpr int out_stride = TW + 1;

  const WorkItem tile = tiles[blockIdx.x];
  const LayerSlot slot = slots[tile.slot];
  const WriteSlot write = writes[tile.slot];
  const std::int64_t rank = slot.rank;
  const std::int64_t length = slot.length;
  const std::int64_t col0 = static_cast<std::int64_t>(tile.index) * TW;
  const float* projector = projectors_base + slot.projector_offset;
  const int tid = threadIdx.x;
  const int tx = tid % (TW / 4);  // column group: columns 4 tx .. 4 tx + 3
  const int ty = tid / (TW / 4);  // row group: rows MR ty .. MR ty + MR - 1 of the pass
  const bool rank_fast = slot.rank_stride == 1 && rank > 1;
  const bool with_noise =
      write.policy != static_cast<std::int32_t>(NoisePolicy::none) && write.sigma > 0.0f;
  const bool subtract_noise =
      with_noise && write.policy == static_cast<std::int32_t>(NoisePolicy::discarded);

  for (std::int64_t row0 = 0; row0 < rank; row0 += TR) {
    float acc[MR][4];
#pragma unroll
    for (int m = 0; m < MR; ++m)
#pragma unroll
      for (int q = 0; q < 4; ++q)
        acc[m][q] = 0.0f;

    for (std::int64_t k0 = 0; k0 < rank; k0 += KC) {
      for (int e = tid; e < KC * TR; e += block_threads) {
        const int kk = e % KC;
        const int i = e / KC;
        const std::int64_t row = row0 + i;
        const std::int64_t k = k0 + kk;
        p_slice[kk * TR + i] = (row < rank && k < rank) ? projector[row * rank + k] : 0.0f;
      }
      for (int e = tid; e < KC * TW; e += block_threads) {
        const int kk = rank_fast ? e % KC : e / TW;
        const int c = rank_fast ? e / KC : e % TW;
        const std::int64_t k = k0 + kk;
        const std::int64_t col = col0 + c;
        float value = 0.0f;
        if (k < rank && col < length) {
          value = load_view(slot, k, col);
          if (subtract_noise) {
            NoiseCursor noise;
            value -= noise(slot, write, k, col);
          }
        }
        x_slice[kk * TW + c] = value;
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < KC; ++kk) {
        const float4 x = reinterpret_cast<const float4*>(x_slice + kk * TW)[tx];
#pragma unroll
        for (int m = 0; m < MR; ++m) {
          const float p = p_slice[kk * TR + ty * MR + m];
          acc[m][0] += p * x.x;
          acc[m][1] += p * x.y;
          acc[m][2] += p * x.z;
          acc[m][3] += p * x.w;
        }
      }
      __syncthreads();
    }
#pragma unroll
    for (int m = 0; m < MR; ++m)
#pragma unroll
      for (int q = 0; q < 4; ++q)
        output[(row0 + ty * MR + m) * out_stride + tx * 4 + q] = acc[m][q];
  }
  __syncthreads();

  // Store: each thread writes runs of four entries along the contiguous memory direction.
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
      float value = output[row * out_stride + col_in_tile];
      if (with_noise)
        value += noise(slot, write, row, col);
      store_element(slot.data, slot.dtype, row * slot.rank_stride + col * slot.length_stride,
                    value);
    }
  }
}

}  // namespace aclora::backends::cuda::kernels
