/// @file report.hpp
/// @brief What one RESTART returns: the threshold and, per module and layer, what was kept.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "aclora/layer.hpp"

namespace aclora {

/// Outcome for one layer.
struct LayerReport {
  MatrixShape shape;                    ///< rows x cols of the layer's matrix
  RankAxis axis = RankAxis::rows;       ///< its rank axis
  std::size_t signal_count = 0;         ///< k_j: components below the threshold
  std::vector<double> singular_values;  ///< before the restart, decreasing
  double kept_energy_fraction = 1.0;    ///< E_K / T (1 when T = 0)
  double sigma = 0.0;                   ///< std of the residual = std of the noise added
};

/// Outcome for one module.
struct ModuleReport {
  std::string name;                 ///< as given (may be empty)
  std::size_t index = 0;            ///< position in the module list
  std::size_t allocated_rank = 0;   ///< R
  std::size_t module_rank = 0;      ///< K, kept by every layer
  std::vector<LayerReport> layers;  ///< in module order
};

/// Outcome of one RESTART.
struct RestartReport {
  std::uint64_t restart_index = 0;    ///< 0 for the first restart of a Restart object
  double mean_loss = 0.0;             ///< L (NaN when p was given explicitly)
  double alpha = 0.0;                 ///< alpha(e) (NaN when p was given explicitly)
  double threshold = 0.0;             ///< p
  std::vector<ModuleReport> modules;  ///< one per module, in list order

  /// Sum over modules of K (a compact measure of the kept capacity).
  std::size_t total_module_rank() const {
    std::size_t total = 0;
    for (const auto& module : modules)
      total += module.module_rank;
    return total;
  }
};

}  // namespace aclora
