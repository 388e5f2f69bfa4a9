// CLIP text transformer (see text_encoder.hpp).
#include "sdxl/text_encoder.hpp"

#include <torch/torch.h>
#include <torch/version.h>

#include <aclora/adapters/json.hpp>
#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>

namespace sdxl {
namespace {

// A parameter-free module that only groups children under a path segment
// (e.g. "self_attn", "mlp", "embeddings").
std::shared_ptr<torch::nn::Module> add_group(torch::nn::Module& parent, const std::string& name) {
  return parent.register_module(name, std::make_shared<torch::nn::Module>());
}

// softmax(q k^T / sqrt(d) + causal mask) v with q, k, v [B, heads, T, d].
torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v) {
#if TORCH_VERSION_MAJOR >= 2
  return at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0,
                                          /*is_causal=*/true);
#else
  const int64_t t = q.size(2);
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  torch::Tensor scores = torch::matmul(q, k.transpose(-1, -2)).to(torch::kFloat32) * scale;
  const torch::Tensor future =
      torch::ones({t, t}, torch::TensorOptions().dtype(torch::kBool).device(q.device())).triu(1);
  scores = scores.masked_fill(future, -std::numeric_limits<float>::infinity());
  return torch::matmul(torch::softmax(scores, -1).to(v.scalar_type()), v);
#endif
}

const aclora::json::Value* member(const aclora::json::Value& object, const char* key) {
  return object.find(key);
}

int64_t int_or(const aclora::json::Value& object, const char* key, int64_t fallback,
               const std::string& file) {
  const auto* value = member(object, key);
  if (value == nullptr || value->is_null())
    return fallback;
  if (!value->is_integer())
    throw std::runtime_error(file + ": \"" + key + "\" must be an integer");
  return value->as_int();
}

}  // namespace

// ------------------------------------------------------------------ config

ClipTextConfig ClipTextConfig::sdxl_clip_l() {
  ClipTextConfig c;
  c.vocab_size = 49408;
  c.hidden_size = 768;
  c.intermediate_size = 3072;
  c.num_layers = 12;
  c.num_heads = 12;
  c.max_positions = 77;
  c.activation = ClipActivation::kQuickGelu;
  c.projection_dim = 0;
  c.eos_token_id = 2;
  return c;
}

ClipTextConfig ClipTextConfig::sdxl_clip_bigg() {
  ClipTextConfig c;
  c.vocab_size = 49408;
  c.hidden_size = 1280;
  c.intermediate_size = 5120;
  c.num_layers = 32;
  c.num_heads = 20;
  c.max_positions = 77;
  c.activation = ClipActivation::kGelu;
  c.projection_dim = 1280;
  c.eos_token_id = 2;
  return c;
}

