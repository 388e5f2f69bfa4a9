/// @file hook.hpp
/// @brief aclora::train::RestartHook: AC-LoRA's RESTART at the end of a training epoch.
///
/// @code
/// aclora::train::RestartHook hook(network, &optimizer, {.schedule = {100, 10}});
/// for (int epoch = 0; epoch < 100; ++epoch) {
///   const double loss = train_one_epoch();           // mean training loss of the epoch
///   if (auto restart = hook.end_epoch(epoch, loss))  // a RESTART ran after this epoch
///     log(restart->report);
/// }
/// @endcode
#pragma once

#include <c10/core/DispatchKeySet.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "aclora/adapters/train/network.hpp"
#include "aclora/adapters/train/optimizer.hpp"
#include "aclora/backends/torch.hpp"

namespace aclora::train {

/// What the hook does, fixed for a run.
struct HookOptions {
  Schedule schedule;                                          ///< N epochs, a RESTART every E
  Restart<backends::TorchBackend>::Options restart;           ///< noise policy, min_rank, seed
  OptimizerPolicy optimizer_policy = OptimizerPolicy::reset;  ///< state of rewritten factors
  backends::TorchBackend::Options backend;                    ///< batching of the Torch backend
  /// false: plain fixed-rank LoRA through the same code (losses recorded, no RESTART).
  bool restarts = true;
};

/// One RESTART the hook ran.
struct RestartOutcome {
  int epoch = 0;         ///< 0-based epoch after whose training it ran
  RestartReport report;  ///< p, K per module, spectra...
  double seconds = 0.0;  ///< wall time of the RESTART and the optimizer policy
};

/// Holds the schedule, the loss window, the Restart<TorchBackend> driver and the optimizer
/// policy of one training run. The RESTART runs without autograd and outside autocast
/// (the analysis runs in float64 whatever the factor dtype), on the factors' device.
class RestartHook {
 public:
  /// @param network the LoRAs (must outlive the hook)  @param optimizer the optimizer over
  /// the network's factors, or nullptr (no optimizer state to treat)  @param options the
  /// schedule, RESTART options and policy
  /// @throws Error for policy `reset` with an optimizer other than AdamW, Adam or SGD,
  /// or an invalid schedule.
  RestartHook(const LoraNetwork& network, torch::optim::Optimizer* optimizer, HookOptions options)
      : network_(&network),
        optimizer_(optimizer),
        options_(options),
        restart_(options.restart, backends::TorchBackend(options.backend)) {
    if (options_.schedule.total_epochs < 1 || options_.schedule.restart_interval < 1)
      throw Error("schedule: total epochs and restart interval must be >= 1");
    if (optimizer_ && options_.optimizer_policy == OptimizerPolicy::reset)
      check_resettable(*optimizer_);
  }

  /// Records `mean_loss`, epoch `epoch`'s mean training loss, and runs the RESTART when the
  /// schedule has one after this epoch (e mod E == 0). The factors are rewritten in place,
  /// then the optimizer policy applies.
  /// @return the RESTART's outcome, or nothing when none was due.
  /// @throws aclora::Error for a non-finite or non-positive loss or a RESTART failure (the
  /// error names module and layer; no factor and no optimizer state changed then).
  std::optional<RestartOutcome> end_epoch(int epoch, double mean_loss) {
    if (!std::isfinite(mean_loss))
      throw aclora::Error("epoch " + std::to_string(epoch) + ": training loss is not finite");
    if (!options_.restarts || !options_.schedule.due(epoch)) {
      record(mean_loss);
      return std::nullopt;
    }
    const auto start = std::chrono::steady_clock::now();
    std::vector<double> window = window_;
    window.push_back(mean_loss);
    LossWindow losses;
    for (double loss : window)
      losses.record(loss);
    RestartOutcome outcome;
    outcome.epoch = epoch;
    {
      ::torch::NoGradGuard no_grad;
      c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
      const std::vector<Module<::torch::Tensor>> modules = network_->restart_modules();
      try {
        outcome.report = restart_(modules, options_.schedule, epoch, losses.mean());
      } catch (...) {
        record(mean_loss);  // nothing else changed; a run that goes on keeps the loss
        throw;
      }
      if (optimizer_ && options_.optimizer_policy == OptimizerPolicy::reset) {
        const std::vector<::torch::Tensor> factors = network_->parameters();
        reset_optimizer_state(*optimizer_, factors);
      }
    }
    window_.clear();
    last_ranks_.clear();
    for (const auto& module : outcome.report.modules)
      last_ranks_.push_back(module.module_rank);
    outcome.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return outcome;
  }

  /// K per module from the last RESTART (network order), or R per module before the first.
  std::vector<std::size_t> module_ranks() const {
    if (!last_ranks_.empty())
      return last_ranks_;
    std::vector<std::size_t> ranks;
    for (const auto& entry : network_->modules())
      ranks.push_back(static_cast<std::size_t>(entry.adapter->rank()));
    return ranks;
  }

  /// The epoch losses recorded since the last RESTART, in order.
  const std::vector<double>& loss_window() const { return window_; }
  /// RESTARTs run so far (part of every noise key).
  std::uint64_t restart_count() const { return restart_.restart_count(); }
  /// The options.
  const HookOptions& options() const { return options_; }

  /// Restores what a saved run had: the loss window, the restart counter and the last K per
  /// module (empty: no RESTART yet). Used by resume; the same losses replayed in the same
  /// order give the same mean bit for bit.
  /// @throws Error when `ranks` is neither empty nor one per module, or a K is outside [0, R].
  void restore(std::vector<double> window, std::uint64_t restart_count,
               std::vector<std::size_t> ranks) {
    if (!ranks.empty() && ranks.size() != network_->size())
      throw Error("saved ranks: " + std::to_string(ranks.size()) + " values for " +
                  std::to_string(network_->size()) + " modules");
    for (std::size_t i = 0; i < ranks.size(); ++i) {
      if (ranks[i] > static_cast<std::size_t>(network_->modules()[i].adapter->rank()))
        throw Error("saved rank of module '" + network_->modules()[i].name + "' exceeds R");
    }
    for (double loss : window)
      if (!std::isfinite(loss))
        throw Error("saved loss window holds a non-finite loss");
    window_ = std::move(window);
    restart_.set_restart_count(restart_count);
    last_ranks_ = std::move(ranks);
  }

 private:
  void record(double loss) { window_.push_back(loss); }

  const LoraNetwork* network_;
  torch::optim::Optimizer* optimizer_;
  HookOptions options_;
  Restart<backends::TorchBackend> restart_;
  std::vector<double> window_;
  std::vector<std::size_t> last_ranks_;
};

}  // namespace aclora::train
