// aclora-sdxl train: the options of sdxl::train on the command line, named as in sd-scripts
// (train_network.py / sdxl_train_network.py) where they exist there.
#pragma once

#include <CLI/CLI.hpp>

#include <optional>
#include <string>

#include "sdxl/trainer.hpp"

namespace sdxl_app {

/// What `train` parses; converted into sdxl::TrainOptions by run_train.
struct TrainArguments {
  sdxl::TrainOptions options;
  std::optional<std::string> resolution;  ///< "N" or "W,H"
  std::string caption_missing = "error";  ///< error | empty
  std::string prediction;                 ///< empty: the scheduler config's
  // The choice options by name, checked by CLI11 and turned into enums once (run_train).
  std::string targets = "linear";         ///< --targets
  std::string mixed_precision = "no";     ///< --mixed-precision
  std::string lr_scheduler = "constant";  ///< --lr-scheduler
  std::string format = "kohya";           ///< --format
  std::string save_precision = "fp16";    ///< --save-precision
  std::string restart_loss = "weighted";  ///< --restart-loss
  std::optional<std::string> resume;      ///< --resume [DIR]: "" continues the newest state
  bool no_bucket = false;
  bool no_save_state = false;
  bool no_progress = false;
};

/// Adds the `train` subcommand to `app`, binding its options to `args`.
CLI::App* add_train_command(CLI::App& app, TrainArguments& args);

/// Runs the training `args` describe; returns the exit status.
/// @throws aclora::cli::UsageError for options that are out of range or contradict each other
/// (sdxl::TrainOptionError); whatever else sdxl::train throws (failures of the run, exit 1).
int run_train(TrainArguments& args);

}  // namespace sdxl_app
