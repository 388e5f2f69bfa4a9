// What a training run records about its settings: the options a resume must match (kept in
// every training state) and sd-scripts' metadata of the exported LoRA files.
#pragma once

#include <aclora/adapters/json/value.hpp>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "sdxl/dataset.hpp"
#include "sdxl/trainer.hpp"

namespace sdxl {

/// What a run trains on, beyond its options: the data as scanned and the model's identity.
struct TrainingInputs {
  const DataConfig& data;                     ///< data sets and subsets as configured
  const std::vector<TrainImage>& images;      ///< the training images (after any split)
  const std::vector<TrainImage>& validation;  ///< the held-out images (maybe none)
  uint64_t model_weights = 0;   ///< checksum of the weight files' bytes (model_weights_checksum)
  uint64_t noise_schedule = 0;  ///< checksum of the schedule's abar_t values
  int64_t world_size = 1;       ///< processes
};

/// The checksum of the bytes of the weight files a model was loaded from, in load order: the
/// model's identity whatever path names it.
uint64_t model_weights_checksum(const std::vector<std::filesystem::path>& files);

/// Everything of the trainer's that changes the result, as the JSON a resume must match (the
/// toolkit's run adds epochs, E, seed and the learning-rate schedule, and names a difference
/// by dotted key: trainer.data.datasets.0.batch_size). `options` has its prediction target
/// resolved. Leaves out what does not change the trained factors or the metrics: device,
/// progress, save cadence, output format, samples, cache folder, and where the model and data
/// lie (they are compared by content).
aclora::json::Value state_options(const TrainOptions& options, const TrainingInputs& inputs);

/// Now in UTC, ISO 8601 to the second ("2026-12-07T23:29:40").
std::string utc_timestamp();

/// sd-scripts' training metadata (ss_* keys) of a LoRA file written after `epoch` epochs.
std::map<std::string, std::string> training_metadata(const TrainOptions& options,
                                                     const std::vector<TrainImage>& images,
                                                     const DataConfig& data, int epoch,
                                                     int64_t steps, int64_t total_steps,
                                                     const std::string& started);

}  // namespace sdxl
