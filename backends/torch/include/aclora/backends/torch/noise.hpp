/// @file noise.hpp
/// @brief The contract's noise for a batch of layers, written into a rank-major buffer.
///
/// Choice: the draws are computed on the host with the core's Philox-4x32-10 and
/// Box-Muller (aclora::gaussian_block), in parallel over rows with at::parallel_for.
/// The transform runs in double for float64 storage (then the draws equal the Eigen
/// backend's bit for bit) and in float for float32 / float16 / bfloat16 storage (about
/// twice as fast; the draws are then accurate to float precision, finer than the storage
/// rounding). Every entry is a pure function of (key, index, precision), so the bits do
/// not depend on thread count, batching or device. For tensors on another device the
/// filled host buffer is copied there once per batch.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "aclora/noise.hpp"

namespace aclora::backends::torch {

/// The noise of one layer of a batch.
struct NoiseTarget {
  NoiseKey key;                   ///< the layer's stream
  double sigma = 0.0;             ///< standard deviation; 0 writes zeros
  bool rows_axis = false;         ///< the stored matrix is R x n (else n x R, seen transposed)
  bool single_precision = false;  ///< Box-Muller in float (storage narrower than float64)
};

namespace detail {
// sigma * draws [row * cols, (row + 1) * cols) of the target's stream, to start[b * step].
template <class Real>
void fill_row(const NoiseTarget& target, std::int64_t row, std::int64_t cols, double* start,
              std::int64_t step) {
  std::uint64_t index = static_cast<std::uint64_t>(row) * static_cast<std::uint64_t>(cols);
  Real block[4];
  gaussian_block<Real>(target.key, index / 4, block);
  for (std::int64_t b = 0; b < cols; ++b, ++index) {
    if (b > 0 && index % 4 == 0)
      gaussian_block<Real>(target.key, index / 4, block);
    start[b * step] = target.sigma * static_cast<double>(block[index % 4]);
  }
}
}  // namespace detail

/// Fills `out` (G x R x n, float64, contiguous, on the CPU) with sigma * N(0, 1) in
/// rank-major coordinates. Entry (a, b) of the layer's stored matrix (rows x cols) gets
/// draw a * cols + b of its stream (aclora/noise.hpp numbering), wherever it lies in `out`.
inline void fill_noise(at::Tensor& out, std::span<const NoiseTarget> targets) {
  const std::int64_t layers = out.size(0);
  const std::int64_t rank = out.size(1);
  const std::int64_t length = out.size(2);
  double* const data = out.data_ptr<double>();
  // Work items are the stored matrix's rows: R per down-type layer, n per up-type layer.
  std::vector<std::int64_t> first_row(layers + 1, 0);
  for (std::int64_t g = 0; g < layers; ++g)
    first_row[g + 1] = first_row[g] + (targets[g].rows_axis ? rank : length);
  at::parallel_for(0, first_row.back(), 16, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t item = begin; item < end; ++item) {
      const auto found = std::upper_bound(first_row.begin(), first_row.end(), item);
      const std::int64_t g = (found - first_row.begin()) - 1;
      const NoiseTarget& target = targets[g];
      const std::int64_t row = item - first_row[g];
      double* const layer = data + g * rank * length;
      // Stored row `row`: its entries are contiguous draws; in rank-major coordinates
      // they run along a row (down) or down a column (up).
      const std::int64_t cols = target.rows_axis ? length : rank;
      double* const start = target.rows_axis ? layer + row * length : layer + row;
      const std::int64_t step = target.rows_axis ? 1 : length;
      if (!(target.sigma > 0.0)) {
        for (std::int64_t b = 0; b < cols; ++b)
          start[b * step] = 0.0;
        continue;
      }
      if (target.single_precision)
        detail::fill_row<float>(target, row, cols, start, step);
      else
        detail::fill_row<double>(target, row, cols, start, step);
    }
  });
}

}  // namespace aclora::backends::torch
