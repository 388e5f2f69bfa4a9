/// @file cpu_route.hpp
/// @brief The CPU route: each layer analysed and written by one thread, panel by panel,
/// straight from and to the tensor's memory with the kernels of cpu_kernels.hpp.
///
/// A layer is read as its rank-major view R x n (strides of the view, any storage dtype)
/// in panels of kPanelWidth columns converted to float64 in a per-thread workspace. The
/// analysis reads it once: scan (finite? largest entry?), scaling by a running power of two
/// 2^-e with max |entry| < 2^e (exact, so no finite entry overflows the products), Gram
/// products (float64, or float32 per panel added in float64) and row sums; then a float64
/// eigen-solve of the R x R Gram matrix (LibTorch's linalg_eigh). The write reads it once
/// more: noise, projection on the kept directions, one rounding to the storage dtype,
/// written in place. Nothing is allocated during the write: the workspaces are made by the
/// analysis.
///
/// Threads: the layers, largest first, are shared dynamically among at::get_num_threads()
/// workers of aclora::for_each_index, started twice per RESTART (analysis, write). Not
/// at::parallel_for: with an OpenMP build of LibTorch it runs serially in any translation
/// unit compiled without -fopenmp (that is, in most users' code). ATen's own pool is idle
/// meanwhile. A layer's numbers do not depend on which thread computes it.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "aclora/backend.hpp"
#include "aclora/backends/torch/cpu_kernels.hpp"
#include "aclora/backends/torch/matrix.hpp"
#include "aclora/layer.hpp"
#include "aclora/noise.hpp"
#include "aclora/parallel.hpp"
#include "aclora/precision.hpp"
#include "aclora/spectrum.hpp"

namespace aclora::backends::libtorch {

/// Columns per panel of the CPU route (at most float32_sum_limit(R) for every R, so an
/// fp32 panel's partial Gram entries sum at most that many products).
inline constexpr std::int64_t kPanelWidth = 256;

/// What the CPU route's analysis keeps of one layer for its write.
struct CpuLayerBasis {
  std::vector<double> directions;  ///< q rank-axis directions, direction k at [k R, (k + 1) R)
  int exponent = 0;                ///< analysed as M 2^-exponent (max |entry| < 2^exponent)
};

/// Scratch memory of one worker of the CPU route, sized by the analysis for the largest R.
struct CpuWorkspace {
  std::vector<double> panel;               ///< R x kPanelWidth
  std::vector<double> noise;               ///< R x kPanelWidth, sigma * N(0, 1)
  std::vector<double> coefficients;        ///< R x kPanelWidth
  std::vector<float> panel_single;         ///< R x kPanelWidth (fp32)
  std::vector<float> coefficients_single;  ///< R x kPanelWidth (fp32)
  std::vector<float> directions_single;    ///< R x R (fp32)
  std::vector<const double*> rows;         ///< R
  std::vector<const float*> rows_single;   ///< R
  std::vector<double> gram;                ///< R x R
  std::vector<double> row_sums;            ///< R
  std::vector<std::uint32_t> words;        ///< Philox words of a panel's draws
  std::vector<float> draws;                ///< float draws of a panel
  std::vector<double> draws_double;        ///< double draws of a panel

