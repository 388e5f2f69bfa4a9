// aclora-sdxl train: the Trainer's steps (data, models, LoRAs, run and resume, caches, the
// training step, the end of each epoch, export).
#include "sdxl/trainer.hpp"

#include <aclora/adapters/io/checksum.hpp>
#include <aclora/adapters/logs/rank_picture.hpp>
#include <aclora/adapters/train/distributed/factors.hpp>
#include <aclora/adapters/train/distributed/gradients.hpp>
#include <aclora/adapters/train/export.hpp>
#include <aclora/adapters/train/run.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <optional>
#include <span>
#include <stdexcept>

#include "sdxl/autocast.hpp"
#include "sdxl/batches.hpp"
#include "sdxl/image.hpp"
#include "sdxl/pipeline.hpp"
#include "sdxl/sample_prompts.hpp"
#include "sdxl/training_cache.hpp"
#include "train_record.hpp"

namespace sdxl {
namespace {

namespace fs = std::filesystem;
namespace distributed = aclora::train::distributed;
using Scalars = std::vector<std::pair<std::string, double>>;

void validate(const TrainOptions& o) {
  const auto fail = [](const std::string& message) { throw TrainOptionError(message); };
  if (!o.data && !o.dataset_config)
    fail("give the training images with --data DIR or --dataset-config FILE.toml");
  if (o.data && o.dataset_config)
    fail("--data and --dataset-config exclude each other");
  if (o.output.empty())
    fail("give the output folder with -o DIR");
  if (o.rank < 1)
    fail("--rank must be >= 1");
  if (o.conv_rank < 0)
    fail("--conv-rank must be >= 0");
  if (!(o.alpha >= 0.0) || !std::isfinite(o.alpha))
    fail("--alpha must be >= 0 (0: alpha = rank)");
  if (!(o.lr > 0.0) || !std::isfinite(o.lr))
    fail("--lr must be > 0");
  if (o.grad_accum < 1)
    fail("--grad-accum must be >= 1");
  if (o.epochs < 1)
    fail("--epochs must be >= 1");
  if (o.restart_every < 1)
    fail("--restart-every must be >= 1");
  if (o.max_grad_norm < 0.0)
    fail("--max-grad-norm must be >= 0 (0: no clipping)");
  if (!(o.validation_split >= 0.0 && o.validation_split < 1.0))
    fail("--validation-split must lie in [0, 1)");
  if (o.validation_split > 0.0 && o.validation_dir)
    fail("--validation-split and --validation-dir exclude each other");
  if (o.loss.min_snr_gamma < 0.0 || o.loss.noise_offset < 0.0)
    fail("--min-snr-gamma and --noise-offset must be >= 0");
  if (!(o.ddp_timeout_minutes > 0.0) || !std::isfinite(o.ddp_timeout_minutes))
    fail("--ddp-timeout must be > 0 minutes");
  if (o.resume_from && !o.resume)
    fail("a state to resume from is given without resume");
  if (o.resume_from && fs::is_directory(*o.resume_from)) {
    // Only a state of this output folder: the run goes on in its metrics and events.
    std::error_code error;
    if (!fs::equivalent(fs::weakly_canonical(*o.resume_from).parent_path(), o.output / "state",
                        error))
      fail("--resume " + o.resume_from->string() + ": not a state of the output folder (" +
           (o.output / "state").string() +
           "/state-*); give -o the folder of the run it belongs to");
  }
}

// The device of this process: with several processes, "cuda" means this machine's
// LOCAL_RANK-th GPU (torchrun starts one process per GPU).
torch::Device device_of(const TrainOptions& o, const std::optional<distributed::Launch>& launch) {
  if (launch && o.device == "cuda")
    return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(launch->local_rank));
  return torch::Device(o.device);
}

// Seeds the default generators (the CPU's and the device's) for one micro-batch, from the
// run's seed and the micro-batch's place in the epoch: its noise, timesteps and dropout are
// then the same whichever process draws them and however the run was resumed.
void seed_micro_batch(uint64_t seed, int64_t epoch, int64_t index, torch::Device device) {
  const uint64_t key = aclora::io::checksum(
      "micro-batch " + std::to_string(epoch) + " " + std::to_string(index), seed);
  auto seed_one = [key](at::Generator generator) {
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_current_seed(key);
  };
  seed_one(at::detail::getDefaultCPUGenerator());
  if (device.is_cuda())
    seed_one(at::globalContext().defaultGenerator(device));
}

// The share of `items` (every world_size-th from rank) one process caches before all read
// the whole set: caches are built once, each entry by one process.
template <class Item>
std::vector<Item> share_of(const std::vector<Item>& items, const distributed::ProcessGroup* group) {
  if (group == nullptr)
    return items;
  std::vector<Item> share;
  for (std::size_t i = static_cast<std::size_t>(group->rank()); i < items.size();
       i += static_cast<std::size_t>(group->world_size()))
    share.push_back(items[i]);
  return share;
}

aclora::train::Targets unet_targets(UnetTargets targets) {
  switch (targets) {
    case UnetTargets::attn:
      return aclora::train::Targets::sdxl_unet_attention();
    case UnetTargets::linear_conv:
      return aclora::train::Targets::sdxl_unet_linear_conv();
    case UnetTargets::linear:
      break;
  }
  return aclora::train::Targets::sdxl_unet_linear();
}

aclora::safetensors::Dtype save_dtype(SavePrecision precision) {
  switch (precision) {
    case SavePrecision::fp32:
      return aclora::safetensors::Dtype::F32;
    case SavePrecision::bf16:
      return aclora::safetensors::Dtype::BF16;
    case SavePrecision::fp16:
      break;
  }
  return aclora::safetensors::Dtype::F16;
}

// The checksum of a noise schedule's abar_t values (float32 bytes).
uint64_t schedule_checksum(const std::vector<float>& alphas_cumprod) {
  return aclora::io::checksum(std::as_bytes(std::span(alphas_cumprod)));
}

// One process's training run (group: nullptr for a single process). run() takes the steps
// in order; the TrainingRun calls back into step() and end_epoch().
class Trainer {
 public:
  Trainer(const TrainOptions& options, torch::Device device, distributed::ProcessGroup* group,
          const std::function<void(const std::string&)>& log)
      : options_(options),
        device_(device),
        group_(group),
        log_(log),
        started_(utc_timestamp()),
        writes_files_(group == nullptr || group->launch().writes_files()),
        world_size_(group != nullptr ? group->world_size() : 1),
        rank_(group != nullptr ? group->rank() : 0),
        autocast_(options.mixed_precision != MixedPrecision::no),
        autocast_dtype_(options.mixed_precision == MixedPrecision::fp16 ? torch::kFloat16
                                                                        : torch::kBFloat16),
        autocast_state_(AutocastState::on(device.is_cuda(), autocast_dtype_)),
        // Frozen base weights in the half format on GPUs (memory); fp32 on the CPU.
        model_dtype_(autocast_ && device.is_cuda() ? autocast_dtype_ : torch::kFloat32),
        scaler_(options.mixed_precision == MixedPrecision::fp16) {
    if (options.mixed_precision == MixedPrecision::fp16 && !device.is_cuda())
      throw TrainOptionError("--mixed-precision fp16 needs a CUDA device (use bf16 or no)");
  }
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  TrainResult run() {
    read_data();
    load_models();
    add_loras();
    open_run();  // a resume is checked here, before anything is written
    build_caches();
    const aclora::train::RunSummary summary =
        run_->run(steps_per_epoch_,
                  [this](const aclora::train::StepContext& context) { return step(context); });
    return finish(summary);
  }

