#pragma once
/// @file
/// @brief A grid of small grayscale images (e.g. generated 28x28 samples) as a PNG, a
/// text label left of each row and an optional title. Needs cairo (CMake target
/// aclora::rank_picture); takes plain floats (no LibTorch).
///
/// @code
/// // samples: 4 methods x 8 samples of 28x28 values in [0, 1], row-major
/// aclora::logs::ImageGridOptions options{"samples after 20 epochs", {"full", "LoRA r=4",
///                                        "RESTART", "AC-LoRA"}};
/// aclora::logs::draw_image_grid(samples, {4, 8, 28, 28}, "report/samples.png", options);
/// @endcode

#include <cairo.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "aclora/adapters/logs/error.hpp"
#include "aclora/adapters/logs/line_plot.hpp"
#include "aclora/adapters/logs/rank_picture.hpp"

namespace aclora::logs {

/// How the floats given to draw_image_grid() are laid out: rows x columns images of
/// image_height x image_width pixels, row-major as [rows][columns][image_height][image_width].
struct ImageGridShape {
  int rows = 0;          ///< rows of images (at least 1)
  int columns = 0;       ///< images per row (at least 1)
  int image_height = 0;  ///< pixels per image, vertically (at least 1)
  int image_width = 0;   ///< pixels per image, horizontally (at least 1)
};

/// Choices for draw_image_grid().
struct ImageGridOptions {
  std::string title;                    ///< above the grid; empty: none
  std::vector<std::string> row_labels;  ///< left of each row: none, or one per row
  int scale = 2;                        ///< picture pixels per image pixel, 1 to 64
  int gap = 2;                          ///< white pixels between images, 0 to 64
};

/// Where the images went in an image grid (pixels, origin top left, y down).
struct ImageGridLayout {
  int width = 0;        ///< picture width
  int height = 0;       ///< picture height
  int grid_x = 0;       ///< left edge of the first column of images
  int grid_y = 0;       ///< top edge of the first row of images
  int cell_width = 0;   ///< image_width x scale
  int cell_height = 0;  ///< image_height x scale
  int gap = 0;          ///< pixels between neighbouring images

