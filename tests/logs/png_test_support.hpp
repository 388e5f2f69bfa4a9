#pragma once
// PNG decoding (libpng) for the picture tests: the pixels a picture really holds.

#include <gtest/gtest.h>
#include <png.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <vector>

#include "aclora/adapters/logs/rank_picture_layout.hpp"

namespace aclora::test {

// A decoded picture: 8-bit RGB, rows top to bottom.
struct DecodedPng {
  int width = 0;
  int height = 0;
  std::vector<std::uint8_t> rgb;

  aclora::logs::RgbColor at(int x, int y) const {
    const std::size_t i = (static_cast<std::size_t>(y) * static_cast<std::size_t>(width) +
                           static_cast<std::size_t>(x)) *
                          3;
    return {rgb[i], rgb[i + 1], rgb[i + 2]};
  }
};

// The picture at `path`; an empty one (and a test failure) when libpng cannot read it.
inline DecodedPng decode_png(const std::filesystem::path& path) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  if (png_image_begin_read_from_file(&image, path.c_str()) == 0) {
    ADD_FAILURE() << "libpng cannot read " << path << ": " << image.message;
    return {};
  }
  image.format = PNG_FORMAT_RGB;
  DecodedPng decoded;
  decoded.width = static_cast<int>(image.width);
  decoded.height = static_cast<int>(image.height);
  decoded.rgb.resize(PNG_IMAGE_SIZE(image));
  if (png_image_finish_read(&image, nullptr, decoded.rgb.data(), 0, nullptr) == 0) {
    ADD_FAILURE() << "libpng cannot decode " << path << ": " << image.message;
  }
  return decoded;
}

}  // namespace aclora::test
