/// @file restart.hpp
/// @brief aclora::Restart<Backend>, the one RESTART driver.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "aclora/backend.hpp"
#include "aclora/error.hpp"
#include "aclora/layer.hpp"
#include "aclora/memory.hpp"
#include "aclora/noise.hpp"
#include "aclora/report.hpp"
#include "aclora/schedule.hpp"
#include "aclora/selection.hpp"
#include "aclora/spectrum.hpp"

namespace aclora {

/// Runs AC-LoRA RESTARTs over lists of modules with the backend B: component analysis
/// of every layer, selection of K per module (union of the layers' signal prefixes),
/// truncation and noise reinjection, all in place and all-or-nothing.
///
/// @code
/// aclora::Restart<aclora::backends::EigenBackend> restart({.seed = 42});
/// auto report = restart(modules, schedule, epoch, losses.mean());
/// @endcode
template <class B>
class Restart {
  static_assert(
      requires { typename B::matrix_type; },
      "aclora::Restart<B>: B must define matrix_type, the view of one matrix");
  static_assert(
      requires { typename B::analysis_type; },
      "aclora::Restart<B>: B must define analysis_type, kept from analyze to apply");
  static_assert(Backend<B>,
                "aclora::Restart<B>: B does not model aclora::Backend (shape, check, analyze, "
                "apply; see aclora/backend.hpp)");

 public:
  using backend_type = B;                       ///< the backend
  using matrix_type = typename B::matrix_type;  ///< the backend's matrix view
  using module_type = Module<matrix_type>;      ///< a module of such views

  /// Choices that do not change between restarts.
  struct Options {
    NoisePolicy noise = NoisePolicy::whole;  ///< where the reinjected noise goes
    std::size_t min_rank = 1;                ///< floor of K (0 = the paper's rule exactly)
    std::uint64_t seed = 0;                  ///< key of all noise
  };

  /// A driver with default options and a default-constructed backend.
  Restart() = default;
  /// A driver with the given options and backend.
  explicit Restart(Options options, B backend = B{})
      : options_(options), backend_(std::move(backend)) {}

  /// The scheduled RESTART after epoch `epoch` (0-based) with mean loss `mean_loss`:
  /// p = 1 - L^alpha(e). Does not check `schedule.due(epoch)`: the trainer decides.
  /// @throws Error for a bad loss, epoch or input; then no matrix was modified.
  RestartReport operator()(std::span<const module_type> modules, const Schedule& schedule,
                           int epoch, double mean_loss) {
    const double alpha = schedule.alpha(epoch);
    return run(modules, threshold_from_loss(mean_loss, alpha), mean_loss, alpha);
  }

  /// A RESTART with an explicit energy threshold p in [0, 1] (bypasses the schedule).
  /// @throws Error for p outside [0, 1] or bad input; then no matrix was modified.
  RestartReport at_threshold(std::span<const module_type> modules, double p) {
    if (!(p >= 0.0 && p <= 1.0))
      throw Error("threshold p must lie in [0, 1]");
    const double none = std::numeric_limits<double>::quiet_NaN();
    return run(modules, p, none, none);
  }

  /// Restarts done so far; part of every noise key. Starts at 0.
  std::uint64_t restart_count() const { return restart_count_; }
  /// Sets the restart counter (to resume a training run with the same noise).
  void set_restart_count(std::uint64_t count) { restart_count_ = count; }
  /// The options.
  const Options& options() const { return options_; }
  /// The backend (for its own settings).
  B& backend() { return backend_; }

 private:
  RestartReport run(std::span<const module_type> modules, double p, double mean_loss,
                    double alpha) {
    std::vector<Layer<matrix_type>> layers;
    std::vector<std::size_t> first_layer{0};  // module i owns layers [first[i], first[i+1])
    std::vector<std::size_t> allocated_ranks;
    validate(modules, layers, first_layer, allocated_ranks);
    if constexpr (DescribesMemory<B>)
      check_memory(modules, layers, first_layer);

    std::vector<LayerSpectrum> spectra(layers.size());
    auto analysis = backend_.analyze(std::span<const Layer<matrix_type>>(layers), spectra);
    for (std::size_t m = 0; m < modules.size(); ++m) {
      for (std::size_t l = first_layer[m]; l < first_layer[m + 1]; ++l) {
        if (!spectra[l].finite) {
          throw Error(locate(modules, m, l - first_layer[m]), "matrix holds NaN or Inf");
        }
        if (!spectra[l].failure.empty())
          throw Error(locate(modules, m, l - first_layer[m]), spectra[l].failure);
      }
    }

    RestartReport report{restart_count_, mean_loss, alpha, p, {}};
    std::vector<LayerPlan> plans(layers.size());
    for (std::size_t m = 0; m < modules.size(); ++m) {
      ModuleReport& outcome = report.modules.emplace_back();
      outcome.name = modules[m].name;
      outcome.index = m;
      outcome.allocated_rank = allocated_ranks[m];
      std::vector<std::size_t> counts;
      for (std::size_t l = first_layer[m]; l < first_layer[m + 1]; ++l) {
        counts.push_back(signal_count(spectra[l].singular_values, p));
      }
      outcome.module_rank = module_rank(counts, options_.min_rank, outcome.allocated_rank);
      const std::uint64_t identity = module_identity(outcome.name, m);
      for (std::size_t l = first_layer[m]; l < first_layer[m + 1]; ++l) {
        const MatrixShape shape = B::shape(layers[l].matrix);
        const ResidualStatistics residual =
            residual_statistics(spectra[l], outcome.module_rank, shape.size());
        const std::size_t position = l - first_layer[m];
        const double kept_fraction = kept_energy_fraction(spectra[l], outcome.module_rank);
        plans[l] = LayerPlan{
            outcome.module_rank, options_.noise == NoisePolicy::none ? 0.0 : residual.sigma,
            options_.noise, noise_key(options_.seed, restart_count_, identity, position)};
        outcome.layers.push_back(LayerReport{shape, layers[l].axis, counts[position],
                                             std::move(spectra[l].singular_values), kept_fraction,
                                             residual.sigma});
      }
    }

    backend_.apply(std::span<const Layer<matrix_type>>(layers), analysis, plans);
    ++restart_count_;
    return report;
  }