  /// Sizes every buffer for layers of rank axis up to `rank`.
  explicit CpuWorkspace(std::int64_t rank) {
    const auto r = static_cast<std::size_t>(std::max<std::int64_t>(rank, 1));
    const auto panel_size = r * static_cast<std::size_t>(kPanelWidth);
    const std::size_t draw_room = panel_size + 16;  // whole Philox blocks around a span
    panel.resize(panel_size);
    noise.resize(panel_size);
    coefficients.resize(panel_size);
    panel_single.resize(panel_size);
    coefficients_single.resize(panel_size);
    directions_single.resize(r * r);
    rows.resize(r);
    rows_single.resize(r);
    gram.resize(r * r);
    row_sums.resize(r);
    words.resize(draw_room);
    draws.resize(draw_room);
    draws_double.resize(draw_room);
  }
};

namespace detail {

// A layer's rank-major view R x n over raw memory: entry (a, j) at data[a * row_step +
// j * col_step] (in elements of the storage type).
struct RankMajorView {
  void* data = nullptr;
  std::int64_t rank = 0, length = 0;
  std::int64_t row_step = 0, col_step = 0;
  c10::ScalarType dtype = c10::ScalarType::Float;
};

// (No tensor is made: nothing here allocates.)
inline RankMajorView rank_major_view(const Layer<at::Tensor>& layer) {
  const at::Tensor& m = layer.matrix;
  const int rank_dim = layer.axis == RankAxis::rows ? 0 : 1;
  return RankMajorView{m.data_ptr(),       m.size(rank_dim),       m.size(1 - rank_dim),
                       m.stride(rank_dim), m.stride(1 - rank_dim), m.scalar_type()};
}

// Calls f(T{}) with the storage type T of `dtype` (float, double, Half or BFloat16).
template <class F>
void visit_storage(c10::ScalarType dtype, F&& f) {
  switch (dtype) {
    case c10::ScalarType::Double:
      f(double{});
      break;
    case c10::ScalarType::Half:
      f(c10::Half{});
      break;
    case c10::ScalarType::BFloat16:
      f(c10::BFloat16{});
      break;
    default:
      f(float{});
  }
}

template <class T>
inline double to_double(T value) {
  if constexpr (std::is_same_v<T, double> || std::is_same_v<T, float>)
    return static_cast<double>(value);
  else
    return static_cast<double>(static_cast<float>(value));
}
// The storage value of x, as LibTorch's copy_ from float64 rounds it.
template <class T>
inline T from_double(double x) {
  if constexpr (std::is_same_v<T, double>)
    return x;
  else if constexpr (std::is_same_v<T, float>)
    return static_cast<float>(x);
  else
    return T(static_cast<float>(x));
}

// Columns moved together when a panel is transposed on its way in or out (8 doubles: one
// cache line of the panel per row).
inline constexpr std::int64_t kTransposeTile = 8;

// panel (rank x width, row stride kPanelWidth) = columns [first, first + width) in float64.
template <class T>
void load_panel(const RankMajorView& view, std::int64_t first, std::int64_t width, double* panel) {
  const T* data = static_cast<const T*>(view.data);
  if (view.col_step == 1) {
    for (std::int64_t a = 0; a < view.rank; ++a) {
      const T* source = data + a * view.row_step + first;
      double* target = panel + a * kPanelWidth;
      for (std::int64_t j = 0; j < width; ++j)
        target[j] = to_double(source[j]);
    }
  } else {  // columns of kTransposeTile: whole cache lines of the panel, few source streams
    for (std::int64_t j0 = 0; j0 < width; j0 += kTransposeTile) {
      const std::int64_t tile = std::min(kTransposeTile, width - j0);
      const T* source = data + (first + j0) * view.col_step;
      for (std::int64_t a = 0; a < view.rank; ++a) {
        double* target = panel + a * kPanelWidth + j0;
        for (std::int64_t j = 0; j < tile; ++j)
          target[j] = to_double(source[j * view.col_step + a * view.row_step]);
      }
    }
  }
}

// Columns [first, first + width) of the layer = up * panel + noise (noise may be null),
// rounded once to the storage type.
template <class T>
void store_panel(const RankMajorView& view, std::int64_t first, std::int64_t width,
                 const double* panel, const double* noise, double up) {
  T* data = static_cast<T*>(view.data);
  auto value = [&](std::int64_t a, std::int64_t j) {
    const std::int64_t at = a * kPanelWidth + j;
    return from_double<T>(noise ? up * panel[at] + noise[at] : up * panel[at]);
  };
  if (view.col_step == 1) {
    for (std::int64_t a = 0; a < view.rank; ++a) {
      T* target = data + a * view.row_step + first;
      for (std::int64_t j = 0; j < width; ++j)
        target[j] = value(a, j);
    }
  } else {
    for (std::int64_t j0 = 0; j0 < width; j0 += kTransposeTile) {
      const std::int64_t tile = std::min(kTransposeTile, width - j0);
      T* target = data + (first + j0) * view.col_step;
      for (std::int64_t a = 0; a < view.rank; ++a)
        for (std::int64_t j = 0; j < tile; ++j)
          target[j * view.col_step + a * view.row_step] = value(a, j0 + j);
    }
  }
}

// No scale chosen yet (all entries seen so far are zero).
inline constexpr int kNoExponent = -100000;

// The exponent e with 2^(e-1) <= largest < 2^e, within [-1021, 1023] so that 2^e and 2^-e
// are representable (subnormal-only layers are scaled by 2^1021, still exact).
inline int exponent_above(double largest) {
  return std::clamp(std::ilogb(largest) + 1, -1021, 1023);
}

// sigma * draws [begin, begin + count) of the layer's stream into `line`: the float
// transform (the core's gaussian_floats) or the double one (gaussian_block<double>).
inline void noise_line(const NoiseKey& key, bool single, std::uint64_t begin, std::int64_t count,
                       double sigma, CpuWorkspace& workspace, double* line) {
  const std::uint64_t first_block = begin / 4;
  const auto blocks =
      static_cast<std::size_t>((begin + static_cast<std::uint64_t>(count) + 3) / 4 - first_block);
  const std::uint64_t skip = begin - 4 * first_block;
  if (single) {
    gaussian_floats(key, first_block, blocks, workspace.words.data(), workspace.draws.data());
    const float* draws = workspace.draws.data() + skip;
    for (std::int64_t i = 0; i < count; ++i)
      line[i] = sigma * static_cast<double>(draws[i]);
  } else {
    double* draws = workspace.draws_double.data();
    for (std::size_t b = 0; b < blocks; ++b)
      gaussian_block<double>(key, first_block + b, draws + 4 * b);
    for (std::int64_t i = 0; i < count; ++i)
      line[i] = sigma * draws[skip + static_cast<std::uint64_t>(i)];
  }
}

// workspace.noise (rank x width) = sigma * the draws of columns [first, first + width) of
// a layer whose stored matrix is R x n (rows_axis) or n x R: stored entry (i, j) of a
// rows x cols matrix takes draw i * cols + j (aclora/noise.hpp numbering).
inline void fill_noise(const NoiseKey& key, bool single, bool rows_axis, std::int64_t rank,
                       std::int64_t length, std::int64_t first, std::int64_t width, double sigma,
                       CpuWorkspace& workspace) {
  double* noise = workspace.noise.data();
  if (rows_axis) {  // rank-major row a holds draws [a n + first, a n + first + width)
    for (std::int64_t a = 0; a < rank; ++a) {
      noise_line(key, single,
                 static_cast<std::uint64_t>(a) * static_cast<std::uint64_t>(length) +
                     static_cast<std::uint64_t>(first),
                 width, sigma, workspace, noise + a * kPanelWidth);
    }
    return;
  }
  // Stored rows [first, first + width) are the panel's columns: draws [first R, (first +
  // width) R), column j of the panel at [j R, (j + 1) R). The line goes to `coefficients`
  // (free until the projection).
  double* line = workspace.coefficients.data();
  noise_line(key, single, static_cast<std::uint64_t>(first) * static_cast<std::uint64_t>(rank),
             width * rank, sigma, workspace, line);
  for (std::int64_t j0 = 0; j0 < width; j0 += kTransposeTile) {
    const std::int64_t tile = std::min(kTransposeTile, width - j0);
    for (std::int64_t a = 0; a < rank; ++a)
      for (std::int64_t j = 0; j < tile; ++j)
        noise[a * kPanelWidth + j0 + j] = line[(j0 + j) * rank + a];
  }
}

}  // namespace detail

/// Analyses one layer on the CPU (see the file comment); `single`: fp32 Gram products.
/// Sets spectrum.finite = false on a NaN or infinite entry, spectrum.failure when the
/// eigen-solver fails or the results exceed the float64 range.
inline CpuLayerBasis analyze_layer_cpu(const Layer<at::Tensor>& layer, bool single,
                                       CpuWorkspace& workspace, LayerSpectrum& spectrum) {
  const detail::RankMajorView view = detail::rank_major_view(layer);
  const std::int64_t rank = view.rank;
  const std::int64_t length = view.length;
  double* const panel = workspace.panel.data();
  double* const gram = workspace.gram.data();
  double* const row_sums = workspace.row_sums.data();
  std::fill(gram, gram + rank * rank, 0.0);
  std::fill(row_sums, row_sums + rank, 0.0);
  int exponent = detail::kNoExponent;
  for (std::int64_t first = 0; first < length; first += kPanelWidth) {
    const std::int64_t width = std::min(kPanelWidth, length - first);
    detail::visit_storage(view.dtype, [&](auto type) {
      detail::load_panel<decltype(type)>(view, first, width, panel);
    });
    const detail::PanelScan scan = detail::scan_panel(panel, kPanelWidth, rank, width);
    if (!scan.finite) {
      spectrum.finite = false;
      return {};
    }
    if (scan.largest > 0.0) {
      const int above = detail::exponent_above(scan.largest);
      if (exponent == detail::kNoExponent) {
        exponent = above;
      } else if (above > exponent) {  // rescale what was summed so far (powers of two)
        const double gram_factor = std::ldexp(1.0, 2 * (exponent - above));
        const double sum_factor = std::ldexp(1.0, exponent - above);
        for (std::int64_t i = 0; i < rank * rank; ++i)
          gram[i] *= gram_factor;
        for (std::int64_t a = 0; a < rank; ++a)
          row_sums[a] *= sum_factor;
        exponent = above;
      }
    }
    if (exponent == detail::kNoExponent)
      continue;  // an all-zero panel adds nothing
    detail::scale_panel(panel, kPanelWidth, rank, width, std::ldexp(1.0, -exponent));
    if (single) {
      float* narrow = workspace.panel_single.data();
      for (std::int64_t a = 0; a < rank; ++a)
        for (std::int64_t j = 0; j < width; ++j)
          narrow[a * kPanelWidth + j] = static_cast<float>(panel[a * kPanelWidth + j]);
      detail::gram_lower(narrow, kPanelWidth, rank, width, gram);
    } else {
      detail::gram_lower(panel, kPanelWidth, rank, width, gram);
    }
    detail::add_row_sums(panel, kPanelWidth, rank, width, row_sums);
  }
  if (exponent == detail::kNoExponent)
    exponent = 0;
  detail::mirror_lower(gram, rank);

  at::Tensor eigenvalues, eigenvectors;
  try {
    std::tie(eigenvalues, eigenvectors) =
        at::linalg_eigh(at::from_blob(gram, {rank, rank}, at::kDouble));
  } catch (const c10::Error& error) {
    spectrum.failure = std::string("the symmetric eigen-solver failed on the Gram matrix (") +
                       error.what_without_backtrace() + ")";
    return {};
  }
  eigenvalues = eigenvalues.contiguous();
  eigenvectors = eigenvectors.contiguous();  // row-major: component a of vector i at a R + i
  const double* values = eigenvalues.data_ptr<double>();
  const double* vectors = eigenvectors.data_ptr<double>();
  const std::int64_t q = std::min(rank, length);
  CpuLayerBasis result{std::vector<double>(static_cast<std::size_t>(q * rank)), exponent};
  spectrum.singular_values.resize(static_cast<std::size_t>(q));
  spectrum.component_sums.resize(static_cast<std::size_t>(q));
  double entry_sum = 0.0;
  for (std::int64_t a = 0; a < rank; ++a)
    entry_sum += row_sums[a];
  spectrum.entry_sum = std::ldexp(entry_sum, exponent);
  for (std::int64_t i = 0; i < q; ++i) {  // decreasing: eigenpair rank - 1 - i
    const std::int64_t source = rank - 1 - i;
    double* direction = result.directions.data() + i * rank;
    double direction_sum = 0.0, projected = 0.0;
    for (std::int64_t a = 0; a < rank; ++a) {
      direction[a] = vectors[a * rank + source];
      direction_sum += direction[a];
      projected += direction[a] * row_sums[a];
    }
    // Component i (d_i u_i v_i^T) sums to (1^T u_i)(u_i^T s) with s = M 1, the row sums.
    spectrum.singular_values[static_cast<std::size_t>(i)] =
        std::ldexp(std::sqrt(std::max(values[source], 0.0)), exponent);
    spectrum.component_sums[static_cast<std::size_t>(i)] =
        std::ldexp(direction_sum * projected, exponent);
  }
  mark_out_of_range(spectrum);
  return result;
}

/// Writes one layer on the CPU: U_K U_K^T (M - c Z) + Z with U_K the first K directions,
/// Z the noise (none for policy none or sigma 0) and c = 1 for policy discarded; the
/// projection on the layer scaled by 2^-exponent, in float64 or (`single`) float32.
/// Allocates nothing and cannot fail.
inline void apply_layer_cpu(const Layer<at::Tensor>& layer, const CpuLayerBasis& basis,
                            const LayerPlan& plan, bool single, CpuWorkspace& workspace) noexcept {
  const detail::RankMajorView view = detail::rank_major_view(layer);
  const std::int64_t rank = view.rank;
  const std::int64_t length = view.length;
  const std::int64_t q = static_cast<std::int64_t>(basis.directions.size()) / rank;
  const std::int64_t kept = std::min<std::int64_t>(static_cast<std::int64_t>(plan.kept), q);
  const bool with_noise = plan.noise != NoisePolicy::none && plan.sigma > 0.0;
  const bool single_noise = view.dtype != c10::ScalarType::Double;
  const double down = std::ldexp(1.0, -basis.exponent);
  const double up = std::ldexp(1.0, basis.exponent);
  double* const panel = workspace.panel.data();
  if (single) {
    for (std::int64_t i = 0; i < kept * rank; ++i)
      workspace.directions_single[static_cast<std::size_t>(i)] =
          static_cast<float>(basis.directions[static_cast<std::size_t>(i)]);
  }
  for (std::int64_t first = 0; first < length; first += kPanelWidth) {
    const std::int64_t width = std::min(kPanelWidth, length - first);
    detail::visit_storage(view.dtype, [&](auto type) {
      detail::load_panel<decltype(type)>(view, first, width, panel);
    });
    if (with_noise) {
      detail::fill_noise(plan.key, single_noise, layer.axis == RankAxis::rows, rank, length, first,
                         width, plan.sigma, workspace);
      if (plan.noise == NoisePolicy::discarded) {  // noise outside span(U_K)
        for (std::int64_t a = 0; a < rank; ++a)
          for (std::int64_t j = 0; j < width; ++j)
            panel[a * kPanelWidth + j] -= workspace.noise[a * kPanelWidth + j];
      }
    }
    detail::scale_panel(panel, kPanelWidth, rank, width, down);
    if (single) {
      float* narrow = workspace.panel_single.data();
      for (std::int64_t a = 0; a < rank; ++a)
        for (std::int64_t j = 0; j < width; ++j)
          narrow[a * kPanelWidth + j] = static_cast<float>(panel[a * kPanelWidth + j]);
      detail::project(narrow, kPanelWidth, rank, width, workspace.directions_single.data(), kept,
                      workspace.coefficients_single.data(), workspace.rows_single.data());
      for (std::int64_t a = 0; a < rank; ++a)
        for (std::int64_t j = 0; j < width; ++j)
          panel[a * kPanelWidth + j] = static_cast<double>(narrow[a * kPanelWidth + j]);
    } else {
      detail::project(panel, kPanelWidth, rank, width, basis.directions.data(), kept,
                      workspace.coefficients.data(), workspace.rows.data());
    }
    detail::visit_storage(view.dtype, [&](auto type) {
      detail::store_panel<decltype(type)>(view, first, width, panel,
                                          with_noise ? workspace.noise.data() : nullptr, up);
    });
  }
}

/// Calls task(item, worker) for every item of `items`, shared dynamically among at most
/// `workers` threads (aclora::for_each_index); `worker` < workers names the calling worker's
/// scratch. Without autograd in every worker. Every worker starts before any task runs; the
/// first exception of a task is rethrown after all workers stopped.
template <class Task>
void for_each_item(std::span<const std::size_t> items, std::size_t workers, Task&& task) {
  aclora::for_each_index(items.size(), static_cast<unsigned>(std::max<std::size_t>(workers, 1)),
                         [&](std::size_t k, unsigned worker) {
                           const c10::AutoGradMode no_grad(false);  // grad mode is per thread
                           task(items[k], static_cast<std::size_t>(worker));
                         });
}

}  // namespace aclora::backends::libtorch
