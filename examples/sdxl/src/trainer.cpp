// aclora-sdxl train: data, caches, LoRA injection, the step, the run loop, samples, export.
#include "sdxl/trainer.hpp"

#include <aclora/adapters/io/checksum.hpp>
#include <aclora/adapters/json/dump.hpp>
#include <aclora/adapters/logs/rank_picture.hpp>
#include <aclora/adapters/train/distributed/factors.hpp>
#include <aclora/adapters/train/distributed/gradients.hpp>
#include <aclora/adapters/train/export.hpp>
#include <aclora/adapters/train/run.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include "sdxl/autocast.hpp"
#include "sdxl/batches.hpp"
#include "sdxl/image.hpp"
#include "sdxl/pipeline.hpp"
#include "sdxl/sample_prompts.hpp"
#include "sdxl/training_cache.hpp"

namespace sdxl {
namespace {

namespace fs = std::filesystem;
namespace distributed = aclora::train::distributed;
using aclora::json::Value;

void validate(const TrainOptions& o) {
  const auto fail = [](const std::string& message) { throw std::invalid_argument(message); };
  if (!o.data && !o.dataset_config)
    fail("give the training images with --data DIR or --dataset-config FILE.toml");
  if (o.data && o.dataset_config)
    fail("--data and --dataset-config exclude each other");
  if (o.output.empty())
    fail("give the output folder with -o DIR");
  if (o.targets != "attn" && o.targets != "linear" && o.targets != "linear+conv")
    fail("--targets must be attn, linear or linear+conv, not '" + o.targets + "'");
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
  if (o.mixed_precision != "no" && o.mixed_precision != "fp16" && o.mixed_precision != "bf16")
    fail("--mixed-precision must be no, fp16 or bf16, not '" + o.mixed_precision + "'");
  if (o.format != "kohya" && o.format != "diffusers" && o.format != "peft")
    fail("--format must be kohya, diffusers or peft, not '" + o.format + "'");
  if (o.save_precision != "fp32" && o.save_precision != "fp16" && o.save_precision != "bf16")
    fail("--save-precision must be fp32, fp16 or bf16, not '" + o.save_precision + "'");
  if (!(o.validation_split >= 0.0 && o.validation_split < 1.0))
    fail("--validation-split must lie in [0, 1)");
  if (o.validation_split > 0.0 && o.validation_dir)
    fail("--validation-split and --validation-dir exclude each other");
  if (o.loss.min_snr_gamma < 0.0 || o.loss.noise_offset < 0.0)
    fail("--min-snr-gamma and --noise-offset must be >= 0");
  if (!(o.ddp_timeout_minutes > 0.0) || !std::isfinite(o.ddp_timeout_minutes))
    fail("--ddp-timeout must be > 0 minutes");
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

aclora::train::Targets unet_targets(const std::string& name) {
  if (name == "attn")
    return aclora::train::Targets::sdxl_unet_attention();
  if (name == "linear+conv")
    return aclora::train::Targets::sdxl_unet_linear_conv();
  return aclora::train::Targets::sdxl_unet_linear();
}

aclora::safetensors::Dtype save_dtype(const std::string& name) {
  if (name == "fp32")
    return aclora::safetensors::Dtype::F32;
  if (name == "bf16")
    return aclora::safetensors::Dtype::BF16;
  return aclora::safetensors::Dtype::F16;
}

std::string iso_now() {
  const std::time_t now = std::time(nullptr);
  char buffer[32];
  std::tm parts{};
  ::gmtime_r(&now, &parts);
  std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%S", &parts);
  return buffer;
}

// sd-scripts' training metadata (the keys its users and their tools read).
std::map<std::string, std::string> training_metadata(const TrainOptions& o,
                                                     const std::vector<TrainImage>& images,
                                                     const DataConfig& data, int epoch,
                                                     int64_t steps, int64_t total_steps,
                                                     const std::string& started) {
  std::map<std::string, std::string> m;
  m["ss_sd_model_name"] = o.model.filename().string();
  m["ss_base_model_version"] = "sdxl_base_v1-0";
  m["ss_network_module"] = "networks.lora";
  m["ss_network_dropout"] = std::to_string(o.dropout);
  m["ss_learning_rate"] = std::to_string(o.lr);
  m["ss_unet_lr"] = std::to_string(o.lr);
  m["ss_text_encoder_lr"] = o.train_text_encoder ? std::to_string(o.lr) : "None";
  m["ss_optimizer"] = "torch.optim.AdamW(weight_decay=" + std::to_string(o.weight_decay) + ")";
  m["ss_lr_scheduler"] = o.lr_scheduler;
  m["ss_lr_warmup_steps"] = std::to_string(o.lr_warmup_steps);
  m["ss_max_grad_norm"] = std::to_string(o.max_grad_norm);
  m["ss_gradient_accumulation_steps"] = std::to_string(o.grad_accum);
  m["ss_gradient_checkpointing"] = o.gradient_checkpointing ? "True" : "False";
  m["ss_mixed_precision"] = o.mixed_precision;
  m["ss_full_fp16"] = "False";
  m["ss_seed"] = std::to_string(o.seed);
  m["ss_min_snr_gamma"] = o.loss.min_snr_gamma > 0 ? std::to_string(o.loss.min_snr_gamma) : "None";
  m["ss_noise_offset"] = o.loss.noise_offset > 0 ? std::to_string(o.loss.noise_offset) : "None";
  m["ss_v_parameterization"] = o.loss.target == PredictionTarget::v ? "True" : "False";
  m["ss_num_epochs"] = std::to_string(o.epochs);
  m["ss_epoch"] = std::to_string(epoch);
  m["ss_steps"] = std::to_string(steps);
  m["ss_max_train_steps"] = std::to_string(total_steps);
  m["ss_training_started_at"] = started;
  m["ss_training_finished_at"] = iso_now();
  m["ss_training_comment"] = o.fixed_rank
                                 ? "fixed-rank LoRA (aclora-sdxl --fixed-rank)"
                                 : "AC-LoRA (aclora-sdxl): rank chosen per module, RESTART every " +
                                       std::to_string(o.restart_every) + " epochs";
  std::size_t samples = 0;
  std::map<std::string, std::map<std::string, int64_t>> tags;  // folder -> tag -> count
  Value dirs = aclora::json::Object{};
  std::map<std::string, int64_t> folder_images;
  std::map<std::string, int64_t> folder_repeats;
  for (const TrainImage& image : images) {
    samples += static_cast<std::size_t>(image.repeats);
    const std::string folder = image.path.parent_path().filename().string();
    ++folder_images[folder];
    folder_repeats[folder] = image.repeats;
    std::stringstream caption(image.caption);
    for (std::string tag; std::getline(caption, tag, ',');) {
      const auto first = tag.find_first_not_of(' ');
      const auto last = tag.find_last_not_of(' ');
      if (first != std::string::npos)
        ++tags[folder][tag.substr(first, last - first + 1)];
    }
  }
  for (const auto& [folder, count] : folder_images) {
    Value entry = aclora::json::Object{};
    entry["n_repeats"] = folder_repeats[folder];
    entry["img_count"] = count;
    dirs[folder] = std::move(entry);
  }
  Value tag_json = aclora::json::Object{};
  for (const auto& [folder, counts] : tags) {
    Value folder_tags = aclora::json::Object{};
    for (const auto& [tag, count] : counts)
      folder_tags[tag] = count;
    tag_json[folder] = std::move(folder_tags);
  }
  std::map<std::pair<int64_t, int64_t>, int64_t> bucket_counts;
  double aspect_error = 0.0;
  for (const TrainImage& image : images) {
    bucket_counts[{image.choice.bucket.width, image.choice.bucket.height}] += image.repeats;
    aspect_error += std::abs(image.choice.aspect_error);
  }
  Value buckets = aclora::json::Object{};
  int index = 0;
  for (const auto& [resolution, count] : bucket_counts) {
    Value bucket = aclora::json::Object{};
    bucket["resolution"] = aclora::json::Array{Value(resolution.first), Value(resolution.second)};
    bucket["count"] = count;
    buckets[std::to_string(index++)] = std::move(bucket);
  }
  Value bucket_info = aclora::json::Object{};
  bucket_info["buckets"] = std::move(buckets);
  bucket_info["mean_img_ar_error"] = aspect_error / static_cast<double>(images.size());
  m["ss_num_train_images"] = std::to_string(samples);
  m["ss_num_batches_per_epoch"] = std::to_string(steps / std::max(1, epoch));
  m["ss_dataset_dirs"] = aclora::json::dump(dirs);
  m["ss_tag_frequency"] = aclora::json::dump(tag_json);
  m["ss_bucket_info"] = aclora::json::dump(bucket_info);
  const BucketOptions& b = data.datasets.front().buckets;
  m["ss_resolution"] =
      "(" + std::to_string(b.resolution_width) + ", " + std::to_string(b.resolution_height) + ")";
  m["ss_enable_bucket"] = b.enable_bucket ? "True" : "False";
  m["ss_min_bucket_reso"] = std::to_string(b.min_bucket_reso);
  m["ss_max_bucket_reso"] = std::to_string(b.max_bucket_reso);
  m["ss_bucket_no_upscale"] = b.bucket_no_upscale ? "True" : "False";
  m["ss_batch_size_per_device"] = std::to_string(data.datasets.front().batch_size);
  m["modelspec.resolution"] =
      std::to_string(b.resolution_width) + "x" + std::to_string(b.resolution_height);
  return m;
}

// The trainer's settings a resume must match (what changes the result).
Value state_options(const TrainOptions& o, const std::vector<TrainImage>& images,
                    int64_t world_size) {
  Value out = aclora::json::Object{};
  out["model"] = o.model.string();
  uint64_t data = aclora::io::checksum(std::string("aclora-data"));
  for (const TrainImage& image : images)
    data = aclora::io::checksum(
        image.path.string() + "|" + image.caption + "|" + std::to_string(image.repeats), data);
  out["data"] = aclora::io::hex64(data);
  out["targets"] = o.targets;
  out["conv_rank"] = o.conv_rank;
  out["train_text_encoder"] = o.train_text_encoder;
  out["rank"] = o.rank;
  out["alpha"] = o.alpha;
  out["dropout"] = o.dropout;
  out["weight_decay"] = o.weight_decay;
  out["max_grad_norm"] = o.max_grad_norm;
  // Micro-batches per optimizer step over all processes: a state resumes with another number
  // of processes when the global batch stays the same (same batches, same steps).
  out["batches_per_step"] = o.grad_accum * world_size;  // --grad-accum x processes
  out["min_snr_gamma"] = o.loss.min_snr_gamma;
  out["noise_offset"] = o.loss.noise_offset;
  out["mixed_precision"] = o.mixed_precision;
  return out;
}

// One process's run (group: nullptr for a single process).
TrainResult train_process(const TrainOptions& requested, torch::Device device,
                          distributed::ProcessGroup* group,
                          const std::function<void(const std::string&)>& log) {
  TrainOptions options = requested;  // the prediction target is resolved below
  const std::string started = iso_now();
  const bool writes_files = group == nullptr || group->launch().writes_files();
  const int64_t world_size = group != nullptr ? group->world_size() : 1;
  if (options.mixed_precision == "fp16" && !device.is_cuda())
    throw std::invalid_argument("--mixed-precision fp16 needs a CUDA device (use bf16 or no)");
  const bool autocast = options.mixed_precision != "no";
  const torch::Dtype autocast_dtype =
      options.mixed_precision == "fp16" ? torch::kFloat16 : torch::kBFloat16;
  // Frozen base weights in the half format on GPUs (memory); fp32 on the CPU.
  const torch::Dtype model_dtype = autocast && device.is_cuda() ? autocast_dtype : torch::kFloat32;

  // 1. Data: every image opened and checked, every caption read, before anything else.
  DataConfig data = options.dataset_config
                        ? read_dataset_toml(*options.dataset_config, options.data_defaults)
                        : folder_dataset(*options.data, options.data_defaults);
  std::vector<TrainImage> images = scan_dataset(data, options.caption_missing);
  std::vector<TrainImage> validation;
  if (options.validation_dir) {
    DataConfig held = folder_dataset(*options.validation_dir, options.data_defaults);
    validation = scan_dataset(held, options.caption_missing);
  } else if (options.validation_split > 0.0) {
    std::vector<TrainImage> kept;
    for (TrainImage& image : images) {
      const uint64_t draw = aclora::io::checksum(image.path.filename().string(), options.seed);
      const double u = static_cast<double>(draw >> 11) * 0x1p-53;
      (u < options.validation_split ? validation : kept).push_back(std::move(image));
    }
    images = std::move(kept);
    if (images.empty())
      throw DatasetError("--validation-split leaves no training images");
  }
  log("data: " + std::to_string(images.size()) + " images" +
      (validation.empty() ? "" : ", " + std::to_string(validation.size()) + " for validation"));

  // 2. Models, then the caches.
  PipelineOptions pipeline_options;
  pipeline_options.load.dtype = model_dtype;
  pipeline_options.load.device = device;
  pipeline_options.load.config_folder = options.config_folder;
  pipeline_options.tokenizer = options.tokenizer;
  pipeline_options.scheduler = scheduler_of(options.model, options.config_folder);
  const SchedulerConfig& scheduler = *pipeline_options.scheduler;
  if (!options.prediction) {
    if (scheduler.prediction == PredictionType::kSample)
      throw std::invalid_argument(scheduler.source +
                                  ": prediction_type 'sample' cannot be trained (epsilon or "
                                  "v_prediction; or give --prediction)");
    options.loss.target = scheduler.prediction == PredictionType::kVPrediction
                              ? PredictionTarget::v
                              : PredictionTarget::epsilon;
  } else {
    options.loss.target = *options.prediction;
  }
  options.loss.max_timestep =
      std::min<int64_t>(options.loss.max_timestep, scheduler.schedule.train_steps);
  log("scheduler: " + scheduler.source + ": training target " +
      (options.loss.target == PredictionTarget::v ? "v" : "epsilon"));
  SdxlPipeline pipeline = SdxlPipeline::load(options.model, pipeline_options);
  SdxlModels& models = pipeline.models();
  const fs::path cache = options.cache_dir.value_or(options.output / "cache");
  // With several processes each caches its share, then all read the whole cache (the sum of
  // the statistics is the barrier between the two).
  const auto global_statistics = [&](CacheStatistics statistics, const char* what) {
    if (group == nullptr)
      return statistics;
    const std::vector<double> totals = group->all_reduce(
        {static_cast<double>(statistics.reused), static_cast<double>(statistics.computed)},
        c10d::ReduceOp::SUM, std::string("the ") + what + " cache");
    statistics.reused = static_cast<std::size_t>(totals[0]);
    statistics.computed = static_cast<std::size_t>(totals[1]);
    return statistics;
  };
  CacheStatistics latent_statistics;
  std::vector<torch::Tensor> latents = cache_latents(
      share_of(images, group), models.vae, cache / "latents", options.seed, latent_statistics);
  std::vector<torch::Tensor> validation_latents;
  if (!validation.empty())
    validation_latents = cache_latents(share_of(validation, group), models.vae, cache / "latents",
                                       options.seed, latent_statistics);
  latent_statistics = global_statistics(latent_statistics, "latent");
  if (group != nullptr) {
    CacheStatistics reread;
    latents = cache_latents(images, models.vae, cache / "latents", options.seed, reread);
    if (!validation.empty())
      validation_latents =
          cache_latents(validation, models.vae, cache / "latents", options.seed, reread);
  }
  log("latents: " + std::to_string(latent_statistics.reused) + " reused, " +
      std::to_string(latent_statistics.computed) + " computed");
  bool dynamic_captions = options.train_text_encoder;
  for (const DatasetConfig& dataset : data.datasets)
    for (const SubsetConfig& subset : dataset.subsets)
      dynamic_captions = dynamic_captions || subset.shuffle_caption;
  std::vector<std::string> captions{""};  // "" for caption dropout
  for (const auto* set : {&images, &validation})
    for (const TrainImage& image : *set)
      captions.push_back(image.caption);
  std::map<std::string, CachedText> texts;
  if (!dynamic_captions) {
    CacheStatistics text_statistics;
    const uint64_t text_model = module_fingerprint(*models.text_encoder) ^
                                (module_fingerprint(*models.text_encoder_2) * 31);
    texts = cache_text(share_of(captions, group), pipeline.conditioner(), text_model,
                       cache / "text", text_statistics);
    text_statistics = global_statistics(text_statistics, "text");
    if (group != nullptr) {
      CacheStatistics reread;
      texts = cache_text(captions, pipeline.conditioner(), text_model, cache / "text", reread);
    }
    log("text: " + std::to_string(text_statistics.reused) + " reused, " +
        std::to_string(text_statistics.computed) + " computed");
  }
  const bool sampling = options.sample_prompts.has_value();
  const std::vector<SamplePrompt> prompts =
      sampling ? read_sample_prompts(*options.sample_prompts) : std::vector<SamplePrompt>{};
  if (!sampling && !dynamic_captions) {
    // Neither samples nor on-the-fly captions need the VAE and the text encoders any more.
    pipeline.release_vae_and_text_encoders();
    log("VAE and text encoders freed (latents and text embeddings are cached)");
  }

  // 3. LoRAs and the optimizer. LibTorch seeds its default generators nondeterministically;
  // --seed fixes them (LoRA initial values, training noise and timesteps, dropout).
  torch::manual_seed(options.seed);
  aclora::train::LoraNetwork network;
  aclora::train::InjectOptions inject;
  inject.rank = options.rank;
  inject.alpha = options.alpha;
  inject.conv_rank = options.conv_rank;
  inject.conv_alpha = options.alpha;
  inject.dropout = options.dropout;
  inject.naming = aclora::train::Naming::sdxl_unet();
  network.inject(*models.unet, unet_targets(options.targets), inject);
  if (options.train_text_encoder) {
    inject.naming = aclora::train::Naming::sdxl_text_encoder();
    network.inject(*models.text_encoder, aclora::train::Targets::clip_text_encoder(), inject);
    inject.naming = aclora::train::Naming::sdxl_text_encoder_2();
    network.inject(*models.text_encoder_2, aclora::train::Targets::clip_text_encoder(), inject);
  }
  models.unet->set_gradient_checkpointing(options.gradient_checkpointing);
  models.unet->train();
  if (options.train_text_encoder) {
    models.text_encoder->train();
    models.text_encoder_2->train();
  }
  log("LoRA: " + std::to_string(network.size()) + " modules at rank " +
      std::to_string(options.rank));
  std::vector<torch::Tensor> parameters = network.parameters();
  torch::optim::AdamW optimizer(
      parameters, torch::optim::AdamWOptions(options.lr).weight_decay(options.weight_decay));

  // 4. The run. A step takes the next grad_accum x world_size batches of the epoch's global
  // order; process r takes those whose place in the step is r, r + world_size, ...
  const int64_t batches_per_epoch =
      static_cast<int64_t>(epoch_batches(images, data, options.seed, 0).size());
  const int64_t batches_per_step = options.grad_accum * world_size;
  const int64_t steps_per_epoch = (batches_per_epoch + batches_per_step - 1) / batches_per_step;
  aclora::train::RunOptions run_options;
  run_options.epochs = options.epochs;
  run_options.restart_every = options.restart_every;
  run_options.restarts = !options.fixed_rank;
  run_options.restart.seed = options.seed;
  run_options.lr = {aclora::train::lr_schedule_kind(options.lr_scheduler), options.lr,
                    options.lr_warmup_steps, 1};
  run_options.output = options.output;
  run_options.save_every_n_epochs = options.save_state ? 1 : 0;
  run_options.progress = options.progress;
  run_options.trainer_options = state_options(options, images, world_size);
  run_options.writes_files = writes_files;
  if (group != nullptr)
    run_options.interrupt_consensus = [group](bool interrupted) {
      return group->all_reduce({interrupted ? 1.0 : 0.0}, c10d::ReduceOp::MAX,
                               "the interrupt check")[0] > 0.0;
    };
  run_options.on_restart = [&](const aclora::logs::RankHistory& history) {
    if (group != nullptr) {
      // Every process ran the same RESTART on the same factors, loss and seed.
      const std::string when =
          "after the RESTART of epoch " + std::to_string(history.restarts.back().epoch + 1);
      if (distributed::agree_on_factors(network, *group, when))
        log("RESTART: identical factors on all " + std::to_string(world_size) + " processes");
      else
        log("RESTART: the processes' factors differed " + when +
            " (a nondeterministic RESTART); rank 0's were broadcast to all");
    }
    if (writes_files)
      aclora::logs::draw_rank_picture(history, options.output / "ranks.png");
  };
  const torch::Tensor abar = alphas_cumprod_on(scheduler.schedule.alphas_cumprod(), device);
  const AutocastState autocast_on = AutocastState::on(device.is_cuda(), autocast_dtype);
  const auto text_of = [&](const std::string& caption) -> CachedText {
    if (const auto found = texts.find(caption); found != texts.end())
      return found->second;
    // Text-encoder LoRAs learn through the UNet's loss: their captions are encoded with
    // autograd (validation runs under NoGradGuard) and autocast, as the UNet runs.
    std::optional<AutocastScope> scope;
    if (options.train_text_encoder && autocast)
      scope.emplace(autocast_on);
    const SdxlTextEmbeddings embeddings = options.train_text_encoder
                                              ? pipeline.conditioner().encode_with_grad({caption})
                                              : pipeline.conditioner().encode({caption});
    return CachedText{embeddings.context.squeeze(0), embeddings.pooled.squeeze(0)};
  };
  const auto make_batch = [&](const Batch& batch, const std::vector<TrainImage>& set,
                              const std::vector<torch::Tensor>& set_latents, uint64_t caption_key,
                              bool vary_captions) {
    std::vector<torch::Tensor> x, context, pooled, time_ids;
    for (std::size_t j = 0; j < batch.size(); ++j) {
      const TrainImage& image = set[batch[j]];
      x.push_back(set_latents[batch[j]]);
      const SubsetConfig& subset = data.datasets[image.dataset].subsets[image.subset];
      const std::string caption =
          vary_captions ? sample_caption(image.caption, subset, caption_key + j) : image.caption;
      const CachedText text = text_of(caption);
      context.push_back(text.context);
      pooled.push_back(text.pooled);
      time_ids.push_back(training_time_ids(image));
    }
    const auto on = [&](std::vector<torch::Tensor>& parts, torch::Dtype dtype) {
      return torch::stack(parts).to(device, dtype);
    };
    return TrainBatch{on(x, torch::kFloat32), on(context, model_dtype), on(pooled, model_dtype),
                      on(time_ids, model_dtype)};
  };
  sdxl::LossScaler scaler(options.mixed_precision == "fp16");
  if (options.mixed_precision == "fp16")
    run_options.extra_state = [&scaler] {
      return std::map<std::string, torch::Tensor>{{"loss_scaler", scaler.state()}};
    };
  int64_t cached_epoch = -1;
  std::vector<Batch> batches;
  std::optional<distributed::GradientSum> gradient_sum;
  if (group != nullptr)
    gradient_sum.emplace(parameters, *group);
  const int64_t rank = group != nullptr ? group->rank() : 0;
  const auto step = [&](const aclora::train::StepContext& context) -> double {
    if (cached_epoch != context.epoch) {
      batches = epoch_batches(images, data, options.seed, context.epoch);
      cached_epoch = context.epoch;
    }
    optimizer.zero_grad();
    double loss_sum = 0.0;
    int64_t micro = 0;
    bool finite = true;
    for (int64_t m = 0; m < options.grad_accum && finite; ++m) {
      const int64_t index = context.step_in_epoch * batches_per_step + m * world_size + rank;
      if (index >= batches_per_epoch)
        break;
      const uint64_t caption_key = options.seed ^ (static_cast<uint64_t>(context.epoch) << 32) ^
                                   static_cast<uint64_t>(index * 1000003);
      const TrainBatch batch =
          make_batch(batches[static_cast<std::size_t>(index)], images, latents, caption_key, true);
      seed_micro_batch(options.seed, context.epoch, index, device);
      const StepDraws draws = draw_step(batch, options.loss);
      torch::Tensor loss;
      {
        std::optional<AutocastScope> scope;
        if (autocast)
          scope.emplace(autocast_on);
        loss = diffusion_loss(models.unet, batch, draws, abar, options.loss);
      }
      const double value = loss.item<double>();
      finite = std::isfinite(value);
      const bool last_here = m + 1 == options.grad_accum || index + world_size >= batches_per_epoch;
      if (gradient_sum && last_here)
        gradient_sum->overlap_next_backward(context.global_step);  // sums start in backward
      if (finite)
        scaler.scale(loss / static_cast<double>(batches_per_step)).backward();
      loss_sum += value;
      ++micro;
    }
    if (gradient_sum) {
      const std::vector<double> totals = gradient_sum->sum(
          {loss_sum, static_cast<double>(micro), finite ? 0.0 : 1.0}, context.global_step);
      loss_sum = totals[0];
      micro = static_cast<int64_t>(totals[1]);
      finite = totals[2] == 0.0;
    }
    if (!finite)
      return std::nan("");  // the run stops and names the step
    if (scaler.unscale(parameters)) {
      if (options.max_grad_norm > 0.0)
        torch::nn::utils::clip_grad_norm_(parameters, options.max_grad_norm);
      optimizer.step();
    }
    network.refresh();
    return loss_sum / static_cast<double>(std::max<int64_t>(1, micro));
  };

  // Validation: the loss on held-out images at fixed noise and timesteps (seeded per batch).
  const auto validation_loss = [&]() -> double {
    if (validation.empty())
      return std::nan("");
    torch::NoGradGuard no_grad;
    models.unet->eval();
    network.train(false);
    double sum = 0.0;
    int64_t count = 0;
    for (std::size_t i = 0; i < validation.size(); ++i) {
      const TrainBatch batch = make_batch({i}, validation, validation_latents, 0, false);
      at::Generator generator = at::globalContext().defaultGenerator(device).clone();
      generator.set_current_seed(options.seed + 7919 * (i + 1));
      StepDraws draws;
      draws.noise = torch::randn(batch.latents.sizes(), generator,
                                 batch.latents.options().dtype(torch::kFloat32));
      draws.timesteps = torch::full({1}, static_cast<int64_t>(100 + (i * 797) % 800),
                                    batch.latents.options().dtype(torch::kInt64));
      std::optional<AutocastScope> scope;
      if (autocast)
        scope.emplace(autocast_on);
      sum += diffusion_loss(models.unet, batch, draws, abar, options.loss).item<double>();
      ++count;
    }
    models.unet->train();
    network.train(true);
    return sum / static_cast<double>(count);
  };

  const auto write_samples = [&](int epoch) {
    torch::NoGradGuard no_grad;
    models.unet->eval();
    network.train(false);
    const BucketOptions& b = data.datasets.front().buckets;
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      const SamplePrompt& prompt = prompts[i];
      SampleOptions request;
      request.prompt = prompt.prompt;
      request.negative = prompt.negative;
      request.width = prompt.width.value_or(b.resolution_width);
      request.height = prompt.height.value_or(b.resolution_height);
      request.steps = prompt.steps.value_or(30);
      request.guidance = prompt.guidance.value_or(7.5);
      request.seed = prompt.seed.value_or(options.seed + i);
      const torch::Tensor latent_image =
          pipeline.sample_latents(request, pipeline.initial_noise(request));
      const torch::Tensor image = pipeline.decode(latent_image)[0];
      char name[64];
      std::snprintf(name, sizeof name, "epoch-%06d-prompt-%02zu.png", epoch + 1, i);
      fs::create_directories(options.output / "samples");
      write_png(options.output / "samples" / name, to_rgb8(image));
    }
    models.unet->train();
    network.train(true);
  };

  const aclora::train::ExportOptions export_base = [&] {
    aclora::train::ExportOptions e;
    e.format = options.format == "peft"        ? aclora::train::ExportFormat::peft
               : options.format == "diffusers" ? aclora::train::ExportFormat::diffusers
                                               : aclora::train::ExportFormat::kohya;
    e.dtype = save_dtype(options.save_precision);
    e.title = options.output.filename().string();
    return e;
  }();
  const auto lora_path = [&](const std::string& stem) {
    return options.output / (options.format == "peft" ? stem : stem + ".safetensors");
  };
  aclora::train::TrainingRun* run_pointer = nullptr;
  run_options.on_epoch_end = [&](int epoch, int64_t global_step) {
    std::vector<std::pair<std::string, double>> scalars;
    if (!writes_files)
      return scalars;  // rank 0 validates, samples and writes
    if (!validation.empty())
      scalars.push_back({"validation_loss", validation_loss()});
    const bool last = epoch + 1 == options.epochs;
    if (sampling && (last || (options.sample_every_n_epochs > 0 &&
                              (epoch + 1) % options.sample_every_n_epochs == 0)))
      write_samples(epoch);
    if (!last && options.save_every_n_epochs > 0 &&
        (epoch + 1) % options.save_every_n_epochs == 0) {
      aclora::train::ExportOptions e = export_base;
      e.metadata = training_metadata(options, images, data, epoch + 1, global_step,
                                     steps_per_epoch * options.epochs, started);
      char stem[32];
      std::snprintf(stem, sizeof stem, "lora-epoch-%06d", epoch + 1);
      aclora::train::write_lora(network, run_pointer->hook().module_ranks(), e, lora_path(stem));
    }
    return scalars;
  };
  aclora::train::TrainingRun run(network, optimizer, run_options);
  run_pointer = &run;
  if (options.resume) {
    run.resume_latest();
    if (group != nullptr &&
        !group->all_equal(static_cast<uint64_t>(run.position().global_step), "the resume check"))
      throw aclora::train::Error(
          "the processes resumed different states (this one: step " +
          std::to_string(run.position().global_step) + " from " + run.state_directory().string() +
          "): resuming needs the output folder on a file system that every process reads");
    if (const auto found = run.resumed_extra().find("loss_scaler");
        found != run.resumed_extra().end())
      scaler.restore(found->second);
  }
  const aclora::train::RunSummary summary = run.run(steps_per_epoch, step);

  TrainResult result;
  result.epochs = summary.epochs_completed;
  result.steps = summary.global_step;
  result.interrupted = summary.interrupted;
  result.modules = network.size();
  result.ranks = options.fixed_rank ? aclora::train::full_ranks(network) : summary.module_ranks;
  if (!summary.interrupted && writes_files) {
    aclora::train::ExportOptions e = export_base;
    e.metadata = training_metadata(options, images, data, summary.epochs_completed,
                                   summary.global_step, steps_per_epoch * options.epochs, started);
    result.lora = lora_path("lora");
    aclora::train::write_lora(network, result.ranks, e, result.lora);
  }
  return result;
}

}  // namespace

TrainResult train(const TrainOptions& options, const std::function<void(const std::string&)>& log) {
  validate(options);
  const std::optional<distributed::Launch> launch = distributed::Launch::from_environment();
  const torch::Device device = device_of(options, launch);
  if (!launch)
    return train_process(options, device, nullptr, log);
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
    return train_process(options, device, &group, rank_log);
  } catch (const distributed::DistributedError&) {
    throw;  // another process failed: the message names it
  } catch (const std::exception& error) {
    group.abandon(error.what());
    throw;
  }
}

}  // namespace sdxl
