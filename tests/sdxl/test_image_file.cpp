// Training images (sdxl/image_file.hpp): PNG / JPEG / WebP decoding against what Pillow shows
// (tests/fixtures/images, made by tests/fixtures/make_image_fixtures.py), EXIF orientation,
// alpha on white, broken files, resizing and cropping.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "sdxl/image_file.hpp"

namespace {

std::filesystem::path images() {
  return std::filesystem::path(ACLORA_FIXTURES_DIR) / "images";
}

// The largest difference of one channel of one pixel.
int max_difference(const sdxl::RgbImage& a, const sdxl::RgbImage& b) {
  int largest = 0;
  for (std::size_t i = 0; i < a.pixels.size(); ++i)
    largest = std::max(largest, std::abs(int(a.pixels[i]) - int(b.pixels[i])));
  return largest;
}

// A w x h image whose pixel (x, y) is (x, y, x + y).
sdxl::RgbImage coordinates(int64_t width, int64_t height) {
  sdxl::RgbImage image{width, height, std::vector<uint8_t>(width * height * 3)};
  for (int64_t y = 0; y < height; ++y)
    for (int64_t x = 0; x < width; ++x)
      for (int c = 0; c < 3; ++c)
        image.pixels[(y * width + x) * 3 + c] = static_cast<uint8_t>(c == 0   ? x
                                                                     : c == 1 ? y
                                                                              : x + y);
  return image;
}

}  // namespace

// Every fixture decodes to the picture Pillow shows (EXIF-turned, alpha on white): lossless
// formats within 1 per channel (the rounding of the alpha composite), JPEG within 2 (libjpeg
// versions round their IDCT differently), sizes exact (orientations 6 and 8 swap them).
TEST(ImageFile, DecodesAsPillowShows) {
  struct Case {
    const char* file;
    int tolerance;
  };
  for (const Case& c :
       {Case{"rgb.png", 0}, Case{"rgba.png", 1}, Case{"gray.png", 0}, Case{"palette.png", 0},
        Case{"gray16.png", 1}, Case{"plain.jpg", 2}, Case{"orientation3.jpg", 2},
        Case{"orientation6.jpg", 2}, Case{"orientation8.jpg", 2}, Case{"cmyk.jpg", 2},
        Case{"lossless.webp", 1}, Case{"orientation6.webp", 0}}) {
    std::string stem = c.file;  // "rgb.png" -> "expected_rgb_png.png"
    stem[stem.find('.')] = '_';
    const std::string expected_name = "expected_" + stem + ".png";
    const sdxl::RgbImage decoded = sdxl::read_image(images() / c.file);
    const sdxl::RgbImage expected = sdxl::read_image(images() / expected_name);
    ASSERT_EQ(decoded.width, expected.width) << c.file;
    ASSERT_EQ(decoded.height, expected.height) << c.file;
    EXPECT_LE(max_difference(decoded, expected), c.tolerance) << c.file;
  }
  EXPECT_EQ(sdxl::read_image(images() / "orientation6.jpg").width, 30);
}

// Broken or foreign files give an ImageError naming the file and the problem.
TEST(ImageFile, BrokenFilesNameTheProblem) {
  const auto message = [](const char* file) {
    try {
      sdxl::read_image(images() / file);
    } catch (const sdxl::ImageError& error) {
      return std::string(error.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message("truncated.png").find("truncated.png: corrupt PNG"), std::string::npos)
      << message("truncated.png");
  EXPECT_NE(message("empty.jpg").find("empty.jpg: the image file is empty"), std::string::npos);
  EXPECT_NE(message("not_an_image.webp").find("not a PNG, JPEG or WebP image"), std::string::npos);
  EXPECT_NE(message("missing.png").find("cannot open"), std::string::npos);
  EXPECT_TRUE(sdxl::is_image_file("a/B.JPeG"));
  EXPECT_FALSE(sdxl::is_image_file("a/b.txt"));
}

// The eight EXIF orientations move pixel (x, y) where the standard says; malformed EXIF
// blocks mean orientation 1.
TEST(ImageFile, ExifOrientations) {
  const sdxl::RgbImage source = coordinates(4, 3);
  // Where the source's top-right pixel (3, 0) is shown, per orientation.
  const int64_t shown[9][2] = {{0, 0}, {3, 0}, {0, 0}, {0, 2}, {3, 2},
                               {0, 3}, {2, 3}, {2, 0}, {0, 0}};
  for (int orientation = 1; orientation <= 8; ++orientation) {
    const sdxl::RgbImage turned = sdxl::apply_orientation(source, orientation);
    EXPECT_EQ(turned.width * turned.height, 12) << orientation;
    EXPECT_EQ(turned.width, orientation >= 5 ? 3 : 4) << orientation;
    const auto [x, y] = shown[orientation];
    EXPECT_EQ(turned.at(x, y, 0), 3) << orientation;
    EXPECT_EQ(turned.at(x, y, 1), 0) << orientation;
  }
  const uint8_t no_exif[] = {'E', 'x', 'i', 'f', 0, 0, 'X', 'X', 0, 42, 0, 0, 0, 8};
  EXPECT_EQ(sdxl::exif_orientation(no_exif, sizeof no_exif), 1);
  const uint8_t little[] = {'E', 'x', 'i',  'f',  0, 0, 'I', 'I', 42, 0, 8, 0, 0, 0,
                            1,   0,   0x12, 0x01, 3, 0, 1,   0,   0,  0, 6, 0, 0, 0};
  EXPECT_EQ(sdxl::exif_orientation(little, sizeof little), 6);
  EXPECT_EQ(sdxl::exif_orientation(little, 20), 1);  // cut inside the entry
}

// Area averaging halves a 2x2 checker of 0 and 200 to 100; enlarging keeps a constant image
// constant (Lanczos weights sum to 1); crops take the named part and refuse what does not fit.
TEST(ImageFile, ResizeAndCrop) {
  sdxl::RgbImage checker{4, 4, std::vector<uint8_t>(48)};
  for (int64_t y = 0; y < 4; ++y)
    for (int64_t x = 0; x < 4; ++x)
      for (int c = 0; c < 3; ++c)
        checker.pixels[(y * 4 + x) * 3 + c] = (x + y) % 2 ? 200 : 0;
  const sdxl::RgbImage half = sdxl::resize_image(checker, 2, 2);
  for (uint8_t value : half.pixels)
    EXPECT_EQ(value, 100);
  sdxl::RgbImage flat{3, 2, std::vector<uint8_t>(18, 77)};
  const sdxl::RgbImage large = sdxl::resize_image(flat, 7, 5);
  EXPECT_EQ(large.width, 7);
  for (uint8_t value : large.pixels)
    EXPECT_EQ(value, 77);
  const sdxl::RgbImage part = sdxl::crop_image(coordinates(10, 8), 3, 2, 4, 5);
  EXPECT_EQ(part.at(0, 0, 0), 3);
  EXPECT_EQ(part.at(0, 0, 1), 2);
  EXPECT_EQ(part.at(3, 4, 2), 6 + 6);
  EXPECT_THROW(sdxl::crop_image(coordinates(10, 8), 7, 0, 4, 2), std::invalid_argument);
  EXPECT_THROW(sdxl::resize_image(flat, 0, 3), std::invalid_argument);
}