 private:
  // 1. Data: every image opened and checked, every caption read, before anything else.
  void read_data() {
    data_ = options_.dataset_config
                ? read_dataset_toml(*options_.dataset_config, options_.data_defaults)
                : folder_dataset(*options_.data, options_.data_defaults);
    images_ = scan_dataset(data_, options_.caption_missing);
    if (options_.validation_dir) {
      DataConfig held = folder_dataset(*options_.validation_dir, options_.data_defaults);
      validation_ = scan_dataset(held, options_.caption_missing);
    } else if (options_.validation_split > 0.0) {
      std::vector<TrainImage> kept;
      for (TrainImage& image : images_) {
        const uint64_t draw = aclora::io::checksum(image.path.filename().string(), options_.seed);
        const double u = static_cast<double>(draw >> 11) * 0x1p-53;
        (u < options_.validation_split ? validation_ : kept).push_back(std::move(image));
      }
      images_ = std::move(kept);
      if (images_.empty())
        throw DatasetError("--validation-split leaves no training images");
    }
    log_(
        "data: " + std::to_string(images_.size()) + " images" +
        (validation_.empty() ? "" : ", " + std::to_string(validation_.size()) + " for validation"));
  }

  // 2. The scheduler config (the prediction target follows from it), then the models.
  void load_models() {
    PipelineOptions pipeline_options;
    pipeline_options.load.dtype = model_dtype_;
    pipeline_options.load.device = device_;
    pipeline_options.load.config_folder = options_.config_folder;
    pipeline_options.tokenizer = options_.tokenizer;
    pipeline_options.scheduler = scheduler_of(options_.model, options_.config_folder);
    const SchedulerConfig& scheduler = *pipeline_options.scheduler;
    if (!options_.prediction) {
      if (scheduler.prediction == PredictionType::kSample)
        throw TrainOptionError(scheduler.source +
                               ": prediction_type 'sample' cannot be trained (epsilon or "
                               "v_prediction; or give --prediction)");
      options_.loss.target = scheduler.prediction == PredictionType::kVPrediction
                                 ? PredictionTarget::v
                                 : PredictionTarget::epsilon;
    } else {
      options_.loss.target = *options_.prediction;
    }
    options_.loss.max_timestep =
        std::min<int64_t>(options_.loss.max_timestep, scheduler.schedule.train_steps);
    log_("scheduler: " + scheduler.source + ": training target " +
         (options_.loss.target == PredictionTarget::v ? "v" : "epsilon"));
    noise_schedule_ = schedule_checksum(scheduler.schedule.alphas_cumprod());
    abar_ = alphas_cumprod_on(scheduler.schedule.alphas_cumprod(), device_);
    pipeline_.emplace(SdxlPipeline::load(options_.model, pipeline_options));
    model_weights_ = model_weights_checksum(pipeline_->models().files);
  }

