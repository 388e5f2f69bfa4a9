// Tests of logs::draw_rank_picture (cairo): the PNG decodes (libpng) to the size the
// layout promised, cells have their colours, and writing is atomic.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "aclora/adapters/logs/rank_picture.hpp"
#include "logs_test_support.hpp"
#include "png_test_support.hpp"

#if defined(__SANITIZE_ADDRESS__)
// cairo's text functions load fonts through fontconfig, which keeps process-wide caches
// until exit: not a leak of ours, so LeakSanitizer (test_logs_asan) is told to ignore it.
extern "C" const char* __lsan_default_suppressions() {
  return "leak:libfontconfig.so\n";
}
#endif

namespace logs = aclora::logs;
using aclora::test::decode_png;
using aclora::test::DecodedPng;
using aclora::test::logs_error;
using aclora::test::read_file;
using aclora::test::ScratchDir;

namespace {

// The 722 UNet modules of kohya SDXL (Transformer2D blocks: proj_in, proj_out and 10
// Linear layers per transformer block), in kohya's order.
std::vector<std::string> sdxl_unet_modules() {
  struct Block {
    std::string prefix;
    int depth;
  };
  const std::vector<Block> blocks = {
      {"input_blocks_4_1", 2},   {"input_blocks_5_1", 2},   {"input_blocks_7_1", 10},
      {"input_blocks_8_1", 10},  {"middle_block_1", 10},    {"output_blocks_0_1", 10},
      {"output_blocks_1_1", 10}, {"output_blocks_2_1", 10}, {"output_blocks_3_1", 2},
      {"output_blocks_4_1", 2},  {"output_blocks_5_1", 2}};
  const std::vector<std::string> layers = {
      "attn1_to_q", "attn1_to_k", "attn1_to_v",     "attn1_to_out_0", "attn2_to_q",
      "attn2_to_k", "attn2_to_v", "attn2_to_out_0", "ff_net_0_proj",  "ff_net_2"};
  std::vector<std::string> names;
  for (const Block& block : blocks) {
    names.push_back("lora_unet_" + block.prefix + "_proj_in");
    for (int t = 0; t < block.depth; ++t) {
      for (const std::string& layer : layers) {
        names.push_back("lora_unet_" + block.prefix + "_transformer_blocks_" + std::to_string(t) +
                        "_" + layer);
      }
    }
    names.push_back("lora_unet_" + block.prefix + "_proj_out");
  }
  return names;
}

logs::RankHistory sdxl_history(std::size_t restarts) {
  logs::RankHistory history;
  history.modules = sdxl_unet_modules();
  history.allocated_rank = 8;
  for (std::size_t j = 0; j < restarts; ++j) {
    logs::RestartColumn column{static_cast<int>(10 * (j + 1)), {}};
    for (std::size_t i = 0; i < history.modules.size(); ++i) {
      column.ranks.push_back((i * 7 + j * 3) % 9);
    }
    history.restarts.push_back(column);
  }
  for (int epoch = 0; epoch < 100; ++epoch) {
    history.epoch_losses.emplace_back(epoch, 0.2 * std::exp(-epoch / 30.0) + 0.05);
  }
  return history;
}

}  // namespace

// 722 modules over 10 restarts: the PNG decodes with libpng to exactly the size the
// layout promised (within the 1400-pixel bound, rows 1 pixel high), and every sampled
// cell has the colour of its K.
TEST(RankPicture, SdxlPictureHasThePromisedSizeAndCellColours) {
  const ScratchDir dir;
  const logs::RankHistory history = sdxl_history(10);
  ASSERT_EQ(history.modules.size(), 722U);
  const auto path = dir / "ranks.png";
  const logs::RankPictureLayout layout = logs::draw_rank_picture(history, path);
  EXPECT_EQ(layout.width, logs::rank_picture_layout(history).width);
  EXPECT_EQ(layout.height, logs::rank_picture_layout(history).height);
  EXPECT_LE(layout.height, 1400);
  EXPECT_EQ(layout.row_height, 1.0);

  const DecodedPng png = decode_png(path);
  ASSERT_EQ(png.width, layout.width);
  ASSERT_EQ(png.height, layout.height);
  for (std::size_t j = 0; j < history.restarts.size(); ++j) {
    for (std::size_t i = 0; i < history.modules.size(); i += 37) {
      const int x =
          layout.map_x + static_cast<int>(j) * layout.column_width + layout.column_width / 2;
      const int y = layout.map_y + static_cast<int>(static_cast<double>(i) * layout.row_height);
      EXPECT_EQ(png.at(x, y),
                logs::rank_color(static_cast<double>(history.restarts[j].ranks[i]) / 8))
          << "module " << i << ", restart " << j;
    }
  }
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"ranks.png"});
}

