// Text-encoder checkpoint key tables and loading (see text_encoder_keys.hpp).
#include "sdxl/text_encoder_keys.hpp"

#include <torch/torch.h>

#include <algorithm>
#include <map>
#include <set>

namespace sdxl {
namespace {

namespace st = aclora::safetensors;

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

bool is_float_dtype(st::Dtype dtype) {
  return dtype == st::Dtype::F16 || dtype == st::Dtype::BF16 || dtype == st::Dtype::F32 ||
         dtype == st::Dtype::F64;
}

bool starts_with(std::string_view text, std::string_view head) {
  return text.substr(0, head.size()) == head;
}

}  // namespace

std::vector<TextEncoderKeySource> text_encoder_key_table(const ClipTextConfig& config,
                                                         TextEncoderNaming naming,
                                                         std::string_view prefix) {
  const int64_t h = config.hidden_size;
  const int64_t mlp = config.intermediate_size;
  const std::string pre(prefix);
  const bool hf = naming != TextEncoderNaming::kOpenClip;
  const bool flat = naming == TextEncoderNaming::kHuggingFaceFlat;
  std::vector<TextEncoderKeySource> table;
  const auto same = [&](std::string parameter, const std::string& open_clip_key,
                        std::vector<int64_t> shape) {
    std::string file_key = hf ? parameter : open_clip_key;
    if (flat && starts_with(file_key, "text_model."))
      file_key.erase(0, 11);
    table.push_back({parameter, pre + file_key, 0, -1, false, std::move(shape)});
  };

  same("text_model.embeddings.token_embedding.weight", "token_embedding.weight",
       {config.vocab_size, h});
  same("text_model.embeddings.position_embedding.weight", "positional_embedding",
       {config.max_positions, h});
  for (int64_t n = 0; n < config.num_layers; ++n) {
    const std::string layer = "text_model.encoder.layers." + std::to_string(n) + ".";
    const std::string block = "transformer.resblocks." + std::to_string(n) + ".";
    const char* qkv[] = {"q_proj", "k_proj", "v_proj"};
    for (int64_t i = 0; i < 3; ++i) {
      const std::string path = layer + "self_attn." + qkv[i];
      if (hf) {
        same(path + ".weight", "", {h, h});
        same(path + ".bias", "", {h});
      } else {
        table.push_back(
            {path + ".weight", pre + block + "attn.in_proj_weight", i * h, h, false, {3 * h, h}});
        table.push_back(
            {path + ".bias", pre + block + "attn.in_proj_bias", i * h, h, false, {3 * h}});
      }
    }
    same(layer + "self_attn.out_proj.weight", block + "attn.out_proj.weight", {h, h});
    same(layer + "self_attn.out_proj.bias", block + "attn.out_proj.bias", {h});
    same(layer + "layer_norm1.weight", block + "ln_1.weight", {h});
    same(layer + "layer_norm1.bias", block + "ln_1.bias", {h});
    same(layer + "mlp.fc1.weight", block + "mlp.c_fc.weight", {mlp, h});
    same(layer + "mlp.fc1.bias", block + "mlp.c_fc.bias", {mlp});
    same(layer + "mlp.fc2.weight", block + "mlp.c_proj.weight", {h, mlp});
    same(layer + "mlp.fc2.bias", block + "mlp.c_proj.bias", {h});
    same(layer + "layer_norm2.weight", block + "ln_2.weight", {h});
    same(layer + "layer_norm2.bias", block + "ln_2.bias", {h});
  }
  same("text_model.final_layer_norm.weight", "ln_final.weight", {h});
  same("text_model.final_layer_norm.bias", "ln_final.bias", {h});
  if (config.projection_dim > 0) {
    if (hf) {
      same("text_projection.weight", "", {config.projection_dim, h});
    } else {
      table.push_back({"text_projection.weight",
                       pre + "text_projection",
                       0,
                       -1,
                       true,
                       {h, config.projection_dim}});
    }
  }
  return table;
}

bool is_ignored_text_encoder_key(std::string_view relative_key, TextEncoderNaming naming) {
  if (naming == TextEncoderNaming::kHuggingFace)
    return relative_key == "text_model.embeddings.position_ids" || relative_key == "logit_scale";
  if (naming == TextEncoderNaming::kHuggingFaceFlat)
    return relative_key == "embeddings.position_ids" || relative_key == "logit_scale";
  return relative_key == "logit_scale" || relative_key == "attn_mask";
}

std::vector<std::string> TextEncoderLoadReport::consumed_keys() const {
  std::vector<std::string> all = loaded_keys;
  all.insert(all.end(), ignored_keys.begin(), ignored_keys.end());
  return all;
}

TextEncoderLoadReport load_text_encoder(ClipTextModelImpl& model, const st::Reader& reader,
                                        std::string_view prefix, TextEncoderNaming naming) {
  const std::string where = reader.label() + ": ";
  // A transformers 5 CLIPTextModel file has no "text_model." in its keys.
  const std::string pre(prefix);
  if (naming == TextEncoderNaming::kHuggingFace &&
      !reader.contains(pre + "text_model.embeddings.token_embedding.weight") &&
      reader.contains(pre + "embeddings.token_embedding.weight"))
    naming = TextEncoderNaming::kHuggingFaceFlat;
  const auto table = text_encoder_key_table(model.config(), naming, prefix);

  // 1. The table must describe the model exactly (adapter parameters aside).
  std::map<std::string, torch::Tensor> parameters;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    if (!aclora::train::is_adapter_parameter(item.key()))
      parameters.emplace(item.key(), item.value());
  }
  std::set<std::string> covered;
  for (const auto& entry : table) {
    auto it = parameters.find(entry.parameter);
    if (it == parameters.end())
      throw WeightLoadError(where + "text encoder has no parameter " + entry.parameter +
                            " (for key " + entry.file_key + ")");
    covered.insert(entry.parameter);
  }
  for (const auto& [name, tensor] : parameters)
    if (!covered.count(name))
      throw WeightLoadError(where + "text encoder parameter " + name + " has no checkpoint key");

