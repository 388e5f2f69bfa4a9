// Checkpoint loading: diffusers folders, SDXL single files, LDM key tables.
#include "sdxl/checkpoint.hpp"

#include <aclora/adapters/json.hpp>
#include <aclora/adapters/train/tensor_io.hpp>

#include <algorithm>
#include <array>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

namespace sdxl {

namespace {

namespace st = aclora::safetensors;
namespace fs = std::filesystem;

const std::string kUNetPrefix = "model.diffusion_model.";
const std::string kVaePrefix = "first_stage_model.";
const std::string kClipLPrefix = "conditioner.embedders.0.transformer.";
const std::string kClipBigGPrefix = "conditioner.embedders.1.model.";

// Single-file keys outside the four components that are known and not needed:
// noise-schedule buffers that some LDM / SGM exports carry.
const std::set<std::string, std::less<>> kIgnoredSingleFileKeys{
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "betas",
    "denoiser.log_sigmas",
    "denoiser.sigmas",
    "log_one_minus_alphas_cumprod",
    "model_ema.decay",
    "model_ema.num_updates",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "posterior_variance",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
};

bool starts_with(std::string_view text, std::string_view prefix) {
  return text.substr(0, prefix.size()) == prefix;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::ostringstream out;
  out << '[';
  for (std::size_t i = 0; i < shape.size(); ++i) {
    out << (i ? ", " : "") << shape[i];
  }
  out << ']';
  return out.str();
}

torch::Dtype torch_dtype_of(const st::TensorView& view, const std::string& where) {
  switch (view.dtype) {
    case st::Dtype::F16:
      return torch::kHalf;
    case st::Dtype::BF16:
      return torch::kBFloat16;
    case st::Dtype::F32:
      return torch::kFloat32;
    case st::Dtype::F64:
      return torch::kFloat64;
    default:
      throw WeightLoadError(where + ": tensor '" + view.name + "' has dtype " +
                            std::string(st::dtype_name(view.dtype)) +
                            "; model weights must be F16, BF16, F32 or F64");
  }
}

// One parameter and the file tensor that fills it.
struct Assignment {
  std::string model_key;
  const st::TensorView* view = nullptr;
  std::string file_label;
  KeyTransform transform = KeyTransform::kNone;
};

// Checks every assignment against `model` (each parameter exactly once, shapes,
// dtypes), then copies. Nothing is written unless every check passes.
void assign_parameters(torch::nn::Module& model, const std::vector<Assignment>& assignments,
                       const std::string& component,
                       const std::map<std::string, std::string>& expected_file_keys) {
  auto parameters = model.named_parameters();
  std::map<std::string, const Assignment*> by_parameter;
  for (const Assignment& a : assignments) {
    const torch::Tensor* parameter = parameters.find(a.model_key);
    if (parameter == nullptr) {
      throw WeightLoadError(a.file_label + ": tensor '" + a.view->name + "' maps to '" +
                            a.model_key + "', which the " + component + " does not have");
    }
    if (!by_parameter.emplace(a.model_key, &a).second) {
      throw WeightLoadError(a.file_label + ": tensor '" + a.view->name + "' fills " + component +
                            " parameter '" + a.model_key + "', which '" +
                            by_parameter[a.model_key]->view->name + "' already fills");
    }
    std::vector<int64_t> stored = a.view->shape;
    if (a.transform == KeyTransform::kSqueezeConv1x1 && stored.size() == 4 && stored[2] == 1 &&
        stored[3] == 1) {
      stored.resize(2);
    }
    const std::vector<int64_t> wanted = parameter->sizes().vec();
    if (stored != wanted) {
      throw WeightLoadError(a.file_label + ": tensor '" + a.view->name + "' has shape " +
                            shape_string(a.view->shape) + ", the " + component + " parameter '" +
                            a.model_key + "' needs " + shape_string(wanted) +
                            " (a checkpoint of another architecture? for a single file, give "
                            "the matching configs with a config folder)");
    }
    torch_dtype_of(*a.view, a.file_label);  // F16, BF16, F32 or F64, else a clear error
  }
  for (const auto& item : parameters) {
    if (by_parameter.count(item.key()) == 0) {
      auto expected = expected_file_keys.find(item.key());
      const std::string file_key =
          expected == expected_file_keys.end() ? item.key() : expected->second;
      throw WeightLoadError(component + ": tensor '" + file_key + "' for parameter '" + item.key() +
                            "' is missing from the checkpoint");
    }
  }
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < assignments.size(); ++i) {
    const Assignment& a = assignments[i];
    torch::Tensor& parameter = *parameters.find(a.model_key);
    parameter.copy_(aclora::train::tensor_view(*a.view).reshape(parameter.sizes()));
  }
}

// ------------------------------------------------------------------ key tables

enum class RuleKind { kPlain, kUNetResnet, kVaeResnet, kConv1x1Linear };

struct PrefixRule {
  std::string diffusers;
  std::string ldm;
  RuleKind kind = RuleKind::kPlain;
};

std::string join(const std::string& prefix, const std::string& rest) {
  return rest.empty() ? prefix : prefix + "." + rest;
}

// Maps every parameter name of `model` through the longest matching prefix rule.
std::vector<KeyMapping> apply_rules(const torch::nn::Module& model,
                                    const std::vector<PrefixRule>& rules) {
  static const std::map<std::string, std::string> kUNetResnet{
      {"norm1", "in_layers.0"},  {"conv1", "in_layers.2"},  {"time_emb_proj", "emb_layers.1"},
      {"norm2", "out_layers.0"}, {"conv2", "out_layers.3"}, {"conv_shortcut", "skip_connection"}};
  static const std::map<std::string, std::string> kVaeResnet{{"conv_shortcut", "nin_shortcut"}};
  std::vector<KeyMapping> table;
  for (const auto& item : model.named_parameters()) {
    const std::string& key = item.key();
    const PrefixRule* best = nullptr;
    for (const auto& rule : rules) {
      if (starts_with(key, rule.diffusers + ".") &&
          (best == nullptr || rule.diffusers.size() > best->diffusers.size())) {
        best = &rule;
      }
    }
    if (best == nullptr) {
      throw std::logic_error("LDM key table: no rule for parameter '" + key + "'");
    }
    std::string rest = key.substr(best->diffusers.size() + 1);
    KeyMapping mapping;
    mapping.model_key = key;
    if (best->kind == RuleKind::kUNetResnet || best->kind == RuleKind::kVaeResnet) {
      const auto& renames = best->kind == RuleKind::kUNetResnet ? kUNetResnet : kVaeResnet;
      const std::size_t dot = rest.find('.');
      const std::string head = rest.substr(0, dot);
      if (auto found = renames.find(head); found != renames.end()) {
        rest = found->second + rest.substr(dot);
      }
    }
    if (best->kind == RuleKind::kConv1x1Linear && rest == "weight") {
      mapping.transform = KeyTransform::kSqueezeConv1x1;
    }
    mapping.file_key = join(best->ldm, rest);
    table.push_back(std::move(mapping));
  }
  return table;
}

BuildOptions meta_build() {
  BuildOptions options;
  options.device = torch::kMeta;
  return options;
}

}  // namespace

