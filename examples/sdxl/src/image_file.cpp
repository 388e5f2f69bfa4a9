// Training images: decoding (libpng, libjpeg, libwebp), EXIF orientation, resizing, cropping.
#include "sdxl/image_file.hpp"

#include <jpeglib.h>
#include <png.h>
#include <webp/decode.h>
#include <webp/demux.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <numbers>

namespace sdxl {
namespace {

std::vector<uint8_t> read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw ImageError(path.string() + ": cannot open the image file");
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), {});
  if (bytes.empty())
    throw ImageError(path.string() + ": the image file is empty");
  return bytes;
}

// Composites straight (non-premultiplied) RGBA on white.
RgbImage from_rgba(const uint8_t* rgba, int64_t width, int64_t height) {
  RgbImage image{width, height, std::vector<uint8_t>(static_cast<std::size_t>(width * height * 3))};
  for (int64_t i = 0; i < width * height; ++i) {
    const unsigned alpha = rgba[4 * i + 3];
    for (int c = 0; c < 3; ++c) {
      const unsigned value = rgba[4 * i + c];
      image.pixels[static_cast<std::size_t>(3 * i + c)] =
          static_cast<uint8_t>((value * alpha + 255u * (255u - alpha) + 127u) / 255u);
    }
  }
  return image;
}

RgbImage decode_png(const std::vector<uint8_t>& bytes, const std::string& label) {
  png_image png{};
  png.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&png, bytes.data(), bytes.size()))
    throw ImageError(label + ": corrupt PNG: " + png.message);
  // 16-bit files are read as they are (libpng would take them as linear light and re-encode
  // them to sRGB); 8-bit values are then v / 257, rounded, as viewers show them.
  const bool sixteen = (png.format & PNG_FORMAT_FLAG_LINEAR) != 0;
  png.format = sixteen ? PNG_FORMAT_LINEAR_RGB_ALPHA : PNG_FORMAT_RGBA;
  std::vector<uint8_t> buffer(PNG_IMAGE_SIZE(png));
  if (!png_image_finish_read(&png, nullptr, buffer.data(), 0, nullptr)) {
    const std::string message = png.message;
    png_image_free(&png);
    throw ImageError(label + ": corrupt PNG: " + message);
  }
  if (!sixteen)
    return from_rgba(buffer.data(), png.width, png.height);
  std::vector<uint8_t> rgba(static_cast<std::size_t>(png.width) * png.height * 4);
  const auto* words = reinterpret_cast<const uint16_t*>(buffer.data());
  for (std::size_t i = 0; i < rgba.size(); ++i)
    rgba[i] = static_cast<uint8_t>((static_cast<unsigned>(words[i]) * 255u + 32767u) / 65535u);
  return from_rgba(rgba.data(), png.width, png.height);
}

