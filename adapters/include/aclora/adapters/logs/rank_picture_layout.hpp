#pragma once
/// @file
/// @brief Where everything goes in a rank picture, and its colours (no drawing library needed).

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "aclora/adapters/logs/module_group.hpp"
#include "aclora/adapters/logs/rank_history.hpp"

namespace aclora::logs {

/// Choices for draw_rank_picture().
struct RankPictureOptions {
  /// Group of each module (rows of a group share a label). Empty: default_module_group.
  ModuleGrouping group;
  /// Title above the heatmap. Empty: "kept rank K per module (M modules, R = r)".
  std::string title;
  /// Most pixels the picture may be high (at least 600); the heatmap's rows
  /// shrink (below 1 pixel if need be) to stay within it.
  int max_height = 1400;
};

/// Pixel geometry of a rank picture (origin top left, x to the right, y down).
struct RankPictureLayout {
  int width = 0;            ///< picture width in pixels
  int height = 0;           ///< picture height in pixels
  int map_x = 0;            ///< left edge of the heatmap
  int map_y = 0;            ///< top edge of the heatmap
  int map_width = 0;        ///< columns x column_width
  int map_height = 0;       ///< heatmap height (rows x row_height, rounded)
  int column_width = 0;     ///< pixels per RESTART column (cells are one pixel narrower when >= 4)
  double row_height = 0;    ///< pixels per module row: whole pixels when they fit, else below 1
  int colorbar_x = 0;       ///< left edge of the colour bar
  int colorbar_height = 0;  ///< its height (from map_y down)
  int loss_x = 0;           ///< left edge of the loss plot's frame
  int loss_y = 0;           ///< top edge of the loss plot's frame
  int loss_width = 0;       ///< its width
  int loss_height = 0;      ///< its height
};

namespace detail {
inline constexpr int kLabelColumn = 200;   // group labels left of the heatmap
inline constexpr int kTitleBand = 44;      // title above the heatmap
inline constexpr int kMapAxisBand = 56;    // epoch labels + axis title under the heatmap
inline constexpr int kGapBeforeLoss = 40;  // space for the loss plot's title
inline constexpr int kLossHeight = 240;    // loss plot frame
inline constexpr int kLossAxisBand = 50;   // epoch labels + axis title under the loss plot
inline constexpr int kMinPlotWidth = 480;  // narrowest heatmap area / loss plot
inline constexpr int kMaxRowPixels = 14;
inline constexpr int kColorbarGap = 16;
inline constexpr int kColorbarWidth = 18;
inline constexpr int kColorbarLabels = 60;
}  // namespace detail

/// The layout draw_rank_picture() uses for history: a pure function of the
/// number of modules and restarts and of options.max_height.
inline RankPictureLayout rank_picture_layout(const RankHistory& history,
                                             const RankPictureOptions& options = {}) {
  using namespace detail;
  RankPictureLayout layout;
  const int fixed = kTitleBand + kMapAxisBand + kGapBeforeLoss + kLossHeight + kLossAxisBand;
  const int max_map_height = std::max(options.max_height, 600) - fixed;
  const std::size_t rows = history.modules.size();
  if (rows == 0) {
    layout.row_height = 0;
    layout.map_height = 40;
  } else if (rows <= static_cast<std::size_t>(max_map_height)) {
    layout.row_height = static_cast<double>(
        std::min<std::size_t>(kMaxRowPixels, static_cast<std::size_t>(max_map_height) / rows));
    layout.map_height = static_cast<int>(rows) * static_cast<int>(layout.row_height);
  } else {
    layout.row_height = static_cast<double>(max_map_height) / static_cast<double>(rows);
    layout.map_height = max_map_height;
  }
  const std::size_t columns = history.restarts.size();
  layout.column_width = columns == 0 ? 0 : std::clamp(static_cast<int>(720 / columns), 2, 72);
  layout.map_width = columns == 0 ? kMinPlotWidth : static_cast<int>(columns) * layout.column_width;
  layout.map_x = kLabelColumn;
  layout.map_y = kTitleBand;
  layout.colorbar_x = layout.map_x + layout.map_width + kColorbarGap;
  layout.colorbar_height = std::clamp(layout.map_height, 100, 400);
  layout.loss_x = layout.map_x;
  layout.loss_y = layout.map_y + layout.map_height + kMapAxisBand + kGapBeforeLoss;
  layout.loss_width = std::max(layout.map_width, kMinPlotWidth);
  layout.loss_height = kLossHeight;
  layout.width = std::max(layout.colorbar_x + kColorbarWidth + kColorbarLabels,
                          layout.loss_x + layout.loss_width + 30);
  layout.height = std::max(layout.loss_y + layout.loss_height + kLossAxisBand,
                           layout.map_y + layout.colorbar_height + kMapAxisBand);
  return layout;
}

/// An 8-bit sRGB colour.
struct RgbColor {
  std::uint8_t red = 0;    ///< 0..255
  std::uint8_t green = 0;  ///< 0..255
  std::uint8_t blue = 0;   ///< 0..255
  /// Exact comparison.
  friend bool operator==(const RgbColor&, const RgbColor&) = default;
};

/// The heatmap colour of fraction = K / R_max (clamped to [0, 1]): dark violet
/// for 0 through blue and green to yellow for 1 (a viridis-like scale that stays
/// readable in grey and for colour-blind readers). A cell of the picture has
/// exactly this colour.
inline RgbColor rank_color(double fraction) {
  static constexpr std::array<std::array<double, 3>, 5> kAnchors = {{
      {68, 1, 84},
      {59, 82, 139},
      {33, 145, 140},
      {94, 201, 98},
      {253, 231, 37},
  }};
  if (!(fraction > 0)) {
    fraction = 0;
  }
  fraction = std::min(fraction, 1.0);
  const double position = fraction * static_cast<double>(kAnchors.size() - 1);
  const auto low = std::min(static_cast<std::size_t>(position), kAnchors.size() - 2);
  const double t = position - static_cast<double>(low);
  const auto mix = [&](int channel) {
    const double value = kAnchors[low][static_cast<std::size_t>(channel)] * (1 - t) +
                         kAnchors[low + 1][static_cast<std::size_t>(channel)] * t;
    return static_cast<std::uint8_t>(std::lround(value));
  };
  return {mix(0), mix(1), mix(2)};
}

}  // namespace aclora::logs
