// SDXL LoRA module names: diffusers paths <-> kohya LDM names, both ways.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "aclora/adapters/lora/sdxl_keys.hpp"

namespace {

using aclora::lora::Component;
using aclora::lora::kohya_name;
using aclora::lora::parse_kohya_name;

// The 722 Linear targets inside the SDXL UNet's Transformer2D blocks (sdxl.md).
std::vector<std::string> sdxl_unet_lora_paths() {
  struct Transformer {
    std::string prefix;
    int depth;
  };
  std::vector<Transformer> transformers;
  for (int j = 0; j < 2; ++j) {
    transformers.push_back({"down_blocks.1.attentions." + std::to_string(j), 2});
    transformers.push_back({"down_blocks.2.attentions." + std::to_string(j), 10});
  }
  transformers.push_back({"mid_block.attentions.0", 10});
  for (int j = 0; j < 3; ++j) {
    transformers.push_back({"up_blocks.0.attentions." + std::to_string(j), 10});
    transformers.push_back({"up_blocks.1.attentions." + std::to_string(j), 2});
  }
  std::vector<std::string> paths;
  for (const auto& t : transformers) {
    paths.push_back(t.prefix + ".proj_in");
    paths.push_back(t.prefix + ".proj_out");
    for (int b = 0; b < t.depth; ++b) {
      const std::string block = t.prefix + ".transformer_blocks." + std::to_string(b) + ".";
      for (const char* attn : {"attn1", "attn2"})
        for (const char* leaf : {"to_q", "to_k", "to_v", "to_out.0"})
          paths.push_back(block + attn + "." + leaf);
      paths.push_back(block + "ff.net.0.proj");
      paths.push_back(block + "ff.net.2");
    }
  }
  return paths;
}

// Every one of the 722 SDXL UNet LoRA targets maps to a unique kohya name and back.
TEST(LoraKeys, AllSdxlUnetTargetsRoundTrip) {
  const auto paths = sdxl_unet_lora_paths();
  ASSERT_EQ(paths.size(), 722u);
  std::set<std::string> names;
  for (const auto& path : paths) {
    const auto name = kohya_name(Component::unet, path);
    ASSERT_TRUE(name) << path;
    EXPECT_EQ(name->rfind("lora_unet_", 0), 0u);
    names.insert(*name);
    const auto back = parse_kohya_name(*name);
    ASSERT_TRUE(back) << *name;
    EXPECT_EQ(back->component, Component::unet);
    EXPECT_EQ(back->path, path) << *name;
  }
  EXPECT_EQ(names.size(), 722u);
}

// Known pairs from sd-scripts / diffusers naming (sdxl.md).
TEST(LoraKeys, KnownUnetPairs) {
  const std::vector<std::pair<std::string, std::string>> pairs = {
      {"down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
       "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"},
      {"down_blocks.2.attentions.1.transformer_blocks.9.attn2.to_out.0",
       "lora_unet_input_blocks_8_1_transformer_blocks_9_attn2_to_out_0"},
      {"mid_block.attentions.0.proj_in", "lora_unet_middle_block_1_proj_in"},
      {"mid_block.attentions.0.transformer_blocks.3.ff.net.0.proj",
       "lora_unet_middle_block_1_transformer_blocks_3_ff_net_0_proj"},
      {"up_blocks.0.attentions.2.transformer_blocks.1.ff.net.2",
       "lora_unet_output_blocks_2_1_transformer_blocks_1_ff_net_2"},
      {"up_blocks.1.attentions.0.proj_out", "lora_unet_output_blocks_3_1_proj_out"},
      {"down_blocks.1.resnets.0.conv1", "lora_unet_input_blocks_4_0_in_layers_2"},
      {"down_blocks.0.resnets.1.time_emb_proj", "lora_unet_input_blocks_2_0_emb_layers_1"},
      {"down_blocks.1.resnets.0.conv_shortcut", "lora_unet_input_blocks_4_0_skip_connection"},
      {"down_blocks.0.downsamplers.0.conv", "lora_unet_input_blocks_3_0_op"},
      {"up_blocks.1.upsamplers.0.conv", "lora_unet_output_blocks_5_2_conv"},
      {"up_blocks.2.resnets.2.conv2", "lora_unet_output_blocks_8_0_out_layers_3"},
      {"mid_block.resnets.1.conv1", "lora_unet_middle_block_2_in_layers_2"},
      {"conv_in", "lora_unet_input_blocks_0_0"},
      {"conv_out", "lora_unet_out_2"},
      {"time_embedding.linear_1", "lora_unet_time_embed_0"},
      {"add_embedding.linear_2", "lora_unet_label_emb_0_2"},
  };
  for (const auto& [path, name] : pairs) {
    EXPECT_EQ(kohya_name(Component::unet, path).value_or("<none>"), name) << path;
    const auto back = parse_kohya_name(name);
    ASSERT_TRUE(back) << name;
    EXPECT_EQ(back->path, path) << name;
  }
}

// kohya files in the diffusers tree (lora_unet_down_blocks_...) are read too.
TEST(LoraKeys, DiffusersTreeKohyaNamesParse) {
  const auto target =
      parse_kohya_name("lora_unet_down_blocks_1_attentions_0_transformer_blocks_1_attn2_to_k");
  ASSERT_TRUE(target);
  EXPECT_EQ(target->path, "down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k");
}

// Text encoder names of both SDXL encoders round trip, with the kohya prefixes te1 / te2.
TEST(LoraKeys, TextEncodersRoundTrip) {
  std::set<std::string> names;
  for (const auto& [component, layers] :
       {std::pair{Component::text_encoder, 12}, std::pair{Component::text_encoder_2, 32}}) {
    for (int layer = 0; layer < layers; ++layer) {
      for (const char* leaf : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                               "self_attn.out_proj", "mlp.fc1", "mlp.fc2"}) {
        const std::string path = "text_model.encoder.layers." + std::to_string(layer) + "." + leaf;
        const auto name = kohya_name(component, path);
        ASSERT_TRUE(name);
        names.insert(*name);
        const auto back = parse_kohya_name(*name);
        ASSERT_TRUE(back) << *name;
        EXPECT_EQ(back->component, component);
        EXPECT_EQ(back->path, path);
      }
    }
  }
  EXPECT_EQ(names.size(), 6u * 44u);
  EXPECT_EQ(kohya_name(Component::text_encoder, "text_model.encoder.layers.0.self_attn.q_proj"),
            "lora_te1_text_model_encoder_layers_0_self_attn_q_proj");
  EXPECT_EQ(kohya_name(Component::text_encoder_2, "text_model.encoder.layers.31.mlp.fc2"),
            "lora_te2_text_model_encoder_layers_31_mlp_fc2");
  // transformers 5 paths without text_model get the usual kohya name.
  EXPECT_EQ(kohya_name(Component::text_encoder, "encoder.layers.0.mlp.fc1"),
            "lora_te1_text_model_encoder_layers_0_mlp_fc1");
  // SD 1.x single-encoder prefix.
  EXPECT_EQ(parse_kohya_name("lora_te_text_model_encoder_layers_0_mlp_fc1")->component,
            Component::text_encoder);
}

// Names that follow no rule are refused (reported as unknown keys by the readers).
TEST(LoraKeys, UnmappableNamesAreRefused) {
  EXPECT_FALSE(parse_kohya_name("lora_unet_input_blocks_4_7_proj_in"));
  EXPECT_FALSE(parse_kohya_name("lora_vae_decoder_conv_in"));
  EXPECT_FALSE(parse_kohya_name("lora_unet_"));
  EXPECT_FALSE(kohya_name(Component::unet, "down_blocks.1.foo.0"));
}

}  // namespace