// Thousands of modules keep the picture within its height bound (rows below 1 pixel).
TEST(RankPicture, ManyModulesStayWithinTheHeightBound) {
  const ScratchDir dir;
  logs::RankHistory history;
  history.allocated_rank = 16;
  for (int i = 0; i < 3000; ++i) {
    history.modules.push_back("model.layers." + std::to_string(i / 7) + ".proj_" +
                              std::to_string(i % 7));
  }
  history.restarts.push_back({5, std::vector<std::size_t>(3000, 16)});
  const logs::RankPictureLayout layout = logs::draw_rank_picture(history, dir / "many.png");
  const DecodedPng png = decode_png(dir / "many.png");
  EXPECT_EQ(png.width, layout.width);
  EXPECT_EQ(png.height, layout.height);
  EXPECT_LE(png.height, 1400);
  EXPECT_LT(layout.row_height, 1.0);
}

// A history without restarts or losses still draws (an empty frame), with its layout's size.
TEST(RankPicture, EmptyHistoryDraws) {
  const ScratchDir dir;
  logs::RankHistory history;
  const logs::RankPictureLayout layout = logs::draw_rank_picture(history, dir / "empty.png");
  const DecodedPng png = decode_png(dir / "empty.png");
  EXPECT_EQ(png.width, layout.width);
  EXPECT_EQ(png.height, layout.height);
}

// A path in a missing folder is an error naming the path, and no file appears.
TEST(RankPicture, BadPathIsNamedAndLeavesNoFile) {
  const ScratchDir dir;
  const auto path = dir / "missing_folder" / "ranks.png";
  const std::string message = logs_error([&] { logs::draw_rank_picture(sdxl_history(2), path); });
  EXPECT_CONTAINS(message, path.string());
  EXPECT_CONTAINS(message, "No such file or directory");
  EXPECT_FALSE(std::filesystem::exists(path.parent_path()));
  EXPECT_TRUE(dir.entries().empty());
}

// Bad data (a column with too few ranks, K above R) is refused with the path named; an
// existing picture is left untouched and no temporary file remains.
TEST(RankPicture, BadDataLeavesTheOldPictureUntouched) {
  const ScratchDir dir;
  const auto path = dir / "ranks.png";
  logs::draw_rank_picture(sdxl_history(1), path);
  const std::string before = read_file(path);

  logs::RankHistory short_column = sdxl_history(2);
  short_column.restarts[1].ranks.pop_back();
  EXPECT_CONTAINS(
      logs_error([&] { logs::draw_rank_picture(short_column, path); }),
      path.string() +
          ": cannot draw the rank picture: restart 1 (epoch 20) has 721 ranks for 722 modules");
  logs::RankHistory too_high = sdxl_history(1);
  too_high.restarts[0].ranks[3] = 9;
  EXPECT_CONTAINS(logs_error([&] { logs::draw_rank_picture(too_high, path); }),
                  "keeps K = 9 of only R = 8");
  EXPECT_EQ(read_file(path), before);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"ranks.png"});
}

// A caller's grouping replaces the default one (it is called for every module).
TEST(RankPicture, CallerGroupingIsUsed) {
  const ScratchDir dir;
  std::size_t calls = 0;
  logs::RankPictureOptions options;
  options.group = [&calls](std::string_view name) {
    ++calls;
    return std::string(name.substr(0, 12));
  };
  logs::draw_rank_picture(sdxl_history(3), dir / "custom.png", options);
  EXPECT_EQ(calls, 722U);
}