  // 3. LoRAs and the optimizer. LibTorch seeds its default generators nondeterministically;
  // --seed fixes them (LoRA initial values, training noise and timesteps, dropout).
  void add_loras() {
    SdxlModels& models = pipeline_->models();
    torch::manual_seed(options_.seed);
    aclora::train::InjectOptions inject;
    inject.rank = options_.rank;
    inject.alpha = options_.alpha;
    inject.conv_rank = options_.conv_rank;
    inject.conv_alpha = options_.alpha;
    inject.dropout = options_.dropout;
    inject.naming = aclora::train::Naming::sdxl_unet();
    network_.inject(*models.unet, unet_targets(options_.targets), inject);
    if (options_.train_text_encoder) {
      inject.naming = aclora::train::Naming::sdxl_text_encoder();
      network_.inject(*models.text_encoder, aclora::train::Targets::clip_text_encoder(), inject);
      inject.naming = aclora::train::Naming::sdxl_text_encoder_2();
      network_.inject(*models.text_encoder_2, aclora::train::Targets::clip_text_encoder(), inject);
    }
    models.unet->set_gradient_checkpointing(options_.gradient_checkpointing);
    models.unet->train();
    if (options_.train_text_encoder) {
      models.text_encoder->train();
      models.text_encoder_2->train();
    }
    log_("LoRA: " + std::to_string(network_.size()) + " modules at rank " +
         std::to_string(options_.rank));
    parameters_ = network_.parameters();
    optimizer_.emplace(parameters_,
                       torch::optim::AdamWOptions(options_.lr).weight_decay(options_.weight_decay));
    if (group_ != nullptr)
      gradient_sum_.emplace(parameters_, *group_);
  }

