// The training layer on the SDXL models: the kohya target presets on the full-size UNet and
// text encoders (built on the meta device), and LoRAs exported from the tiny model in the
// kohya, diffusers and PEFT layouts, compared with files whose loading in diffusers / PEFT
// was recorded (tests/sdxl/data/train_export, see its README.md).
#include <gtest/gtest.h>

#include <aclora/adapters/lora/open.hpp>
#include <aclora/adapters/safetensors/convert.hpp>
#include <aclora/adapters/train/export.hpp>
#include <aclora/adapters/train/network.hpp>
#include <aclora/philox.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "reference_fixtures.hpp"
#include "sdxl/checkpoint.hpp"
#include "sdxl/text_encoder.hpp"
#include "sdxl/unet.hpp"

namespace {

namespace fs = std::filesystem;
using aclora::train::Targets;

const sdxl::BuildOptions kMeta{torch::kFloat32, torch::kMeta, false};

std::vector<std::string> selected_names(torch::nn::Module& root, const Targets& targets,
                                        const aclora::train::Naming& naming) {
  std::vector<std::string> names;
  for (const auto& layer : aclora::train::select_layers(root, targets))
    names.push_back(naming.name_of(layer.path));
  return names;
}

}  // namespace

// On SDXL base the presets select what sd-scripts does: 722 linears inside the
// Transformer2D blocks, 560 attention projections, plus 66 layers of the resnets and
// samplers for linear+conv (17 resnets x conv1, conv2, time_emb_proj; 11 conv_shortcut;
// 2 downsamplers and 2 upsamplers); every selected layer has a kohya name, all distinct.
TEST(LoraTraining, KohyaPresetsOnTheSdxlUNet) {
  sdxl::UNet unet(sdxl::UNetConfig::sdxl_base(), kMeta);
  const auto naming = aclora::train::Naming::sdxl_unet();
  const auto linear = selected_names(*unet, Targets::sdxl_unet_linear(), naming);
  EXPECT_EQ(linear.size(), 722u);
  EXPECT_EQ(std::set<std::string>(linear.begin(), linear.end()).size(), 722u);
  EXPECT_EQ(linear.front(), "lora_unet_input_blocks_4_1_proj_in");
  EXPECT_EQ(selected_names(*unet, Targets::sdxl_unet_attention(), naming).size(), 560u);
  const auto with_conv = selected_names(*unet, Targets::sdxl_unet_linear_conv(), naming);
  EXPECT_EQ(with_conv.size(), 722u + 66u);
  const std::set<std::string> unique(with_conv.begin(), with_conv.end());
  EXPECT_EQ(unique.size(), with_conv.size());
  EXPECT_TRUE(unique.count("lora_unet_input_blocks_1_0_in_layers_2"));       // conv1
  EXPECT_TRUE(unique.count("lora_unet_input_blocks_1_0_emb_layers_1"));      // time_emb_proj
  EXPECT_TRUE(unique.count("lora_unet_input_blocks_3_0_op"));                // downsampler
  EXPECT_TRUE(unique.count("lora_unet_output_blocks_2_2_conv"));             // upsampler
  EXPECT_TRUE(unique.count("lora_unet_output_blocks_0_0_skip_connection"));  // conv_shortcut
}

// The text-encoder preset selects q/k/v/out_proj, fc1 and fc2 of every layer: 72 modules of
// CLIP ViT-L (lora_te1_) and 192 of OpenCLIP bigG (lora_te2_), as sd-scripts names them.
TEST(LoraTraining, TextEncoderPresets) {
  sdxl::ClipTextModel clip_l(sdxl::ClipTextConfig::sdxl_clip_l(), kMeta);
  sdxl::ClipTextModel clip_g(sdxl::ClipTextConfig::sdxl_clip_bigg(), kMeta);
  const auto te1 = selected_names(*clip_l, Targets::clip_text_encoder(),
                                  aclora::train::Naming::sdxl_text_encoder());
  const auto te2 = selected_names(*clip_g, Targets::clip_text_encoder(),
                                  aclora::train::Naming::sdxl_text_encoder_2());
  EXPECT_EQ(te1.size(), 72u);
  EXPECT_EQ(te2.size(), 192u);
  EXPECT_EQ(te1.front(), "lora_te1_text_model_encoder_layers_0_self_attn_q_proj");
  EXPECT_EQ(te2.back(), "lora_te2_text_model_encoder_layers_31_mlp_fc2");
}