std::vector<KeyMapping> unet_ldm_key_table(const UNetConfig& config) {
  std::vector<PrefixRule> rules{
      {"conv_in", "input_blocks.0.0"},
      {"time_embedding.linear_1", "time_embed.0"},
      {"time_embedding.linear_2", "time_embed.2"},
      {"add_embedding.linear_1", "label_emb.0.0"},
      {"add_embedding.linear_2", "label_emb.0.2"},
      {"mid_block.resnets.0", "middle_block.0", RuleKind::kUNetResnet},
      {"mid_block.attentions.0", "middle_block.1"},
      {"mid_block.resnets.1", "middle_block.2", RuleKind::kUNetResnet},
      {"conv_norm_out", "out.0"},
      {"conv_out", "out.2"},
  };
  const std::size_t levels = config.block_out_channels.size();
  int input = 1;
  for (std::size_t i = 0; i < levels; ++i) {
    const std::string down = "down_blocks." + std::to_string(i);
    for (int64_t j = 0; j < config.layers_per_block[i]; ++j, ++input) {
      const std::string ldm = "input_blocks." + std::to_string(input);
      rules.push_back({down + ".resnets." + std::to_string(j), ldm + ".0", RuleKind::kUNetResnet});
      if (config.has_cross_attention(i)) {
        rules.push_back({down + ".attentions." + std::to_string(j), ldm + ".1"});
      }
    }
    if (i + 1 < levels) {
      rules.push_back(
          {down + ".downsamplers.0.conv", "input_blocks." + std::to_string(input) + ".0.op"});
      ++input;
    }
  }
  int output = 0;
  for (std::size_t i = 0; i < levels; ++i) {
    const std::string up = "up_blocks." + std::to_string(i);
    const bool cross = config.up_block_types[i] == "CrossAttnUpBlock2D";
    const int64_t resnets = config.layers_per_block[levels - 1 - i] + 1;
    for (int64_t j = 0; j < resnets; ++j, ++output) {
      const std::string ldm = "output_blocks." + std::to_string(output);
      rules.push_back({up + ".resnets." + std::to_string(j), ldm + ".0", RuleKind::kUNetResnet});
      if (cross) {
        rules.push_back({up + ".attentions." + std::to_string(j), ldm + ".1"});
      }
      if (j == resnets - 1 && i + 1 < levels) {
        rules.push_back({up + ".upsamplers.0.conv", ldm + (cross ? ".2" : ".1") + ".conv"});
      }
    }
  }
  UNet meta(config, meta_build());
  return apply_rules(*meta, rules);
}