  // 4. The run, and the resume: the state must have been made with the same settings
  // (state_options); it is checked before any file is written. A step takes the next
  // grad_accum x world_size batches of the epoch's global order; process r takes those whose
  // place in the step is r, r + world_size, ...
  void open_run() {
    batches_per_epoch_ =
        static_cast<int64_t>(epoch_batches(images_, data_, options_.seed, 0).size());
    batches_per_step_ = options_.grad_accum * world_size_;
    steps_per_epoch_ = (batches_per_epoch_ + batches_per_step_ - 1) / batches_per_step_;
    aclora::train::RunOptions run_options;
    run_options.epochs = options_.epochs;
    run_options.restart_every = options_.restart_every;
    run_options.restarts = !options_.fixed_rank;
    run_options.restart.seed = options_.seed;
    run_options.lr = {options_.lr_scheduler, options_.lr, options_.lr_warmup_steps, 1};
    run_options.output = options_.output;
    run_options.save_every_n_epochs = options_.save_state ? 1 : 0;
    run_options.progress = options_.progress;
    run_options.trainer_options = state_options(
        options_,
        TrainingInputs{data_, images_, validation_, model_weights_, noise_schedule_, world_size_});
    run_options.writes_files = writes_files_;
    if (group_ != nullptr)
      run_options.interrupt_consensus = [group = group_](bool interrupted) {
        return group->all_reduce({interrupted ? 1.0 : 0.0}, c10d::ReduceOp::MAX,
                                 "the interrupt check")[0] > 0.0;
      };
    run_options.on_restart = [this](const aclora::logs::RankHistory& history) {
      on_restart(history);
    };
    if (options_.mixed_precision == MixedPrecision::fp16)
      run_options.extra_state = [this] {
        return std::map<std::string, torch::Tensor>{{"loss_scaler", scaler_.state()}};
      };
    run_options.on_epoch_end = [this](int epoch, int64_t global_step) {
      return end_epoch(epoch, global_step);
    };
    run_.emplace(network_, *optimizer_, std::move(run_options));
    if (options_.resume)
      resume();
  }

  void resume() {
    const std::optional<fs::path> folder =
        options_.resume_from ? options_.resume_from
                             : aclora::train::latest_state(run_->state_directory());
    if (!folder)
      run_->resume_latest();  // throws, naming the folder without states
    run_->resume(*folder);
    const aclora::train::RunPosition& at = run_->position();
    log_("resumed " + folder->string() + " (" +
         (at.step_in_epoch == 0 ? "epoch " + std::to_string(at.epoch) + " done"
                                : "in epoch " + std::to_string(at.epoch + 1)) +
         ", step " + std::to_string(at.global_step) + ")");
    if (group_ != nullptr &&
        !group_->all_equal(static_cast<uint64_t>(run_->position().global_step), "the resume check"))
      throw aclora::train::Error(
          "the processes resumed different states (this one: step " +
          std::to_string(run_->position().global_step) + " from " +
          run_->state_directory().string() +
          "): resuming needs the output folder on a file system that every process reads");
    if (const auto found = run_->resumed_extra().find("loss_scaler");
        found != run_->resumed_extra().end())
      scaler_.restore(found->second);
  }

  // With several processes each caches its share, then all read the whole cache (the sum of
  // the statistics is the barrier between the two).
  CacheStatistics global_statistics(CacheStatistics statistics, const char* what) const {
    if (group_ == nullptr)
      return statistics;
    const std::vector<double> totals = group_->all_reduce(
        {static_cast<double>(statistics.reused), static_cast<double>(statistics.computed)},
        c10d::ReduceOp::SUM, std::string("the ") + what + " cache");
    statistics.reused = static_cast<std::size_t>(totals[0]);
    statistics.computed = static_cast<std::size_t>(totals[1]);
    return statistics;
  }

