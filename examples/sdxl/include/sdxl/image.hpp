/// @file image.hpp
/// @brief Decoded images to PNG files.
#pragma once

#include <torch/torch.h>

#include <filesystem>

namespace sdxl {

/// Converts a decoded image [3, H, W] in [-1, 1] to 8-bit RGB: round(clamp(x/2 + 0.5) * 255),
/// as the reference pipeline does. @return uint8 [H, W, 3] on the CPU.
torch::Tensor to_rgb8(const torch::Tensor& image);

/// Writes an 8-bit RGB image [H, W, 3] as PNG, through a temporary file renamed into
/// place: on failure nothing is left at `path`. @throws std::runtime_error naming the path.
void write_png(const std::filesystem::path& path, const torch::Tensor& rgb8);

}  // namespace sdxl
