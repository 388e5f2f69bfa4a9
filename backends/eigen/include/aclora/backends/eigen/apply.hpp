/// @file apply.hpp
/// @brief The write of one layer, seen along its rank axis (R x n): projection onto
/// the first K basis directions plus noise, panel by panel, rounded once at the write.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "aclora/backend.hpp"
#include "aclora/backends/eigen/analyze.hpp"
#include "aclora/noise.hpp"
#include "aclora/philox.hpp"

namespace aclora::backends::eigen {

/// Noise numbering in rank-major coordinates: draw index of entry (i, j) of a panel is
/// offset + i * row_step + j * col_step (one of the steps is 1).
struct NoiseIndexing {
  std::uint64_t offset = 0;    ///< draw index of entry (0, 0)
  std::uint64_t row_step = 0;  ///< draw index step from one row to the next
  std::uint64_t col_step = 0;  ///< draw index step from one column to the next
};

/// Scratch for a line of float noise: Box-Muller over arrays, so that Eigen's
/// vectorised log, sqrt, sin and cos do the transform.
struct NoiseLine {
  ::Eigen::ArrayXf first;            ///< per pair: (w0 + 1) 2^-32 in (0, 1], then r cos
  ::Eigen::ArrayXf second;           ///< per pair: angle 2 pi w1 2^-32, in [0, 2 pi)
  ::Eigen::ArrayXf radius;           ///< per pair: r = sqrt(-2 log first), then r sin
  ::Eigen::ArrayXf draws;            ///< two draws per pair, in stream order
  std::vector<std::uint32_t> words;  ///< Philox words, one array per word index

  /// Reserves room for lines of up to `length` draws.
  void reserve(::Eigen::Index length) {
    const ::Eigen::Index pairs = 2 * (length / 4 + 2);
    if (first.size() < pairs) {
      first.resize(pairs);
      second.resize(pairs);
      radius.resize(pairs);
      draws.resize(2 * pairs);
      words.resize(2 * pairs);
    }
  }
};

/// Scratch memory of one thread, sized before the first write.
struct Workspace {
  ::Eigen::MatrixXd panel;         ///< R x w, the panel in double
  ::Eigen::MatrixXd noise;         ///< R x w, sigma * N(0, 1)
  ::Eigen::MatrixXd coefficients;  ///< K x w, U_K^T panel
  NoiseLine line;                  ///< float noise of one panel row or column