struct JpegErrorManager {
  jpeg_error_mgr base;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_fail(j_common_ptr info) {
  auto* manager = reinterpret_cast<JpegErrorManager*>(info->err);
  info->err->format_message(info, manager->message);
  std::longjmp(manager->jump, 1);
}

// What decoding writes, on the heap: locals changed between setjmp and longjmp would have
// indeterminate values (C's setjmp rule), so only this object's memory changes.
struct JpegState {
  jpeg_decompress_struct info{};
  JpegErrorManager errors{};
  RgbImage image;
  std::vector<uint8_t> row;
  int orientation = 1;
};

RgbImage decode_jpeg(const std::vector<uint8_t>& bytes, const std::string& label) {
  const auto state = std::make_unique<JpegState>();
  jpeg_decompress_struct& info = state->info;
  state->info.err = jpeg_std_error(&state->errors.base);
  state->errors.base.error_exit = jpeg_fail;
  state->errors.base.output_message = [](j_common_ptr) {};  // warnings stay quiet
  if (setjmp(state->errors.jump)) {
    jpeg_destroy_decompress(&state->info);
    throw ImageError(label + ": corrupt JPEG: " + state->errors.message);
  }
  jpeg_create_decompress(&info);
  jpeg_mem_src(&info, bytes.data(), static_cast<unsigned long>(bytes.size()));
  jpeg_save_markers(&info, JPEG_APP0 + 1, 0xFFFF);
  jpeg_read_header(&info, TRUE);
  for (jpeg_saved_marker_ptr marker = info.marker_list; marker; marker = marker->next) {
    if (marker->marker == JPEG_APP0 + 1)
      state->orientation = exif_orientation(marker->data, marker->data_length);
  }
  const bool cmyk = info.jpeg_color_space == JCS_CMYK || info.jpeg_color_space == JCS_YCCK;
  info.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
  const bool inverted_cmyk = cmyk && info.saw_Adobe_marker;
  jpeg_start_decompress(&info);
  RgbImage& image = state->image;
  image.width = info.output_width;
  image.height = info.output_height;
  image.pixels.resize(static_cast<std::size_t>(image.width * image.height * 3));
  state->row.resize(static_cast<std::size_t>(image.width) * info.output_components);
  while (info.output_scanline < info.output_height) {
    JSAMPROW rows[1] = {state->row.data()};
    const auto y = static_cast<int64_t>(info.output_scanline);
    jpeg_read_scanlines(&info, rows, 1);
    uint8_t* out = image.pixels.data() + y * image.width * 3;
    if (!cmyk) {
      std::memcpy(out, state->row.data(), state->row.size());
      continue;
    }
    for (int64_t x = 0; x < image.width; ++x) {
      const uint8_t* p = state->row.data() + 4 * x;
      for (int c = 0; c < 3; ++c) {
        // Adobe writes CMYK inverted: R = C * K / 255; plain CMYK: R = (255 - C)(255 - K) / 255.
        const unsigned ink = inverted_cmyk ? p[c] : 255u - p[c];
        const unsigned black = inverted_cmyk ? p[3] : 255u - p[3];
        out[3 * x + c] = static_cast<uint8_t>((ink * black + 127u) / 255u);
      }
    }
  }
  jpeg_finish_decompress(&info);
  jpeg_destroy_decompress(&info);
  return apply_orientation(image, state->orientation);
}

RgbImage decode_webp(const std::vector<uint8_t>& bytes, const std::string& label) {
  int width = 0;
  int height = 0;
  std::unique_ptr<uint8_t, void (*)(void*)> rgba(
      WebPDecodeRGBA(bytes.data(), bytes.size(), &width, &height), WebPFree);
  if (!rgba)
    throw ImageError(label + ": corrupt or unsupported WebP (animated WebP is not supported)");
  RgbImage image = from_rgba(rgba.get(), width, height);
  int orientation = 1;
  WebPData data{bytes.data(), bytes.size()};
  if (WebPDemuxer* demuxer = WebPDemux(&data)) {
    WebPChunkIterator chunk;
    if (WebPDemuxGetChunk(demuxer, "EXIF", 1, &chunk)) {
      orientation = exif_orientation(chunk.chunk.bytes, chunk.chunk.size);
      WebPDemuxReleaseChunkIterator(&chunk);
    }
    WebPDemuxDelete(demuxer);
  }
  return apply_orientation(image, orientation);
}

uint16_t read16(const uint8_t* p, bool little) {
  return little ? static_cast<uint16_t>(p[0] | (p[1] << 8))
                : static_cast<uint16_t>((p[0] << 8) | p[1]);
}

uint32_t read32(const uint8_t* p, bool little) {
  return little ? static_cast<uint32_t>(p[0] | (p[1] << 8) | (p[2] << 16) | (uint32_t(p[3]) << 24))
                : static_cast<uint32_t>((uint32_t(p[0]) << 24) | (p[1] << 16) | (p[2] << 8) | p[3]);
}

// Separable resampling: each output index gets taps (first input index and weights).
struct Taps {
  std::vector<int64_t> first;
  std::vector<std::vector<double>> weights;
};

// Area averaging: output pixel i covers input [i * s, (i + 1) * s), s = in / out >= 1.
Taps area_taps(int64_t in, int64_t out) {
  Taps taps;
  const double scale = static_cast<double>(in) / static_cast<double>(out);
  for (int64_t i = 0; i < out; ++i) {
    const double begin = static_cast<double>(i) * scale;
    const double end = std::min(static_cast<double>(in), begin + scale);
    const auto first = static_cast<int64_t>(std::floor(begin));
    std::vector<double> weights;
    for (int64_t x = first; static_cast<double>(x) < end && x < in; ++x) {
      const double overlap =
          std::min(end, static_cast<double>(x + 1)) - std::max(begin, static_cast<double>(x));
      weights.push_back(overlap / scale);
    }
    taps.first.push_back(first);
    taps.weights.push_back(std::move(weights));
  }
  return taps;
}

double lanczos3(double x) {
  if (x == 0.0)
    return 1.0;
  if (std::abs(x) >= 3.0)
    return 0.0;
  const double pi_x = std::numbers::pi * x;
  return 3.0 * std::sin(pi_x) * std::sin(pi_x / 3.0) / (pi_x * pi_x);
}

// Lanczos-3 as PIL computes it (support widened by the scale when shrinking).
Taps lanczos_taps(int64_t in, int64_t out) {
  Taps taps;
  const double scale = static_cast<double>(in) / static_cast<double>(out);
  const double filter_scale = std::max(scale, 1.0);
  const double support = 3.0 * filter_scale;
  for (int64_t i = 0; i < out; ++i) {
    const double center = (static_cast<double>(i) + 0.5) * scale;
    const auto first = std::max<int64_t>(static_cast<int64_t>(center - support + 0.5), 0);
    const auto last = std::min<int64_t>(static_cast<int64_t>(center + support + 0.5), in);
    std::vector<double> weights;
    double total = 0.0;
    for (int64_t x = first; x < last; ++x) {
      const double w = lanczos3((static_cast<double>(x) - center + 0.5) / filter_scale);
      weights.push_back(w);
      total += w;
    }
    for (double& w : weights)
      w = total != 0.0 ? w / total : 0.0;
    taps.first.push_back(first);
    taps.weights.push_back(std::move(weights));
  }
  return taps;
}

// One pass along x (horizontal) or y over float planes [h][w][3].
std::vector<float> resample(const std::vector<float>& in, int64_t width, int64_t height,
                            const Taps& taps, bool horizontal) {
  const int64_t out_width = horizontal ? static_cast<int64_t>(taps.first.size()) : width;
  const int64_t out_height = horizontal ? height : static_cast<int64_t>(taps.first.size());
  std::vector<float> out(static_cast<std::size_t>(out_width * out_height * 3));
  for (int64_t y = 0; y < out_height; ++y) {
    for (int64_t x = 0; x < out_width; ++x) {
      const int64_t i = horizontal ? x : y;
      for (int c = 0; c < 3; ++c) {
        double sum = 0.0;
        for (std::size_t k = 0; k < taps.weights[i].size(); ++k) {
          const int64_t source = taps.first[i] + static_cast<int64_t>(k);
          const int64_t sx = horizontal ? source : x;
          const int64_t sy = horizontal ? y : source;
          sum += taps.weights[i][k] * in[static_cast<std::size_t>((sy * width + sx) * 3 + c)];
        }
        out[static_cast<std::size_t>((y * out_width + x) * 3 + c)] = static_cast<float>(sum);
      }
    }
  }
  return out;
}

}  // namespace

