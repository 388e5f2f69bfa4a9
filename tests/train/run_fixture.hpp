// One small, deterministic training run through aclora::train::TrainingRun, shared by the
// in-process run tests and the child process that is killed and resumed.
#pragma once

#include <torch/torch.h>
#include <aclora/adapters/train/data_order.hpp>
#include <aclora/adapters/train/run.hpp>
#include <aclora/adapters/train/tensor_io.hpp>

#include <csignal>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>

#include "tiny_model.hpp"

namespace train_test {

struct RunSettings {
  std::filesystem::path output;
  bool resume = false;
  std::optional<std::int64_t> kill_at_step;       // SIGKILL before this global step
  std::optional<std::int64_t> interrupt_at_step;  // SIGINT before this global step
  std::optional<std::int64_t> nan_at_step;        // the loss of this step is NaN
  int epochs = 6;
  std::int64_t save_every_n_steps = 4;
  bool save_before_run = false;  // TrainingRun::save() before run()
  bool train = true;             // false: no run() (after a save_before_run, say)
};

inline constexpr std::int64_t kSamples = 24;
inline constexpr std::int64_t kBatch = 4;
inline constexpr std::int64_t kStepsPerEpoch = kSamples / kBatch;

// Trains the tiny model's attention linears to map images to fixed targets; the inputs get
// fresh noise from LibTorch's CPU generator every step (so resuming must restore it) and the
// batches follow epoch_order(seed, epoch). Writes OUT/final.safetensors (the factors).
inline aclora::train::RunSummary run_training(const RunSettings& settings) {
  torch::manual_seed(1234);
  TinyNet net(8, 2, 4);
  const torch::Tensor images = torch::randn({kSamples, 3, 4, 4});
  const torch::Tensor targets = torch::randn({kSamples, 4}) * 0.3;
  aclora::train::LoraNetwork network;
  aclora::train::InjectOptions inject;
  inject.rank = 4;
  inject.naming = aclora::train::Naming::plain("lora_unet");
  network.inject(*net, aclora::train::Targets::patterns({"to_q", "to_v", "ff_in"}), inject);
  torch::optim::AdamW optimizer(network.parameters(), torch::optim::AdamWOptions(1e-2));

  aclora::train::RunOptions options;
  options.epochs = settings.epochs;
  options.restart_every = 2;
  options.restart.seed = 99;
  options.lr = {aclora::train::LrScheduleKind::cosine, 1e-2, 3, 1};
  options.output = settings.output;
  options.save_every_n_epochs = 1;
  options.save_every_n_steps = settings.save_every_n_steps;
  options.keep_states = 0;
  options.progress = false;
  options.trainer_options = aclora::json::Object{};
  options.trainer_options["model"] = "tiny";
  options.on_epoch_end = [&](int, std::int64_t) {
    double up = 0.0;  // a value of the factors, as a validation loss would be
    for (const auto& module : network.modules())
      up += module.adapter->up.abs().mean().item<double>();
    return std::vector<std::pair<std::string, double>>{{"mean_abs_up", up}};
  };
  aclora::train::TrainingRun run(network, optimizer, options);
  if (settings.resume)
    run.resume_latest();
  if (settings.save_before_run)
    run.save();
  if (!settings.train)
    return aclora::train::RunSummary{};
  const auto summary = run.run(kStepsPerEpoch, [&](const aclora::train::StepContext& step) {
    if (settings.kill_at_step && step.global_step == *settings.kill_at_step)
      std::raise(SIGKILL);
    if (settings.interrupt_at_step && step.global_step == *settings.interrupt_at_step)
      std::raise(SIGINT);
    const auto order = aclora::train::epoch_order(7, static_cast<std::uint64_t>(step.epoch),
                                                  static_cast<std::size_t>(kSamples));
    std::vector<std::int64_t> rows;
    for (std::int64_t i = 0; i < kBatch; ++i)
      rows.push_back(static_cast<std::int64_t>(order[step.step_in_epoch * kBatch + i]));
    const torch::Tensor index = torch::tensor(rows);
    const torch::Tensor noisy =
        images.index_select(0, index) + 0.1 * torch::randn({kBatch, 3, 4, 4});
    optimizer.zero_grad();
    const torch::Tensor loss = torch::mse_loss(net->forward(noisy), targets.index_select(0, index));
    loss.backward();
    optimizer.step();
    if (settings.nan_at_step && step.global_step == *settings.nan_at_step)
      return std::nan("");
    return loss.item<double>();
  });
  aclora::safetensors::Writer writer;
  for (const auto& module : network.modules()) {
    aclora::train::add_tensor(writer, module.name + ".down", module.adapter->down);
    aclora::train::add_tensor(writer, module.name + ".up", module.adapter->up);
  }
  writer.write(settings.output / "final.safetensors");
  return summary;
}

}  // namespace train_test
