// Tests of the cairo-free parts of the rank picture: module grouping, the layout's size
// bounds, the colour scale and RankHistory::add_restart.

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "aclora/adapters/logs/module_group.hpp"
#include "aclora/adapters/logs/rank_history.hpp"
#include "aclora/adapters/logs/rank_picture_layout.hpp"
#include "logs_test_support.hpp"

namespace logs = aclora::logs;

// kohya SDXL names group by UNet block and by text-encoder layer.
TEST(ModuleGroup, KohyaSdxlNamesGroupByBlock) {
  EXPECT_EQ(
      logs::default_module_group("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"),
      "input_blocks_4");
  EXPECT_EQ(logs::default_module_group("lora_unet_input_blocks_8_1_proj_in"), "input_blocks_8");
  EXPECT_EQ(logs::default_module_group("lora_unet_middle_block_1_transformer_blocks_9_ff_net_2"),
            "middle_block");
  EXPECT_EQ(
      logs::default_module_group("lora_unet_output_blocks_3_1_transformer_blocks_1_attn2_to_out_0"),
      "output_blocks_3");
  EXPECT_EQ(logs::default_module_group("lora_te1_text_model_encoder_layers_0_self_attn_q_proj"),
            "te1 layer 0");
  EXPECT_EQ(logs::default_module_group("lora_te2_text_model_encoder_layers_31_mlp_fc2"),
            "te2 layer 31");
}

// diffusers / PEFT dotted names group the same way (down_blocks, mid_block, up_blocks,
// text_encoder(_2) layers).
TEST(ModuleGroup, DottedNamesGroupByBlock) {
  EXPECT_EQ(
      logs::default_module_group("unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"),
      "down_blocks_1");
  EXPECT_EQ(logs::default_module_group("unet.mid_block.attentions.0.proj_in"), "mid_block");
  EXPECT_EQ(logs::default_module_group("unet.up_blocks.2.attentions.1.proj_out"), "up_blocks_2");
  EXPECT_EQ(logs::default_module_group("text_encoder.text_model.encoder.layers.5.self_attn.k_proj"),
            "te1 layer 5");
  EXPECT_EQ(logs::default_module_group("text_encoder_2.text_model.encoder.layers.7.mlp.fc1"),
            "te2 layer 7");
}

// Other names lose their last two parts; names of one or two parts are their own group.
TEST(ModuleGroup, FallbackDropsTheLastTwoParts) {
  EXPECT_EQ(logs::default_module_group("blocks.3.attn.qkv"), "blocks.3");
  EXPECT_EQ(logs::default_module_group("encoder_block_2_attn_q"), "encoder_block_2");
  EXPECT_EQ(logs::default_module_group("net.fc"), "net.fc");
  EXPECT_EQ(logs::default_module_group("fc"), "fc");
  EXPECT_EQ(logs::default_module_group(""), "");
}

// The picture stays within max_height whatever the module count; rows are whole pixels
// while they fit and 1 pixel high for ~1000 modules.
TEST(RankPictureLayout, HeightIsBoundedAndRowsShrink) {
  for (const std::size_t modules : {0U, 1U, 10U, 722U, 970U, 1000U, 5000U}) {
    logs::RankHistory history;
    history.modules.assign(modules, "m");
    history.allocated_rank = 8;
    history.restarts.assign(10, logs::RestartColumn{0, std::vector<std::size_t>(modules, 1)});
    const logs::RankPictureLayout layout = logs::rank_picture_layout(history);
    EXPECT_LE(layout.height, 1400) << modules;
    EXPECT_GE(layout.row_height * static_cast<double>(modules), modules > 0 ? 1.0 : 0.0);
    if (modules > 0 && modules <= 970) {
      EXPECT_EQ(layout.row_height, std::floor(layout.row_height)) << modules;
      EXPECT_GE(layout.row_height, 1.0) << modules;
    }
    EXPECT_EQ(layout.map_width, 10 * layout.column_width);
    EXPECT_GE(layout.width, layout.colorbar_x + 18);
  }
}

// Colours run from dark violet (K = 0) to yellow (K = R), change monotonically in
// brightness, and fractions outside [0, 1] are clamped.
TEST(RankPictureLayout, ColourScaleEnds) {
  EXPECT_EQ(logs::rank_color(0), (logs::RgbColor{68, 1, 84}));
  EXPECT_EQ(logs::rank_color(1), (logs::RgbColor{253, 231, 37}));
  EXPECT_EQ(logs::rank_color(-3), logs::rank_color(0));
  EXPECT_EQ(logs::rank_color(7), logs::rank_color(1));
  double previous = -1;
  for (int i = 0; i <= 100; ++i) {
    const logs::RgbColor c = logs::rank_color(i / 100.0);
    const double luma = 0.2126 * c.red + 0.7152 * c.green + 0.0722 * c.blue;
    EXPECT_GE(luma, previous - 1e-9) << i;
    previous = luma;
  }
}

// add_restart takes modules and R from the first report and K from each; a report with
// other modules is refused.
TEST(RankHistory, AddRestartCollectsColumns) {
  aclora::RestartReport report;
  for (int m = 0; m < 3; ++m) {
    aclora::ModuleReport module;
    module.name = "m" + std::to_string(m);
    module.allocated_rank = 8;
    module.module_rank = static_cast<std::size_t>(m + 1);
    report.modules.push_back(module);
  }
  logs::RankHistory history;
  history.add_restart(report, 10);
  report.modules[0].module_rank = 5;
  history.add_restart(report, 20);
  EXPECT_EQ(history.modules, (std::vector<std::string>{"m0", "m1", "m2"}));
  EXPECT_EQ(history.rank_scale(), 8U);
  ASSERT_EQ(history.restarts.size(), 2U);
  EXPECT_EQ(history.restarts[1].epoch, 20);
  EXPECT_EQ(history.restarts[1].ranks, (std::vector<std::size_t>{5, 2, 3}));
  report.modules[2].name = "other";
  EXPECT_CONTAINS(aclora::test::logs_error([&] { history.add_restart(report, 30); }),
                  "has module 'other' at row 2 where the history has 'm2'");
}