  /// Left edge of the images in column (0-based).
  int image_x(int column) const { return grid_x + column * (cell_width + gap); }
  /// Top edge of the images in row (0-based).
  int image_y(int row) const { return grid_y + row * (cell_height + gap); }
};

/// The 8-bit grey drawn for an image value: round(255 v) for v clamped to [0, 1]
/// (0 black, 1 white). Not-a-number has no grey: it is drawn red (255, 0, 0).
inline RgbColor image_grid_color(float value) {
  if (std::isnan(value)) {
    return {255, 0, 0};
  }
  const auto grey = static_cast<std::uint8_t>(
      std::lround(std::clamp(static_cast<double>(value), 0.0, 1.0) * 255));
  return {grey, grey, grey};
}

namespace detail {

inline constexpr int kImageGridMargin = 10;
inline constexpr int kMostImageGridScale = 64;

inline void check_image_grid(std::span<const float> pixels, const ImageGridShape& shape,
                             const ImageGridOptions& options, const std::string& where) {
  if (shape.rows < 1 || shape.columns < 1 || shape.image_height < 1 || shape.image_width < 1) {
    throw Error(where + ": the shape " + std::to_string(shape.rows) + " rows x " +
                std::to_string(shape.columns) + " columns of " +
                std::to_string(shape.image_height) + "x" + std::to_string(shape.image_width) +
                " images has an empty side");
  }
  if (options.scale < 1 || options.scale > kMostImageGridScale || options.gap < 0 ||
      options.gap > kMostImageGridScale) {
    throw Error(where + ": scale " + std::to_string(options.scale) + " and gap " +
                std::to_string(options.gap) + " must lie in 1..64 and 0..64");
  }
  const std::size_t expected =
      static_cast<std::size_t>(shape.rows) * static_cast<std::size_t>(shape.columns) *
      static_cast<std::size_t>(shape.image_height) * static_cast<std::size_t>(shape.image_width);
  if (pixels.size() != expected) {
    throw Error(where + ": " + std::to_string(pixels.size()) + " values for " +
                std::to_string(shape.rows) + " x " + std::to_string(shape.columns) + " images of " +
                std::to_string(shape.image_height) + "x" + std::to_string(shape.image_width) +
                " (" + std::to_string(expected) + " values)");
  }
  if (!options.row_labels.empty() &&
      options.row_labels.size() != static_cast<std::size_t>(shape.rows)) {
    throw Error(where + ": " + std::to_string(options.row_labels.size()) + " row labels for " +
                std::to_string(shape.rows) + " rows (give one per row or none)");
  }
}

inline constexpr int kMostRowLabelWidth = 320;

inline ImageGridLayout image_grid_layout(const ImageGridShape& shape,
                                         const ImageGridOptions& options, const Canvas& measure,
                                         const std::string& where) {
  ImageGridLayout layout;
  layout.cell_width = shape.image_width * options.scale;
  layout.cell_height = shape.image_height * options.scale;
  layout.gap = options.gap;
  measure.font(12);
  double label_width = 0;
  for (const std::string& label : options.row_labels) {
    label_width = std::max(label_width, measure.text_width(label));
  }
  layout.grid_x =
      kImageGridMargin +
      (label_width > 0
           ? static_cast<int>(std::ceil(std::min<double>(label_width, kMostRowLabelWidth))) + 10
           : 0);
  layout.grid_y = options.title.empty() ? kImageGridMargin : 36;
  const std::int64_t grid_width = static_cast<std::int64_t>(shape.columns) * layout.cell_width +
                                  static_cast<std::int64_t>(shape.columns - 1) * layout.gap;
  const std::int64_t grid_height = static_cast<std::int64_t>(shape.rows) * layout.cell_height +
                                   static_cast<std::int64_t>(shape.rows - 1) * layout.gap;
  measure.font(14, true);
  const double title_width = options.title.empty() ? 0 : measure.text_width(options.title);
  const std::int64_t width = std::max<std::int64_t>(
      layout.grid_x + grid_width + kImageGridMargin,
      static_cast<std::int64_t>(std::ceil(std::min(title_width, 1000.0))) + 2 * kImageGridMargin);
  const std::int64_t height = layout.grid_y + grid_height + kImageGridMargin;
  if (width > kMaxPictureSide || height > kMaxPictureSide) {
    throw Error(where + ": the picture would be " + std::to_string(width) + "x" +
                std::to_string(height) + " pixels (at most " + std::to_string(kMaxPictureSide) +
                " a side): use fewer images or a smaller scale");
  }
  layout.width = static_cast<int>(width);
  layout.height = static_cast<int>(height);
  return layout;
}

// Copies the images into the surface's pixels, each image pixel a scale x scale square.
inline void paint_images(cairo_surface_t* surface, std::span<const float> pixels,
                         const ImageGridShape& shape, const ImageGridLayout& layout, int scale) {
  cairo_surface_flush(surface);
  unsigned char* data = cairo_image_surface_get_data(surface);
  const int stride = cairo_image_surface_get_stride(surface);
  const std::size_t image_size =
      static_cast<std::size_t>(shape.image_height) * static_cast<std::size_t>(shape.image_width);
  for (int row = 0; row < shape.rows; ++row) {
    for (int column = 0; column < shape.columns; ++column) {
      const std::size_t image =
          static_cast<std::size_t>(row) * static_cast<std::size_t>(shape.columns) +
          static_cast<std::size_t>(column);
      const float* values = pixels.data() + image * image_size;
      for (int y = 0; y < layout.cell_height; ++y) {
        auto* line = reinterpret_cast<std::uint32_t*>(
            data + static_cast<std::ptrdiff_t>(layout.image_y(row) + y) * stride);
        const float* source_row = values + static_cast<std::size_t>(y / scale) *
                                               static_cast<std::size_t>(shape.image_width);
        for (int x = 0; x < layout.cell_width; ++x) {
          const RgbColor c = image_grid_color(source_row[x / scale]);
          // CAIRO_FORMAT_RGB24: one native-endian 32-bit word per pixel, 0x00RRGGBB.
          line[layout.image_x(column) + x] =
              (std::uint32_t{c.red} << 16) | (std::uint32_t{c.green} << 8) | std::uint32_t{c.blue};
        }
      }
    }
  }
  cairo_surface_mark_dirty(surface);
}

}  // namespace detail

/// Draws pixels (laid out as shape says; values in [0, 1], clamped, drawn as
/// image_grid_color) as a grid of images in a PNG at png and returns where they went:
/// the image in row r and column c fills the cell_width x cell_height square at
/// (image_x(c), image_y(r)), each of its pixels a scale x scale block, with white gaps
/// between images. Row labels are right-aligned left of their row (cut with "..." past
/// 320 pixels); the title is above. The file is written atomically (temporary file in
/// the same folder, then rename): on any error nothing is left behind and an existing
/// file at png is unchanged.
/// @throws Error naming png and the problem: a side of shape below 1; a count of values
/// that does not match shape; a count of row labels that is neither 0 nor shape.rows; a
/// scale outside 1..64 or a gap outside 0..64; a picture over 32767 pixels a side; a
/// folder that is missing or not writable; a drawing or write failure.
inline ImageGridLayout draw_image_grid(std::span<const float> pixels, const ImageGridShape& shape,
                                       const std::filesystem::path& png,
                                       const ImageGridOptions& options = {}) {
  const std::string where = png.string() + ": cannot draw the image grid";
  detail::check_image_grid(pixels, shape, options, where);
  const detail::TextMeasure measure;
  const ImageGridLayout layout = detail::image_grid_layout(shape, options, measure.canvas(), where);
  detail::write_picture(
      png, "image grid", layout.width, layout.height,
      [&](const detail::Canvas& canvas, cairo_surface_t* surface) {
        if (!options.title.empty()) {
          canvas.font(14, true);
          canvas.text(options.title, detail::kImageGridMargin, 24, detail::Align::kLeft,
                      detail::kBlack, layout.width - 2 * detail::kImageGridMargin);
        }
        canvas.font(12);
        for (std::size_t row = 0; row < options.row_labels.size(); ++row) {
          const double middle = layout.image_y(static_cast<int>(row)) + layout.cell_height / 2.0;
          canvas.text(options.row_labels[row], layout.grid_x - 10, middle + 4,
                      detail::Align::kRight, detail::kBlack, detail::kMostRowLabelWidth);
        }
        cairo_surface_flush(surface);
        detail::paint_images(surface, pixels, shape, layout, options.scale);
      });
  return layout;
}

}  // namespace aclora::logs
