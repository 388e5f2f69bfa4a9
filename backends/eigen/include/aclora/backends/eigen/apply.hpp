/// @file apply.hpp
/// @brief The write of one layer, seen along its rank axis (R x n): projection onto
/// the first K basis directions plus noise, panel by panel, rounded once at the write.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "aclora/backend.hpp"
#include "aclora/backends/eigen/analyze.hpp"
#include "aclora/noise.hpp"
#include "aclora/philox.hpp"
#include "aclora/precision.hpp"

namespace aclora::backends::eigen {

/// Noise numbering in rank-major coordinates: draw index of entry (i, j) of a panel is
/// offset + i * row_step + j * col_step (one of the steps is 1).
struct NoiseIndexing {
  std::uint64_t offset = 0;    ///< draw index of entry (0, 0)
  std::uint64_t row_step = 0;  ///< draw index step from one row to the next
  std::uint64_t col_step = 0;  ///< draw index step from one column to the next
};

/// Scratch for a line of float noise (the core's gaussian_floats).
struct NoiseLine {
  std::vector<std::uint32_t> words;  ///< Philox words, one array per word index
  std::vector<float> draws;          ///< four draws per block, in stream order

  /// Reserves room for lines of up to `length` draws.
  void reserve(::Eigen::Index length) {
    const auto size = static_cast<std::size_t>(4 * (length / 4 + 2));
    if (draws.size() < size) {
      words.resize(size);
      draws.resize(size);
    }
  }
};

/// Scratch memory of one thread, sized before the first write.
struct Workspace {
  ::Eigen::MatrixXd panel;                ///< R x w, the panel in double
  ::Eigen::MatrixXd noise;                ///< R x w, sigma * N(0, 1)
  ::Eigen::MatrixXd coefficients;         ///< K x w, U_K^T panel
  ::Eigen::MatrixXf panel_single;         ///< R x w, the scaled panel in float (fp32)
  ::Eigen::MatrixXf coefficients_single;  ///< K x w (fp32)
  ::Eigen::MatrixXf directions_single;    ///< R x K, U_K in float (fp32)
  NoiseLine line;                         ///< float noise of one panel row or column

  /// Reserves room for panels of `rank` x `width` and `kept` coefficients; the float
  /// buffers only when `single` (fp32 / tf32 projection).
  void reserve(::Eigen::Index rank, ::Eigen::Index width, ::Eigen::Index kept, bool single) {
    kept = std::max<::Eigen::Index>(kept, 1);
    if (panel.rows() < rank || panel.cols() < width)
      panel.resize(rank, width);
    if (noise.rows() < rank || noise.cols() < width)
      noise.resize(rank, width);
    if (coefficients.rows() < kept || coefficients.cols() < width)
      coefficients.resize(kept, width);
    if (single) {
      if (panel_single.rows() < rank || panel_single.cols() < width)
        panel_single.resize(rank, width);
      if (coefficients_single.rows() < kept || coefficients_single.cols() < width)
        coefficients_single.resize(kept, width);
      if (directions_single.rows() < rank || directions_single.cols() < kept)
        directions_single.resize(rank, kept);
    }
    line.reserve(std::max(rank, width));
  }
};

namespace detail {

// Draws [begin, begin + count) of a stream with the core's float transform (gaussian_floats:
// the same values as gaussian_block<float>). Returns a pointer to draw `begin`. Uses only
// `line` memory (reserved for `count`).
inline const float* gaussian_line(const NoiseKey& key, std::uint64_t begin, ::Eigen::Index count,
                                  NoiseLine& line) {
  const std::uint64_t first_block = begin / 4;
  const auto blocks =
      static_cast<std::size_t>((begin + static_cast<std::uint64_t>(count) + 3) / 4 - first_block);
  gaussian_floats(key, first_block, blocks, line.words.data(), line.draws.data());
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
/// is the first min(K, q) columns of the layer's basis. The projection runs on the panel
/// scaled by 2^-exponent (exact; no overflow for any finite entries): in double for fp64,
/// in float32 for fp32 / tf32 (sums over R and K: at most float32_sum_limit(R) terms).
/// `indexing` gives the noise numbering of the whole layer (offset of column 0). Uses only
/// `workspace` memory. Noise for float storage uses the core's float Box-Muller
/// (gaussian_floats), for double storage the double one (gaussian_block<double>).
template <class RankMajor>
void apply_layer(RankMajor&& rank_major, const LayerBasis& layer, const LayerPlan& plan,
                 NoiseIndexing indexing, ::Eigen::Index panel_width, Precision precision,
                 Workspace& workspace) {
  using Storage = typename std::decay_t<RankMajor>::Scalar;
  const ::Eigen::Index rank = rank_major.rows();
  const ::Eigen::Index length = rank_major.cols();
  const ::Eigen::Index kept = std::min<::Eigen::Index>(plan.kept, layer.basis.cols());
  const auto directions = layer.basis.leftCols(kept);
  const bool single = precision == Precision::fp32 || precision == Precision::tf32;
  const bool with_noise = plan.noise != NoisePolicy::none && plan.sigma > 0.0;
  const double down = std::ldexp(1.0, -layer.exponent);
  const double up = std::ldexp(1.0, layer.exponent);
  // The float copy of the directions exists only for fp32 / tf32 (the workspace is sized so).
  auto directions_single =
      workspace.directions_single.topLeftCorner(single ? rank : 0, single ? kept : 0);
  if (single)
    directions_single = directions.template cast<float>();
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
    panel *= down;
    if (single) {
      auto panel_single = workspace.panel_single.topLeftCorner(rank, width);
      auto coefficients_single = workspace.coefficients_single.topLeftCorner(kept, width);
      panel_single = panel.template cast<float>();
      coefficients_single.noalias() = directions_single.transpose() * panel_single;
      panel_single.noalias() = directions_single * coefficients_single;
      panel = panel_single.template cast<double>();
    } else {
      coefficients.noalias() = directions.transpose() * panel;
      panel.noalias() = directions * coefficients;
    }
    panel *= up;
    if (with_noise)
      panel += noise;
    rank_major.middleCols(first, width) = panel.template cast<Storage>();
  }
}

}  // namespace aclora::backends::eigen
