// Reading and checking the UNet and VAE configurations (diffusers config.json).
#include "sdxl/config.hpp"

#include <aclora/adapters/json.hpp>

#include <fstream>
#include <functional>
#include <sstream>
#include <stdexcept>

namespace sdxl {

namespace {

namespace json = aclora::json;

// Reads one config.json and hands out its fields, remembering the file name
// for every error.
class ConfigFile {
 public:
  explicit ConfigFile(const std::filesystem::path& path) : path_(path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      throw std::runtime_error("cannot open model config " + path.string());
    }
    std::ostringstream text;
    text << in.rdbuf();
    try {
      root_ = json::parse(text.str());
    } catch (const std::exception& e) {
      throw std::runtime_error("model config " + path.string() + " is not valid JSON: " + e.what());
    }
    if (!root_.is_object()) {
      throw std::runtime_error("model config " + path.string() + " is not a JSON object");
    }
  }

  [[noreturn]] void fail(const std::string& field, const std::string& problem) const {
    throw std::runtime_error("model config " + path_.string() + ": \"" + field + "\" " + problem);
  }

  // The field, or nullptr when absent or null.
  const json::Value* get(const std::string& field) const {
    const json::Value* value = root_.find(field);
    return value == nullptr || value->is_null() ? nullptr : value;
  }

  void read(const std::string& field, int64_t& out) const {
    if (const auto* value = get(field)) {
      if (!value->is_integer()) {
        fail(field, "must be an integer");
      }
      out = value->as_int();
    }
  }
  void read(const std::string& field, double& out) const {
    if (const auto* value = get(field)) {
      if (!value->is_number()) {
        fail(field, "must be a number");
      }
      out = value->as_double();
    }
  }
  void read(const std::string& field, bool& out) const {
    if (const auto* value = get(field)) {
      if (!value->is_bool()) {
        fail(field, "must be true or false");
      }
      out = value->as_bool();
    }
  }
  void read(const std::string& field, std::vector<std::string>& out) const {
    if (const auto* value = get(field)) {
      if (!value->is_array()) {
        fail(field, "must be an array of strings");
      }
      out.clear();
      for (const auto& item : value->as_array()) {
        if (!item.is_string()) {
          fail(field, "must be an array of strings");
        }
        out.push_back(item.as_string());
      }
    }
  }
  // An integer array, or one integer repeated `count` times.
  void read(const std::string& field, std::vector<int64_t>& out, std::size_t count) const {
    if (const auto* value = get(field)) {
      if (value->is_integer()) {
        out.assign(count, value->as_int());
        return;
      }
      if (!value->is_array()) {
        fail(field, "must be an integer or an array of integers");
      }
      out.clear();
      for (const auto& item : value->as_array()) {
        if (!item.is_integer()) {
          fail(field,
               "must be an integer or an array of integers (nested lists are not supported)");
        }
        out.push_back(item.as_int());
      }
    }
  }
  void require_string(const std::string& field, const std::string& wanted) const {
    if (const auto* value = get(field)) {
      if (!value->is_string() || value->as_string() != wanted) {
        fail(field, "must be \"" + wanted + "\" (this implementation supports only that)");
      }
    }
  }
  void require_absent(const std::string& field) const {
    if (get(field) != nullptr) {
      fail(field, "must be null: this implementation does not support it");
    }
  }
  void require_bool(const std::string& field, bool wanted) const {
    bool value = wanted;
    read(field, value);
    if (value != wanted) {
      fail(field, std::string("must be ") + (wanted ? "true" : "false") +
                      " (this implementation supports only that)");
    }
  }
  void require_number(const std::string& field, double wanted) const {
    double value = wanted;
    read(field, value);
    if (value != wanted) {
      fail(field,
           "must be " + std::to_string(wanted) + " (this implementation supports only that)");
    }
  }

  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  json::Value root_;
};

void check(bool condition, const std::string& what, const std::string& message) {
  if (!condition) {
    throw std::invalid_argument(what + ": " + message);
  }
}

void check_positive(const std::vector<int64_t>& values, const std::string& what,
                    const std::string& name) {
  for (const int64_t v : values) {
    check(v > 0, what, name + " must be positive");
  }
}

}  // namespace

