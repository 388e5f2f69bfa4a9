#pragma once
/// @file
/// @brief The data of a rank picture: K per module at each RESTART, and the loss per epoch.

#include <algorithm>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "aclora/adapters/logs/error.hpp"
#include "aclora/report.hpp"

namespace aclora::logs {

/// The kept ranks of one RESTART.
struct RestartColumn {
  int epoch = 0;                   ///< epoch at which the RESTART ran
  std::vector<std::size_t> ranks;  ///< K per module, in RankHistory::modules order
};

/// What a rank picture shows: the modules (rows, in this order), K of each at
/// each RESTART (columns), and the mean loss of each epoch.
struct RankHistory {
  std::vector<std::string> modules;          ///< module names, one row each
  std::size_t allocated_rank = 0;            ///< R of every module (when allocated_ranks is empty)
  std::vector<std::size_t> allocated_ranks;  ///< R per module; empty: allocated_rank for all
  std::vector<RestartColumn> restarts;       ///< in time order
  std::vector<std::pair<int, double>> epoch_losses;  ///< (epoch, mean loss), in epoch order

  /// Appends the column of one RESTART. The first report fills modules and
  /// allocated_ranks; later reports must list the same modules in the same order.
  /// @throws Error when a later report's modules differ.
  void add_restart(const RestartReport& report, int epoch) {
    if (modules.empty() && restarts.empty()) {
      for (const ModuleReport& module : report.modules) {
        modules.push_back(module.name);
        allocated_ranks.push_back(module.allocated_rank);
      }
    }
    if (report.modules.size() != modules.size()) {
      throw Error("rank history: the report of epoch " + std::to_string(epoch) + " has " +
                  std::to_string(report.modules.size()) + " modules, the history " +
                  std::to_string(modules.size()));
    }
    RestartColumn column{epoch, {}};
    column.ranks.reserve(modules.size());
    for (std::size_t i = 0; i < modules.size(); ++i) {
      if (report.modules[i].name != modules[i]) {
        throw Error("rank history: the report of epoch " + std::to_string(epoch) + " has module '" +
                    report.modules[i].name + "' at row " + std::to_string(i) +
                    " where the history has '" + modules[i] + "'");
      }
      column.ranks.push_back(report.modules[i].module_rank);
    }
    restarts.push_back(std::move(column));
  }

  /// R of module i.
  std::size_t allocated_rank_of(std::size_t i) const {
    return allocated_ranks.empty() ? allocated_rank : allocated_ranks[i];
  }

  /// The top of the colour scale: the largest R (at least 1).
  std::size_t rank_scale() const {
    std::size_t top = allocated_ranks.empty() ? allocated_rank : 0;
    for (const std::size_t rank : allocated_ranks) {
      top = std::max(top, rank);
    }
    return std::max<std::size_t>(top, 1);
  }
};

}  // namespace aclora::logs