  // 5. The caches: latents, and the text embeddings unless captions change during training.
  void build_caches() {
    SdxlModels& models = pipeline_->models();
    const fs::path cache = options_.cache_dir.value_or(options_.output / "cache");
    CacheStatistics latent_statistics;
    latents_ = cache_latents(share_of(images_, group_), models.vae, cache / "latents",
                             options_.seed, latent_statistics);
    if (!validation_.empty())
      validation_latents_ = cache_latents(share_of(validation_, group_), models.vae,
                                          cache / "latents", options_.seed, latent_statistics);
    latent_statistics = global_statistics(latent_statistics, "latent");
    if (group_ != nullptr) {
      CacheStatistics reread;
      latents_ = cache_latents(images_, models.vae, cache / "latents", options_.seed, reread);
      if (!validation_.empty())
        validation_latents_ =
            cache_latents(validation_, models.vae, cache / "latents", options_.seed, reread);
    }
    log_("latents: " + std::to_string(latent_statistics.reused) + " reused, " +
         std::to_string(latent_statistics.computed) + " computed");
    bool dynamic_captions = options_.train_text_encoder;
    for (const DatasetConfig& dataset : data_.datasets)
      for (const SubsetConfig& subset : dataset.subsets)
        dynamic_captions = dynamic_captions || subset.shuffle_caption;
    if (!dynamic_captions) {
      std::vector<std::string> captions{""};  // "" for caption dropout
      for (const auto* set : {&images_, &validation_})
        for (const TrainImage& image : *set)
          captions.push_back(image.caption);
      CacheStatistics text_statistics;
      const uint64_t text_model = module_fingerprint(*models.text_encoder) ^
                                  (module_fingerprint(*models.text_encoder_2) * 31);
      texts_ = cache_text(share_of(captions, group_), pipeline_->conditioner(), text_model,
                          cache / "text", text_statistics);
      text_statistics = global_statistics(text_statistics, "text");
      if (group_ != nullptr) {
        CacheStatistics reread;
        texts_ = cache_text(captions, pipeline_->conditioner(), text_model, cache / "text", reread);
      }
      log_("text: " + std::to_string(text_statistics.reused) + " reused, " +
           std::to_string(text_statistics.computed) + " computed");
    }
    if (options_.sample_prompts)
      prompts_ = read_sample_prompts(*options_.sample_prompts);
    if (!options_.sample_prompts && !dynamic_captions) {
      // Neither samples nor on-the-fly captions need the VAE and the text encoders any more.
      pipeline_->release_vae_and_text_encoders();
      log_("VAE and text encoders freed (latents and text embeddings are cached)");
    }
  }

  // The text embeddings of a caption: cached, or encoded now. Text-encoder LoRAs learn
  // through the UNet's loss: their captions are encoded with autograd (validation runs under
  // NoGradGuard) and under the UNet's autocast.
  CachedText text_of(const std::string& caption) const {
    if (const auto found = texts_.find(caption); found != texts_.end())
      return found->second;
    std::optional<AutocastScope> scope;
    if (options_.train_text_encoder && autocast_)
      scope.emplace(autocast_state_);
    const SdxlTextEmbeddings embeddings = options_.train_text_encoder
                                              ? pipeline_->conditioner().encode_with_grad({caption})
                                              : pipeline_->conditioner().encode({caption});
    return CachedText{embeddings.context.squeeze(0), embeddings.pooled.squeeze(0)};
  }

