/// @file apply.hpp
/// @brief The write of one layer, seen along its rank axis (R x n): projection onto
/// the first K basis directions plus noise, panel by panel, rounded once at the write.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cstdint>

#include "aclora/backend.hpp"
#include "aclora/backends/eigen/analyze.hpp"
#include "aclora/noise.hpp"

namespace aclora::backends::eigen {

/// Noise numbering in rank-major coordinates: draw index of entry (i, j) of a panel is
/// offset + i * row_step + j * col_step (one of the steps is 1).
struct NoiseIndexing {
  std::uint64_t offset = 0;
  std::uint64_t row_step = 0;
  std::uint64_t col_step = 0;
};

/// Scratch memory of one thread, sized before the first write.
struct Workspace {
  ::Eigen::MatrixXd panel;         ///< R x w, the panel in double
  ::Eigen::MatrixXd noise;         ///< R x w, sigma * N(0, 1)
  ::Eigen::MatrixXd coefficients;  ///< K x w, U_K^T panel

  /// Reserves room for panels of `rank` x `width` and `kept` coefficients.
  void reserve(::Eigen::Index rank, ::Eigen::Index width, ::Eigen::Index kept) {
    if (panel.rows() < rank || panel.cols() < width)
      panel.resize(rank, width);
    if (noise.rows() < rank || noise.cols() < width)
      noise.resize(rank, width);
    if (coefficients.rows() < kept || coefficients.cols() < width) {
      coefficients.resize(std::max<::Eigen::Index>(kept, 1), width);
    }
  }
};

namespace detail {

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
/// the whole layer (offset of column 0). Uses only `workspace` memory.
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