int64_t UNetConfig::up_transformer_layers(std::size_t up_block) const {
  if (!reverse_transformer_layers_per_block.empty()) {
    return reverse_transformer_layers_per_block.at(up_block);
  }
  return transformer_layers_per_block.at(transformer_layers_per_block.size() - 1 - up_block);
}

void UNetConfig::validate() const {
  const std::string what = "UNet config";
  const std::size_t levels = block_out_channels.size();
  check(levels > 0, what, "block_out_channels is empty");
  check(layers_per_block.size() == levels && down_block_types.size() == levels &&
            up_block_types.size() == levels && attention_heads.size() == levels &&
            transformer_layers_per_block.size() == levels,
        what,
        "layers_per_block, down/up_block_types, attention heads and "
        "transformer_layers_per_block need one entry per block_out_channels entry");
  check(reverse_transformer_layers_per_block.empty() ||
            reverse_transformer_layers_per_block.size() == levels,
        what, "reverse_transformer_layers_per_block needs one entry per up block");
  check_positive(block_out_channels, what, "block_out_channels");
  check_positive(layers_per_block, what, "layers_per_block");
  check_positive(attention_heads, what, "attention head counts");
  check(in_channels > 0 && out_channels > 0 && cross_attention_dim > 0 && norm_num_groups > 0 &&
            addition_time_embed_dim > 0,
        what, "channel counts and dimensions must be positive");
  for (std::size_t i = 0; i < levels; ++i) {
    const std::string& down = down_block_types[i];
    const std::string& up = up_block_types[i];
    check(down == "DownBlock2D" || down == "CrossAttnDownBlock2D", what,
          "unsupported down block type \"" + down + "\"");
    check(up == "UpBlock2D" || up == "CrossAttnUpBlock2D", what,
          "unsupported up block type \"" + up + "\"");
    check(block_out_channels[i] % norm_num_groups == 0, what,
          "block_out_channels must be divisible by norm_num_groups");
    const bool down_cross = down == "CrossAttnDownBlock2D";
    const bool up_cross = up_block_types[levels - 1 - i] == "CrossAttnUpBlock2D";
    if (down_cross || up_cross) {
      check(block_out_channels[i] % attention_heads[i] == 0, what,
            "block_out_channels must be divisible by the attention head count");
      check(transformer_layers_per_block[i] > 0, what,
            "transformer_layers_per_block must be positive where there is attention");
    }
  }
  check(pooled_dim() > 0, what,
        "projection_class_embeddings_input_dim must exceed 6 * addition_time_embed_dim");
}

UNetConfig UNetConfig::from_json_file(const std::filesystem::path& path) {
  const ConfigFile file(path);
  UNetConfig config;
  file.require_string("_class_name", "UNet2DConditionModel");
  file.read("in_channels", config.in_channels);
  file.read("out_channels", config.out_channels);
  file.read("block_out_channels", config.block_out_channels, 0);
  const std::size_t levels = config.block_out_channels.size();
  config.layers_per_block.assign(levels, 2);
  file.read("layers_per_block", config.layers_per_block, levels);
  file.read("down_block_types", config.down_block_types);
  file.read("up_block_types", config.up_block_types);
  file.require_string("mid_block_type", "UNetMidBlock2DCrossAttn");
  // diffusers' "attention_head_dim" holds head counts unless num_attention_heads is set.
  config.attention_heads.assign(levels, 8);
  file.read("attention_head_dim", config.attention_heads, levels);
  file.read("num_attention_heads", config.attention_heads, levels);
  config.transformer_layers_per_block.assign(levels, 1);
  file.read("transformer_layers_per_block", config.transformer_layers_per_block, levels);
  file.read("reverse_transformer_layers_per_block", config.reverse_transformer_layers_per_block,
            levels);
  file.read("cross_attention_dim", config.cross_attention_dim);
  const auto* addition = file.get("addition_embed_type");
  if (addition == nullptr || !addition->is_string() || addition->as_string() != "text_time") {
    file.fail("addition_embed_type",
              "must be \"text_time\": without SDXL's added conditioning this is not an SDXL "
              "UNet (Stable Diffusion 1.x/2.x?)");
  }
  file.read("addition_time_embed_dim", config.addition_time_embed_dim);
  file.read("projection_class_embeddings_input_dim", config.projection_class_embeddings_input_dim);
  file.read("norm_num_groups", config.norm_num_groups);
  file.read("norm_eps", config.norm_eps);
  file.read("flip_sin_to_cos", config.flip_sin_to_cos);
  file.read("freq_shift", config.freq_shift);
  file.require_bool("use_linear_projection", true);
  file.require_bool("center_input_sample", false);
  file.require_bool("only_cross_attention", false);
  file.require_bool("dual_cross_attention", false);
  file.require_bool("resnet_skip_time_act", false);
  file.require_string("time_embedding_type", "positional");
  file.require_string("resnet_time_scale_shift", "default");
  file.require_string("act_fn", "silu");
  file.require_string("attention_type", "default");
  file.require_absent("class_embed_type");
  file.require_absent("num_class_embeds");
  file.require_absent("encoder_hid_dim");
  file.require_absent("time_cond_proj_dim");
  file.require_absent("timestep_post_act");
  file.require_absent("time_embedding_act_fn");
  file.require_absent("time_embedding_dim");
  file.require_number("conv_in_kernel", 3);
  file.require_number("conv_out_kernel", 3);
  file.require_number("downsample_padding", 1);
  file.require_number("mid_block_scale_factor", 1);
  file.require_number("resnet_out_scale_factor", 1);
  try {
    config.validate();
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error("model config " + path.string() + ": " + e.what());
  }
  return config;
}