namespace {

// The tiny model with LoRAs on the UNet preset and both text encoders, deterministic
// factors (up random: a LoRA that changes the model), and K per module for the export.
struct ExportedModel {
  sdxl::SdxlModels models;
  aclora::train::LoraNetwork network;
  std::vector<std::size_t> ranks;

  ExportedModel() {
    models = sdxl::load_sdxl(sdxl_test::sdxl_fixtures() / "tiny-sdxl");
    aclora::train::InjectOptions options;
    options.rank = 4;
    options.alpha = 2.0;
    options.naming = aclora::train::Naming::sdxl_unet();
    network.inject(*models.unet, Targets::sdxl_unet_linear(), options);
    options.naming = aclora::train::Naming::sdxl_text_encoder();
    network.inject(*models.text_encoder, Targets::clip_text_encoder(), options);
    options.naming = aclora::train::Naming::sdxl_text_encoder_2();
    network.inject(*models.text_encoder_2, Targets::clip_text_encoder(), options);
    // Factors from Philox words turned into floats exactly (ATen's random kernels differ in
    // the last bits between CPU instruction sets, and the recorded files must not).
    torch::NoGradGuard no_grad;
    for (std::size_t i = 0; i < network.size(); ++i) {
      fill(network.modules()[i].adapter->down, 2 * i, 0.5);
      fill(network.modules()[i].adapter->up, 2 * i + 1, 0.05);
      ranks.push_back(1 + i % 4);
    }
  }

  // Uniform values in [-scale / 2, scale / 2): 24 random bits per entry, exact in float.
  static void fill(torch::Tensor& tensor, std::uint64_t stream, double scale) {
    std::vector<float> values(static_cast<std::size_t>(tensor.numel()));
    for (std::size_t j = 0; j < values.size(); ++j) {
      const aclora::PhiloxBlock block = aclora::philox4x32_10(
          {{static_cast<std::uint32_t>(j), 0, static_cast<std::uint32_t>(stream), 0}}, 2024, 7);
      values[j] =
          static_cast<float>((static_cast<double>(block.word[0] >> 8) * 0x1p-24 - 0.5) * scale);
    }
    tensor.copy_(torch::from_blob(values.data(), tensor.sizes(), torch::kFloat32));
  }
};

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Two LoRA files (or PEFT folders) hold the same modules: names, kinds, ranks, alphas, tensor
// shapes and dtypes, metadata but the date, and updates (alpha / r) up @ down equal within
// 1e-5 relative. The factors themselves may differ: at K < R they come from eigen- and singular
// vectors, whose signs and last bits depend on the LAPACK / BLAS build; the update does not.
void expect_same_lora(const fs::path& written, const fs::path& recorded) {
  const auto a = aclora::lora::open_lora(written);
  const auto b = aclora::lora::open_lora(recorded);
  auto meta_a = a.metadata;
  auto meta_b = b.metadata;
  meta_a.erase("modelspec.date");
  meta_b.erase("modelspec.date");
  EXPECT_EQ(meta_a, meta_b) << recorded;
  ASSERT_EQ(a.modules.size(), b.modules.size()) << recorded;
  ASSERT_GT(a.modules.size(), 0u);
  EXPECT_TRUE(a.unknown_keys.empty() && b.unknown_keys.empty()) << recorded;
  const auto update = [](const aclora::lora::LoraModule& module) {
    const auto tensor = [](const aclora::safetensors::TensorView& view) {
      std::vector<float> values = aclora::safetensors::convert_to<float>(view);
      return torch::from_blob(values.data(), {static_cast<int64_t>(values.size())}, torch::kFloat32)
          .clone()
          .to(torch::kFloat64);
    };
    const auto rank = static_cast<int64_t>(module.rank);
    return torch::matmul(tensor(module.up).view({-1, rank}), tensor(module.down).view({rank, -1})) *
           module.scale();
  };
  for (std::size_t i = 0; i < a.modules.size(); ++i) {
    const auto& x = a.modules[i];
    const auto& y = b.modules[i];
    ASSERT_EQ(x.name, y.name) << recorded;
    EXPECT_EQ(x.kind, y.kind) << x.name;
    EXPECT_EQ(x.rank, y.rank) << x.name;
    EXPECT_EQ(x.alpha, y.alpha) << x.name;
    EXPECT_EQ(x.down.shape, y.down.shape) << x.name;
    EXPECT_EQ(x.up.dtype, y.up.dtype) << x.name;
    const torch::Tensor expected = update(y);
    EXPECT_LT((update(x) - expected).norm().item<double>(), 1e-5 * expected.norm().item<double>())
        << recorded << ": " << x.name;
  }
}

}  // namespace