bool is_image_file(const std::filesystem::path& path) {
  std::string extension = path.extension().string();
  std::transform(extension.begin(), extension.end(), extension.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return extension == ".png" || extension == ".jpg" || extension == ".jpeg" || extension == ".webp";
}

RgbImage read_image(const std::filesystem::path& path) {
  const std::string label = path.string();
  const std::vector<uint8_t> bytes = read_bytes(path);
  static constexpr uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (bytes.size() >= 8 && std::equal(kPng, kPng + 8, bytes.begin()))
    return decode_png(bytes, label);
  if (bytes.size() >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF)
    return decode_jpeg(bytes, label);
  if (bytes.size() >= 12 && std::memcmp(bytes.data(), "RIFF", 4) == 0 &&
      std::memcmp(bytes.data() + 8, "WEBP", 4) == 0)
    return decode_webp(bytes, label);
  throw ImageError(label + ": not a PNG, JPEG or WebP image");
}

int exif_orientation(const uint8_t* data, std::size_t size) {
  // JPEG's APP1 starts with "Exif\0\0"; WebP's EXIF chunk holds the TIFF structure alone:
  // byte order ("II" / "MM"), 42, offset of IFD0, then the IFDs.
  if (size >= 6 && std::memcmp(data, "Exif\0\0", 6) == 0) {
    data += 6;
    size -= 6;
  }
  if (size < 8)
    return 1;
  const uint8_t* tiff = data;
  const std::size_t length = size;
  const bool little = tiff[0] == 'I' && tiff[1] == 'I';
  if (!little && !(tiff[0] == 'M' && tiff[1] == 'M'))
    return 1;
  if (read16(tiff + 2, little) != 42)
    return 1;
  const uint32_t ifd = read32(tiff + 4, little);
  if (ifd > length || length - ifd < 2)
    return 1;
  const uint16_t entries = read16(tiff + ifd, little);
  for (uint32_t e = 0; e < entries; ++e) {
    const std::size_t at = ifd + 2 + 12 * static_cast<std::size_t>(e);
    if (at + 12 > length)
      return 1;
    if (read16(tiff + at, little) == 0x0112) {  // Orientation, SHORT
      const uint16_t value = read16(tiff + at + 8, little);
      return value >= 1 && value <= 8 ? value : 1;
    }
  }
  return 1;
}

RgbImage apply_orientation(const RgbImage& image, int orientation) {
  if (orientation <= 1 || orientation > 8)
    return image;
  const bool swap = orientation >= 5;  // 5..8 exchange width and height
  RgbImage out{swap ? image.height : image.width, swap ? image.width : image.height, {}};
  out.pixels.resize(image.pixels.size());
  for (int64_t y = 0; y < out.height; ++y) {
    for (int64_t x = 0; x < out.width; ++x) {
      // The source pixel shown at (x, y).
      int64_t sx = x, sy = y;
      switch (orientation) {
        case 2:
          sx = image.width - 1 - x;
          break;
        case 3:
          sx = image.width - 1 - x;
          sy = image.height - 1 - y;
          break;
        case 4:
          sy = image.height - 1 - y;
          break;
        case 5:
          sx = y;
          sy = x;
          break;
        case 6:
          sx = y;
          sy = image.height - 1 - x;
          break;
        case 7:
          sx = image.width - 1 - y;
          sy = image.height - 1 - x;
          break;
        case 8:
          sx = image.width - 1 - y;
          sy = x;
          break;
        default:
          break;
      }
      std::memcpy(&out.pixels[static_cast<std::size_t>((y * out.width + x) * 3)],
                  &image.pixels[static_cast<std::size_t>((sy * image.width + sx) * 3)], 3);
    }
  }
  return out;
}

RgbImage resize_image(const RgbImage& image, int64_t width, int64_t height) {
  if (width <= 0 || height <= 0)
    throw std::invalid_argument("resize to a non-positive size " + std::to_string(width) + "x" +
                                std::to_string(height));
  if (width == image.width && height == image.height)
    return image;
  const bool shrink = width <= image.width && height <= image.height;
  std::vector<float> plane(image.pixels.begin(), image.pixels.end());
  const Taps horizontal = shrink ? area_taps(image.width, width) : lanczos_taps(image.width, width);
  const Taps vertical =
      shrink ? area_taps(image.height, height) : lanczos_taps(image.height, height);
  plane = resample(plane, image.width, image.height, horizontal, true);
  plane = resample(plane, width, image.height, vertical, false);
  RgbImage out{width, height, std::vector<uint8_t>(plane.size())};
  for (std::size_t i = 0; i < plane.size(); ++i)
    out.pixels[i] = static_cast<uint8_t>(std::clamp(std::lround(plane[i]), 0L, 255L));
  return out;
}

RgbImage crop_image(const RgbImage& image, int64_t left, int64_t top, int64_t width,
                    int64_t height) {
  if (left < 0 || top < 0 || width <= 0 || height <= 0 || left + width > image.width ||
      top + height > image.height) {
    throw std::invalid_argument("crop " + std::to_string(width) + "x" + std::to_string(height) +
                                " at (" + std::to_string(left) + ", " + std::to_string(top) +
                                ") does not fit a " + std::to_string(image.width) + "x" +
                                std::to_string(image.height) + " image");
  }
  RgbImage out{width, height, std::vector<uint8_t>(static_cast<std::size_t>(width * height * 3))};
  for (int64_t y = 0; y < height; ++y) {
    std::memcpy(&out.pixels[static_cast<std::size_t>(y * width * 3)],
                &image.pixels[static_cast<std::size_t>(((top + y) * image.width + left) * 3)],
                static_cast<std::size_t>(width * 3));
  }
  return out;
}

}  // namespace sdxl