  static ErrorLocation locate(std::span<const module_type> modules, std::size_t index,
                              std::optional<std::size_t> layer = std::nullopt) {
    return ErrorLocation{modules[index].name, index, layer};
  }

  // Refuses a layer whose entries overlap each other and two layers that share an entry
  // (same address space, an exact test; the sweep over byte spans sorted by start keeps it
  // near-linear when, as usual, nothing overlaps).
  static void check_memory(std::span<const module_type> modules,
                           const std::vector<Layer<matrix_type>>& layers,
                           const std::vector<std::size_t>& first_layer) {
    auto where = [&](std::size_t flat) {
      const auto module = static_cast<std::size_t>(
          std::upper_bound(first_layer.begin(), first_layer.end(), flat) - first_layer.begin() - 1);
      return locate(modules, module, flat - first_layer[module]);
    };
    std::vector<MemoryRegion> regions;
    std::vector<std::pair<std::uintptr_t, std::uintptr_t>> spans;
    regions.reserve(layers.size());
    spans.reserve(layers.size());
    for (std::size_t i = 0; i < layers.size(); ++i) {
      regions.push_back(B::memory(layers[i].matrix));
      spans.push_back(byte_span(regions.back()));
      if (overlaps_itself(regions.back())) {
        throw Error(where(i),
                    "entries of the matrix overlap each other (a broadcast or expanded view); "
                    "RESTART writes in place and needs distinct memory per entry");
      }
    }
    std::vector<std::size_t> order(layers.size());
    for (std::size_t i = 0; i < order.size(); ++i)
      order[i] = i;
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
      return std::pair(regions[a].space, spans[a].first) <
             std::pair(regions[b].space, spans[b].first);
    });
    std::vector<std::size_t> open;  // regions whose span may still meet later ones
    for (std::size_t i : order) {
      const auto [first, last] = spans[i];
      std::erase_if(open, [&](std::size_t j) {
        return regions[j].space != regions[i].space || spans[j].second <= first;
      });
      for (std::size_t j : open) {
        if (overlap(regions[i], regions[j])) {
          const std::size_t earlier = std::min(i, j);
          const ErrorLocation other = where(earlier);
          std::string name = "module ";
          if (!other.module_name.empty())
            name += "'" + other.module_name + "' ";
          name += "(#" + std::to_string(other.module_index) + "), layer " +
                  std::to_string(*other.layer_index);
          throw Error(where(std::max(i, j)),
                      "shares memory with " + name +
                          "; RESTART writes every layer in place, so layers must not overlap");
        }
      }
      if (last > first)
        open.push_back(i);
    }
  }

  void validate(std::span<const module_type> modules, std::vector<Layer<matrix_type>>& layers,
                std::vector<std::size_t>& first_layer,
                std::vector<std::size_t>& allocated_ranks) const {
    if (modules.empty())
      throw Error("no modules given");
    std::unordered_set<std::string> names;
    for (std::size_t m = 0; m < modules.size(); ++m) {
      const module_type& current = modules[m];
      if (current.layers.empty())
        throw Error(locate(modules, m), "module has no layers");
      if (!current.name.empty() && !names.insert(current.name).second) {
        throw Error(locate(modules, m), "duplicate module name (names key the noise)");
      }
      std::size_t rank = 0;
      for (std::size_t l = 0; l < current.layers.size(); ++l) {
        const Layer<matrix_type>& layer = current.layers[l];
        const std::string problem = B::check(layer.matrix);
        if (!problem.empty())
          throw Error(locate(modules, m, l), problem);
        const MatrixShape shape = B::shape(layer.matrix);
        if (shape.rows == 0 || shape.cols == 0) {
          throw Error(locate(modules, m, l), "zero-sized matrix (" + std::to_string(shape.rows) +
                                                 " x " + std::to_string(shape.cols) + ")");
        }
        const std::size_t layer_rank = shape.along(layer.axis);
        if (l == 0) {
          rank = layer_rank;
        } else if (layer_rank != rank) {
          throw Error(locate(modules, m, l), "rank axis has length " + std::to_string(layer_rank) +
                                                 " but layer 0's has " + std::to_string(rank) +
                                                 " (all layers of a module share R)");
        }
        layers.push_back(layer);
      }
      first_layer.push_back(layers.size());
      allocated_ranks.push_back(rank);
    }
  }

  Options options_{};
  B backend_{};
  std::uint64_t restart_count_ = 0;
};

}  // namespace aclora
