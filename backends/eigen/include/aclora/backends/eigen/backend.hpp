/// @file backend.hpp
/// @brief aclora::backends::EigenBackend, the CPU backend over Eigen memory.
#pragma once

#include <Eigen/Core>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "aclora/backend.hpp"
#include "aclora/backends/eigen/analyze.hpp"
#include "aclora/backends/eigen/apply.hpp"
#include "aclora/backends/eigen/matrix.hpp"
#include "aclora/error.hpp"
#include "aclora/layer.hpp"
#include "aclora/memory.hpp"
#include "aclora/parallel.hpp"
#include "aclora/precision.hpp"

namespace aclora::backends {

/// The Eigen backend: float or double matrices in the user's memory (any layout Eigen can
/// map), analysed with the arithmetic of Options::precision (default: fp64, the CPU
/// default of the precision policy), processed in parallel over layers with results that
/// are bit-identical for any thread count.
class EigenBackend {
 public:
  using matrix_type = eigen::MatrixView;                 ///< view of one factor
  using analysis_type = std::vector<eigen::LayerBasis>;  ///< rank-axis basis per layer

  /// Backend settings.
  struct Options {
    eigen::Method method = eigen::Method::gram;  ///< analysis route
    unsigned threads = 0;                        ///< worker threads; 0 = hardware threads
    std::ptrdiff_t panel_width = 256;            ///< columns of the R x n view per panel
    /// Arithmetic of the Gram and projection stages (aclora/precision.hpp): automatic and
    /// fp64 run in float64; fp32 and tf32 (no tensor cores here) in float32 with float64
    /// sums of the per-panel partial Grams. The direct_svd method always runs in float64.
    Precision precision = Precision::automatic;
  };

  EigenBackend() = default;
  /// A backend with the given settings. @throws Error when panel_width < 1.
  explicit EigenBackend(Options options) : options_(options) {
    if (options_.panel_width < 1)
      throw Error("Eigen backend: panel_width must be >= 1, got " +
                  std::to_string(options_.panel_width));
  }

  /// The settings.
  const Options& options() const { return options_; }

  /// The arithmetic this backend runs: automatic is fp64 on a CPU, tf32 runs as fp32.
  Precision resolved_precision() const {
    const Precision resolved = resolve_precision(options_.precision, true);
    return resolved == Precision::tf32 ? Precision::fp32 : resolved;
  }

  /// Rows and columns of a view.
  static MatrixShape shape(const matrix_type& matrix) {
    return MatrixShape{static_cast<std::size_t>(matrix.rows()),
                       static_cast<std::size_t>(matrix.cols())};
  }

  /// Empty when usable, else the reason.
  static std::string check(const matrix_type& matrix) {
    if (matrix.data() == nullptr && matrix.rows() * matrix.cols() != 0)
      return "null data";
    return {};
  }

  /// Where the view's entries lie (host memory), for the driver's overlap check.
  static MemoryRegion memory(const matrix_type& matrix) {
    return MemoryRegion{0,
                        reinterpret_cast<std::uintptr_t>(matrix.data()),
                        matrix.scalar() == eigen::Scalar::f32 ? sizeof(float) : sizeof(double),
                        static_cast<std::size_t>(matrix.rows()),
                        static_cast<std::size_t>(matrix.cols()),
                        matrix.row_stride(),
                        matrix.col_stride()};
  }

  /// Analyses every layer; modifies nothing.
  analysis_type analyze(std::span<const Layer<matrix_type>> layers,
                        std::span<LayerSpectrum> spectra) const {
    analysis_type bases(layers.size());
    const Precision precision = resolved_precision();
    aclora::for_each_index(layers.size(), options_.threads, [&](std::size_t i, unsigned) {
      eigen::visit_rank_major(layers[i], [&](auto&& rank_major) {
        bases[i] =
            options_.method == eigen::Method::gram
                ? eigen::analyze_gram(rank_major, options_.panel_width, precision, spectra[i])
                : eigen::analyze_direct_svd(rank_major, spectra[i]);
      });
    });
    return bases;
  }

  /// Writes every layer: first K basis directions kept, noise added per the plan.
  void apply(std::span<const Layer<matrix_type>> layers, const analysis_type& bases,
             std::span<const LayerPlan> plans) const {
    std::ptrdiff_t largest_rank = 1;
    std::ptrdiff_t largest_kept = 1;
    for (std::size_t i = 0; i < layers.size(); ++i) {
      largest_rank = std::max<std::ptrdiff_t>(largest_rank, layers[i].axis == RankAxis::rows
                                                                ? layers[i].matrix.rows()
                                                                : layers[i].matrix.cols());
      largest_kept = std::max<std::ptrdiff_t>(largest_kept, plans[i].kept);
    }
    // The projection's precision: that of the analysis (the direct SVD runs in float64).
    const Precision precision =
        options_.method == eigen::Method::gram ? resolved_precision() : Precision::fp64;
    const bool single = precision == Precision::fp32;
    // All scratch memory is allocated here, before the first write; every worker thread
    // starts before the first write too (for_each_index).
    std::vector<eigen::Workspace> workspaces(aclora::worker_count(layers.size(), options_.threads));
    for (auto& workspace : workspaces) {
      workspace.reserve(largest_rank, options_.panel_width, largest_kept, single);
    }
    aclora::for_each_index(layers.size(), options_.threads, [&](std::size_t i, unsigned worker) {
      eigen::Workspace& workspace = workspaces[worker];
      const MatrixShape size = shape(layers[i].matrix);
      const bool rows_axis = layers[i].axis == RankAxis::rows;
      const eigen::NoiseIndexing indexing{0, rows_axis ? size.cols : 1, rows_axis ? 1 : size.cols};
      eigen::visit_rank_major(layers[i], [&](auto&& rank_major) {
        eigen::apply_layer(rank_major, bases[i], plans[i], indexing, options_.panel_width,
                           precision, workspace);
      });
    });
  }

 private:
  Options options_{};
};

}  // namespace aclora::backends