// The exports of the tiny model equal the recorded files (modules, ranks, alphas, metadata
// but the date, updates within 1e-5), and the recorded check found that each of them loads
// in diffusers (kohya, diffusers layouts) or PEFT (PEFT folders) with the update our factors
// define. ACLORA_RECORD_TRAIN_EXPORT=DIR writes the files to DIR instead (to record anew).
TEST(LoraTraining, ExportsMatchTheRecordedLoadCheck) {
  ExportedModel model;
  const fs::path recorded = fs::path(ACLORA_SDXL_TEST_DATA_DIR) / "train_export";
  const char* record = std::getenv("ACLORA_RECORD_TRAIN_EXPORT");
  const fs::path out =
      record ? fs::path(record) : fs::temp_directory_path() / "aclora_sdxl_train_export";
  if (!record)
    fs::remove_all(out);
  fs::create_directories(out);
  aclora::train::ExportOptions options;
  options.title = "aclora test export";
  options.metadata["ss_training_comment"] = "tiny SDXL, ranks 1..4";
  aclora::train::write_lora(model.network, model.ranks, options, out / "train_kohya.safetensors");
  aclora::train::write_lora(model.network, aclora::train::full_ranks(model.network), options,
                            out / "train_kohya_full.safetensors");
  options.format = aclora::train::ExportFormat::diffusers;
  aclora::train::write_lora(model.network, model.ranks, options,
                            out / "train_diffusers.safetensors");
  options.format = aclora::train::ExportFormat::peft;
  aclora::train::write_lora(model.network, model.ranks, options, out / "train_peft");
  if (record)
    GTEST_SKIP() << "recorded into " << out;

  for (const char* file : {"train_kohya.safetensors", "train_kohya_full.safetensors",
                           "train_diffusers.safetensors", "train_peft"})
    expect_same_lora(out / file, recorded / file);
  for (const char* component : {"unet", "text_encoder", "text_encoder_2"}) {
    EXPECT_EQ(read_bytes(out / "train_peft" / component / "adapter_config.json"),
              read_bytes(recorded / "train_peft" / component / "adapter_config.json"));
  }
  // Our reader agrees: ranks as chosen.
  const auto kohya = aclora::lora::open_lora(out / "train_kohya.safetensors");
  ASSERT_EQ(kohya.modules.size(), model.network.size());
  for (const auto& module : kohya.modules) {
    const auto* entry = model.network.find(module.name);
    ASSERT_NE(entry, nullptr) << module.name;
    EXPECT_EQ(module.rank,
              model.ranks[static_cast<std::size_t>(entry - &model.network.modules()[0])]);
  }
  const std::string check = read_bytes(recorded / "load_check.json");
  EXPECT_NE(check.find("\"all_ok\": true"), std::string::npos) << check;
}