void VaeConfig::validate() const {
  const std::string what = "VAE config";
  check(!block_out_channels.empty(), what, "block_out_channels is empty");
  check_positive(block_out_channels, what, "block_out_channels");
  check(in_channels > 0 && out_channels > 0 && latent_channels > 0 && layers_per_block > 0 &&
            norm_num_groups > 0,
        what, "channel counts and layers_per_block must be positive");
  for (const int64_t c : block_out_channels) {
    check(c % norm_num_groups == 0, what,
          "block_out_channels must be divisible by norm_num_groups");
  }
  check(scaling_factor > 0, what, "scaling_factor must be positive");
}

VaeConfig VaeConfig::from_json_file(const std::filesystem::path& path) {
  const ConfigFile file(path);
  VaeConfig config;
  file.require_string("_class_name", "AutoencoderKL");
  file.read("in_channels", config.in_channels);
  file.read("out_channels", config.out_channels);
  file.read("latent_channels", config.latent_channels);
  file.read("block_out_channels", config.block_out_channels, 0);
  file.read("layers_per_block", config.layers_per_block);
  file.read("norm_num_groups", config.norm_num_groups);
  file.read("scaling_factor", config.scaling_factor);
  std::vector<std::string> types;
  file.read("down_block_types", types);
  for (const auto& type : types) {
    if (type != "DownEncoderBlock2D") {
      file.fail("down_block_types", "has \"" + type + "\"; only DownEncoderBlock2D is supported");
    }
  }
  if (!types.empty() && types.size() != config.block_out_channels.size()) {
    file.fail("down_block_types", "needs one entry per block_out_channels entry");
  }
  types.clear();
  file.read("up_block_types", types);
  for (const auto& type : types) {
    if (type != "UpDecoderBlock2D") {
      file.fail("up_block_types", "has \"" + type + "\"; only UpDecoderBlock2D is supported");
    }
  }
  if (!types.empty() && types.size() != config.block_out_channels.size()) {
    file.fail("up_block_types", "needs one entry per block_out_channels entry");
  }
  file.require_string("act_fn", "silu");
  file.require_bool("use_quant_conv", true);
  file.require_bool("use_post_quant_conv", true);
  file.require_bool("mid_block_add_attention", true);
  if (const auto* shift = file.get("shift_factor")) {
    if (!shift->is_number() || shift->as_double() != 0.0) {
      file.fail("shift_factor", "must be null or 0 (SDXL has no latent shift)");
    }
  }
  try {
    config.validate();
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error("model config " + path.string() + ": " + e.what());
  }
  return config;
}

}  // namespace sdxl
