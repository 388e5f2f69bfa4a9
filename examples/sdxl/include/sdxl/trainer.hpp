/// @file trainer.hpp
/// `aclora-sdxl train`: an SDXL LoRA trained with AC-LoRA in the loop, on sd-scripts' data
/// layout, with the toolkit's RESTART hook, states, metrics, TensorBoard and rank picture.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "sdxl/dataset.hpp"
#include "sdxl/train_choices.hpp"
#include "sdxl/training_step.hpp"

namespace sdxl {

/// A training option that is out of range or contradicts another: the command line's fault
/// (aclora-sdxl exits 2). Whatever else train() throws, std::invalid_argument from deeper
/// code included, is a failure of the run (exit 1).
class TrainOptionError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// Every setting of a training run (the command's options).
struct TrainOptions {
  std::filesystem::path model;                     ///< diffusers folder or single-file checkpoint
  std::optional<std::filesystem::path> tokenizer;  ///< as for sampling
  std::optional<std::filesystem::path> config_folder;   ///< configs for a single file
  std::optional<std::filesystem::path> data;            ///< a folder (N_name/ sub-folders)
  std::optional<std::filesystem::path> dataset_config;  ///< or an sd-scripts dataset TOML
  std::filesystem::path output;  ///< the run's folder (LoRA files, metrics, states, samples)
  std::optional<std::filesystem::path> cache_dir;          ///< default: OUTPUT/cache
  MissingCaption caption_missing = MissingCaption::error;  ///< images without captions
  DatasetConfig data_defaults;  ///< resolution, buckets, batch size, caption options

  UnetTargets targets = UnetTargets::linear;  ///< UNet LoRA targets
  int64_t conv_rank = 0;                      ///< rank of 3x3 conv LoRAs (linear+conv; 0: --rank)
  bool train_text_encoder = false;            ///< LoRAs on both text encoders too
  int64_t rank = 64;                          ///< R, the maximum rank
  double alpha = 0.0;                         ///< kohya alpha; 0: alpha = R
  double dropout = 0.0;                       ///< LoRA dropout

  double lr = 1e-4;            ///< AdamW learning rate
  double weight_decay = 1e-2;  ///< AdamW weight decay
  /// The learning-rate schedule over the run.
  aclora::train::LrScheduleKind lr_scheduler = aclora::train::LrScheduleKind::constant;
  int64_t lr_warmup_steps = 0;  ///< optimizer steps of warmup
  double max_grad_norm = 1.0;   ///< clip the LoRA gradients' norm (0: off)
  int64_t grad_accum = 1;       ///< micro-batches per optimizer step
  int epochs = 100;             ///< N
  int restart_every = 10;       ///< E
  bool fixed_rank = false;      ///< plain LoRA: no RESTART
  uint64_t seed = 0;            ///< everything random follows from it
  LossOptions loss;             ///< min-SNR, noise offset, timestep range
  /// The loss logged per step and fed to the RESTART (L in p = 1 - L^alpha), and the
  /// validation loss's kind.
  RestartLoss restart_loss = RestartLoss::weighted;
  /// What the UNet learns to predict; default: the scheduler config's prediction_type
  /// (as diffusers' scripts), so loss.target is set by train().
  std::optional<PredictionTarget> prediction;
  MixedPrecision mixed_precision = MixedPrecision::no;  ///< autocast
  bool gradient_checkpointing = false;                  ///< recompute blocks in backward
  std::string device = "cpu";         ///< cpu | cuda | cuda:N (several processes: "cuda"
                                      ///< is the LOCAL_RANK-th GPU)
  double ddp_timeout_minutes = 30.0;  ///< several processes: how long a collective may wait

  std::optional<std::filesystem::path> sample_prompts;  ///< sd-scripts prompt file
  int sample_every_n_epochs = 0;  ///< 0: samples only at the end when prompts given
  double validation_split = 0.0;  ///< share of images held out for validation
  std::optional<std::filesystem::path> validation_dir;  ///< or a separate folder
  int save_every_n_epochs = 0;  ///< LoRA files during training (0: only the last)
  bool save_state = true;       ///< training states for resume
  bool resume = false;          ///< continue a training state (same options)
  /// With resume: the state folder to continue (one of OUTPUT/state/); default the newest.
  std::optional<std::filesystem::path> resume_from;
  aclora::train::ExportFormat format = aclora::train::ExportFormat::kohya;  ///< file layout
  SavePrecision save_precision = SavePrecision::fp16;  ///< the factors' number format
  bool progress = true;                                ///< progress bar on stderr
};

/// How a run ended.
struct TrainResult {
  int epochs = 0;                  ///< epochs completed
  int64_t steps = 0;               ///< optimizer steps
  bool interrupted = false;        ///< stopped by Ctrl-C (a state was saved)
  std::filesystem::path lora;      ///< the final LoRA file (or folder); empty on ranks > 0
  std::vector<std::size_t> ranks;  ///< K per module of the final file
  std::size_t modules = 0;         ///< LoRA modules
};

/// Runs a training. Every image is checked and every cache built before the first step;
/// `log` receives progress lines.
///
/// Under torchrun (WORLD_SIZE > 1 in the environment, see
/// aclora::train::distributed::Launch) this is one process of a data-parallel run: each takes
/// its share of every step's batches, the gradients and losses are summed over all, every
/// process runs the same RESTART (checked identical), and only rank 0 writes files and logs.
/// A resume first checks that the state was made with the same settings (everything that
/// changes the result: model weights by content, data by image content and caption, every
/// dataset setting, LoRA, optimisation and loss options) and changes nothing when it was not.
/// @throws TrainOptionError (bad options, naming them), DatasetError, WeightLoadError,
/// aclora::train::Error (states, files), aclora::Error (a RESTART),
/// aclora::train::distributed::DistributedError (another process failed or timed out) and
/// LaunchError (a bad torchrun environment).
TrainResult train(const TrainOptions& options, const std::function<void(const std::string&)>& log);

}  // namespace sdxl
