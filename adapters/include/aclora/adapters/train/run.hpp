/// @file run.hpp
/// @brief aclora::train::TrainingRun: the epoch loop around a trainer's step, with the RESTART
/// hook, the learning-rate schedule, metrics, TensorBoard, progress, states and exact resume.
///
/// @code
/// aclora::train::TrainingRun run(network, optimizer, options);
/// if (resume) run.resume(folder);                   // or run.resume_latest()
/// auto summary = run.run(steps_per_epoch, [&](const aclora::train::StepContext& step) {
///   ... forward, backward, optimizer.step() ...     // the learning rate is already set
///   return loss;                                    // the step's mean loss
/// });
/// @endcode
#pragma once

#include <torch/torch.h>

#include <atomic>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "aclora/adapters/json/value.hpp"
#include "aclora/adapters/logs/metrics.hpp"
#include "aclora/adapters/logs/progress.hpp"
#include "aclora/adapters/logs/rank_history.hpp"
#include "aclora/adapters/logs/tensorboard.hpp"
#include "aclora/adapters/train/hook.hpp"
#include "aclora/adapters/train/lr_schedule.hpp"
#include "aclora/adapters/train/network.hpp"
#include "aclora/adapters/train/state.hpp"

namespace aclora::train {

/// Where a run writes, and when it saves its state.
struct RunOptions {
  int epochs = 100;        ///< N
  int restart_every = 10;  ///< E
  bool restarts = true;    ///< false: fixed-rank LoRA through the same loop
  Restart<backends::TorchBackend>::Options restart;           ///< seed, noise policy, min_rank
  OptimizerPolicy optimizer_policy = OptimizerPolicy::reset;  ///< state of rewritten factors
  LrSchedule lr;                        ///< learning rate per step (total_steps is set by run())
  std::filesystem::path output;         ///< the run's folder: metrics.jsonl, tensorboard/, state/
  int save_every_n_epochs = 1;          ///< a state after every n-th epoch (0: never)
  std::int64_t save_every_n_steps = 0;  ///< a state after every n-th step (0: never)
  int keep_states = 2;                  ///< newest states kept (0: all)
  bool continue_on_restart_error = false;  ///< log a failed RESTART and go on (else stop)
  bool tensorboard = true;                 ///< write TensorBoard event files
  bool progress = true;                    ///< show progress (stderr)
  std::optional<logs::ProgressOutput> progress_output;  ///< where progress goes (tests)
  json::Value trainer_options;  ///< the trainer's settings a resume must match
  /// Called after every RESTART with the rank history (draw the rank picture here).
  std::function<void(const logs::RankHistory&)> on_restart;
  /// The trainer's own tensors to save with each state (its data-order state, say).
  std::function<std::map<std::string, torch::Tensor>()> extra_state;
  /// Called after each epoch's last step (0-based epoch, global step) and before that
  /// epoch's RESTART, if one is due: validation, samples, LoRA files see the factors as
  /// trained, never freshly noised ones. hook().module_ranks() then are the ranks those
  /// factors were trained at (the previous RESTART's K, R before the first): the ranks to
  /// write a LoRA file with. The scalars it returns are logged in the epoch's metrics record
  /// {"type": "epoch", ...} (written after the RESTART's record) and as TensorBoard tags
  /// "epoch/NAME". The epoch's training state is saved after the RESTART.
  std::function<std::vector<std::pair<std::string, double>>(int, std::int64_t)> on_epoch_end;
  /// false on every process of a multi-process run but the one that writes (rank 0): no
  /// metrics, TensorBoard events, states or progress (on_restart and on_epoch_end still run).
  bool writes_files = true;
  /// Multi-process runs: turns this process's "interrupted" flag into the decision of all
  /// (true when any process was interrupted), so that all stop after the same step. Called
  /// exactly once after every step and once after every epoch, on every process.
  std::function<bool(bool)> interrupt_consensus;
};

/// What a step is told.
struct StepContext {
  int epoch = 0;                   ///< 0-based epoch
  std::int64_t step_in_epoch = 0;  ///< 0-based index of this step in the epoch
  std::int64_t global_step = 0;    ///< optimizer steps before this one, across resumes
  double lr = 0.0;                 ///< the learning rate set on every parameter group
};

/// How a run ended.
struct RunSummary {
  int epochs_completed = 0;                    ///< epochs finished (cumulative)
  std::int64_t global_step = 0;                ///< optimizer steps (cumulative)
  bool interrupted = false;                    ///< stopped by SIGINT / SIGTERM (a state was saved)
  std::optional<RestartOutcome> last_restart;  ///< the last RESTART this process ran
  std::vector<std::size_t> module_ranks;       ///< K per module (R before any RESTART)
  std::optional<std::filesystem::path> last_state;  ///< the newest state folder written
};

/// A step's loss was NaN or infinite: training stopped, no state was saved after it.
class NonFiniteLoss : public Error {
 public:
  using Error::Error;
};

namespace detail {

inline std::atomic<int> interrupt_signal{0};

inline void on_interrupt(int signal) {
  interrupt_signal.store(signal);
  std::signal(signal, SIG_DFL);  // a second Ctrl-C ends the process at once
}

// SIGINT / SIGTERM set a flag while it lives; the previous handlers come back after.
class InterruptGuard {
 public:
  InterruptGuard() {
    interrupt_signal.store(0);
    previous_int_ = std::signal(SIGINT, on_interrupt);
    previous_term_ = std::signal(SIGTERM, on_interrupt);
  }
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;
  ~InterruptGuard() {
    std::signal(SIGINT, previous_int_);
    std::signal(SIGTERM, previous_term_);
  }
  bool raised() const { return interrupt_signal.load() != 0; }