  // 2. Every table key present with the right dtype class and shape.
  std::set<std::string> mapped;
  for (const auto& entry : table) {
    if (!reader.contains(entry.file_key))
      throw WeightLoadError(where + "missing text encoder tensor " + entry.file_key);
    const st::TensorView& view = reader.tensor(entry.file_key);
    if (!is_float_dtype(view.dtype))
      throw WeightLoadError(where + "tensor " + entry.file_key + " has dtype " +
                            std::string(st::dtype_name(view.dtype)) +
                            "; expected F16, BF16, F32 or F64");
    if (view.shape != entry.file_shape)
      throw WeightLoadError(where + "tensor " + entry.file_key + " has shape " +
                            shape_text(view.shape) + "; expected " + shape_text(entry.file_shape));
    mapped.insert(entry.file_key);
  }

  // 3. Nothing under the prefix left unexplained.
  TextEncoderLoadReport report;
  for (const std::string& name : reader.names()) {
    if (!starts_with(name, prefix))
      continue;
    if (mapped.count(name))
      continue;
    if (is_ignored_text_encoder_key(std::string_view(name).substr(prefix.size()), naming)) {
      report.ignored_keys.push_back(name);
      continue;
    }
    throw WeightLoadError(where + "unmapped text encoder tensor " + name);
  }
  report.loaded_keys.assign(mapped.begin(), mapped.end());
  std::sort(report.ignored_keys.begin(), report.ignored_keys.end());

  // 4. Copy. Each file tensor is widened once, even when it feeds three slices.
  torch::NoGradGuard no_grad;
  std::string current_key;
  torch::Tensor current;
  for (const auto& entry : table) {
    if (entry.file_key != current_key) {
      std::vector<float> values = reader.to_f32(entry.file_key);
      current = torch::from_blob(values.data(), entry.file_shape, torch::kFloat32).clone();
      current_key = entry.file_key;
    }
    torch::Tensor source = current;
    if (entry.row_count >= 0)
      source = source.narrow(0, entry.row_offset, entry.row_count);
    if (entry.transposed)
      source = source.t();
    torch::Tensor& target = parameters.at(entry.parameter);
    target.copy_(source.to(target.scalar_type()));
  }
  return report;
}

}  // namespace sdxl
