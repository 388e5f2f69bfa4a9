// The training loop (aclora/adapters/train/run.hpp): exact resume after SIGKILL and after
// Ctrl-C, cumulative counters, metrics records, non-finite losses, used output folders.
#include <gtest/gtest.h>
#include <aclora/adapters/json/parse.hpp>
#include <aclora/adapters/train/export.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "child_process.hpp"
#include "metrics_records.hpp"
#include "run_fixture.hpp"
#include "scratch_dir.hpp"

extern char** environ;

namespace {

namespace fs = std::filesystem;

std::string read(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The metrics records without their timings (the only fields that differ between runs).
std::vector<aclora::json::Value> records_without_timings(const fs::path& path) {
  return aclora::test::metrics_records(path, /*drop_timings=*/true);
}

// Runs run_child with `arguments`; returns the wait status.
int run_child(const std::vector<std::string>& arguments) {
  return aclora::test::wait_for(aclora::test::start_child(ACLORA_RUN_CHILD, arguments));
}

}  // namespace

// A run killed by SIGKILL mid-epoch and resumed from its last state ends with factors
// byte-identical to an uninterrupted run, and the same metrics records (steps, RESTARTs,
// epochs with the trainer's own epoch scalar).
TEST(TrainingRun, ResumeAfterSigkillIsBitIdentical) {
  const aclora::test::ScratchDir straight_scratch;
  const fs::path straight = straight_scratch.path();
  const aclora::test::ScratchDir killed_scratch;
  const fs::path killed = killed_scratch.path();
  ASSERT_EQ(run_child({straight.string()}), 0);
  const int status = run_child({killed.string(), "--kill-at-step", "10"});
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
  // The newest state is the step-8 one, two steps into epoch 2 (1-based).
  const auto latest = aclora::train::latest_state(killed / "state");
  ASSERT_TRUE(latest);
  EXPECT_EQ(latest->filename(), aclora::train::state_folder_name(8));
  ASSERT_EQ(run_child({killed.string(), "--resume"}), 0);
  EXPECT_EQ(read(killed / "final.safetensors"), read(straight / "final.safetensors"));
  const auto expected = records_without_timings(straight / "metrics.jsonl");
  EXPECT_EQ(records_without_timings(killed / "metrics.jsonl"), expected);
  // 6 epochs x 6 steps, and RESTARTs after epochs 0, 2 and 4.
  std::vector<std::int64_t> restart_epochs;
  std::size_t steps = 0;
  std::size_t epochs = 0;
  for (const auto& record : expected) {
    const std::string type = record.find("type")->as_string();
    if (type == "step")
      ++steps;
    else if (type == "restart")
      restart_epochs.push_back(record.find("epoch")->as_int());
    else if (type == "epoch" && record.find("mean_abs_up"))
      ++epochs;
  }
  EXPECT_EQ(steps, 36u);
  EXPECT_EQ(epochs, 6u);  // one epoch record each, with the on_epoch_end scalar
  EXPECT_EQ(restart_epochs, (std::vector<std::int64_t>{0, 2, 4}));
}

// Ctrl-C (SIGINT) mid-epoch saves a state and returns; resuming in the same process ends
// where an uninterrupted run ends, with counters that kept counting.
TEST(TrainingRun, InterruptSavesAStateAndResumes) {
  const aclora::test::ScratchDir straight_scratch;
  const fs::path straight = straight_scratch.path();
  const aclora::test::ScratchDir interrupted_scratch;
  const fs::path interrupted = interrupted_scratch.path();
  train_test::RunSettings settings;
  settings.output = straight;
  const auto full = train_test::run_training(settings);
  EXPECT_FALSE(full.interrupted);
  EXPECT_EQ(full.epochs_completed, 6);
  EXPECT_EQ(full.global_step, 36);

  settings.output = interrupted;
  settings.interrupt_at_step = 15;
  const auto first = train_test::run_training(settings);
  EXPECT_TRUE(first.interrupted);
  EXPECT_EQ(first.global_step, 16);  // the step in progress finishes, then the state is saved
  ASSERT_TRUE(first.last_state);
  EXPECT_EQ(first.last_state->filename(), aclora::train::state_folder_name(16));
  settings.interrupt_at_step.reset();
  settings.resume = true;
  const auto second = train_test::run_training(settings);
  EXPECT_FALSE(second.interrupted);
  EXPECT_EQ(second.global_step, 36);
  EXPECT_EQ(second.epochs_completed, 6);
  EXPECT_EQ(second.module_ranks, full.module_ranks);
  EXPECT_EQ(read(interrupted / "final.safetensors"), read(straight / "final.safetensors"));
  EXPECT_EQ(records_without_timings(interrupted / "metrics.jsonl"),
            records_without_timings(straight / "metrics.jsonl"));
  EXPECT_FALSE(fs::is_empty(interrupted / "tensorboard"));
}

// A NaN loss stops the run at once with an error naming the step and the last good state;
// no state is saved after it.
TEST(TrainingRun, NonFiniteLossStopsAtThatStep) {
  const aclora::test::ScratchDir folder_scratch;
  const fs::path folder = folder_scratch.path();
  train_test::RunSettings settings;
  settings.output = folder;
  settings.nan_at_step = 9;
  try {
    train_test::run_training(settings);
    ADD_FAILURE() << "no error";
  } catch (const aclora::train::NonFiniteLoss& error) {
    const std::string text = error.what();
    EXPECT_NE(text.find("step 10 (epoch 2, step 4 of the epoch)"), std::string::npos) << text;
    EXPECT_NE(text.find(aclora::train::state_folder_name(8)), std::string::npos) << text;
  }
  EXPECT_EQ(aclora::train::latest_state(folder / "state")->filename(),
            aclora::train::state_folder_name(8));
}

// A fresh run refuses an output folder that holds an earlier run's metrics or states.
TEST(TrainingRun, FreshRunRefusesAUsedFolder) {
  const aclora::test::ScratchDir folder_scratch;
  const fs::path folder = folder_scratch.path();
  train_test::RunSettings settings;
  settings.output = folder;
  settings.epochs = 1;
  train_test::run_training(settings);
  const std::string metrics = read(folder / "metrics.jsonl");
  try {
    train_test::run_training(settings);
    ADD_FAILURE() << "no error";
  } catch (const aclora::train::Error& error) {
    EXPECT_NE(std::string(error.what()).find("resume it or choose another output folder"),
              std::string::npos);
  }
  EXPECT_EQ(read(folder / "metrics.jsonl"), metrics);
}

// A RESTART that fails (here: the mean loss is 0, for which p = 1 - L^alpha is undefined)
// stops the run with aclora::Error, or, with continue_on_restart_error, is recorded in the
// metrics and training goes on.
TEST(TrainingRun, FailedRestartStopsOrIsLogged) {
  for (const bool go_on : {false, true}) {
    const aclora::test::ScratchDir folder_scratch;
    const fs::path folder = folder_scratch.path();
    torch::manual_seed(3);
    train_test::TinyNet net;
    aclora::train::LoraNetwork network;
    aclora::train::InjectOptions inject;
    inject.naming = aclora::train::Naming::plain("lora_unet");
    network.inject(*net, aclora::train::Targets::patterns({"to_q"}), inject);
    torch::optim::AdamW optimizer(network.parameters(), torch::optim::AdamWOptions(1e-3));
    aclora::train::RunOptions options;
    options.epochs = 3;
    options.restart_every = 1;
    options.output = folder;
    options.progress = false;
    options.continue_on_restart_error = go_on;
    aclora::train::TrainingRun run(network, optimizer, options);
    const auto zero_loss = [](const aclora::train::StepContext&) { return 0.0; };
    if (!go_on) {
      EXPECT_THROW(run.run(2, zero_loss), aclora::Error);
      continue;
    }
    const auto summary = run.run(2, zero_loss);
    EXPECT_EQ(summary.epochs_completed, 3);
    EXPECT_FALSE(summary.last_restart);
    std::size_t errors = 0;
    for (const auto& record : records_without_timings(folder / "metrics.jsonl")) {
      if (record.find("type")->as_string() == "restart_error") {
        ++errors;
        EXPECT_NE(record.find("error")->as_string().find("mean loss"), std::string::npos);
      }
    }
    EXPECT_EQ(errors, 3u);
  }
}

// save() before run() saves the run's starting point, a state at step 0, without changing
// the run: saving first and training gives the uninterrupted run's factors and records, and
// a run resumed from the step-0 state alone trains exactly as the uninterrupted one.
TEST(TrainingRun, SaveBeforeRunSavesTheStartingPoint) {
  const aclora::test::ScratchDir straight_scratch;
  const fs::path straight = straight_scratch.path();
  train_test::RunSettings settings;
  settings.output = straight;
  train_test::run_training(settings);

  const aclora::test::ScratchDir saved_first_scratch;
  const fs::path saved_first = saved_first_scratch.path();
  settings.output = saved_first;
  settings.save_before_run = true;
  train_test::run_training(settings);
  EXPECT_TRUE(
      fs::exists(saved_first / "state" / aclora::train::state_folder_name(0) / "manifest.json"));
  EXPECT_EQ(read(saved_first / "final.safetensors"), read(straight / "final.safetensors"));
  EXPECT_EQ(records_without_timings(saved_first / "metrics.jsonl"),
            records_without_timings(straight / "metrics.jsonl"));

  const aclora::test::ScratchDir start_only_scratch;
  const fs::path start_only = start_only_scratch.path();
  settings.output = start_only;
  settings.train = false;
  train_test::run_training(settings);
  const auto latest = aclora::train::latest_state(start_only / "state");
  ASSERT_TRUE(latest);
  EXPECT_EQ(latest->filename(), aclora::train::state_folder_name(0));
  settings.save_before_run = false;
  settings.train = true;
  settings.resume = true;
  const auto resumed = train_test::run_training(settings);
  EXPECT_EQ(resumed.global_step, 36);
  EXPECT_EQ(read(start_only / "final.safetensors"), read(straight / "final.safetensors"));
  EXPECT_EQ(records_without_timings(start_only / "metrics.jsonl"),
            records_without_timings(straight / "metrics.jsonl"));
}

// A fresh run's save() before run() refuses an output folder that holds an earlier run, as
// run() does, and leaves that run's files alone.
TEST(TrainingRun, SaveBeforeRunRefusesAUsedFolder) {
  const aclora::test::ScratchDir folder_scratch;
  const fs::path folder = folder_scratch.path();
  train_test::RunSettings settings;
  settings.output = folder;
  settings.epochs = 1;
  train_test::run_training(settings);
  const std::string metrics = read(folder / "metrics.jsonl");
  settings.save_before_run = true;
  settings.train = false;
  try {
    train_test::run_training(settings);
    ADD_FAILURE() << "no error";
  } catch (const aclora::train::Error& error) {
    EXPECT_NE(std::string(error.what()).find("resume it or choose another output folder"),
              std::string::npos);
  }
  EXPECT_EQ(read(folder / "metrics.jsonl"), metrics);
}

// on_epoch_end (validation, samples, LoRA files) sees the factors exactly as the epoch's
// last step left them, also at an epoch followed by a RESTART, which rewrites them only
// after it; hook().module_ranks() there are the ranks those factors were trained at: R
// before the first RESTART, then the previous RESTART's K.
TEST(TrainingRun, EpochEndSeesTheFactorsBeforeTheRestart) {
  const aclora::test::ScratchDir folder_scratch;
  torch::manual_seed(5);
  train_test::TinyNet net(8, 2, 4);
  aclora::train::LoraNetwork network;
  aclora::train::InjectOptions inject;
  inject.rank = 4;
  inject.naming = aclora::train::Naming::plain("lora_unet");
  network.inject(*net, aclora::train::Targets::patterns({"to_q", "to_v", "ff_in"}), inject);
  torch::optim::AdamW optimizer(network.parameters(), torch::optim::AdamWOptions(1e-2));
  const torch::Tensor images = torch::randn({4, 3, 4, 4});
  const torch::Tensor targets = torch::randn({4, 4}) * 0.3;

  aclora::train::RunOptions options;
  options.epochs = 4;
  options.restart_every = 2;  // RESTARTs after epochs 0 and 2
  options.restart.seed = 11;
  options.output = folder_scratch.path();
  options.progress = false;
  const aclora::train::TrainingRun* run_pointer = nullptr;
  std::vector<torch::Tensor> after_last_step;
  std::vector<std::size_t> trained_ranks = aclora::train::full_ranks(network);
  const auto factors_unchanged = [&] {
    const std::vector<torch::Tensor> now = network.parameters();
    for (std::size_t i = 0; i < now.size(); ++i)
      if (!torch::equal(now[i], after_last_step[i]))
        return false;
    return true;
  };
  std::vector<int> epochs_seen;
  options.on_epoch_end = [&](int epoch, std::int64_t) {
    epochs_seen.push_back(epoch);
    EXPECT_TRUE(factors_unchanged()) << "epoch " << epoch;
    EXPECT_EQ(run_pointer->hook().module_ranks(), trained_ranks) << "epoch " << epoch;
    return std::vector<std::pair<std::string, double>>{{"seen", 1.0}};
  };
  int restarts = 0;
  options.on_restart = [&](const aclora::logs::RankHistory&) {
    ++restarts;
    EXPECT_FALSE(factors_unchanged());  // the RESTART did rewrite them, after on_epoch_end
    trained_ranks = run_pointer->hook().module_ranks();
  };
  aclora::train::TrainingRun run(network, optimizer, options);
  run_pointer = &run;
  run.run(2, [&](const aclora::train::StepContext&) {
    optimizer.zero_grad();
    const torch::Tensor noisy = images + 0.1 * torch::randn(images.sizes());
    const torch::Tensor loss = torch::mse_loss(net->forward(noisy), targets);
    loss.backward();
    optimizer.step();
    after_last_step.clear();
    for (const auto& factor : network.parameters())
      after_last_step.push_back(factor.detach().clone());
    return loss.item<double>();
  });
  EXPECT_EQ(epochs_seen, (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(restarts, 2);
  // Each epoch's record carries its on_epoch_end scalar and follows the epoch's RESTART.
  std::vector<std::string> order;
  for (const auto& record : records_without_timings(options.output / "metrics.jsonl")) {
    const std::string type = record.find("type")->as_string();
    if (type == "epoch") {
      EXPECT_TRUE(record.find("seen"));
      order.push_back("epoch " + std::to_string(record.find("epoch")->as_int()));
    } else if (type == "restart") {
      order.push_back("restart " + std::to_string(record.find("epoch")->as_int()));
    }
  }
  EXPECT_EQ(order, (std::vector<std::string>{"restart 0", "epoch 0", "epoch 1", "restart 2",
                                             "epoch 2", "epoch 3"}));
}
