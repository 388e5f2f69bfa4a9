/// @file analyze.hpp
/// @brief Batched component analysis of a chunk of same-shape layers (G x R x n).
///
/// Precision: every chunk is read once into float64 (any storage dtype, any device) and
/// analysed there: Gram matrices X X^T by one batched matmul with float64 accumulation,
/// then a batched symmetric eigen-solve (linalg_eigh) of the G R x R Gram matrices.
/// float64 on CUDA too: the Gram products are a small share of the work and the H200's
/// float64 matmul rate keeps them far below the memory time, so we keep the accuracy of
/// the contract's reference instead of mixing precisions.
#pragma once

#include <ATen/ATen.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "aclora/backends/torch/matrix.hpp"
#include "aclora/layer.hpp"

namespace aclora::backends::torch {

/// A batch of layers of one GroupKey, and what analyze keeps for apply.
struct Chunk {
  std::vector<std::size_t> layers;  ///< positions in the layer list
  std::int64_t rank = 0;            ///< R
  std::int64_t length = 0;          ///< n
  at::Tensor basis;  ///< G x R x R float64: rank-axis directions by decreasing singular value
};

/// Reads the chunk's layers into one G x R x n float64 tensor on their device.
inline at::Tensor gather_rank_major(std::span<const Layer<at::Tensor>> layers, const Chunk& chunk) {
  const at::Tensor& first = layers[chunk.layers.front()].matrix;
  at::Tensor stacked =
      at::empty({static_cast<std::int64_t>(chunk.layers.size()), chunk.rank, chunk.length},
                first.options().dtype(at::kDouble));
  for (std::size_t g = 0; g < chunk.layers.size(); ++g) {
    const Layer<at::Tensor>& layer = layers[chunk.layers[g]];
    stacked.select(0, static_cast<std::int64_t>(g)).copy_(rank_major(layer.matrix, layer.axis));
  }
  return stacked;
}

/// Analyses one chunk: sets chunk.basis and returns, on the chunk's device, a
/// G x (2R + 2) float64 tensor per layer [singular values (R), component sums (R),
/// entry sum, finite flag]. No host synchronisation.
inline at::Tensor analyze_chunk(std::span<const Layer<at::Tensor>> layers, Chunk& chunk) {
  const at::Tensor stacked = gather_rank_major(layers, chunk);
  const std::int64_t count = stacked.size(0);
  const at::Tensor finite = at::isfinite(stacked).flatten(1).all(1);  // G
  // Non-finite layers get a zero Gram matrix so the eigen-solver never sees NaN; the
  // driver rejects them from the flag before anything is written.
  const at::Tensor gram = at::bmm(stacked, stacked.transpose(1, 2))
                              .masked_fill(finite.logical_not().view({count, 1, 1}), 0.0);
  auto [eigenvalues, eigenvectors] = at::linalg_eigh(gram);  // increasing order
  chunk.basis = eigenvectors.flip({-1}).contiguous();
  const at::Tensor singular_values = eigenvalues.flip({-1}).clamp_min(0.0).sqrt();
  // Component i (d_i u_i v_i^T) sums to (1^T u_i)(u_i^T s) with s = X 1, the row sums.
  const at::Tensor row_sums = stacked.sum(2);            // G x R
  const at::Tensor direction_sums = chunk.basis.sum(1);  // G x R
  const at::Tensor projected_sums =
      at::bmm(chunk.basis.transpose(1, 2), row_sums.unsqueeze(2)).squeeze(2);  // G x R
  return at::cat({singular_values, direction_sums * projected_sums, row_sums.sum(1, true),
                  finite.to(at::kDouble).unsqueeze(1)},
                 1);
}

}  // namespace aclora::backends::torch
