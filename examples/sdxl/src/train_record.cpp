// What a run records about its settings: the state options a resume must match and the
// LoRA files' sd-scripts metadata.
#include "train_record.hpp"

#include <aclora/adapters/io/checksum.hpp>
#include <aclora/adapters/json/dump.hpp>

#include <cmath>
#include <ctime>
#include <map>
#include <sstream>

#include "sdxl/training_cache.hpp"

namespace sdxl {
namespace {

using aclora::json::Value;

std::string hex_of_text(const std::string& text) {
  return aclora::io::hex64(aclora::io::checksum(text));
}

// Per image (by file name, with its folder's name when `with_folder`): its bytes' and its
// caption's checksums.
Value image_entries(const std::vector<const TrainImage*>& images, bool with_folder) {
  Value out = aclora::json::Object{};
  for (const TrainImage* image : images) {
    Value entry = aclora::json::Object{};
    entry["content"] = aclora::io::hex64(file_checksum(image->path));
    entry["caption"] = hex_of_text(image->caption);
    const std::string name = image->path.filename().string();
    out[with_folder ? image->path.parent_path().filename().string() + "/" + name : name] =
        std::move(entry);
  }
  return out;
}

Value bucket_entries(const BucketOptions& b) {
  Value out = aclora::json::Object{};
  out["resolution_width"] = b.resolution_width;
  out["resolution_height"] = b.resolution_height;
  out["enable_bucket"] = b.enable_bucket;
  out["min_bucket_reso"] = b.min_bucket_reso;
  out["max_bucket_reso"] = b.max_bucket_reso;
  out["bucket_reso_steps"] = b.bucket_reso_steps;
  out["bucket_no_upscale"] = b.bucket_no_upscale;
  return out;
}

Value subset_entries(const SubsetConfig& s, const std::vector<const TrainImage*>& images) {
  Value out = aclora::json::Object{};
  out["num_repeats"] = s.num_repeats;
  out["caption_extension"] = s.caption_extension;
  out["shuffle_caption"] = s.shuffle_caption;
  out["keep_tokens"] = s.keep_tokens;
  out["caption_dropout_rate"] = s.caption_dropout_rate;
  out["class_tokens"] = s.class_tokens;
  out["images"] = image_entries(images, false);  // one folder
  return out;
}

// The data sets, subsets and images, keyed by index ("datasets.0.subsets.1.keep_tokens").
Value data_entries(const DataConfig& data, const std::vector<TrainImage>& images) {
  Value datasets = aclora::json::Object{};
  for (std::size_t d = 0; d < data.datasets.size(); ++d) {
    const DatasetConfig& dataset = data.datasets[d];
    Value entry = aclora::json::Object{};
    entry["batch_size"] = dataset.batch_size;
    entry["buckets"] = bucket_entries(dataset.buckets);
    Value subsets = aclora::json::Object{};
    for (std::size_t s = 0; s < dataset.subsets.size(); ++s) {
      std::vector<const TrainImage*> members;
      for (const TrainImage& image : images)
        if (image.dataset == d && image.subset == s)
          members.push_back(&image);
      subsets[std::to_string(s)] = subset_entries(dataset.subsets[s], members);
    }
    entry["subsets"] = std::move(subsets);
    datasets[std::to_string(d)] = std::move(entry);
  }
  return datasets;
}

}  // namespace

std::string utc_timestamp() {
  const std::time_t now = std::time(nullptr);
  char buffer[32];
  std::tm parts{};
  ::gmtime_r(&now, &parts);
  std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%S", &parts);
  return buffer;
}

uint64_t model_weights_checksum(const std::vector<std::filesystem::path>& files) {
  uint64_t hash = aclora::io::checksum(std::string("aclora-model-weights"));
  for (const auto& file : files)
    hash = aclora::io::checksum(aclora::io::hex64(file_checksum(file)), hash);
  return hash;
}

Value state_options(const TrainOptions& o, const TrainingInputs& inputs) {
  Value model = aclora::json::Object{};
  model["weights"] = aclora::io::hex64(inputs.model_weights);
  model["noise_schedule"] = aclora::io::hex64(inputs.noise_schedule);

  Value data = aclora::json::Object{};
  data["datasets"] = data_entries(inputs.data, inputs.images);
  data["validation_split"] = o.validation_split;
  std::vector<const TrainImage*> held;
  for (const TrainImage& image : inputs.validation)
    held.push_back(&image);
  data["validation_images"] = image_entries(held, true);  // maybe several folders

  Value lora = aclora::json::Object{};
  lora["targets"] = name_of(o.targets);
  lora["rank"] = o.rank;
  lora["alpha"] = o.alpha;
  lora["conv_rank"] = o.conv_rank;
  lora["dropout"] = o.dropout;
  lora["train_text_encoder"] = o.train_text_encoder;

  Value optimizer = aclora::json::Object{};
  optimizer["weight_decay"] = o.weight_decay;
  optimizer["max_grad_norm"] = o.max_grad_norm;

  Value loss = aclora::json::Object{};
  loss["prediction"] = o.loss.target == PredictionTarget::v ? "v" : "epsilon";
  loss["min_snr_gamma"] = o.loss.min_snr_gamma;
  loss["noise_offset"] = o.loss.noise_offset;
  loss["min_timestep"] = o.loss.min_timestep;
  loss["max_timestep"] = o.loss.max_timestep;
  loss["restart_loss"] = name_of(o.restart_loss);

  Value precision = aclora::json::Object{};
  precision["mixed_precision"] = name_of(o.mixed_precision);
  precision["gradient_checkpointing"] = o.gradient_checkpointing;

  Value out = aclora::json::Object{};
  // Micro-batches per optimizer step over all processes: a state resumes with another number
  // of processes when the global batch stays the same (same batches, same steps).
  out["batches_per_step"] = o.grad_accum * inputs.world_size;  // --grad-accum x processes
  out["model"] = std::move(model);
  out["data"] = std::move(data);
  out["lora"] = std::move(lora);
  out["optimizer"] = std::move(optimizer);
  out["loss"] = std::move(loss);
  out["precision"] = std::move(precision);
  return out;
}

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
  m["ss_lr_scheduler"] = name_of(o.lr_scheduler);
  m["ss_lr_warmup_steps"] = std::to_string(o.lr_warmup_steps);
  m["ss_max_grad_norm"] = std::to_string(o.max_grad_norm);
  m["ss_gradient_accumulation_steps"] = std::to_string(o.grad_accum);
  m["ss_gradient_checkpointing"] = o.gradient_checkpointing ? "True" : "False";
  m["ss_mixed_precision"] = name_of(o.mixed_precision);
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
  m["ss_training_finished_at"] = utc_timestamp();
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

}  // namespace sdxl
