// The training run of the trainer tests: the tiny SDXL model on the tiny training set
// (tests/fixtures/sdxl/train_data), 4 epochs, a RESTART every 2, shared by test_trainer.cpp
// and the child process train_child (killed and resumed).
#pragma once

#include <filesystem>

#include "reference_fixtures.hpp"
#include "sdxl/trainer.hpp"

namespace sdxl_test {

inline sdxl::TrainOptions tiny_train_options(const std::filesystem::path& output) {
  sdxl::TrainOptions options;
  options.model = sdxl_test::sdxl_fixtures() / "tiny-sdxl";
  options.data = sdxl_test::sdxl_fixtures() / "train_data";
  options.validation_dir = sdxl_test::sdxl_fixtures() / "train_data";
  options.output = output;
  // 32 x 32 pixels (latents 16 x 16): one bucket, and a step fast enough for CI.
  options.data_defaults.buckets.resolution_width = 32;
  options.data_defaults.buckets.resolution_height = 32;
  options.data_defaults.buckets.min_bucket_reso = 32;
  options.data_defaults.buckets.max_bucket_reso = 64;
  options.data_defaults.buckets.bucket_reso_steps = 32;
  options.data_defaults.batch_size = 4;
  options.rank = 4;
  options.lr = 3e-3;
  options.epochs = 4;
  options.restart_every = 2;
  options.seed = 5;
  options.save_precision = sdxl::SavePrecision::fp32;
  options.progress = false;
  return options;
}

}  // namespace sdxl_test