ClipTextConfig ClipTextConfig::from_json_file(const std::filesystem::path& config_json) {
  const std::string file = config_json.string();
  std::ifstream in(config_json, std::ios::binary);
  if (!in)
    throw std::runtime_error("text encoder config not found or unreadable: " + file);
  std::ostringstream text;
  text << in.rdbuf();
  aclora::json::Value root;
  try {
    root = aclora::json::parse(text.str());
  } catch (const aclora::json::Error& e) {
    throw std::runtime_error(file + ": not valid JSON (" + e.what() + ")");
  }
  if (!root.is_object())
    throw std::runtime_error(file + ": expected a JSON object");
  // A full CLIPConfig nests the text part.
  const aclora::json::Value& json =
      (root.find("text_config") != nullptr && root.find("text_config")->is_object())
          ? *root.find("text_config")
          : root;

  // transformers' CLIPTextConfig defaults for absent keys.
  ClipTextConfig c;
  c.vocab_size = int_or(json, "vocab_size", 49408, file);
  c.hidden_size = int_or(json, "hidden_size", 512, file);
  c.intermediate_size = int_or(json, "intermediate_size", 2048, file);
  c.num_layers = int_or(json, "num_hidden_layers", 12, file);
  c.num_heads = int_or(json, "num_attention_heads", 8, file);
  c.max_positions = int_or(json, "max_position_embeddings", 77, file);
  c.eos_token_id = int_or(json, "eos_token_id", 2, file);
  if (const auto* eps = member(json, "layer_norm_eps"); eps != nullptr && !eps->is_null()) {
    if (!eps->is_number())
      throw std::runtime_error(file + ": \"layer_norm_eps\" must be a number");
    c.layer_norm_eps = eps->as_double();
  }
  std::string act = "quick_gelu";
  if (const auto* value = member(json, "hidden_act"); value != nullptr && !value->is_null()) {
    if (!value->is_string())
      throw std::runtime_error(file + ": \"hidden_act\" must be a string");
    act = value->as_string();
  }
  if (act == "quick_gelu") {
    c.activation = ClipActivation::kQuickGelu;
  } else if (act == "gelu") {
    c.activation = ClipActivation::kGelu;
  } else {
    throw std::runtime_error(file + ": unsupported hidden_act \"" + act +
                             "\" (expected \"quick_gelu\" or \"gelu\")");
  }
  bool with_projection = false;
  if (const auto* archs = member(root, "architectures"); archs != nullptr && archs->is_array()) {
    for (const auto& name : archs->as_array())
      if (name.is_string() && name.as_string() == "CLIPTextModelWithProjection")
        with_projection = true;
  }
  c.projection_dim = with_projection ? int_or(json, "projection_dim", 512, file) : 0;
  try {
    c.validate();
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(file + ": " + e.what());
  }
  return c;
}

void ClipTextConfig::validate() const {
  const auto positive = [](int64_t v, const char* what) {
    if (v <= 0)
      throw std::invalid_argument(std::string(what) + " must be positive, got " +
                                  std::to_string(v));
  };
  positive(vocab_size, "vocab_size");
  positive(hidden_size, "hidden_size");
  positive(intermediate_size, "intermediate_size");
  positive(num_layers, "num_layers");
  positive(num_heads, "num_heads");
  positive(max_positions, "max_positions");
  if (projection_dim < 0)
    throw std::invalid_argument("projection_dim must be >= 0");
  if (hidden_size % num_heads != 0)
    throw std::invalid_argument("hidden_size " + std::to_string(hidden_size) +
                                " is not divisible by num_heads " + std::to_string(num_heads));
  if (!(layer_norm_eps > 0))
    throw std::invalid_argument("layer_norm_eps must be positive");
}

// --------------------------------------------------------------- modules

EmbeddingImpl::EmbeddingImpl(int64_t count, int64_t dim, const BuildOptions& options) {
  weight = register_parameter("weight", torch::empty({count, dim}, options.tensor_options()));
  if (options.initializes()) {
    torch::NoGradGuard no_grad;
    weight.normal_(0.0, 0.02);
  }
}

torch::Tensor EmbeddingImpl::forward(const torch::Tensor& ids) {
  return torch::embedding(weight, ids);
}

ClipEncoderLayerImpl::ClipEncoderLayerImpl(const ClipTextConfig& config,
                                           const BuildOptions& options)
    : heads_(config.num_heads), activation_(config.activation) {
  const int64_t h = config.hidden_size;
  auto self_attn = add_group(*this, "self_attn");
  q_proj = self_attn->register_module("q_proj", Linear(h, h, true, options));
  k_proj = self_attn->register_module("k_proj", Linear(h, h, true, options));
  v_proj = self_attn->register_module("v_proj", Linear(h, h, true, options));
  out_proj = self_attn->register_module("out_proj", Linear(h, h, true, options));
  layer_norm1 = register_module("layer_norm1", LayerNorm(h, config.layer_norm_eps, options));
  auto mlp = add_group(*this, "mlp");
  fc1 = mlp->register_module("fc1", Linear(h, config.intermediate_size, true, options));
  fc2 = mlp->register_module("fc2", Linear(config.intermediate_size, h, true, options));
  layer_norm2 = register_module("layer_norm2", LayerNorm(h, config.layer_norm_eps, options));
}

