/// @file noise.hpp
/// @brief The contract's noise for a batch of layers, written into a rank-major buffer.
///
/// Choice: the draws are computed on the host with the core's Philox-4x32-10 and
/// Box-Muller, in parallel over rows with at::parallel_for. For float64 storage the
/// transform is aclora::gaussian_block<double> (then the draws equal the Eigen backend's
/// bit for bit). For float32 / float16 / bfloat16 storage it is the float transform
/// evaluated over arrays: Philox words in a tight structure-of-arrays loop, then
/// Box-Muller with ATen's vectorised log / sqrt / cos / sin on in-cache float chunks
/// (within about an ulp of gaussian_block<float>, far finer than the storage rounding).
/// The chunks are padded so that no draw ever goes through ATen's scalar tail loop, so
/// every entry is a pure function of (key, index, precision) and the bits do not depend
/// on thread count or batching. For tensors on another device the filled host buffer is
/// copied there once per batch.
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

// Most draws computed per float chunk: the arrays stay in cache and ATen runs each
// elementwise op on one thread (below at::internal::GRAIN_SIZE).
inline constexpr std::int64_t kFloatChunkDraws = 8192;
// Pair counts are rounded up to this multiple, a multiple of any ATen CPU vector loop
// step (2 vectors of up to 16 floats), so every pair takes the vectorised path.
inline constexpr std::int64_t kPairPadding = 64;

// Scratch of one thread for the float transform.
struct FloatNoiseScratch {
  std::vector<std::uint32_t> words;  // Philox words, one array per word index
  std::vector<float> first;          // per pair: (w0 + 1) 2^-32, then r cos
  std::vector<float> second;         // per pair: 2 pi w1 2^-32, then r sin
  std::vector<float> radius;         // per pair: sqrt(-2 log first)
  std::vector<float> draws;          // two draws per pair, in stream order

  void reserve(std::int64_t pairs) {
    const auto size = static_cast<std::size_t>(pairs);
    if (first.size() < size) {
      words.resize(2 * size);
      first.resize(size);
      second.resize(size);
      radius.resize(size);
      draws.resize(2 * size);
    }
  }
};

// Draws [begin, begin + count) of a stream with the float transform of gaussian_block
// (same Philox words, same Box-Muller formula, ATen's vectorised functions). Returns a
// pointer to draw `begin`, valid until the next call with the same scratch.
inline const float* gaussian_span_float(const NoiseKey& key, std::uint64_t begin,
                                        std::int64_t count, FloatNoiseScratch& scratch) {
  constexpr float two_pow_minus_32 = 2.3283064365386962890625e-10f;
  constexpr float two_pi = 6.283185307179586476925286766559f;
  const std::uint64_t first_block = begin / 4;
  const auto blocks =
      static_cast<std::int64_t>((begin + static_cast<std::uint64_t>(count) + 3) / 4 - first_block);
  const std::int64_t pairs = (2 * blocks + kPairPadding - 1) / kPairPadding * kPairPadding;
  scratch.reserve(pairs);
  std::uint32_t* const w0 = scratch.words.data();
  philox_words(key, first_block, static_cast<std::size_t>(blocks), w0);
  const std::uint32_t* const w1 = w0 + blocks;
  const std::uint32_t* const w2 = w1 + blocks;
  const std::uint32_t* const w3 = w2 + blocks;
  // Pair 2b uses words (0, 1) of block b, pair 2b + 1 words (2, 3), as gaussian_block.
  float* const first = scratch.first.data();
  float* const second = scratch.second.data();
  for (std::int64_t b = 0; b < blocks; ++b) {
    first[2 * b] = (static_cast<float>(w0[b]) + 1.0f) * two_pow_minus_32;
    second[2 * b] = two_pi * (static_cast<float>(w1[b]) * two_pow_minus_32);
    first[2 * b + 1] = (static_cast<float>(w2[b]) + 1.0f) * two_pow_minus_32;
    second[2 * b + 1] = two_pi * (static_cast<float>(w3[b]) * two_pow_minus_32);
  }
  std::fill(first + 2 * blocks, first + pairs, 1.0f);
  std::fill(second + 2 * blocks, second + pairs, 0.0f);
  const auto options = at::TensorOptions().dtype(at::kFloat);
  at::Tensor u = at::from_blob(first, {pairs}, options);
  at::Tensor angle = at::from_blob(second, {pairs}, options);
  at::Tensor radius = at::from_blob(scratch.radius.data(), {pairs}, options);
  at::log_out(radius, u);
  radius.mul_(-2.0).sqrt_();
  at::cos_out(u, angle);
  angle.sin_();
  u.mul_(radius);
  angle.mul_(radius);
  float* const draws = scratch.draws.data();
  for (std::int64_t p = 0; p < 2 * blocks; ++p) {
    draws[2 * p] = first[p];
    draws[2 * p + 1] = second[p];
  }
  return draws + (begin - 4 * first_block);
}