 private:
  void (*previous_int_)(int) = SIG_DFL;
  void (*previous_term_)(int) = SIG_DFL;
};

}  // namespace detail

/// The epoch loop of one training run (see the file comment). Fresh runs refuse an output
/// folder that already holds metrics or states (resume them instead): nothing is overwritten.
class TrainingRun {
 public:
  /// @param network the LoRAs  @param optimizer over the network's factors (both must
  /// outlive the run)  @param options epochs, schedule, files
  /// @throws Error for invalid options (see RestartHook too).
  TrainingRun(LoraNetwork& network, torch::optim::Optimizer& optimizer, RunOptions options)
      : network_(&network),
        optimizer_(&optimizer),
        options_(std::move(options)),
        hook_(network, &optimizer,
              HookOptions{Schedule{options_.epochs, options_.restart_every},
                          options_.restart,
                          options_.optimizer_policy,
                          {},
                          options_.restarts}) {
    if (options_.epochs < 1 || options_.restart_every < 1)
      throw Error("a run needs epochs >= 1 and a restart interval >= 1");
    if (options_.output.empty())
      throw Error("a run needs an output folder");
  }

  /// The state options a resume must match: the loop's settings and the trainer's.
  json::Value state_options() const {
    json::Value run = json::Object{};
    run["epochs"] = options_.epochs;
    run["restart_every"] = options_.restart_every;
    run["restarts"] = options_.restarts;
    run["seed"] = std::to_string(options_.restart.seed);
    run["noise"] = std::string(noise_name(options_.restart.noise));
    run["min_rank"] = options_.restart.min_rank;
    run["optimizer_policy"] = policy_name(options_.optimizer_policy);
    run["lr"] = options_.lr.base_lr;
    run["lr_schedule"] = static_cast<int>(options_.lr.kind);
    run["lr_warmup_steps"] = options_.lr.warmup_steps;
    json::Value out = json::Object{};
    out["run"] = std::move(run);
    out["trainer"] = options_.trainer_options;
    return out;
  }

  /// Continues from the state in `folder`: factors, optimizer, generators, counters, loss
  /// window, ranks, and the metrics and TensorBoard files cut back to the save.
  /// @throws Error (see load_state) when the state is missing, corrupt or another run's.
  void resume(const std::filesystem::path& folder) {
    LoadedState loaded = load_state(folder, *network_, *optimizer_, state_options());
    hook_.restore(loaded.position.loss_window, loaded.position.restart_count,
                  loaded.position.module_ranks);
    position_ = std::move(loaded.position);
    resumed_extra_ = std::move(loaded.extra);
    resumed_ = true;
    last_state_ = folder;
  }

