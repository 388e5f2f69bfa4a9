/// @file image_file.hpp
/// Training images: PNG, JPEG and WebP files decoded to 8-bit RGB, transparent pixels
/// composited on white, EXIF orientation applied (JPEG and WebP); resizing as sd-scripts
/// does (area averaging to shrink, Lanczos-3 to enlarge) and cropping.
#pragma once

#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

namespace sdxl {

/// An 8-bit RGB image, rows top to bottom, pixels left to right, 3 bytes each.
struct RgbImage {
  int64_t width = 0;            ///< pixels
  int64_t height = 0;           ///< pixels
  std::vector<uint8_t> pixels;  ///< width * height * 3 bytes

  /// The byte of channel `c` at (x, y).
  uint8_t at(int64_t x, int64_t y, int c) const {
    return pixels[static_cast<std::size_t>((y * width + x) * 3 + c)];
  }
};

/// A file that is not an image we can read (unknown format, truncated, corrupt, empty).
class ImageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// True for the file extensions read_image knows (.png, .jpg, .jpeg, .webp; any case).
bool is_image_file(const std::filesystem::path& path);

/// Decodes a PNG, JPEG or WebP file (the format is recognised from the bytes, not the
/// name). Alpha is composited on white; JPEG / WebP EXIF orientation is applied; 16-bit
/// PNGs are reduced to 8 bits; grey and palette images become RGB.
/// @throws ImageError naming the file and the problem.
RgbImage read_image(const std::filesystem::path& path);

/// The EXIF orientation (1..8) in an EXIF block ("Exif\0\0" + TIFF header + IFD0), or 1
/// when there is none or the block is malformed.
int exif_orientation(const uint8_t* data, std::size_t size);

/// The image turned as EXIF orientation `orientation` (1..8) says it should be shown.
RgbImage apply_orientation(const RgbImage& image, int orientation);

/// Resized to `width` x `height`: area averaging when both sides shrink (or stay), else
/// Lanczos-3 (sd-scripts' defaults, cv2 INTER_AREA and PIL LANCZOS).
/// @throws std::invalid_argument for a non-positive size.
RgbImage resize_image(const RgbImage& image, int64_t width, int64_t height);

/// The `width` x `height` part of the image at (`left`, `top`).
/// @throws std::invalid_argument when it does not lie inside the image.
RgbImage crop_image(const RgbImage& image, int64_t left, int64_t top, int64_t width,
                    int64_t height);

}  // namespace sdxl
