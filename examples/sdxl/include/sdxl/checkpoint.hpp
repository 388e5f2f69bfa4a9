/// @file checkpoint.hpp
/// Loading SDXL weights: a diffusers folder (model_index.json, unet/, vae/,
/// text_encoder/, text_encoder_2/) or a single-file checkpoint in LDM/SGM names
/// (model.diffusion_model.*, first_stage_model.*, conditioner.embedders.*),
/// plus the explicit LDM <-> diffusers key tables of the UNet and the VAE.
///
/// Every tensor of a file is either mapped to exactly one model parameter (shape
/// checked) or on a short, named ignore list; anything else is an error naming
/// the key. Every model parameter must be found. All checks run before the
/// first parameter is written. Stored F16 / BF16 / F32 / F64 values are
/// converted to the requested dtype.
///
/// Configurations: a folder's `<component>/config.json`; for a single file the
/// SDXL base defaults, or the config.json files of a diffusers folder given as
/// `LoadOptions::config_folder` (how the tiny test checkpoint is loaded, and how
/// a fine-tuned model with another architecture would be).
#pragma once

#include "sdxl/config.hpp"
#include "sdxl/text_encoder.hpp"
#include "sdxl/text_encoder_keys.hpp"
#include "sdxl/unet.hpp"
#include "sdxl/vae.hpp"

#include <aclora/adapters/safetensors.hpp>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace sdxl {

/// How a single-file tensor maps to a model parameter.
enum class KeyTransform {
  kNone,           ///< same shape
  kSqueezeConv1x1  ///< LDM stores a [out, in, 1, 1] conv where the model has a [out, in] Linear
};

/// One entry of an LDM key table.
struct KeyMapping {
  std::string file_key;   ///< name in the single file, without the component prefix
  std::string model_key;  ///< parameter name of our module (= the diffusers key)
  KeyTransform transform = KeyTransform::kNone;  ///< how the stored tensor is reshaped
};

/// The UNet's complete table, `model.diffusion_model.<file_key>` <-> diffusers
/// key, one entry per parameter of a UNet built from `config` (sdxl.md,
/// "UNet LDM <-> diffusers"). Also the module-path map for kohya LoRA names.
std::vector<KeyMapping> unet_ldm_key_table(const UNetConfig& config);

/// The VAE's complete table, `first_stage_model.<file_key>` <-> diffusers key.
std::vector<KeyMapping> vae_ldm_key_table(const VaeConfig& config);

/// Which parts to load and how.
struct LoadOptions {
  torch::Dtype dtype = torch::kFloat32;  ///< parameter dtype of the built models
  torch::Device device = torch::kCPU;    ///< parameter device
  /// Diffusers folder: use the *.fp16.safetensors files where present (the
  /// regular files otherwise). Values are converted to `dtype` either way.
  bool prefer_fp16_variant = false;
  /// Single file: read unet/, vae/, text_encoder/, text_encoder_2/ config.json
  /// from this diffusers folder instead of using the SDXL base defaults.
  std::optional<std::filesystem::path> config_folder;
  bool load_unet = true;           ///< build and load the UNet
  bool load_vae = true;            ///< build and load the VAE
  bool load_text_encoders = true;  ///< build and load both text encoders
};

/// The loaded models; those not requested are null.
struct SdxlModels {
  UNet unet{nullptr};                        ///< the UNet
  AutoencoderKL vae{nullptr};                ///< the VAE
  ClipTextModel text_encoder{nullptr};       ///< CLIP ViT-L/14
  ClipTextModel text_encoder_2{nullptr};     ///< OpenCLIP ViT-bigG/14 with projection
  std::vector<std::filesystem::path> files;  ///< the weight files read
};

/// Loads a diffusers folder or a single .safetensors file (decided by the path).
/// @throws WeightLoadError naming the file and key: unknown key, wrong shape,
///         missing parameter, non-float dtype; a file that is an SD 1.x/2.x
///         model, an SDXL refiner or a LoRA; a folder without the needed parts.
/// @throws std::runtime_error for unreadable or invalid config / safetensors files.
SdxlModels load_sdxl(const std::filesystem::path& path, const LoadOptions& options = {});

/// The diffusers folder loader behind load_sdxl.
SdxlModels load_diffusers_folder(const std::filesystem::path& folder,
                                 const LoadOptions& options = {});

/// The single-file loader behind load_sdxl.
SdxlModels load_single_file(const std::filesystem::path& file, const LoadOptions& options = {});

/// Loads one diffusers component's tensors (names = our parameter names) into a
/// model, with the same checks. Used for unet/ and vae/ weight files.
void load_diffusers_component(torch::nn::Module& model,
                              const std::vector<const aclora::safetensors::Reader*>& files,
                              const std::string& component);

}  // namespace sdxl