  /// Resumes from the newest state in the output's state folder.
  /// @throws Error when there is none.
  void resume_latest() {
    const auto folder = latest_state(state_directory());
    if (!folder)
      throw Error(state_directory().string() + ": no training state to resume");
    resume(*folder);
  }

  /// The extra tensors of the resumed state (empty for a fresh run).
  const std::map<std::string, torch::Tensor>& resumed_extra() const { return resumed_extra_; }
  /// The counters and records so far.
  const RunPosition& position() const { return position_; }
  /// The RESTART hook.
  const RestartHook& hook() const { return hook_; }
  /// The folder of the states.
  std::filesystem::path state_directory() const { return options_.output / "state"; }
  /// The metrics file.
  std::filesystem::path metrics_path() const { return options_.output / "metrics.jsonl"; }

  /// Runs the remaining epochs of `steps_per_epoch` steps each, calling `step` for each.
  /// @throws NonFiniteLoss naming the step when a loss is NaN or infinite; aclora::Error from a
  /// failed RESTART unless continue_on_restart_error; Error for files it cannot write.
  RunSummary run(std::int64_t steps_per_epoch,
                 const std::function<double(const StepContext&)>& step) {
    if (steps_per_epoch < 1)
      throw Error("a run needs at least one step per epoch");
    namespace fs = std::filesystem;
    options_.lr.total_steps = steps_per_epoch * options_.epochs;
    open_logs();
    detail::InterruptGuard interrupt;
    std::optional<logs::Progress> progress;
    if (options_.progress && options_.writes_files) {
      progress.emplace(options_.epochs, static_cast<std::size_t>(steps_per_epoch),
                       options_.progress_output.value_or(logs::stderr_progress_output()));
    }
    const auto stop_requested = [&] {
      return options_.interrupt_consensus ? options_.interrupt_consensus(interrupt.raised())
                                          : interrupt.raised();
    };
    RunSummary summary;
    RunPosition& p = position_;
    while (p.epoch < options_.epochs) {
      if (progress)
        progress->begin_epoch(p.epoch, static_cast<std::size_t>(p.step_in_epoch));
      while (p.step_in_epoch < steps_per_epoch) {
        StepContext context{p.epoch, p.step_in_epoch, p.global_step, options_.lr.at(p.global_step)};
        for (auto& group : optimizer_->param_groups())
          group.options().set_lr(context.lr);
        const double loss = step(context);
        if (!std::isfinite(loss)) {
          throw NonFiniteLoss(
              "step " + std::to_string(p.global_step + 1) + " (epoch " +
              std::to_string(p.epoch + 1) + ", step " + std::to_string(p.step_in_epoch + 1) +
              " of the epoch): the loss is " + std::to_string(loss) +
              "; training stopped, no state was saved after it" +
              (last_state_ ? "; the last good state is " + last_state_->string() : std::string()));
        }
        ++p.global_step;
        ++p.step_in_epoch;
        p.epoch_loss_sum += loss;
        ++p.epoch_loss_count;
        if (metrics_)
          metrics_->write_step(p.epoch, p.global_step, loss, context.lr);
        if (events_)
          events_->add_scalars(p.global_step, {{"train/loss", loss}, {"train/lr", context.lr}});
        if (progress)
          progress->step(loss);
        const bool epoch_end = p.step_in_epoch == steps_per_epoch;
        if (!epoch_end && options_.save_every_n_steps > 0 &&
            p.global_step % options_.save_every_n_steps == 0)
          save();
        if (stop_requested() && !epoch_end) {
          save();
          return finish(summary, true);
        }
      }
      if (progress)
        progress->end_epoch();
      end_epoch(progress ? &*progress : nullptr, summary);
      const bool last = p.epoch == options_.epochs;
      if ((options_.save_every_n_epochs > 0 && p.epoch % options_.save_every_n_epochs == 0) ||
          (last && options_.save_every_n_epochs > 0))
        save();
      if (stop_requested() && !last) {
        save();
        return finish(summary, true);
      }
    }
    return finish(summary, false);
  }