  // The inputs of one batch of `set`; vary_captions applies the subsets' caption options
  // (shuffle, dropout) with the random stream caption_key + place in the batch.
  TrainBatch make_batch(const Batch& batch, const std::vector<TrainImage>& set,
                        const std::vector<torch::Tensor>& set_latents, uint64_t caption_key,
                        bool vary_captions) const {
    std::vector<torch::Tensor> x, context, pooled, time_ids;
    for (std::size_t j = 0; j < batch.size(); ++j) {
      const TrainImage& image = set[batch[j]];
      x.push_back(set_latents[batch[j]]);
      const SubsetConfig& subset = data_.datasets[image.dataset].subsets[image.subset];
      const std::string caption =
          vary_captions ? sample_caption(image.caption, subset, caption_key + j) : image.caption;
      const CachedText text = text_of(caption);
      context.push_back(text.context);
      pooled.push_back(text.pooled);
      time_ids.push_back(training_time_ids(image));
    }
    const auto on = [&](std::vector<torch::Tensor>& parts, torch::Dtype dtype) {
      return torch::stack(parts).to(device_, dtype);
    };
    return TrainBatch{on(x, torch::kFloat32), on(context, model_dtype_), on(pooled, model_dtype_),
                      on(time_ids, model_dtype_)};
  }

  // The batch's losses, under autocast when mixed precision is on.
  DiffusionLosses losses_of(const TrainBatch& batch, const StepDraws& draws) {
    std::optional<AutocastScope> scope;
    if (autocast_)
      scope.emplace(autocast_state_);
    return diffusion_losses(pipeline_->models().unet, batch, draws, abar_, options_.loss);
  }

  // The loss the run reports and the RESTART reads (--restart-loss).
  double reported(const DiffusionLosses& losses) const {
    return (options_.restart_loss == RestartLoss::weighted ? losses.weighted : losses.unweighted)
        .item<double>();
  }

  // One optimizer step: the step's micro-batches of this process, backward on the trained
  // (weighted) loss, gradients summed over the processes, clipped, the AdamW step. Returns the
  // step's mean reported loss (NaN stops the run).
  double step(const aclora::train::StepContext& context) {
    if (cached_epoch_ != context.epoch) {
      batches_ = epoch_batches(images_, data_, options_.seed, context.epoch);
      cached_epoch_ = context.epoch;
    }
    optimizer_->zero_grad();
    double loss_sum = 0.0;
    int64_t micro = 0;
    bool finite = true;
    for (int64_t m = 0; m < options_.grad_accum && finite; ++m) {
      const int64_t index = context.step_in_epoch * batches_per_step_ + m * world_size_ + rank_;
      if (index >= batches_per_epoch_)
        break;
      const uint64_t caption_key = options_.seed ^ (static_cast<uint64_t>(context.epoch) << 32) ^
                                   static_cast<uint64_t>(index * 1000003);
      const TrainBatch batch = make_batch(batches_[static_cast<std::size_t>(index)], images_,
                                          latents_, caption_key, true);
      seed_micro_batch(options_.seed, context.epoch, index, device_);
      const StepDraws draws = draw_step(batch, options_.loss);
      const DiffusionLosses losses = losses_of(batch, draws);
      const double trained = losses.weighted.item<double>();
      const double value =
          options_.restart_loss == RestartLoss::weighted ? trained : reported(losses);
      finite = std::isfinite(trained) && std::isfinite(value);
      const bool last_here =
          m + 1 == options_.grad_accum || index + world_size_ >= batches_per_epoch_;
      if (gradient_sum_ && last_here)
        gradient_sum_->overlap_next_backward(context.global_step);  // sums start in backward
      if (finite)
        scaler_.scale(losses.weighted / static_cast<double>(batches_per_step_)).backward();
      loss_sum += value;
      ++micro;
    }
    if (gradient_sum_) {
      const std::vector<double> totals = gradient_sum_->sum(
          {loss_sum, static_cast<double>(micro), finite ? 0.0 : 1.0}, context.global_step);
      loss_sum = totals[0];
      micro = static_cast<int64_t>(totals[1]);
      finite = totals[2] == 0.0;
    }
    if (!finite)
      return std::nan("");  // the run stops and names the step
    if (scaler_.unscale(parameters_)) {
      if (options_.max_grad_norm > 0.0)
        torch::nn::utils::clip_grad_norm_(parameters_, options_.max_grad_norm);
      optimizer_->step();
    }
    network_.refresh();
    return loss_sum / static_cast<double>(std::max<int64_t>(1, micro));
  }