std::vector<KeyMapping> vae_ldm_key_table(const VaeConfig& config) {
  std::vector<PrefixRule> rules{{"quant_conv", "quant_conv"},
                                {"post_quant_conv", "post_quant_conv"}};
  const std::size_t levels = config.block_out_channels.size();
  for (const std::string part : {"encoder", "decoder"}) {
    rules.push_back({part + ".conv_in", part + ".conv_in"});
    rules.push_back({part + ".conv_out", part + ".conv_out"});
    rules.push_back({part + ".conv_norm_out", part + ".norm_out"});
    rules.push_back({part + ".mid_block.resnets.0", part + ".mid.block_1", RuleKind::kVaeResnet});
    rules.push_back({part + ".mid_block.resnets.1", part + ".mid.block_2", RuleKind::kVaeResnet});
    const std::string attention = part + ".mid_block.attentions.0.";
    const std::string ldm_attention = part + ".mid.attn_1.";
    rules.push_back({attention + "group_norm", ldm_attention + "norm"});
    rules.push_back({attention + "to_q", ldm_attention + "q", RuleKind::kConv1x1Linear});
    rules.push_back({attention + "to_k", ldm_attention + "k", RuleKind::kConv1x1Linear});
    rules.push_back({attention + "to_v", ldm_attention + "v", RuleKind::kConv1x1Linear});
    rules.push_back({attention + "to_out.0", ldm_attention + "proj_out", RuleKind::kConv1x1Linear});
  }
  for (std::size_t i = 0; i < levels; ++i) {
    const std::string down = "encoder.down_blocks." + std::to_string(i);
    const std::string ldm_down = "encoder.down." + std::to_string(i);
    rules.push_back({down + ".downsamplers.0", ldm_down + ".downsample"});
    const std::string up = "decoder.up_blocks." + std::to_string(i);
    const std::string ldm_up = "decoder.up." + std::to_string(levels - 1 - i);
    rules.push_back({up + ".upsamplers.0", ldm_up + ".upsample"});
    const int64_t encoder_resnets = config.layers_per_block;
    for (int64_t j = 0; j < encoder_resnets + 1; ++j) {
      if (j < encoder_resnets) {
        rules.push_back({down + ".resnets." + std::to_string(j),
                         ldm_down + ".block." + std::to_string(j), RuleKind::kVaeResnet});
      }
      rules.push_back({up + ".resnets." + std::to_string(j), ldm_up + ".block." + std::to_string(j),
                       RuleKind::kVaeResnet});
    }
  }
  AutoencoderKL meta(config, meta_build());
  return apply_rules(*meta, rules);
}

// ------------------------------------------------------------- diffusers folder

