// The training loop (aclora/adapters/train/run.hpp): exact resume after SIGKILL and after
// Ctrl-C, cumulative counters, metrics records, non-finite losses, used output folders.
#include <gtest/gtest.h>
#include <aclora/adapters/json/parse.hpp>

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
