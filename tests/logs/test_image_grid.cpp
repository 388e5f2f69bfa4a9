// Tests of logs::draw_image_grid (cairo): the PNG decodes (libpng) to the layout's size,
// every image pixel is the input value (clamped, scaled up) at the promised place, row
// labels are counted, and every refused input leaves no file behind.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "aclora/adapters/logs/image_grid.hpp"
#include "logs_test_support.hpp"
#include "png_test_support.hpp"

namespace logs = aclora::logs;
using aclora::test::decode_png;
using aclora::test::DecodedPng;
using aclora::test::logs_error;
using aclora::test::read_file;
using aclora::test::ScratchDir;

namespace {

constexpr logs::RgbColor kWhite{255, 255, 255};

logs::RgbColor grey(int level) {
  const auto value = static_cast<std::uint8_t>(level);
  return {value, value, value};
}

}  // namespace

// A black image and a patterned one (values from below 0 to above 1, and a NaN) side by
// side at scale 3: the PNG has the layout's size, and every picture pixel of each image
// is round(255 * clamp(value)) of the image pixel it scales up (NaN red), the gap white.
TEST(ImageGrid, PixelsEqualTheInputScaledUp) {
  const ScratchDir dir;
  const auto path = dir / "grid.png";
  const logs::ImageGridShape shape{1, 2, 3, 4};
  std::vector<float> pixels(2 * 3 * 4, 0.0F);
  const std::vector<float> pattern = {-0.5F, 0.0F, 0.1F, 0.2F, 0.3F, 0.4F,
                                      0.5F,  0.6F, 0.7F, 1.0F, 1.7F, std::nanf("")};
  std::copy(pattern.begin(), pattern.end(), pixels.begin() + 12);
  logs::ImageGridOptions options;
  options.scale = 3;
  options.gap = 5;
  const logs::ImageGridLayout layout = logs::draw_image_grid(pixels, shape, path, options);
  EXPECT_EQ(layout.cell_width, 12);
  EXPECT_EQ(layout.cell_height, 9);
  EXPECT_EQ(layout.image_x(1), layout.image_x(0) + 12 + 5);
  const DecodedPng png = decode_png(path);
  ASSERT_EQ(png.width, layout.width);
  ASSERT_EQ(png.height, layout.height);

  for (int y = 0; y < 9; ++y) {
    for (int x = 0; x < 12; ++x) {
      EXPECT_EQ(png.at(layout.image_x(0) + x, layout.image_y(0) + y), grey(0));
      const float value = pattern[static_cast<std::size_t>((y / 3) * 4 + x / 3)];
      const logs::RgbColor expected =
          std::isnan(value) ? logs::RgbColor{255, 0, 0}
                            : grey(static_cast<int>(std::lround(
                                  255 * std::clamp(static_cast<double>(value), 0.0, 1.0))));
      EXPECT_EQ(png.at(layout.image_x(1) + x, layout.image_y(0) + y), expected)
          << "x = " << x << ", y = " << y;
    }
    for (int x = 12; x < 17; ++x) {
      EXPECT_EQ(png.at(layout.image_x(0) + x, layout.image_y(0) + y), kWhite) << "gap x = " << x;
    }
  }
  EXPECT_EQ(logs::image_grid_color(1.7F), kWhite);
  EXPECT_EQ(logs::image_grid_color(-3.0F), grey(0));
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"grid.png"});
}

// In a 3 x 4 grid each image (a flat grey 20 * index + 10) is at (image_x(column),
// image_y(row)): its first and last picture pixels have its grey.
TEST(ImageGrid, ImagesArePlacedRowMajor) {
  const ScratchDir dir;
  const auto path = dir / "placed.png";
  const logs::ImageGridShape shape{3, 4, 5, 6};
  std::vector<float> pixels;
  for (int image = 0; image < 12; ++image) {
    pixels.insert(pixels.end(), 5 * 6, (20.0F * image + 10.0F) / 255.0F);
  }
  const logs::ImageGridLayout layout = logs::draw_image_grid(pixels, shape, path);
  const DecodedPng png = decode_png(path);
  ASSERT_EQ(png.width, layout.width);
  ASSERT_EQ(png.height, layout.height);
  for (int row = 0; row < 3; ++row) {
    for (int column = 0; column < 4; ++column) {
      const logs::RgbColor expected = grey(20 * (row * 4 + column) + 10);
      EXPECT_EQ(png.at(layout.image_x(column), layout.image_y(row)), expected);
      EXPECT_EQ(png.at(layout.image_x(column) + layout.cell_width - 1,
                       layout.image_y(row) + layout.cell_height - 1),
                expected);
    }
  }
}