  /// Saves a state now (a no-op when one exists for this step). Before run() it saves the
  /// run's starting point (step 0 of a fresh run, after opening its metrics and TensorBoard
  /// files, with the same checks on a used output folder as run()).
  /// @throws Error for an output folder a fresh run may not use, or a failed write.
  void save() {
    if (!options_.writes_files)
      return;
    open_files();
    const std::filesystem::path folder =
        state_directory() / state_folder_name(position_.global_step);
    if (std::filesystem::exists(folder))
      return;
    std::filesystem::create_directories(state_directory());
    metrics_->sync();
    position_.metrics_offset = metrics_->offset();
    if (events_) {
      events_->flush();
      position_.tensorboard_offset = events_->offset();
      position_.tensorboard_file = events_->path().filename().string();
    }
    position_.loss_window = hook_.loss_window();
    position_.restart_count = hook_.restart_count();
    position_.module_ranks = last_ranks_or_empty();
    const std::map<std::string, torch::Tensor> extra =
        options_.extra_state ? options_.extra_state() : std::map<std::string, torch::Tensor>{};
    save_state(folder, *network_, *optimizer_, position_, state_options(), extra);
    last_state_ = folder;
    prune_states();
  }

 private:
  std::vector<std::size_t> last_ranks_or_empty() const {
    return position_.rank_history.empty() ? std::vector<std::size_t>{}
                                          : position_.rank_history.back().second;
  }

  void open_logs() {
    history_ = logs::RankHistory{};
    for (const auto& entry : network_->modules()) {
      history_.modules.push_back(entry.name);
      history_.allocated_ranks.push_back(static_cast<std::size_t>(entry.adapter->rank()));
    }
    for (const auto& [epoch, ranks] : position_.rank_history)
      history_.restarts.push_back(logs::RestartColumn{epoch, ranks});
    history_.epoch_losses = position_.epoch_losses;
    open_files();
  }

  // Opens metrics.jsonl and the TensorBoard file once (the first save() or run()); a fresh
  // run refuses a used output folder, a resumed one cuts the files back to its state.
  void open_files() {
    namespace fs = std::filesystem;
    if (metrics_ || !options_.writes_files)
      return;
    fs::create_directories(options_.output);
    if (!resumed_) {
      std::error_code error;
      if (fs::exists(metrics_path(), error) && fs::file_size(metrics_path(), error) > 0)
        throw Error(metrics_path().string() +
                    " exists (an earlier run?): resume it or choose another output folder");
      if (latest_state(state_directory()))
        throw Error(state_directory().string() +
                    " holds a training state: resume it or choose another output folder");
    }
    metrics_.emplace(metrics_path(), resumed_ ? position_.metrics_offset : 0);
    if (options_.tensorboard) {
      const fs::path folder = options_.output / "tensorboard";
      if (resumed_ && !position_.tensorboard_file.empty())
        events_.emplace(logs::EventWriter::resume(folder / position_.tensorboard_file,
                                                  position_.tensorboard_offset));
      else
        events_.emplace(folder);
    }
  }