torch::Tensor ClipEncoderLayerImpl::forward(const torch::Tensor& hidden) {
  const int64_t b = hidden.size(0);
  const int64_t t = hidden.size(1);
  const int64_t h = hidden.size(2);
  const auto split_heads = [&](const torch::Tensor& x) {
    return x.view({b, t, heads_, h / heads_}).transpose(1, 2);
  };
  torch::Tensor x = layer_norm1(hidden);
  torch::Tensor attn =
      causal_attention(split_heads(q_proj(x)), split_heads(k_proj(x)), split_heads(v_proj(x)));
  attn = attn.transpose(1, 2).reshape({b, t, h});
  torch::Tensor out = hidden + out_proj(attn);

  x = fc1(layer_norm2(out));
  x = activation_ == ClipActivation::kQuickGelu ? x * torch::sigmoid(1.702 * x) : torch::gelu(x);
  return out + fc2(x);
}

ClipTextModelImpl::ClipTextModelImpl(const ClipTextConfig& config, const BuildOptions& options)
    : config_(config) {
  config_.validate();
  auto text_model = add_group(*this, "text_model");
  auto embeddings = add_group(*text_model, "embeddings");
  token_embedding = embeddings->register_module(
      "token_embedding", Embedding(config.vocab_size, config.hidden_size, options));
  position_embedding = embeddings->register_module(
      "position_embedding", Embedding(config.max_positions, config.hidden_size, options));
  auto encoder = add_group(*text_model, "encoder");
  layers_ = encoder->register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.num_layers; ++i)
    layers_->push_back(ClipEncoderLayer(config, options));
  final_layer_norm = text_model->register_module(
      "final_layer_norm", LayerNorm(config.hidden_size, config.layer_norm_eps, options));
  if (config.projection_dim > 0) {
    text_projection = register_module(
        "text_projection", Linear(config.hidden_size, config.projection_dim, false, options));
  }
}

ClipTextOutput ClipTextModelImpl::forward(const torch::Tensor& input_ids) {
  if (input_ids.dim() != 2)
    throw std::invalid_argument("text encoder input_ids must be [batch, tokens], got " +
                                std::to_string(input_ids.dim()) + " dimensions");
  if (input_ids.scalar_type() != torch::kInt64)
    throw std::invalid_argument("text encoder input_ids must be int64");
  const int64_t t = input_ids.size(1);
  if (t < 1 || t > config_.max_positions)
    throw std::invalid_argument("text encoder input has " + std::to_string(t) +
                                " tokens; expected 1.." + std::to_string(config_.max_positions));
  if (input_ids.numel() > 0 && input_ids.device().type() != torch::kMeta &&
      (input_ids.min().item<int64_t>() < 0 ||
       input_ids.max().item<int64_t>() >= config_.vocab_size))
    throw std::invalid_argument("text encoder input holds ids outside [0, " +
                                std::to_string(config_.vocab_size) + ")");

  const torch::Tensor ids = input_ids.to(token_embedding->weight.device());
  const torch::Tensor positions =
      torch::arange(t, torch::TensorOptions().dtype(torch::kInt64).device(ids.device()));
  torch::Tensor hidden = token_embedding(ids) + position_embedding(positions).unsqueeze(0);

  ClipTextOutput out;
  const size_t last = layers_->size() - 1;
  for (size_t i = 0; i < layers_->size(); ++i) {
    if (i == last)
      out.penultimate = hidden;
    hidden = layers_->ptr<ClipEncoderLayerImpl>(i)->forward(hidden);
  }
  out.last_hidden = final_layer_norm(hidden);

  const torch::Tensor pooled_index =
      config_.eos_token_id == 2 ? ids.argmax(-1)
                                : (ids == config_.eos_token_id).to(torch::kInt32).argmax(-1);
  const torch::Tensor rows =
      torch::arange(ids.size(0), torch::TensorOptions().dtype(torch::kInt64).device(ids.device()));
  out.pooled = out.last_hidden.index({rows, pooled_index});
  if (text_projection)
    out.text_embeds = text_projection(out.pooled);
  return out;
}

}  // namespace sdxl