  /// Reserves room for panels of `rank` x `width` and `kept` coefficients.
  void reserve(::Eigen::Index rank, ::Eigen::Index width, ::Eigen::Index kept) {
    if (panel.rows() < rank || panel.cols() < width)
      panel.resize(rank, width);
    if (noise.rows() < rank || noise.cols() < width)
      noise.resize(rank, width);
    if (coefficients.rows() < kept || coefficients.cols() < width) {
      coefficients.resize(std::max<::Eigen::Index>(kept, 1), width);
    }
    line.reserve(std::max(rank, width));
  }
};

namespace detail {

// Draws [begin, begin + count) of a stream with the float transform of gaussian_block:
// the same Philox words and Box-Muller formula, evaluated over arrays with Eigen's
// vectorised functions (which may differ from std::log / std::sin by an ulp or so).
// Returns a pointer to draw `begin`. Uses only `line` memory (reserved for `count`).
inline const float* gaussian_line(const NoiseKey& key, std::uint64_t begin, ::Eigen::Index count,
                                  NoiseLine& line) {
  constexpr float two_pow_minus_32 = 2.3283064365386962890625e-10f;
  constexpr float two_pi = 6.283185307179586476925286766559f;
  const std::uint64_t first_block = begin / 4;
  const auto blocks = static_cast<::Eigen::Index>(
      (begin + static_cast<std::uint64_t>(count) + 3) / 4 - first_block);
  std::uint32_t* const w0 = line.words.data();
  philox_words(key, first_block, static_cast<std::size_t>(blocks), w0);
  const std::uint32_t* const w1 = w0 + blocks;
  const std::uint32_t* const w2 = w1 + blocks;
  const std::uint32_t* const w3 = w2 + blocks;
  // Pair 2b uses words (0, 1) of block b, pair 2b + 1 words (2, 3), as gaussian_block.
  for (::Eigen::Index b = 0; b < blocks; ++b) {
    line.first(2 * b) = (static_cast<float>(w0[b]) + 1.0f) * two_pow_minus_32;
    line.second(2 * b) = static_cast<float>(w1[b]) * (two_pow_minus_32 * two_pi);
    line.first(2 * b + 1) = (static_cast<float>(w2[b]) + 1.0f) * two_pow_minus_32;
    line.second(2 * b + 1) = static_cast<float>(w3[b]) * (two_pow_minus_32 * two_pi);
  }
  // Contiguous arrays throughout: Eigen vectorises log, sqrt, cos and sin only there.
  const ::Eigen::Index pairs = 2 * blocks;
  line.radius.head(pairs) = (-2.0f * line.first.head(pairs).log()).sqrt();
  line.first.head(pairs) = line.radius.head(pairs) * line.second.head(pairs).cos();
  line.radius.head(pairs) *= line.second.head(pairs).sin();
  for (::Eigen::Index p = 0; p < pairs; ++p) {
    line.draws(2 * p) = line.first(p);
    line.draws(2 * p + 1) = line.radius(p);
  }
  return line.draws.data() + (begin - 4 * first_block);
}

// sigma * N(0, 1) for every entry of `out` from the float transform, line by line along
// the direction whose step is 1.
template <class Out>
void fill_noise_float(Out&& out, const NoiseKey& key, const NoiseIndexing& at, double sigma,
                      NoiseLine& line) {
  if (at.col_step == 1) {
    for (::Eigen::Index i = 0; i < out.rows(); ++i) {
      const float* draws = gaussian_line(key, at.offset + i * at.row_step, out.cols(), line);
      for (::Eigen::Index j = 0; j < out.cols(); ++j)
        out(i, j) = sigma * static_cast<double>(draws[j]);
    }
  } else {
    for (::Eigen::Index j = 0; j < out.cols(); ++j) {
      const float* draws = gaussian_line(key, at.offset + j * at.col_step, out.rows(), line);
      for (::Eigen::Index i = 0; i < out.rows(); ++i)
        out(i, j) = sigma * static_cast<double>(draws[i]);
    }
  }
}

// sigma * N(0, 1) for every entry of `out`, walking along the direction whose step is 1
// so each Philox block serves four consecutive draws.
template <class Out>
void fill_noise(Out&& out, const NoiseKey& key, const NoiseIndexing& at, double sigma) {
  std::uint64_t cached_block = ~std::uint64_t{0};
  double draws[4];
  auto draw = [&](std::uint64_t index) {
    if (index / 4 != cached_block) {
      cached_block = index / 4;
      gaussian_block<double>(key, cached_block, draws);
    }
    return sigma * draws[index % 4];
  };
  if (at.col_step == 1) {
    for (::Eigen::Index i = 0; i < out.rows(); ++i) {
      for (::Eigen::Index j = 0; j < out.cols(); ++j)
        out(i, j) = draw(at.offset + i * at.row_step + j);
    }
  } else {
    for (::Eigen::Index j = 0; j < out.cols(); ++j) {
      for (::Eigen::Index i = 0; i < out.rows(); ++i)
        out(i, j) = draw(at.offset + j * at.col_step + i);
    }
  }
}

}  // namespace detail

/// Writes rank_major <- U_K U_K^T rank_major + noise (placed by plan.noise), where U_K
/// is the first min(K, q) columns of `basis`. `indexing` gives the noise numbering of
/// the whole layer (offset of column 0). Uses only `workspace` memory. Noise for float
/// storage uses the float Box-Muller transform (vectorised), for double storage the
/// double one (gaussian_block<double>, exactly).
template <class RankMajor>
void apply_layer(RankMajor&& rank_major, const Basis& basis, const LayerPlan& plan,
                 NoiseIndexing indexing, ::Eigen::Index panel_width, Workspace& workspace) {
  using Storage = typename std::decay_t<RankMajor>::Scalar;
  const ::Eigen::Index rank = rank_major.rows();
  const ::Eigen::Index length = rank_major.cols();
  const ::Eigen::Index kept = std::min<::Eigen::Index>(plan.kept, basis.cols());
  const auto directions = basis.leftCols(kept);
  const bool with_noise = plan.noise != NoisePolicy::none && plan.sigma > 0.0;
  for (::Eigen::Index first = 0; first < length; first += panel_width) {
    const ::Eigen::Index width = std::min(panel_width, length - first);
    auto panel = workspace.panel.topLeftCorner(rank, width);
    auto noise = workspace.noise.topLeftCorner(rank, width);
    auto coefficients = workspace.coefficients.topLeftCorner(kept, width);
    panel = rank_major.middleCols(first, width).template cast<double>();
    if (with_noise) {
      NoiseIndexing at = indexing;
      at.offset += static_cast<std::uint64_t>(first) * at.col_step;
      if constexpr (std::is_same_v<Storage, float>)
        detail::fill_noise_float(noise, plan.key, at, plan.sigma, workspace.line);
      else
        detail::fill_noise(noise, plan.key, at, plan.sigma);
      if (plan.noise == NoisePolicy::discarded)
        panel -= noise;  // noise outside span(U_K)
    }
    coefficients.noalias() = directions.transpose() * panel;
    panel.noalias() = directions * coefficients;
    if (with_noise)
      panel += noise;
    rank_major.middleCols(first, width) = panel.template cast<Storage>();
  }
}

}  // namespace aclora::backends::eigen
