/// @file job.hpp
/// One job of the experiment: one arm trained on one task with one seed, then measured.
/// Its result is a JSON file that the report (report.hpp) reads.
#pragma once

#include <aclora/adapters/json/value.hpp>

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "evidence/classifier.hpp"
#include "evidence/experiment.hpp"

namespace evidence {

/// The mean kept rank over the modules after one RESTART.
struct RankPoint {
  int epoch = 0;           ///< 1-based epoch after whose training the RESTART ran
  double mean_rank = 0.0;  ///< mean K over the modules
};

/// What one job measured (all losses are the epsilon MSE).
struct JobResult {
  std::string plan;                            ///< full, quick, smoke
  std::string task;                            ///< task name
  std::string arm;                             ///< arm name
  uint64_t seed = 0;                           ///< training seed
  double train_seconds = 0.0;                  ///< wall time of the training (0 for the base model)
  std::vector<double> epoch_losses;            ///< mean training loss of each epoch
  double held_out_loss = 0.0;                  ///< on the task's held-out images (grid_loss)
  double training_set_loss = 0.0;              ///< on its training images (grid_loss): the fit
  double content_accuracy = 0.0;               ///< generated images of the asked-for garment
  std::optional<double> style_accuracy;        ///< generated images in the outline style (style)
  double frechet_distance = 0.0;               ///< judge features, generated against held-out
  int64_t parameters = 0;                      ///< sum over modules of K x (in + out)
  double mean_rank = 0.0;                      ///< mean K over the modules
  std::map<std::string, double> family_ranks;  ///< mean K per module family ("attn1.to_q")
  std::vector<RankPoint> rank_history;         ///< AC-LoRA: after each RESTART
};

/// The result as a JSON object (the keys are the field names).
aclora::json::Value to_json(const JobResult& result);
/// A result read back. @throws std::runtime_error naming the missing or mistyped key.
JobResult result_from_json(const aclora::json::Value& value);

/// The files of one job's result, under the run's folder: results/TASK/ARM/seed-S.json,
/// and for the plan's first seed also a row of generated images for the report's grid
/// (seed-S.samples.safetensors, tensor "images" [9, 1, 28, 28]: one per class 0..8 for the
/// style task) and, for AC-LoRA, the rank picture (seed-S.ranks.png).
std::filesystem::path result_path(const std::filesystem::path& run_folder, const std::string& task,
                                  const std::string& arm, uint64_t seed);

/// What every job needs, loaded once per process.
struct Resources {
  FashionMnist data;                      ///< Fashion-MNIST
  std::filesystem::path base_model_file;  ///< the committed base model
  sdxl::UNetConfig unet_config;           ///< its configuration
  Classifier judge{nullptr};              ///< the committed judge (kJudgeClasses)
};

/// Reads Fashion-MNIST, the base model's configuration and the judge from `data_folder`
/// (base_model.safetensors, classifier.safetensors, base_unet.json).
/// @throws std::runtime_error naming a missing or bad file.
Resources load_resources(const std::filesystem::path& data_folder);

/// Trains `arm` on `task` with `seed` as `plan` says (through aclora::train::TrainingRun,
/// with RESTARTs for AC-LoRA), measures it, and writes its result and pictures under
/// `run_folder` (result_path). A fixed-rank arm also gives the plan's resize arms of its
/// rank: the same training, then each module cut by energy (a resize arm run on its own
/// trains that fixed rank itself and gives only its own result). AC-LoRA is measured as exported
/// (each module cut to the rank it kept).
/// @return the arm's result, then those of the arms derived from its training.
/// @throws std::runtime_error naming the task, arm and seed.
std::vector<JobResult> run_job(const Plan& plan, const Task& task, const Arm& arm, uint64_t seed,
                               const Resources& resources, const std::filesystem::path& run_folder);

}  // namespace evidence