  void on_restart(const aclora::logs::RankHistory& history) {
    if (group_ != nullptr) {
      // Every process ran the same RESTART on the same factors, loss and seed.
      const std::string when =
          "after the RESTART of epoch " + std::to_string(history.restarts.back().epoch + 1);
      if (distributed::agree_on_factors(network_, *group_, when))
        log_("RESTART: identical factors on all " + std::to_string(world_size_) + " processes");
      else
        log_("RESTART: the processes' factors differed " + when +
             " (a nondeterministic RESTART); rank 0's were broadcast to all");
    }
    if (writes_files_)
      aclora::logs::draw_rank_picture(history, options_.output / "ranks.png");
  }

  // After each epoch (rank 0): the validation loss, samples, the epoch's LoRA file.
  Scalars end_epoch(int epoch, int64_t global_step) {
    Scalars scalars;
    if (!writes_files_)
      return scalars;
    if (!validation_.empty())
      scalars.push_back({"validation_loss", validation_loss()});
    const bool last = epoch + 1 == options_.epochs;
    if (!prompts_.empty() && (last || (options_.sample_every_n_epochs > 0 &&
                                       (epoch + 1) % options_.sample_every_n_epochs == 0)))
      write_samples(epoch);
    if (!last && options_.save_every_n_epochs > 0 &&
        (epoch + 1) % options_.save_every_n_epochs == 0) {
      char stem[32];
      std::snprintf(stem, sizeof stem, "lora-epoch-%06d", epoch + 1);
      write_lora(run_->hook().module_ranks(), epoch + 1, global_step, lora_path(stem));
    }
    return scalars;
  }

  // The loss on the held-out images at fixed noise and timesteps (seeded per image).
  double validation_loss() {
    torch::NoGradGuard no_grad;
    pipeline_->models().unet->eval();
    network_.train(false);
    double sum = 0.0;
    for (std::size_t i = 0; i < validation_.size(); ++i) {
      const TrainBatch batch = make_batch({i}, validation_, validation_latents_, 0, false);
      at::Generator generator = at::globalContext().defaultGenerator(device_).clone();
      generator.set_current_seed(options_.seed + 7919 * (i + 1));
      StepDraws draws;
      draws.noise = torch::randn(batch.latents.sizes(), generator,
                                 batch.latents.options().dtype(torch::kFloat32));
      draws.timesteps = torch::full({1}, static_cast<int64_t>(100 + (i * 797) % 800),
                                    batch.latents.options().dtype(torch::kInt64));
      sum += reported(losses_of(batch, draws));
    }
    pipeline_->models().unet->train();
    network_.train(true);
    return sum / static_cast<double>(validation_.size());
  }

  // One PNG per sample prompt (samples/epoch-NNNNNN-prompt-MM.png).
  void write_samples(int epoch) {
    torch::NoGradGuard no_grad;
    pipeline_->models().unet->eval();
    network_.train(false);
    const BucketOptions& b = data_.datasets.front().buckets;
    for (std::size_t i = 0; i < prompts_.size(); ++i) {
      const SamplePrompt& prompt = prompts_[i];
      SampleOptions request;
      request.prompt = prompt.prompt;
      request.negative = prompt.negative;
      request.width = prompt.width.value_or(b.resolution_width);
      request.height = prompt.height.value_or(b.resolution_height);
      request.steps = prompt.steps.value_or(30);
      request.guidance = prompt.guidance.value_or(7.5);
      request.seed = prompt.seed.value_or(options_.seed + i);
      const torch::Tensor latent_image =
          pipeline_->sample_latents(request, pipeline_->initial_noise(request));
      const torch::Tensor image = pipeline_->decode(latent_image)[0];
      char name[64];
      std::snprintf(name, sizeof name, "epoch-%06d-prompt-%02zu.png", epoch + 1, i);
      fs::create_directories(options_.output / "samples");
      write_png(options_.output / "samples" / name, to_rgb8(image));
    }
    pipeline_->models().unet->train();
    network_.train(true);
  }