namespace {

// Old diffusers VAE files name the mid-block attention query / key / value / proj_attn.
std::string modern_vae_key(const std::string& key) {
  static const std::vector<std::pair<std::string, std::string>> kRenames{
      {".attentions.0.query.", ".attentions.0.to_q."},
      {".attentions.0.key.", ".attentions.0.to_k."},
      {".attentions.0.value.", ".attentions.0.to_v."},
      {".attentions.0.proj_attn.", ".attentions.0.to_out.0."}};
  for (const auto& [old_name, new_name] : kRenames) {
    const auto at = key.find(old_name);
    if (at != std::string::npos) {
      return key.substr(0, at) + new_name + key.substr(at + old_name.size());
    }
  }
  return key;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw std::runtime_error("cannot open " + path.string());
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// The safetensors files of one component folder: a single file or the shards
// named by an index, the fp16 variant first when preferred.
std::vector<fs::path> component_files(const fs::path& directory, const std::string& stem,
                                      bool prefer_fp16) {
  const std::vector<std::pair<std::string, std::string>> regular{
      {stem + ".safetensors", ""}, {"", stem + ".safetensors.index.json"}};
  const std::vector<std::pair<std::string, std::string>> variant{
      {stem + ".fp16.safetensors", ""}, {"", stem + ".safetensors.index.fp16.json"}};
  std::vector<std::pair<std::string, std::string>> order;
  for (const auto* list :
       prefer_fp16 ? std::array{&variant, &regular} : std::array{&regular, &variant}) {
    order.insert(order.end(), list->begin(), list->end());
  }
  for (const auto& [single, index] : order) {
    if (!single.empty() && fs::is_regular_file(directory / single)) {
      return {directory / single};
    }
    if (!index.empty() && fs::is_regular_file(directory / index)) {
      const fs::path index_path = directory / index;
      aclora::json::Value root;
      try {
        root = aclora::json::parse(read_text(index_path));
      } catch (const std::exception& e) {
        throw WeightLoadError(index_path.string() + ": not a valid shard index: " + e.what());
      }
      const auto* map = root.is_object() ? root.find("weight_map") : nullptr;
      if (map == nullptr || !map->is_object()) {
        throw WeightLoadError(index_path.string() + ": no \"weight_map\" object");
      }
      std::set<std::string> shards;
      for (const auto& [name, file] : map->as_object()) {
        if (!file.is_string()) {
          throw WeightLoadError(index_path.string() + ": weight_map entry '" + name +
                                "' is not a file name");
        }
        shards.insert(file.as_string());
      }
      std::vector<fs::path> files;
      for (const auto& shard : shards) {
        files.push_back(directory / shard);
      }
      return files;
    }
  }
  std::string hint;
  if (fs::is_regular_file(directory / (stem + ".bin"))) {
    hint = " (only " + stem + ".bin, a pickle file, is there; convert it to safetensors)";
  }
  throw WeightLoadError(directory.string() + ": no " + stem + ".safetensors, " + stem +
                        ".fp16.safetensors or sharded index" + hint);
}

std::vector<st::Reader> open_all(const std::vector<fs::path>& files) {
  std::vector<st::Reader> readers;
  for (const auto& file : files) {
    readers.push_back(st::Reader::open(file));
  }
  return readers;
}

std::vector<const st::Reader*> pointers(const std::vector<st::Reader>& readers) {
  std::vector<const st::Reader*> out;
  for (const auto& reader : readers) {
    out.push_back(&reader);
  }
  return out;
}

BuildOptions load_build(const LoadOptions& options) {
  BuildOptions build;
  build.dtype = options.dtype;
  build.device = options.device;
  build.initialize = false;
  return build;
}

void check_pipeline_class(const fs::path& folder) {
  const fs::path index = folder / "model_index.json";
  if (!fs::is_regular_file(index)) {
    if (!fs::is_directory(folder / "unet") && !fs::is_directory(folder / "vae")) {
      const std::string hint = fs::is_regular_file(folder / "config.json")
                                   ? "; it looks like one component (unet/, vae/, ...) of a "
                                     "diffusers folder: give the pipeline folder above it"
                                   : "";
      throw WeightLoadError(folder.string() +
                            ": not a diffusers folder (no model_index.json, unet/ or vae/)" + hint);
    }
    return;
  }
  aclora::json::Value root;
  try {
    root = aclora::json::parse(read_text(index));
  } catch (const std::exception& e) {
    throw WeightLoadError(index.string() + ": not valid JSON: " + e.what());
  }
  const auto* name = root.is_object() ? root.find("_class_name") : nullptr;
  if (name != nullptr && name->is_string() &&
      !starts_with(name->as_string(), "StableDiffusionXL")) {
    const std::string& cls = name->as_string();
    const std::string what =
        starts_with(cls, "StableDiffusion") ? " (a Stable Diffusion 1.x/2.x pipeline?)" : "";
    throw WeightLoadError(index.string() + ": pipeline class \"" + cls +
                          "\" is not an SDXL pipeline" + what +
                          "; only SDXL (StableDiffusionXLPipeline) folders are supported");
  }
}

ClipTextModel load_folder_text_encoder(const fs::path& directory, const LoadOptions& options,
                                       SdxlModels& models) {
  const ClipTextConfig config = ClipTextConfig::from_json_file(directory / "config.json");
  const auto files = component_files(directory, "model", options.prefer_fp16_variant);
  if (files.size() != 1) {
    throw WeightLoadError(directory.string() +
                          ": sharded text-encoder weights are not supported; merge the shards");
  }
  const st::Reader reader = st::Reader::open(files.front());
  ClipTextModel model(config, load_build(options));
  load_text_encoder(*model, reader, "", TextEncoderNaming::kHuggingFace);
  models.files.push_back(files.front());
  return model;
}

}  // namespace

void load_diffusers_component(torch::nn::Module& model, const std::vector<const st::Reader*>& files,
                              const std::string& component) {
  const auto parameters = model.named_parameters();
  std::vector<Assignment> assignments;
  for (const st::Reader* reader : files) {
    for (const st::TensorView& view : reader->tensors()) {
      std::string key = view.name;
      if (component == "vae") {
        key = modern_vae_key(key);
      }
      if (parameters.find(key) == nullptr) {
        std::string hint;
        if (starts_with(key, "lora_") || key.find(".lora") != std::string::npos) {
          hint = " (this looks like a LoRA file, not model weights)";
        }
        throw WeightLoadError(reader->label() + ": unknown " + component + " key '" + view.name +
                              "'" + hint);
      }
      assignments.push_back({key, &view, reader->label(), KeyTransform::kNone});
    }
  }
  assign_parameters(model, assignments, component, {});
}

SdxlModels load_diffusers_folder(const fs::path& folder, const LoadOptions& options) {
  check_pipeline_class(folder);
  SdxlModels models;
  const BuildOptions build = load_build(options);
  if (options.load_unet) {
    const UNetConfig config = UNetConfig::from_json_file(folder / "unet" / "config.json");
    const auto files =
        component_files(folder / "unet", "diffusion_pytorch_model", options.prefer_fp16_variant);
    const auto readers = open_all(files);
    models.unet = UNet(config, build);
    load_diffusers_component(*models.unet, pointers(readers), "unet");
    models.files.insert(models.files.end(), files.begin(), files.end());
  }
  if (options.load_vae) {
    const VaeConfig config = VaeConfig::from_json_file(folder / "vae" / "config.json");
    const auto files =
        component_files(folder / "vae", "diffusion_pytorch_model", options.prefer_fp16_variant);
    const auto readers = open_all(files);
    models.vae = AutoencoderKL(config, build);
    load_diffusers_component(*models.vae, pointers(readers), "vae");
    models.files.insert(models.files.end(), files.begin(), files.end());
  }
  if (options.load_text_encoders) {
    models.text_encoder = load_folder_text_encoder(folder / "text_encoder", options, models);
    models.text_encoder_2 = load_folder_text_encoder(folder / "text_encoder_2", options, models);
  }
  return models;
}

// ------------------------------------------------------------------ single file

namespace {

// Rejects files that are not SDXL base checkpoints, saying what they are.
void check_single_file_family(const st::Reader& reader) {
  const std::string& label = reader.label();
  bool has_unet = false, has_label_emb = false, has_clip_l = false, has_big_g = false;
  for (const std::string& key : reader.names()) {
    if (starts_with(key, "lora_") || key.find(".lora_down.") != std::string::npos ||
        key.find(".lora_up.") != std::string::npos || key.find(".lora_A.") != std::string::npos ||
        key.find(".lora_B.") != std::string::npos || key.find(".lora.down.") != std::string::npos ||
        key.find(".hada_w1_a") != std::string::npos || key.find(".lokr_w1") != std::string::npos) {
      throw WeightLoadError(label + " is a LoRA file (key '" + key +
                            "'), not a model checkpoint; give it as a LoRA, and the SDXL base "
                            "model separately");
    }
    if (starts_with(key, "cond_stage_model.")) {
      throw WeightLoadError(label + " is a Stable Diffusion 1.x/2.x checkpoint (key '" + key +
                            "'); only SDXL checkpoints are supported");
    }
    has_unet = has_unet || starts_with(key, kUNetPrefix);
    has_label_emb = has_label_emb || starts_with(key, kUNetPrefix + "label_emb.");
    has_clip_l = has_clip_l || starts_with(key, kClipLPrefix);
    has_big_g = has_big_g || starts_with(key, kClipBigGPrefix);
  }
  if (!has_unet) {
    const bool diffusers_like = reader.contains("conv_in.weight") ||
                                reader.contains("encoder.conv_in.weight") ||
                                reader.contains("text_model.embeddings.token_embedding.weight");
    throw WeightLoadError(label + ": no " + kUNetPrefix + "* keys, so not an SDXL single-file " +
                          "checkpoint" +
                          (diffusers_like ? " (it looks like one component of a diffusers "
                                            "folder: give the folder instead)"
                                          : ""));
  }
  if (!has_label_emb) {
    throw WeightLoadError(label + ": the UNet has no label_emb (SDXL's added conditioning), so " +
                          "this is a Stable Diffusion 1.x/2.x UNet, not SDXL");
  }
  if (reader.contains("conditioner.embedders.0.model.token_embedding.weight") && !has_clip_l) {
    throw WeightLoadError(label + ": an SDXL refiner checkpoint (only the OpenCLIP encoder); " +
                          "only SDXL base checkpoints are supported");
  }
  (void)has_big_g;
}

std::vector<Assignment> plan_ldm(const st::Reader& reader, const std::string& prefix,
                                 const std::vector<KeyMapping>& table,
                                 std::map<std::string, std::string>& expected_file_keys) {
  std::map<std::string, const KeyMapping*, std::less<>> by_file_key;
  for (const auto& mapping : table) {
    by_file_key.emplace(prefix + mapping.file_key, &mapping);
    expected_file_keys[mapping.model_key] = prefix + mapping.file_key;
  }
  std::vector<Assignment> assignments;
  for (const st::TensorView& view : reader.tensors()) {
    if (!starts_with(view.name, prefix)) {
      continue;
    }
    auto found = by_file_key.find(view.name);
    if (found == by_file_key.end()) {
      throw WeightLoadError(reader.label() + ": unknown key '" + view.name +
                            "' (not part of the model this config describes)");
    }
    assignments.push_back(
        {found->second->model_key, &view, reader.label(), found->second->transform});
  }
  return assignments;
}

}  // namespace

SdxlModels load_single_file(const fs::path& file, const LoadOptions& options) {
  const st::Reader reader = st::Reader::open(file);
  check_single_file_family(reader);
  for (const std::string& key : reader.names()) {
    const bool known = starts_with(key, kUNetPrefix) || starts_with(key, kVaePrefix) ||
                       starts_with(key, kClipLPrefix) || starts_with(key, kClipBigGPrefix) ||
                       kIgnoredSingleFileKeys.count(key) != 0;
    if (!known) {
      throw WeightLoadError(reader.label() + ": unknown key '" + key + "'");
    }
  }
  const std::optional<fs::path>& configs = options.config_folder;
  const BuildOptions build = load_build(options);
  SdxlModels models;
  models.files.push_back(file);
  if (options.load_unet) {
    const UNetConfig config = configs ? UNetConfig::from_json_file(*configs / "unet/config.json")
                                      : UNetConfig::sdxl_base();
    std::map<std::string, std::string> expected;
    const auto assignments = plan_ldm(reader, kUNetPrefix, unet_ldm_key_table(config), expected);
    models.unet = UNet(config, build);
    assign_parameters(*models.unet, assignments, "unet", expected);
  }
  if (options.load_vae) {
    const VaeConfig config =
        configs ? VaeConfig::from_json_file(*configs / "vae/config.json") : VaeConfig::sdxl_base();
    std::map<std::string, std::string> expected;
    const auto assignments = plan_ldm(reader, kVaePrefix, vae_ldm_key_table(config), expected);
    models.vae = AutoencoderKL(config, build);
    assign_parameters(*models.vae, assignments, "vae", expected);
  }
  if (options.load_text_encoders) {
    const ClipTextConfig clip_l =
        configs ? ClipTextConfig::from_json_file(*configs / "text_encoder/config.json")
                : ClipTextConfig::sdxl_clip_l();
    const ClipTextConfig big_g =
        configs ? ClipTextConfig::from_json_file(*configs / "text_encoder_2/config.json")
                : ClipTextConfig::sdxl_clip_bigg();
    models.text_encoder = ClipTextModel(clip_l, build);
    load_text_encoder(*models.text_encoder, reader, kClipLPrefix, TextEncoderNaming::kHuggingFace);
    models.text_encoder_2 = ClipTextModel(big_g, build);
    load_text_encoder(*models.text_encoder_2, reader, kClipBigGPrefix,
                      TextEncoderNaming::kOpenClip);
  }
  return models;
}

SdxlModels load_sdxl(const fs::path& path, const LoadOptions& options) {
  if (fs::is_directory(path)) {
    return load_diffusers_folder(path, options);
  }
  if (!fs::exists(path)) {
    throw WeightLoadError(path.string() + ": no such file or folder");
  }
  return load_single_file(path, options);
}

}  // namespace sdxl