// sigma * draws of stored rows [row, row_end) of a target (float transform), each row's
// draw b to start(row)[b * step], where start(row) = base + row * row_step.
inline void fill_rows_float(const NoiseTarget& target, std::int64_t row, std::int64_t row_end,
                            std::int64_t cols, double* base, std::int64_t row_step,
                            std::int64_t step, FloatNoiseScratch& scratch) {
  if (step != 1 && row_step == 1 && cols <= kFloatChunkDraws) {
    // Stored rows are columns of `base` (an up-type layer): generate whole rows, then
    // write row by row of `base`, so the stores are contiguous runs, not strided ones.
    const std::int64_t rows_per_chunk = kFloatChunkDraws / cols;
    for (; row < row_end; row += rows_per_chunk) {
      const std::int64_t rows = std::min(rows_per_chunk, row_end - row);
      const float* draws = gaussian_span_float(
          target.key, static_cast<std::uint64_t>(row) * static_cast<std::uint64_t>(cols),
          rows * cols, scratch);
      for (std::int64_t b = 0; b < cols; ++b) {
        double* const out = base + b * step + row;
        for (std::int64_t r = 0; r < rows; ++r)
          out[r] = target.sigma * static_cast<double>(draws[r * cols + b]);
      }
    }
    return;
  }
  std::uint64_t next = static_cast<std::uint64_t>(row) * static_cast<std::uint64_t>(cols);
  const std::uint64_t end = static_cast<std::uint64_t>(row_end) * static_cast<std::uint64_t>(cols);
  std::int64_t b = 0;  // position of draw `next` in its row
  while (next < end) {
    const auto count = static_cast<std::int64_t>(
        std::min<std::uint64_t>(end - next, static_cast<std::uint64_t>(kFloatChunkDraws)));
    const float* draws = gaussian_span_float(target.key, next, count, scratch);
    for (std::int64_t d = 0; d < count;) {
      const std::int64_t run = std::min(count - d, cols - b);
      double* const start = base + row * row_step + b * step;
      for (std::int64_t e = 0; e < run; ++e)
        start[e * step] = target.sigma * static_cast<double>(draws[d + e]);
      d += run;
      b += run;
      if (b == cols) {
        b = 0;
        ++row;
      }
    }
    next += static_cast<std::uint64_t>(count);
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
    detail::FloatNoiseScratch scratch;
    std::int64_t item = begin;
    while (item < end) {
      const auto found = std::upper_bound(first_row.begin(), first_row.end(), item);
      const std::int64_t g = (found - first_row.begin()) - 1;
      const NoiseTarget& target = targets[g];
      // Stored rows [row, row_end) of layer g; a stored row's entries are contiguous
      // draws and run along a row (down) or down a column (up) in rank-major coordinates.
      const std::int64_t row = item - first_row[g];
      const std::int64_t row_end = std::min(end, first_row[g + 1]) - first_row[g];
      item += row_end - row;
      double* const layer = data + g * rank * length;
      const std::int64_t cols = target.rows_axis ? length : rank;
      const std::int64_t row_step = target.rows_axis ? length : 1;
      const std::int64_t step = target.rows_axis ? 1 : length;
      if (!(target.sigma > 0.0)) {
        for (std::int64_t r = row; r < row_end; ++r)
          for (std::int64_t b = 0; b < cols; ++b)
            layer[r * row_step + b * step] = 0.0;
      } else if (target.single_precision) {
        detail::fill_rows_float(target, row, row_end, cols, layer, row_step, step, scratch);
      } else {
        for (std::int64_t r = row; r < row_end; ++r)
          detail::fill_row<double>(target, r, cols, layer + r * row_step, step);
      }
    }
  });
}

}  // namespace aclora::backends::torch
