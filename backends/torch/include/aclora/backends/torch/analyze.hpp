/// @file analyze.hpp
/// @brief Batched component analysis of a chunk of same-shape layers (G x R x n).
///
/// Precision: layers are read into float64 (any storage dtype, any device) and analysed
/// there: Gram matrices X X^T with float64 accumulation (batched matmul on devices, our
/// own kernel on the CPU: gram.hpp), then a batched
/// symmetric eigen-solve (linalg_eigh) of the R x R Gram matrices. float64 on CUDA too:
/// the Gram products are a small share of the work (an H200 runs float64 matmuls at tens
/// of TFLOP/s), so we keep the reference's accuracy instead of mixing precisions.
///
/// On the CPU a chunk is cut into one slice per torch thread and the slices run in
/// parallel (at::parallel_for), each with single-threaded batched ops: batched matmul and
/// eigen-solves otherwise loop over the batch on one thread with some BLAS builds. Every
/// layer's numbers are computed by the same ops whatever the slicing, so results do not
/// depend on the thread count.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "aclora/backends/torch/gram.hpp"
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

/// Calls f(begin, end) over [0, count): on the CPU in parallel slices (one per thread),
/// elsewhere once for the whole range (the device parallelises).
template <class F>
void for_each_slice(const at::Device& device, std::int64_t count, F&& f) {
  if (!device.is_cpu()) {
    f(std::int64_t{0}, count);
    return;
  }
  at::parallel_for(0, count, 1, [&](std::int64_t begin, std::int64_t end) {
    const c10::AutoGradMode no_grad(false);  // grad mode is per thread: off in the workers too
    f(begin, end);
  });
}

/// Reads layers [begin, end) of the chunk into one (end - begin) x R x n float64 tensor.
inline at::Tensor gather_rank_major(std::span<const Layer<at::Tensor>> layers, const Chunk& chunk,
                                    std::int64_t begin, std::int64_t end) {
  const at::Tensor& first = layers[chunk.layers.front()].matrix;
  at::Tensor stacked =
      at::empty({end - begin, chunk.rank, chunk.length}, first.options().dtype(at::kDouble));
  for (std::int64_t g = begin; g < end; ++g) {
    const Layer<at::Tensor>& layer = layers[chunk.layers[static_cast<std::size_t>(g)]];
    stacked.select(0, g - begin).copy_(rank_major(layer.matrix, layer.axis));
  }
  return stacked;
}

/// Analyses one chunk: sets chunk.basis and returns, on the chunk's device, a
/// G x (2R + 2) float64 tensor, per layer [singular values (R), component sums (R),
/// entry sum, finite flag]. No host synchronisation.
///
/// The finite flag is derived from the Gram diagonal (sums of squares) and the row sums:
/// a NaN or infinite entry makes them non-finite. (A float64 matrix with entries beyond
/// about 1e154, whose squares overflow, is reported as non-finite too.)
inline at::Tensor analyze_chunk(std::span<const Layer<at::Tensor>> layers, Chunk& chunk) {
  const at::Tensor& first = layers[chunk.layers.front()].matrix;
  const auto count = static_cast<std::int64_t>(chunk.layers.size());
  const auto options = first.options().dtype(at::kDouble);
  chunk.basis = at::empty({count, chunk.rank, chunk.rank}, options);
  at::Tensor packed = at::empty({count, 2 * chunk.rank + 2}, options);
  for_each_slice(first.device(), count, [&](std::int64_t begin, std::int64_t end) {
    const at::Tensor stacked = gather_rank_major(layers, chunk, begin, end);
    at::Tensor gram;
    if (stacked.device().is_cpu()) {
      gram = at::empty({end - begin, chunk.rank, chunk.rank}, stacked.options());
      for (std::int64_t g = 0; g < end - begin; ++g) {
        detail::gram_cpu(stacked.data_ptr<double>() + g * chunk.rank * chunk.length, chunk.rank,
                         chunk.length, gram.data_ptr<double>() + g * chunk.rank * chunk.rank);
      }
    } else {
      gram = at::bmm(stacked, stacked.transpose(1, 2));
    }
    const at::Tensor row_sums = stacked.sum(2);  // slice x R
    const at::Tensor finite =
        at::isfinite(gram.diagonal(0, 1, 2)).all(1).logical_and(at::isfinite(row_sums).all(1));
    // Non-finite layers get a zero Gram matrix so the eigen-solver never sees NaN; the
    // driver rejects them from the flag before anything is written.
    gram.masked_fill_(finite.logical_not().view({end - begin, 1, 1}), 0.0);
    auto [eigenvalues, eigenvectors] = at::linalg_eigh(gram);  // increasing order
    const at::Tensor basis = eigenvectors.flip({-1});
    chunk.basis.narrow(0, begin, end - begin).copy_(basis);
    // Component i (d_i u_i v_i^T) sums to (1^T u_i)(u_i^T s) with s = X 1, the row sums.
    const at::Tensor projected_sums =
        at::bmm(basis.transpose(1, 2), row_sums.unsqueeze(2)).squeeze(2);
    packed.narrow(0, begin, end - begin)
        .copy_(at::cat({eigenvalues.flip({-1}).clamp_min(0.0).sqrt(), basis.sum(1) * projected_sums,
                        row_sums.sum(1, true), finite.to(at::kDouble).unsqueeze(1)},
                       1));
  });
  return packed;
}

}  // namespace aclora::backends::torch
