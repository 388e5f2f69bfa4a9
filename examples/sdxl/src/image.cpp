#include "sdxl/image.hpp"

#include <png.h>

#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

namespace sdxl {

torch::Tensor to_rgb8(const torch::Tensor& image) {
  if (image.dim() != 3 || image.size(0) != 3) {
    throw std::invalid_argument("to_rgb8: expected an image [3, H, W]");
  }
  return (image.detach().to(torch::kCPU, torch::kFloat32) / 2 + 0.5)
      .clamp(0, 1)
      .mul(255)
      .round()
      .to(torch::kUInt8)
      .permute({1, 2, 0})
      .contiguous();
}

namespace {

struct FileCloser {
  void operator()(std::FILE* file) const { std::fclose(file); }
};

void write_png_stream(std::FILE* file, const torch::Tensor& rgb8, const std::string& label) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!png || !info) {
    png_destroy_write_struct(&png, nullptr);
    throw std::runtime_error(label + ": cannot start the PNG encoder");
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    throw std::runtime_error(label + ": PNG encoding failed (disk full?)");
  }
  const auto height = static_cast<png_uint_32>(rgb8.size(0));
  const auto width = static_cast<png_uint_32>(rgb8.size(1));
  png_init_io(png, file);
  png_set_IHDR(png, info, width, height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  const auto* pixels = rgb8.data_ptr<std::uint8_t>();
  for (png_uint_32 row = 0; row < height; ++row) {
    png_write_row(png, const_cast<png_bytep>(pixels + static_cast<size_t>(row) * width * 3));
  }
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
}

}  // namespace

void write_png(const std::filesystem::path& path, const torch::Tensor& rgb8) {
  if (rgb8.dim() != 3 || rgb8.size(2) != 3 || rgb8.scalar_type() != torch::kUInt8) {
    throw std::invalid_argument("write_png: expected uint8 [H, W, 3]");
  }
  const torch::Tensor pixels = rgb8.to(torch::kCPU).contiguous();
  const std::string label = path.string();
  std::filesystem::path temporary = path;
  temporary += ".partial";
  {
    std::unique_ptr<std::FILE, FileCloser> file(std::fopen(temporary.c_str(), "wb"));
    if (!file) {
      throw std::runtime_error(label + ": cannot write: " + std::generic_category().message(errno));
    }
    try {
      write_png_stream(file.get(), pixels, label);
      if (std::fflush(file.get()) != 0)
        throw std::runtime_error(label + ": write failed");
    } catch (...) {
      file.reset();
      std::filesystem::remove(temporary);
      throw;
    }
  }
  std::error_code error;
  std::filesystem::rename(temporary, path, error);
  if (error) {
    std::filesystem::remove(temporary);
    throw std::runtime_error(label +
                             ": cannot move the finished image into place: " + error.message());
  }
}

}  // namespace sdxl