  void end_epoch(logs::Progress* progress, RunSummary& summary) {
    RunPosition& p = position_;
    const double mean = p.epoch_loss_sum / static_cast<double>(p.epoch_loss_count);
    p.epoch_losses.emplace_back(p.epoch, mean);
    history_.epoch_losses.emplace_back(p.epoch, mean);
    if (events_)
      events_->add_scalars(p.global_step, {{"epoch/loss", mean}});
    // The trainer's end of the epoch comes before the RESTART rewrites the factors.
    std::vector<std::pair<std::string, double>> epoch_scalars;
    if (options_.on_epoch_end)
      epoch_scalars = options_.on_epoch_end(p.epoch, p.global_step);
    try {
      if (auto outcome = hook_.end_epoch(p.epoch, mean)) {
        if (metrics_)
          metrics_->write_restart(outcome->report, p.epoch, p.global_step, outcome->seconds);
        if (events_) {
          events_->add_scalars(
              p.global_step,
              {{"restart/p", outcome->report.threshold},
               {"restart/total_rank", static_cast<double>(outcome->report.total_module_rank())},
               {"restart/seconds", outcome->seconds}});
        }
        std::vector<std::size_t> ranks;
        for (const auto& module : outcome->report.modules)
          ranks.push_back(module.module_rank);
        p.rank_history.emplace_back(p.epoch, ranks);
        history_.restarts.push_back(logs::RestartColumn{p.epoch, ranks});
        if (options_.on_restart)
          options_.on_restart(history_);
        if (progress) {
          char line[200];
          std::snprintf(
              line, sizeof line,
              "RESTART after epoch %d: L = %.6g, p = %.6g, total rank %zu of %zu (%.2f s)",
              p.epoch + 1, outcome->report.mean_loss, outcome->report.threshold,
              outcome->report.total_module_rank(), allocated_total(), outcome->seconds);
          progress->message(line);
        }
        summary.last_restart = std::move(outcome);
      }
    } catch (const aclora::Error& error) {
      if (!options_.continue_on_restart_error)
        throw;
      json::Value record = json::Object{};
      record["type"] = "restart_error";
      record["epoch"] = p.epoch;
      record["step"] = p.global_step;
      record["error"] = std::string(error.what());
      if (metrics_)
        metrics_->write(record);
      if (progress)
        progress->message(std::string("RESTART failed, training goes on: ") + error.what());
    }
    json::Value record = json::Object{};
    record["type"] = "epoch";
    record["epoch"] = p.epoch;
    record["step"] = p.global_step;
    record["loss"] = mean;
    std::vector<logs::Scalar> scalars;
    for (const auto& [name, value] : epoch_scalars) {
      record[name] = value;
      scalars.push_back({"epoch/" + name, value});
    }
    if (metrics_)
      metrics_->write(record);
    if (events_ && !scalars.empty())
      events_->add_scalars(p.global_step, scalars);
    ++p.epoch;
    p.step_in_epoch = 0;
    p.epoch_loss_sum = 0.0;
    p.epoch_loss_count = 0;
  }

  std::size_t allocated_total() const {
    std::size_t total = 0;
    for (const auto& entry : network_->modules())
      total += static_cast<std::size_t>(entry.adapter->rank());
    return total;
  }

  RunSummary finish(RunSummary& summary, bool interrupted) {
    if (metrics_)
      metrics_->sync();
    if (events_)
      events_->flush();
    summary.epochs_completed = position_.epoch;
    summary.global_step = position_.global_step;
    summary.interrupted = interrupted;
    summary.module_ranks = hook_.module_ranks();
    summary.last_state = last_state_;
    return summary;
  }

  void prune_states() {
    if (options_.keep_states <= 0)
      return;
    namespace fs = std::filesystem;
    std::vector<fs::path> states;
    for (const auto& item : fs::directory_iterator(state_directory())) {
      const std::string name = item.path().filename().string();
      if (name.rfind("state-", 0) == 0 && fs::exists(item.path() / "manifest.json"))
        states.push_back(item.path());
    }
    std::sort(states.begin(), states.end());
    const auto keep = static_cast<std::size_t>(options_.keep_states);
    for (std::size_t i = 0; i + keep < states.size(); ++i) {
      std::error_code ignored;
      fs::remove_all(states[i], ignored);
    }
  }

  LoraNetwork* network_;
  torch::optim::Optimizer* optimizer_;
  RunOptions options_;
  RestartHook hook_;
  RunPosition position_;
  bool resumed_ = false;
  std::map<std::string, torch::Tensor> resumed_extra_;
  std::optional<logs::MetricsFile> metrics_;
  std::optional<logs::EventWriter> events_;
  logs::RankHistory history_;
  std::optional<std::filesystem::path> last_state_;
};

}  // namespace aclora::train
