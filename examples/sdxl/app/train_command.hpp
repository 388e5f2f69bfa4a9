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
  bool no_bucket = false;
  bool no_save_state = false;
  bool no_progress = false;
};

/// Adds the `train` subcommand to `app`, binding its options to `args`.
CLI::App* add_train_command(CLI::App& app, TrainArguments& args);

/// Runs the training `args` describe; returns the exit status.
/// @throws aclora::cli::UsageError for options that contradict each other; whatever
/// sdxl::train throws.
int run_train(TrainArguments& args);

}  // namespace sdxl_app
