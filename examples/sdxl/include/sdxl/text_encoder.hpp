/// @file text_encoder.hpp
/// The CLIP text transformer of both SDXL text encoders (CLIP ViT-L/14 and
/// OpenCLIP ViT-bigG/14), with Hugging Face module paths: the parameter names of
/// ClipTextModel equal the keys of a diffusers text_encoder(_2)/model.safetensors
/// ("text_model.embeddings.token_embedding.weight", ..., "text_projection.weight").
///
/// Architecture: token + learned position embeddings; pre-LN layers (LN, causal
/// multi-head self-attention with biases, residual; LN, fc1, activation, fc2,
/// residual); final LayerNorm; optional bias-free projection of the pooled state.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <filesystem>

#include "sdxl/layers.hpp"

namespace sdxl {

/// MLP activation of a CLIP text transformer.
enum class ClipActivation {
  kQuickGelu,  ///< x * sigmoid(1.702 x) (OpenAI CLIP ViT-L, "quick_gelu")
  kGelu,       ///< exact erf GELU (OpenCLIP bigG, "gelu")
};

/// Shape and behaviour of one CLIP text transformer.
struct ClipTextConfig {
  int64_t vocab_size = 49408;        ///< token embedding rows
  int64_t hidden_size = 768;         ///< model width H
  int64_t intermediate_size = 3072;  ///< MLP width
  int64_t num_layers = 12;           ///< transformer layers
  int64_t num_heads = 12;            ///< attention heads (H must divide evenly)
  int64_t max_positions = 77;        ///< rows of the position embedding; longest input
  ClipActivation activation = ClipActivation::kQuickGelu;  ///< MLP activation
  /// Output width of text_projection (Linear without bias on the pooled state);
  /// 0 = no projection (CLIPTextModel).
  int64_t projection_dim = 0;
  double layer_norm_eps = 1e-5;  ///< epsilon of every LayerNorm
  /// Selects the pooled position as transformers does: when 2 (the legacy value
  /// in the OpenAI / SDXL configs) the position of the largest id in each row
  /// (the end token is the largest id of the real vocabulary); otherwise the
  /// first position holding this id (0 when absent).
  int64_t eos_token_id = 2;

  /// SDXL base "text_encoder": CLIP ViT-L/14, 768 wide, 12 layers, quick_gelu.
  static ClipTextConfig sdxl_clip_l();
  /// SDXL base "text_encoder_2": OpenCLIP bigG/14, 1280 wide, 32 layers, 20 heads,
  /// MLP 5120, exact GELU, projection 1280.
  static ClipTextConfig sdxl_clip_bigg();

  /// Reads a transformers CLIPTextConfig config.json (vocab_size, hidden_size,
  /// intermediate_size, num_hidden_layers, num_attention_heads,
  /// max_position_embeddings, hidden_act, layer_norm_eps, eos_token_id,
  /// projection_dim). The projection exists when "architectures" names
  /// CLIPTextModelWithProjection. Missing keys take transformers' defaults.
  /// @throws std::runtime_error naming the file and key for a missing/unreadable
  ///         file, bad JSON, a value of the wrong type, or an unsupported hidden_act.
  static ClipTextConfig from_json_file(const std::filesystem::path& config_json);

  /// Width of one attention head (hidden_size / num_heads).
  int64_t head_dim() const { return hidden_size / num_heads; }
  /// @throws std::invalid_argument for non-positive sizes, a hidden size not
  ///         divisible by the head count, or eps <= 0.
  void validate() const;
};

/// Outputs of one encoder pass (B prompts of T tokens, hidden width H).
struct ClipTextOutput {
  /// [B, T, H] hidden state entering the last layer (transformers'
  /// hidden_states[-2]; no final LayerNorm): SDXL's context features.
  torch::Tensor penultimate;
  /// [B, T, H] output of the last layer after the final LayerNorm.
  torch::Tensor last_hidden;
  /// [B, H] last_hidden at the pooled position (see ClipTextConfig::eos_token_id).
  torch::Tensor pooled;
  /// [B, projection_dim] text_projection(pooled); undefined without projection.
  torch::Tensor text_embeds;
};

/// A lookup table: row `id` of weight [count, dim].
class EmbeddingImpl : public torch::nn::Module {
 public:
  /// A [count, dim] table, N(0, 0.02) initialised when options ask for it.
  EmbeddingImpl(int64_t count, int64_t dim, const BuildOptions& options);
  /// @param ids int64 indices of any shape; @return [..., dim]
  torch::Tensor forward(const torch::Tensor& ids);
  torch::Tensor weight;  ///< [count, dim]
};
/// Module holder (shared pointer) of EmbeddingImpl.
TORCH_MODULE(Embedding);

/// One pre-LN transformer layer: self_attn.{q,k,v,out}_proj, layer_norm1,
/// mlp.fc1, mlp.fc2, layer_norm2.
class ClipEncoderLayerImpl : public torch::nn::Module {
 public:
  /// Builds the layer's parameters with the config's sizes.
  ClipEncoderLayerImpl(const ClipTextConfig& config, const BuildOptions& options);
  /// @param hidden [B, T, H]; attention is causal (token i sees tokens <= i).
  torch::Tensor forward(const torch::Tensor& hidden);

  Linear q_proj{nullptr};          ///< self_attn.q_proj [H, H] with bias
  Linear k_proj{nullptr};          ///< self_attn.k_proj [H, H] with bias
  Linear v_proj{nullptr};          ///< self_attn.v_proj [H, H] with bias
  Linear out_proj{nullptr};        ///< self_attn.out_proj [H, H] with bias
  LayerNorm layer_norm1{nullptr};  ///< before attention
  LayerNorm layer_norm2{nullptr};  ///< before the MLP
  Linear fc1{nullptr};             ///< mlp.fc1 [MLP, H]
  Linear fc2{nullptr};             ///< mlp.fc2 [H, MLP]

 private:
  int64_t heads_;
  ClipActivation activation_;
};
/// Module holder (shared pointer) of ClipEncoderLayerImpl.
TORCH_MODULE(ClipEncoderLayer);

/// CLIPTextModel / CLIPTextModelWithProjection with transformers' parameter names.
class ClipTextModelImpl : public torch::nn::Module {
 public:
  /// @throws std::invalid_argument when config.validate() fails.
  explicit ClipTextModelImpl(const ClipTextConfig& config, const BuildOptions& options = {});

  /// @param input_ids [B, T] int64 token ids, 1 <= T <= max_positions, each in
  ///        [0, vocab_size).
  /// @throws std::invalid_argument for a wrong rank, dtype, length or id range.
  ClipTextOutput forward(const torch::Tensor& input_ids);

  /// The config the model was built with.
  const ClipTextConfig& config() const { return config_; }
  /// The layers in order (paths text_model.encoder.layers.N).
  const torch::nn::ModuleList& layers() const { return layers_; }

  Embedding token_embedding{nullptr};     ///< text_model.embeddings.token_embedding
  Embedding position_embedding{nullptr};  ///< text_model.embeddings.position_embedding
  LayerNorm final_layer_norm{nullptr};    ///< text_model.final_layer_norm
  Linear text_projection{nullptr};        ///< text_projection; null without projection

 private:
  ClipTextConfig config_;
  torch::nn::ModuleList layers_;
};
/// Module holder (shared pointer) of ClipTextModelImpl.
TORCH_MODULE(ClipTextModel);

}  // namespace sdxl