  fs::path lora_path(const std::string& stem) const {
    return options_.output /
           (options_.format == aclora::train::ExportFormat::peft ? stem : stem + ".safetensors");
  }

  void write_lora(const std::vector<std::size_t>& ranks, int epochs, int64_t steps,
                  const fs::path& path) const {
    aclora::train::ExportOptions e;
    e.format = options_.format;
    e.dtype = save_dtype(options_.save_precision);
    e.title = options_.output.filename().string();
    e.metadata = training_metadata(options_, images_, data_, epochs, steps,
                                   steps_per_epoch_ * options_.epochs, started_);
    aclora::train::write_lora(network_, ranks, e, path);
  }

  // 6. The final LoRA file (unless interrupted) and the summary.
  TrainResult finish(const aclora::train::RunSummary& summary) const {
    TrainResult result;
    result.epochs = summary.epochs_completed;
    result.steps = summary.global_step;
    result.interrupted = summary.interrupted;
    result.modules = network_.size();
    result.ranks = options_.fixed_rank ? aclora::train::full_ranks(network_) : summary.module_ranks;
    if (!summary.interrupted && writes_files_) {
      result.lora = lora_path("lora");
      write_lora(result.ranks, summary.epochs_completed, summary.global_step, result.lora);
    }
    return result;
  }

  TrainOptions options_;  // the prediction target and timestep range resolved by load_models
  const torch::Device device_;
  distributed::ProcessGroup* const group_;
  const std::function<void(const std::string&)> log_;
  const std::string started_;
  const bool writes_files_;
  const int64_t world_size_;
  const int64_t rank_;
  const bool autocast_;
  const torch::Dtype autocast_dtype_;
  const AutocastState autocast_state_;
  const torch::Dtype model_dtype_;

  DataConfig data_;
  std::vector<TrainImage> images_;
  std::vector<TrainImage> validation_;
  uint64_t noise_schedule_ = 0;
  uint64_t model_weights_ = 0;
  torch::Tensor abar_;  // abar_t on the device
  std::optional<SdxlPipeline> pipeline_;

  aclora::train::LoraNetwork network_;
  std::vector<torch::Tensor> parameters_;
  std::optional<torch::optim::AdamW> optimizer_;
  LossScaler scaler_;
  std::optional<distributed::GradientSum> gradient_sum_;
  int64_t batches_per_epoch_ = 0;
  int64_t batches_per_step_ = 0;
  int64_t steps_per_epoch_ = 0;
  std::optional<aclora::train::TrainingRun> run_;

  std::vector<torch::Tensor> latents_;
  std::vector<torch::Tensor> validation_latents_;
  std::map<std::string, CachedText> texts_;
  std::vector<SamplePrompt> prompts_;
  int64_t cached_epoch_ = -1;  // the epoch whose batches_ are cached
  std::vector<Batch> batches_;
};

}  // namespace

TrainResult train(const TrainOptions& options, const std::function<void(const std::string&)>& log) {
  validate(options);
  const std::optional<distributed::Launch> launch = distributed::Launch::from_environment();
  const torch::Device device = device_of(options, launch);
  if (!launch)
    return Trainer(options, device, nullptr, log).run();
  const auto timeout = std::chrono::milliseconds(
      static_cast<int64_t>(std::llround(options.ddp_timeout_minutes * 60000.0)));
  distributed::ProcessGroup group(*launch, device, timeout);
  if (launch->writes_files())
    log("distributed: " + std::to_string(launch->world_size) + " processes (" +
        (device.is_cuda() ? "NCCL" : "Gloo") + ", store at " + launch->master_addr + ":" +
        std::to_string(launch->master_port) + "); rank 0 writes the files");
  const auto rank_log = [&](const std::string& line) {
    if (launch->writes_files())
      log(line);
  };
  try {
    return Trainer(options, device, &group, rank_log).run();
  } catch (const distributed::DistributedError&) {
    throw;  // another process failed: the message names it
  } catch (const std::exception& error) {
    group.abandon(error.what());
    throw;
  }
}

}  // namespace sdxl
