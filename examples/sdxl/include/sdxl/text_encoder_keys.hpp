/// @file text_encoder_keys.hpp
/// Checkpoint key tables of the CLIP text encoders and the loader that uses them.
///
/// Two namings are understood:
///  - Hugging Face (diffusers text_encoder/ and text_encoder_2/ folders, and the
///    CLIP-L part "conditioner.embedders.0.transformer." of the SDXL single file):
///    the keys equal ClipTextModel's parameter names.
///  - OpenCLIP (the bigG part "conditioner.embedders.1.model." of the single file):
///    token_embedding.weight, positional_embedding,
///    transformer.resblocks.N.{ln_1, attn.in_proj_weight/in_proj_bias, attn.out_proj,
///    ln_2, mlp.c_fc, mlp.c_proj}, ln_final, text_projection. in_proj_* [3H, H] / [3H]
///    split by rows into q, k, v; text_projection [H, P] is applied as x @ P, so the
///    Linear weight is its transpose.
///
/// Typical use by a checkpoint loader:
/// @code
/// auto reader = aclora::safetensors::Reader::open("sd_xl_base_1.0.safetensors");
/// auto te1 = sdxl::load_text_encoder(*clip_l, reader, "conditioner.embedders.0.transformer.",
///                                    sdxl::TextEncoderNaming::kHuggingFace);
/// auto te2 = sdxl::load_text_encoder(*bigg, reader, "conditioner.embedders.1.model.",
///                                    sdxl::TextEncoderNaming::kOpenClip);
/// // te1.consumed_keys + te2.consumed_keys + the UNet's and VAE's keys must cover
/// // reader.names().
/// @endcode
#pragma once

#include <aclora/adapters/safetensors.hpp>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "sdxl/text_encoder.hpp"

namespace sdxl {

/// Naming scheme of text-encoder keys in a checkpoint.
enum class TextEncoderNaming {
  kHuggingFace,  ///< transformers CLIPTextModel(WithProjection) names
  /// The same names without the leading "text_model." (transformers 5 saves a
  /// CLIPTextModel so; "text_projection.weight" keeps its name). load_text_encoder
  /// switches to it by itself when a kHuggingFace file is laid out this way.
  kHuggingFaceFlat,
  kOpenClip,  ///< open_clip / SGM FrozenOpenCLIPEmbedder2 names
};

/// Thrown when checkpoint tensors do not fit a model; the message names the key.
class WeightLoadError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Where one model parameter comes from.
struct TextEncoderKeySource {
  std::string parameter;            ///< ClipTextModel parameter name (named_parameters key)
  std::string file_key;             ///< full checkpoint key, prefix included
  int64_t row_offset = 0;           ///< first row of the file tensor (q/k/v split of in_proj)
  int64_t row_count = -1;           ///< rows taken from the file tensor; -1 = all
  bool transposed = false;          ///< file tensor holds the parameter transposed
  std::vector<int64_t> file_shape;  ///< the shape the file tensor must have
};

/// The complete key table of a model with this config: one entry per parameter
/// (OpenCLIP's in_proj tensors appear in three entries, one per q/k/v slice).
/// @param config sizes of the model (layer count, widths, projection)
/// @param naming the checkpoint's naming scheme
/// @param prefix prepended to every file key ("" for a standalone encoder file).
std::vector<TextEncoderKeySource> text_encoder_key_table(const ClipTextConfig& config,
                                                         TextEncoderNaming naming,
                                                         std::string_view prefix);

/// True for keys (relative to the prefix) that are known and deliberately not
/// loaded: HF "text_model.embeddings.position_ids" (a buffer), "logit_scale";
/// flat HF "embeddings.position_ids", "logit_scale"; OpenCLIP "logit_scale",
/// "attn_mask" (a buffer).
bool is_ignored_text_encoder_key(std::string_view relative_key, TextEncoderNaming naming);

/// What load_text_encoder took from the file; full keys, sorted.
struct TextEncoderLoadReport {
  std::vector<std::string> loaded_keys;   ///< tensors copied into the model
  std::vector<std::string> ignored_keys;  ///< tensors on the ignore list
  /// loaded_keys followed by ignored_keys: every key of the file under the prefix.
  std::vector<std::string> consumed_keys() const;
};

/// Loads every parameter of `model` from `reader` (parameters of attached adapters,
/// aclora::train::is_adapter_parameter, are not part of the table and are left alone). Each tensor
/// of the file whose key starts with `prefix` must be mapped (text_encoder_key_table) or ignored
/// (is_ignored_text_encoder_key). Stored F16, BF16, F32 and F64 values are
/// converted to each parameter's dtype and copied to its device. All keys, dtypes
/// and shapes are checked before the first parameter is written, so on error
/// the model is unchanged.
/// @throws WeightLoadError naming the key: a model parameter without its tensor,
///         a tensor under the prefix that is neither mapped nor ignored, a shape
///         that differs from the table's expectation, or a non-float dtype.
TextEncoderLoadReport load_text_encoder(ClipTextModelImpl& model,
                                        const aclora::safetensors::Reader& reader,
                                        std::string_view prefix, TextEncoderNaming naming);

}  // namespace sdxl
