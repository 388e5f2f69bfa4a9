// SDXL checkpoint loading: LDM key tables, the tiny diffusers folder and
// single file of tests/fixtures/sdxl (identical tensors both ways), UNet and
// VAE outputs against the diffusers reference, and the errors for unknown
// keys, wrong shapes, missing tensors, SD 1.x files and LoRA files.
#include <gtest/gtest.h>

#include <sdxl/checkpoint.hpp>

#include <aclora/adapters/safetensors.hpp>

#include <atomic>
#include <fstream>
#include <functional>
#include <iostream>
#include <set>
#include <string>

#include <unistd.h>

namespace {

namespace fs = std::filesystem;
namespace st = aclora::safetensors;

const fs::path kFixtures = fs::path(ACLORA_FIXTURES_DIR) / "sdxl";
const fs::path kFolder = kFixtures / "tiny-sdxl";
const fs::path kSingleFile = kFixtures / "tiny_sdxl_single_file.safetensors";

// A fresh folder under the system temp dir, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = fs::temp_directory_path() /
            ("aclora_sdxl_ckpt_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

torch::Tensor reference(const std::string& name) {
  static const st::Reader file = st::Reader::open(kFixtures / "reference.safetensors");
  const st::TensorView& view = file.tensor(name);
  const std::vector<float> values = file.to_f32(name);
  return torch::tensor(values).reshape(view.shape);
}

// max |actual - expected| / max |expected|
double relative_error(const torch::Tensor& actual, const torch::Tensor& expected) {
  return ((actual - expected).abs().max() / expected.abs().max()).item<double>();
}

// Copies a safetensors file, letting `edit` drop (return false) or change entries.
using Edit = std::function<bool(std::string& name, st::Dtype& dtype, std::vector<int64_t>& shape,
                                std::vector<std::byte>& bytes)>;
void rewrite(const fs::path& from, const fs::path& to, const Edit& edit,
             const std::vector<std::pair<std::string, std::vector<float>>>& extra = {}) {
  const st::Reader in = st::Reader::open(from);
  st::Writer out;
  for (const st::TensorView& view : in.tensors()) {
    std::string name = view.name;
    st::Dtype dtype = view.dtype;
    std::vector<int64_t> shape = view.shape;
    std::vector<std::byte> bytes(view.bytes.begin(), view.bytes.end());
    if (edit(name, dtype, shape, bytes)) {
      out.add(name, dtype, shape, std::span<const std::byte>(bytes));
    }
  }
  for (const auto& [name, values] : extra) {
    out.add(name, {static_cast<int64_t>(values.size())}, values);
  }
  out.write(to);
}

std::string load_error(const fs::path& path, const sdxl::LoadOptions& options = {}) {
  try {
    sdxl::load_sdxl(path, options);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "no error";
}

sdxl::LoadOptions tiny_single_file_options() {
  sdxl::LoadOptions options;
  options.config_folder = kFolder;
  return options;
}

// A diffusers folder with only unet/ (config + the given weights file).
fs::path unet_only_folder(const TempDir& dir, const Edit& edit,
                          const std::string& file_name = "diffusion_pytorch_model.safetensors") {
  const fs::path folder = dir.path() / "model";
  fs::create_directories(folder / "unet");
  fs::copy_file(kFolder / "unet" / "config.json", folder / "unet" / "config.json");
  rewrite(kFolder / "unet" / "diffusion_pytorch_model.safetensors", folder / "unet" / file_name,
          edit);
  return folder;
}

sdxl::LoadOptions unet_only() {
  sdxl::LoadOptions options;
  options.load_vae = false;
  options.load_text_encoders = false;
  return options;
}

bool keep(std::string&, st::Dtype&, std::vector<int64_t>&, std::vector<std::byte>&) {
  return true;
}

}  // namespace

// The UNet table covers all 1,680 SDXL base parameters with distinct LDM keys,
// following sdxl.md's correspondences (input/middle/output blocks, resnet parts).
TEST(SdxlKeyTables, UNetBaseTableFollowsTheLdmLayout) {
  const auto table = sdxl::unet_ldm_key_table(sdxl::UNetConfig::sdxl_base());
  ASSERT_EQ(table.size(), 1680u);
  std::map<std::string, std::string> to_ldm;
  std::set<std::string> file_keys;
  for (const auto& m : table) {
    to_ldm[m.model_key] = m.file_key;
    file_keys.insert(m.file_key);
    EXPECT_EQ(m.transform, sdxl::KeyTransform::kNone) << m.model_key;
  }
  EXPECT_EQ(file_keys.size(), table.size());
  const std::map<std::string, std::string> expected{
      {"conv_in.weight", "input_blocks.0.0.weight"},
      {"time_embedding.linear_2.bias", "time_embed.2.bias"},
      {"add_embedding.linear_1.weight", "label_emb.0.0.weight"},
      {"down_blocks.0.resnets.1.conv1.weight", "input_blocks.2.0.in_layers.2.weight"},
      {"down_blocks.0.downsamplers.0.conv.weight", "input_blocks.3.0.op.weight"},
      {"down_blocks.1.resnets.0.conv_shortcut.weight", "input_blocks.4.0.skip_connection.weight"},
      {"down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight",
       "input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight"},
      {"down_blocks.1.downsamplers.0.conv.bias", "input_blocks.6.0.op.bias"},
      {"down_blocks.2.resnets.1.time_emb_proj.weight", "input_blocks.8.0.emb_layers.1.weight"},
      {"down_blocks.2.attentions.1.proj_out.weight", "input_blocks.8.1.proj_out.weight"},
      {"mid_block.resnets.0.norm1.weight", "middle_block.0.in_layers.0.weight"},
      {"mid_block.attentions.0.transformer_blocks.9.ff.net.2.weight",
       "middle_block.1.transformer_blocks.9.ff.net.2.weight"},
      {"mid_block.resnets.1.conv2.weight", "middle_block.2.out_layers.3.weight"},
      {"up_blocks.0.resnets.0.norm2.bias", "output_blocks.0.0.out_layers.0.bias"},
      {"up_blocks.0.attentions.2.norm.weight", "output_blocks.2.1.norm.weight"},
      {"up_blocks.0.upsamplers.0.conv.weight", "output_blocks.2.2.conv.weight"},
      {"up_blocks.1.upsamplers.0.conv.bias", "output_blocks.5.2.conv.bias"},
      {"up_blocks.2.resnets.2.conv_shortcut.weight", "output_blocks.8.0.skip_connection.weight"},
      {"conv_norm_out.weight", "out.0.weight"},
      {"conv_out.bias", "out.2.bias"},
  };
  for (const auto& [model_key, file_key] : expected) {
    EXPECT_EQ(to_ldm[model_key], file_key) << model_key;
  }
}

// The VAE table maps every parameter; attention q/k/v/proj_out weights are
// 1x1 convs in LDM files (squeezed), their biases are not.
TEST(SdxlKeyTables, VaeBaseTableFollowsTheLdmLayout) {
  const sdxl::VaeConfig config = sdxl::VaeConfig::sdxl_base();
  const auto table = sdxl::vae_ldm_key_table(config);
  sdxl::BuildOptions meta;
  meta.device = torch::kMeta;
  sdxl::AutoencoderKL vae(config, meta);
  ASSERT_EQ(table.size(), vae->parameters().size());
  std::map<std::string, sdxl::KeyMapping> by_model;
  std::set<std::string> file_keys;
  for (const auto& m : table) {
    by_model[m.model_key] = m;
    file_keys.insert(m.file_key);
  }
  EXPECT_EQ(file_keys.size(), table.size());
  const std::map<std::string, std::string> expected{
      {"encoder.down_blocks.0.resnets.1.conv2.weight", "encoder.down.0.block.1.conv2.weight"},
      {"encoder.down_blocks.1.resnets.0.conv_shortcut.weight",
       "encoder.down.1.block.0.nin_shortcut.weight"},
      {"encoder.down_blocks.2.downsamplers.0.conv.weight", "encoder.down.2.downsample.conv.weight"},
      {"encoder.mid_block.resnets.1.norm1.bias", "encoder.mid.block_2.norm1.bias"},
      {"encoder.mid_block.attentions.0.group_norm.weight", "encoder.mid.attn_1.norm.weight"},
      {"encoder.conv_norm_out.bias", "encoder.norm_out.bias"},
      {"decoder.up_blocks.0.resnets.2.conv1.weight", "decoder.up.3.block.2.conv1.weight"},
      {"decoder.up_blocks.0.upsamplers.0.conv.weight", "decoder.up.3.upsample.conv.weight"},
      {"decoder.up_blocks.3.resnets.0.conv_shortcut.weight",
       "decoder.up.0.block.0.nin_shortcut.weight"},
      {"decoder.mid_block.attentions.0.to_out.0.weight", "decoder.mid.attn_1.proj_out.weight"},
      {"post_quant_conv.weight", "post_quant_conv.weight"},
  };
  for (const auto& [model_key, file_key] : expected) {
    EXPECT_EQ(by_model[model_key].file_key, file_key) << model_key;
  }
  EXPECT_EQ(by_model["encoder.mid_block.attentions.0.to_q.weight"].transform,
            sdxl::KeyTransform::kSqueezeConv1x1);
  EXPECT_EQ(by_model["decoder.mid_block.attentions.0.to_out.0.weight"].transform,
            sdxl::KeyTransform::kSqueezeConv1x1);
  EXPECT_EQ(by_model["encoder.mid_block.attentions.0.to_q.bias"].transform,
            sdxl::KeyTransform::kNone);
}

// The tiny UNet loaded from the diffusers folder reproduces diffusers' output
// for the reference inputs (fp32, CPU) within 1e-4 relative.
TEST(SdxlCheckpoint, TinyUNetMatchesDiffusersReference) {
  sdxl::SdxlModels models = sdxl::load_sdxl(kFolder, unet_only());
  torch::NoGradGuard no_grad;
  const torch::Tensor out = models.unet->forward(
      reference("unet.latents"), reference("unet.timestep"), reference("unet.context"),
      {reference("unet.text_embeds"), reference("unet.time_ids")});
  const double error = relative_error(out, reference("unet.output"));
  std::cout << "[ metric   ] UNet max relative error " << error << '\n';
  RecordProperty("unet_max_relative_error", std::to_string(error));
  EXPECT_LT(error, 1e-4);
}

// The tiny VAE reproduces diffusers' posterior (mean, clamped logvar) and
// decoding within 1e-4 relative.
TEST(SdxlCheckpoint, TinyVaeMatchesDiffusersReference) {
  sdxl::LoadOptions options;
  options.load_unet = false;
  options.load_text_encoders = false;
  sdxl::SdxlModels models = sdxl::load_sdxl(kFolder, options);
  torch::NoGradGuard no_grad;
  const sdxl::Posterior posterior = models.vae->encode(reference("vae.image"));
  const double mean_error = relative_error(posterior.mean, reference("vae.posterior_mean"));
  const double logvar_error = relative_error(posterior.logvar, reference("vae.posterior_logvar"));
  const torch::Tensor decoded =
      models.vae->decode(models.vae->unscale(reference("vae.decode_latent")));
  const double decode_error = relative_error(decoded, reference("vae.decoded"));
  std::cout << "[ metric   ] VAE max relative error: mean " << mean_error << ", logvar "
            << logvar_error << ", decoded " << decode_error << '\n';
  EXPECT_LT(mean_error, 1e-4);
  EXPECT_LT(logvar_error, 1e-4);
  EXPECT_LT(decode_error, 1e-4);
}

// The single file (LDM/SGM names, F16) and the diffusers folder give
// bit-identical parameters for all four models.
TEST(SdxlCheckpoint, SingleFileAndFolderGiveIdenticalTensors) {
  const sdxl::SdxlModels folder = sdxl::load_sdxl(kFolder);
  const sdxl::SdxlModels single = sdxl::load_sdxl(kSingleFile, tiny_single_file_options());
  auto compare = [](const torch::nn::Module& a, const torch::nn::Module& b, const char* what) {
    const auto pa = a.named_parameters();
    const auto pb = b.named_parameters();
    ASSERT_EQ(pa.size(), pb.size()) << what;
    for (const auto& item : pa) {
      const torch::Tensor* other = pb.find(item.key());
      ASSERT_NE(other, nullptr) << what << " " << item.key();
      EXPECT_TRUE(torch::equal(item.value(), *other)) << what << " " << item.key();
    }
  };
  compare(*folder.unet, *single.unet, "unet");
  compare(*folder.vae, *single.vae, "vae");
  compare(*folder.text_encoder, *single.text_encoder, "text_encoder");
  compare(*folder.text_encoder_2, *single.text_encoder_2, "text_encoder_2");
}

// Parameters take the requested dtype whatever the stored one (F16 here).
TEST(SdxlCheckpoint, LoadsIntoTheRequestedDtype) {
  sdxl::LoadOptions options = unet_only();
  options.dtype = torch::kBFloat16;
  const sdxl::SdxlModels bf16 = sdxl::load_sdxl(kFolder, options);
  const sdxl::SdxlModels fp32 = sdxl::load_sdxl(kFolder, unet_only());
  for (const auto& p : bf16.unet->parameters()) {
    EXPECT_EQ(p.scalar_type(), torch::kBFloat16);
  }
  EXPECT_TRUE(
      torch::equal(bf16.unet->conv_in->weight, fp32.unet->conv_in->weight.to(torch::kBFloat16)));
}

// With prefer_fp16_variant the *.fp16.safetensors file is read, otherwise the
// regular one; a folder with only the variant loads either way.
TEST(SdxlCheckpoint, Fp16VariantIsChosenOnRequest) {
  TempDir dir;
  const fs::path folder = unet_only_folder(dir, keep);
  rewrite(kFolder / "unet" / "diffusion_pytorch_model.safetensors",
          folder / "unet" / "diffusion_pytorch_model.fp16.safetensors",
          [](std::string& name, st::Dtype& dtype, std::vector<int64_t>& shape,
             std::vector<std::byte>& bytes) {
            if (name == "conv_out.bias") {  // mark the variant: all zero
              std::fill(bytes.begin(), bytes.end(), std::byte{0});
            }
            (void)dtype;
            (void)shape;
            return true;
          });
  sdxl::LoadOptions options = unet_only();
  const auto regular = sdxl::load_sdxl(folder, options);
  EXPECT_GT(regular.unet->conv_out->bias.abs().sum().item<float>(), 0.0f);
  options.prefer_fp16_variant = true;
  const auto variant = sdxl::load_sdxl(folder, options);
  EXPECT_EQ(variant.unet->conv_out->bias.abs().sum().item<float>(), 0.0f);
  EXPECT_EQ(variant.files.front().filename(), "diffusion_pytorch_model.fp16.safetensors");
  fs::remove(folder / "unet" / "diffusion_pytorch_model.safetensors");
  EXPECT_NO_THROW(sdxl::load_sdxl(folder, unet_only()));
}

// A key the model does not have is an error naming it (folder and single file).
TEST(SdxlCheckpoint, UnknownKeyIsNamed) {
  TempDir dir;
  const fs::path folder = unet_only_folder(dir, [](std::string& name, auto&, auto&, auto&) {
    if (name == "conv_out.bias") {
      name = "conv_out.extra_bias";
    }
    return true;
  });
  const std::string folder_error = load_error(folder, unet_only());
  EXPECT_NE(folder_error.find("unknown unet key 'conv_out.extra_bias'"), std::string::npos)
      << folder_error;

  const fs::path file = dir.path() / "extra.safetensors";
  rewrite(kSingleFile, file, keep, {{"model.diffusion_model.out.3.weight", {1.0f}}});
  const std::string file_error = load_error(file, tiny_single_file_options());
  EXPECT_NE(file_error.find("unknown key 'model.diffusion_model.out.3.weight'"), std::string::npos)
      << file_error;
  const fs::path stray = dir.path() / "stray.safetensors";
  rewrite(kSingleFile, stray, keep, {{"something_else.weight", {1.0f}}});
  const std::string stray_error = load_error(stray, tiny_single_file_options());
  EXPECT_NE(stray_error.find("unknown key 'something_else.weight'"), std::string::npos)
      << stray_error;
}

// A tensor of the wrong shape is an error naming the key and both shapes.
TEST(SdxlCheckpoint, WrongShapeIsNamed) {
  TempDir dir;
  const fs::path file = dir.path() / "shape.safetensors";
  rewrite(kSingleFile, file,
          [](std::string& name, auto&, std::vector<int64_t>& shape, std::vector<std::byte>& bytes) {
            if (name == "first_stage_model.decoder.conv_out.bias") {  // [3] F16 -> [2]
              shape = {2};
              bytes.resize(4);
            }
            return true;
          });
  const std::string error = load_error(file, tiny_single_file_options());
  EXPECT_NE(error.find("'first_stage_model.decoder.conv_out.bias' has shape [2]"),
            std::string::npos)
      << error;
  EXPECT_NE(error.find("needs [3]"), std::string::npos) << error;
}

// A parameter without its tensor is an error naming the expected file key.
TEST(SdxlCheckpoint, MissingTensorIsNamed) {
  TempDir dir;
  const fs::path file = dir.path() / "missing.safetensors";
  rewrite(kSingleFile, file, [](std::string& name, auto&, auto&, auto&) {
    return name != "model.diffusion_model.middle_block.1.proj_in.weight";
  });
  const std::string error = load_error(file, tiny_single_file_options());
  EXPECT_NE(error.find("'model.diffusion_model.middle_block.1.proj_in.weight'"), std::string::npos)
      << error;
  EXPECT_NE(error.find("missing"), std::string::npos) << error;
}

// Without a config folder the SDXL base architecture is expected; the tiny
// file then fails on the first shape, and the message points to the option.
TEST(SdxlCheckpoint, SingleFileDefaultsToSdxlBase) {
  sdxl::LoadOptions options;
  options.load_vae = false;
  options.load_text_encoders = false;
  const std::string error = load_error(kSingleFile, options);
  EXPECT_NE(error.find("has shape"), std::string::npos) << error;
  EXPECT_NE(error.find("config folder"), std::string::npos) << error;
}

// SD 1.x/2.x single files (cond_stage_model keys, or a UNet without
// label_emb) and SD 1.x folders are rejected as such.
TEST(SdxlCheckpoint, StableDiffusion1IsRejectedAsSuch) {
  TempDir dir;
  const fs::path sd15 = dir.path() / "sd15.safetensors";
  rewrite(kSingleFile, sd15, [](std::string& name, auto&, auto&, auto&) {
    const std::string te = "conditioner.embedders.0.transformer.";
    if (name.rfind(te, 0) == 0) {
      name = "cond_stage_model.transformer." + name.substr(te.size());
    }
    return name.rfind("conditioner.", 0) != 0;
  });
  const std::string error = load_error(sd15, tiny_single_file_options());
  EXPECT_NE(error.find("Stable Diffusion 1.x/2.x"), std::string::npos) << error;

  const fs::path no_label = dir.path() / "no_label.safetensors";
  rewrite(kSingleFile, no_label, [](std::string& name, auto&, auto&, auto&) {
    return name.find("label_emb") == std::string::npos;
  });
  const std::string label_error = load_error(no_label, tiny_single_file_options());
  EXPECT_NE(label_error.find("label_emb"), std::string::npos) << label_error;
  EXPECT_NE(label_error.find("not SDXL"), std::string::npos) << label_error;

  const fs::path folder = dir.path() / "sd15-folder";
  fs::create_directories(folder / "unet");
  std::ofstream(folder / "model_index.json")
      << R"({"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]})";
  const std::string folder_error = load_error(folder);
  EXPECT_NE(folder_error.find("StableDiffusionPipeline"), std::string::npos) << folder_error;
  EXPECT_NE(folder_error.find("not an SDXL pipeline"), std::string::npos) << folder_error;
}

// A LoRA file given as the model is rejected as a LoRA file.
TEST(SdxlCheckpoint, LoraFileIsRejectedAsSuch) {
  TempDir dir;
  const fs::path kohya = dir.path() / "kohya.safetensors";
  st::Writer writer;
  writer.add("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight", {1, 2},
             std::vector<float>{1.0f, 2.0f});
  writer.add("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_up.weight", {2, 1},
             std::vector<float>{1.0f, 2.0f});
  writer.write(kohya);
  const std::string error = load_error(kohya);
  EXPECT_NE(error.find("is a LoRA file"), std::string::npos) << error;

  const fs::path diffusers_lora = kFixtures.parent_path() / "lora" / "diffusers.safetensors";
  ASSERT_TRUE(fs::exists(diffusers_lora));
  const std::string diffusers_error = load_error(diffusers_lora);
  EXPECT_NE(diffusers_error.find("is a LoRA file"), std::string::npos) << diffusers_error;
}