// Row labels (one per row) and a title move the grid right and down and are drawn there
// (dark pixels left of the grid and above it); the images keep their pixels.
TEST(ImageGrid, LabelsAndTitleAreDrawnBesideTheGrid) {
  const ScratchDir dir;
  const auto path = dir / "labelled.png";
  const logs::ImageGridShape shape{2, 3, 4, 4};
  const std::vector<float> pixels(2 * 3 * 16, 1.0F);
  const logs::ImageGridLayout plain =
      logs::draw_image_grid(pixels, shape, dir / "plain.png", {"", {}, 4, 2});
  logs::ImageGridOptions options;
  options.title = "generated samples";
  options.row_labels = {"full fine-tuning", "AC-LoRA"};
  options.scale = 4;
  const logs::ImageGridLayout layout = logs::draw_image_grid(pixels, shape, path, options);
  EXPECT_GT(layout.grid_x, plain.grid_x + 40);
  EXPECT_GT(layout.grid_y, plain.grid_y);
  const DecodedPng png = decode_png(path);
  const auto dark_pixels = [&](int x0, int y0, int x1, int y1) {
    int count = 0;
    for (int y = y0; y < y1; ++y) {
      for (int x = x0; x < x1; ++x) {
        const logs::RgbColor c = png.at(x, y);
        count += c.red + c.green + c.blue < 300 ? 1 : 0;
      }
    }
    return count;
  };
  for (int row = 0; row < 2; ++row) {
    EXPECT_GT(dark_pixels(0, layout.image_y(row), layout.grid_x,
                          layout.image_y(row) + layout.cell_height),
              10)
        << "label of row " << row;
  }
  EXPECT_GT(dark_pixels(0, 0, layout.width, layout.grid_y), 10) << "title";
  EXPECT_EQ(png.at(layout.image_x(2), layout.image_y(1)), kWhite);
}

// Every refused input (label count neither 0 nor rows, value count not matching the
// shape, an empty side, scale or gap out of range) throws logs::Error naming the path
// and the problem; an existing picture stays unchanged and no temporary file remains.
TEST(ImageGrid, BadInputIsNamedAndLeavesTheOldPictureUntouched) {
  const ScratchDir dir;
  const auto path = dir / "grid.png";
  const logs::ImageGridShape shape{2, 3, 4, 5};
  const std::vector<float> pixels(2 * 3 * 4 * 5, 0.5F);
  logs::draw_image_grid(pixels, shape, path);
  const std::string before = read_file(path);

  const auto error = [&](const std::vector<float>& values, const logs::ImageGridShape& grid,
                         const logs::ImageGridOptions& options) {
    return logs_error([&] { logs::draw_image_grid(values, grid, path, options); });
  };
  const std::string prefix = path.string() + ": cannot draw the image grid: ";
  EXPECT_CONTAINS(error(pixels, shape, {"", {"only one"}, 2, 2}),
                  prefix + "1 row labels for 2 rows (give one per row or none)");
  EXPECT_CONTAINS(error(pixels, shape, {"", {"a", "b", "c"}, 2, 2}), "3 row labels for 2 rows");
  const std::vector<float> short_pixels(pixels.begin(), pixels.end() - 1);
  EXPECT_CONTAINS(error(short_pixels, shape, {}),
                  prefix + "119 values for 2 x 3 images of 4x5 (120 values)");
  EXPECT_CONTAINS(error({}, {0, 3, 4, 5}, {}), "has an empty side");
  EXPECT_CONTAINS(error(pixels, shape, {"", {}, 0, 2}), "scale 0 and gap 2 must lie in");
  EXPECT_CONTAINS(error(pixels, shape, {"", {}, 2, -1}), "scale 2 and gap -1 must lie in");
  EXPECT_CONTAINS(error(std::vector<float>(400 * 400, 0.0F), {1, 400, 1, 400}, {"", {}, 2, 2}),
                  "pixels (at most 32767 a side)");
  EXPECT_EQ(read_file(path), before);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"grid.png"});
}

// A path in a missing folder is an error naming the path; nothing appears.
TEST(ImageGrid, UnwritablePathIsNamedAndLeavesNoFile) {
  const ScratchDir dir;
  const auto path = dir / "missing_folder" / "grid.png";
  const std::vector<float> pixels(16, 0.0F);
  const std::string message = logs_error([&] {
    logs::draw_image_grid(pixels, {1, 1, 4, 4}, path);
  });
  EXPECT_CONTAINS(message, path.string());
  EXPECT_CONTAINS(message, "No such file or directory");
  EXPECT_TRUE(dir.entries().empty());
}
