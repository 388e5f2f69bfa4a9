// LoRA formats: detection and reading of every fixture (kohya, diffusers, PEFT, LyCORIS),
// unknown keys reported, malformed module sets refused.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>

#include "lora_test_support.hpp"
#include "safetensors_test_support.hpp"

namespace {

namespace lora = aclora::lora;
namespace st = aclora::safetensors;
using aclora::test::lora_fixtures;

struct FixtureCase {
  const char* path;
  lora::Format format;
};

const FixtureCase kLoraFixtures[] = {
    {"kohya.safetensors", lora::Format::kohya},
    {"kohya_const_alpha.safetensors", lora::Format::kohya},
    {"diffusers.safetensors", lora::Format::diffusers},
    {"diffusers_old.safetensors", lora::Format::diffusers},
    {"peft", lora::Format::peft},
};

// Every LoRA fixture is detected as its format, yields the 125 planted modules with no
// unknown key, and each module's merged update equals peft's reference within 1e-5.
TEST(LoraFormats, EveryFixtureReadsToTheReferenceUpdates) {
  const st::Reader expected = st::Reader::open(lora_fixtures() / "expected_lora.safetensors");
  for (const auto& fixture : kLoraFixtures) {
    SCOPED_TRACE(fixture.path);
    const lora::LoraFile file = lora::open_lora(lora_fixtures() / fixture.path);
    EXPECT_EQ(file.format, fixture.format);
    EXPECT_EQ(file.modules.size(), 125u);
    EXPECT_TRUE(file.unknown_keys.empty()) << file.unknown_keys.front();
    std::map<lora::Component, int> counts;
    for (const auto& module : file.modules) {
      ++counts[module.component];
      ASSERT_TRUE(expected.contains(module.name)) << module.name;
      const auto reference = expected.to_f64(module.name);
      const auto merged = aclora::test::merged_update(module);
      ASSERT_EQ(merged.size(), reference.size()) << module.name;
      EXPECT_LT(aclora::test::relative_difference(merged, reference), 1e-5) << module.name;
    }
    EXPECT_EQ(counts[lora::Component::unet], 65);
    EXPECT_EQ(counts[lora::Component::text_encoder], 30);
    EXPECT_EQ(counts[lora::Component::text_encoder_2], 30);
  }
}

// The 3x3 conv LoRA of the fixture is read as a conv module with in = 32 * 3 * 3.
TEST(LoraFormats, ConvModuleIsFlattened) {
  const lora::LoraFile file = lora::open_lora(lora_fixtures() / "kohya.safetensors");
  bool found = false;
  for (const auto& module : file.modules) {
    if (module.name == "lora_unet_input_blocks_4_0_in_layers_2") {
      found = true;
      EXPECT_EQ(module.kind, lora::ModuleKind::conv);
      EXPECT_EQ(module.in_features, 32u * 9u);
      EXPECT_EQ(module.out_features, 64u);
      EXPECT_EQ(module.path, "down_blocks.1.resnets.0.conv1");
    }
  }
  EXPECT_TRUE(found);
}

// LyCORIS LoKr and LoHa files are detected and inspected (12 modules each, parameters
// counted), not mistaken for LoRA modules.
TEST(LoraFormats, LycorisFilesAreRead) {
  for (const char* name : {"lokr.safetensors", "loha.safetensors"}) {
    SCOPED_TRACE(name);
    const lora::LoraFile file = lora::open_lora(lora_fixtures() / name);
    EXPECT_EQ(file.format, lora::Format::lycoris);
    EXPECT_TRUE(file.modules.empty());
    EXPECT_EQ(file.lycoris.size(), 12u);
    EXPECT_TRUE(file.unknown_keys.empty());
    const std::string algorithm = std::string(name).substr(0, 4);
    std::size_t parameters = 0;
    for (const auto& module : file.lycoris) {
      EXPECT_EQ(module.algorithm, algorithm);
      EXPECT_GT(module.parameters, 0u);
      parameters += module.parameters;
    }
    EXPECT_EQ(file.parameters(), parameters);
  }
}

// Detection counts keys per layout and picks the majority; names of no layout give none.
TEST(LoraFormats, DetectionByKeyNames) {
  using V = std::vector<std::string>;
  EXPECT_EQ(
      lora::detect_format(V{"lora_unet_x.lora_down.weight", "lora_unet_x.lora_up.weight"}).format,
      lora::Format::kohya);
  EXPECT_EQ(lora::detect_format(V{"base_model.model.a.lora_A.weight"}).format, lora::Format::peft);
  EXPECT_EQ(lora::detect_format(V{"unet.a.lora.down.weight"}).format, lora::Format::diffusers);
  EXPECT_EQ(lora::detect_format(V{"text_encoder.a.lora_linear_layer.up.weight"}).format,
            lora::Format::diffusers);
  EXPECT_EQ(lora::detect_format(V{"lora_te1_a.hada_w1_a"}).format, lora::Format::lycoris);
  EXPECT_FALSE(lora::detect_format(V{"model.diffusion_model.x.weight", "foo"}).format);
  EXPECT_FALSE(lora::detect_format(V{}).format);
}

std::vector<std::byte> image_of(st::Writer& writer) {
  return writer.to_bytes();
}

// Keys that follow no rule are listed as unknown, never dropped silently.
TEST(LoraFormats, UnknownKeysAreReported) {
  st::Writer writer;
  writer.add("lora_unet_input_blocks_4_1_proj_in.lora_down.weight", {2, 4},
             std::vector<float>(8, 0.5f));
  writer.add("lora_unet_input_blocks_4_1_proj_in.lora_up.weight", {3, 2},
             std::vector<float>(6, 1.f));
  writer.add("lora_unet_input_blocks_4_1_proj_in.dora_scale", {3}, std::vector<float>(3, 1.f));
  writer.add("lora_vae_decoder_conv.lora_down.weight", {2, 4}, std::vector<float>(8, 1.f));
  writer.add("lora_vae_decoder_conv.lora_up.weight", {3, 2}, std::vector<float>(6, 1.f));
  writer.add("something_else", {1}, std::vector<float>{1.f});
  const lora::LoraFile file = lora::read_lora_bytes(image_of(writer), "mem");
  ASSERT_EQ(file.modules.size(), 1u);
  EXPECT_EQ(file.modules[0].alpha, 2.0);  // no alpha tensor: alpha = r
  const std::set<std::string> unknown(file.unknown_keys.begin(), file.unknown_keys.end());
  EXPECT_EQ(unknown,
            (std::set<std::string>{"lora_unet_input_blocks_4_1_proj_in.dora_scale",
                                   "lora_vae_decoder_conv.lora_down.weight",
                                   "lora_vae_decoder_conv.lora_up.weight", "something_else"}));
}

// A valid safetensors file with no LoRA layout is an "unknown LoRA format" error.
TEST(LoraFormats, UnknownFormatIsAnError) {
  st::Writer writer;
  writer.add("model.diffusion_model.out.2.weight", {2, 2}, std::vector<float>(4, 1.f));
  try {
    lora::read_lora_bytes(image_of(writer), "mem");
    FAIL() << "no error";
  } catch (const lora::Error& error) {
    EXPECT_NE(std::string(error.what()).find("unknown LoRA format"), std::string::npos);
  }
}

// Unpaired factors and factors whose ranks disagree are errors naming the module.
TEST(LoraFormats, MalformedModulesAreErrors) {
  {
    st::Writer writer;
    writer.add("lora_unet_middle_block_1_proj_in.lora_down.weight", {2, 4}, std::vector<float>(8));
    EXPECT_THROW(lora::read_lora_bytes(image_of(writer), "mem"), lora::Error);
  }
  {
    st::Writer writer;
    writer.add("lora_unet_middle_block_1_proj_in.lora_down.weight", {2, 4}, std::vector<float>(8));
    writer.add("lora_unet_middle_block_1_proj_in.lora_up.weight", {3, 5}, std::vector<float>(15));
    try {
      lora::read_lora_bytes(image_of(writer), "mem");
      FAIL() << "no error";
    } catch (const lora::Error& error) {
      EXPECT_NE(std::string(error.what()).find("lora_unet_middle_block_1_proj_in"),
                std::string::npos);
    }
  }
  {
    st::Writer writer;
    writer.add("base_model.model.down_blocks.1.attentions.0.proj_in.lora_A.weight", {2, 4},
               std::vector<std::int32_t>(8));
    writer.add("base_model.model.down_blocks.1.attentions.0.proj_in.lora_B.weight", {3, 2},
               std::vector<std::int32_t>(6));
    EXPECT_THROW(lora::read_lora_bytes(image_of(writer), "mem"), lora::Error);  // not float
  }
}

// PEFT alpha: lora_alpha, alpha_pattern (whole path or dotted suffix) and rsLoRA scaling.
TEST(LoraFormats, PeftAlphaRules) {
  aclora::json::Value config = aclora::json::Object{};
  config["lora_alpha"] = 16;
  config["alpha_pattern"]["attn1.to_q"] = 4;
  const auto scale = lora::PeftScaleConfig::from_json(config);
  EXPECT_EQ(scale.effective_alpha("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q", 8),
            4.0);
  EXPECT_EQ(scale.effective_alpha("down_blocks.1.attentions.0.transformer_blocks.0.xattn1.to_q", 8),
            16.0);
  EXPECT_EQ(scale.effective_alpha("a.b", 8), 16.0);
  config["use_rslora"] = true;
  EXPECT_DOUBLE_EQ(lora::PeftScaleConfig::from_json(config).effective_alpha("a.b", 4), 32.0);
}

}  // namespace
