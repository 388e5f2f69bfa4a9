// Tests of logs::draw_line_plot (cairo): the PNG decodes (libpng) to the requested size,
// series are drawn in their colours where the returned layout maps their points, log2 x
// axes tick at powers of two, and every refused input leaves no file behind.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "aclora/adapters/logs/line_plot.hpp"
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

// y = level for x = 0, 0.1, ..., 10 (101 points: a plain line, no markers).
logs::PlotSeries flat_series(std::string label, double level) {
  logs::PlotSeries series;
  series.label = std::move(label);
  for (int i = 0; i <= 100; ++i) {
    series.x.push_back(i / 10.0);
    series.y.push_back(level);
  }
  return series;
}

int pixel(double coordinate) {
  return static_cast<int>(std::floor(coordinate));
}

}  // namespace

// The PNG has the requested size; a horizontal series at y = 2 (line width 2) fully
// covers the pixel row holding pixel_y(2) along its whole length, in its palette colour,
// and its colour appears nowhere else in the plot area (rows 4 or more pixels away).
TEST(LinePlot, HorizontalSeriesIsAHorizontalBandOfItsColour) {
  const ScratchDir dir;
  const auto path = dir / "flat.png";
  logs::PlotOptions options;
  options.title = "two flat lines";
  options.x_label = "step";
  options.y_label = "loss";
  options.width = 640;
  options.height = 400;
  const logs::LinePlotLayout layout =
      logs::draw_line_plot({flat_series("at two", 2), flat_series("at five", 5)}, path, options);
  const DecodedPng png = decode_png(path);
  ASSERT_EQ(png.width, 640);
  ASSERT_EQ(png.height, 400);
  EXPECT_EQ(layout.width, 640);
  EXPECT_EQ(layout.height, 400);

  const logs::RgbColor first = logs::plot_series_color(0);
  const int row = pixel(layout.pixel_y(2));
  const int begin = pixel(layout.pixel_x(0.2));
  const int end = pixel(layout.pixel_x(9.8));
  ASSERT_LT(begin + 100, end);
  for (int x = begin; x <= end; ++x) {
    EXPECT_EQ(png.at(x, row), first) << "x = " << x;
  }
  for (int y = layout.plot_y; y < layout.plot_y + layout.plot_height; ++y) {
    if (std::abs(y - row) < 4) {
      continue;
    }
    for (int x = layout.plot_x; x < layout.plot_x + layout.plot_width; ++x) {
      ASSERT_NE(png.at(x, y), first) << "x = " << x << ", y = " << y;
    }
  }
  EXPECT_EQ(png.at(pixel(layout.pixel_x(5)), pixel(layout.pixel_y(5))), logs::plot_series_color(1));
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"flat.png"});
}

// The legend sits right of the plot area: both series colours appear there, and the
// y range covers the data (both lines lie inside the plot area).
TEST(LinePlot, LegendIsRightOfThePlotArea) {
  const ScratchDir dir;
  const auto path = dir / "legend.png";
  const logs::LinePlotLayout layout =
      logs::draw_line_plot({flat_series("first", 1), flat_series("second", 3)}, path);
  const DecodedPng png = decode_png(path);
  const int right = layout.plot_x + layout.plot_width;
  EXPECT_LT(right + 40, layout.width);
  for (std::size_t s = 0; s < 2; ++s) {
    bool found = false;
    for (int y = 0; y < png.height && !found; ++y) {
      for (int x = right + 2; x < png.width && !found; ++x) {
        found = png.at(x, y) == logs::plot_series_color(s);
      }
    }
    EXPECT_TRUE(found) << "legend entry of series " << s;
  }
  for (const double y : {1.0, 3.0}) {
    EXPECT_GT(layout.pixel_y(y), layout.plot_y);
    EXPECT_LT(layout.pixel_y(y), layout.plot_y + layout.plot_height);
  }
}

// A points_only series puts a marker of its colour on each point (the pixel holding
// (pixel_x, pixel_y) is fully covered), with a vertical error bar above it up to y_high;
// a line's y_low..y_high spread is a translucent band of its colour (bluish, not white,
// not the full colour) between the line and y_high.
TEST(LinePlot, MarkersErrorBarsAndBandsAreWhereTheLayoutSays) {
  const ScratchDir dir;
  const auto path = dir / "points.png";
  logs::PlotSeries line;
  line.label = "with band";
  line.x = {0, 1, 2, 3, 4, 5};
  line.y = {0, 0, 0, 0, 0, 0};
  line.y_low = {-4, -4, -4, -4, -4, -4};
  line.y_high = {4, 4, 4, 4, 4, 4};
  logs::PlotSeries points;
  points.label = "methods";
  points.points_only = true;
  points.x = {1, 2.5, std::numeric_limits<double>::quiet_NaN(), 4};
  points.y = {6, 7, 8, 9};
  points.y_low = {5, 6, 7, 8};
  points.y_high = {8, 9, 10, 11};
  const logs::LinePlotLayout layout = logs::draw_line_plot({line, points}, path);
  const DecodedPng png = decode_png(path);

  const logs::RgbColor point_color = logs::plot_series_color(1);
  for (const auto& [x, y, high] : {std::tuple{1.0, 6.0, 8.0}, {2.5, 7.0, 9.0}, {4.0, 9.0, 11.0}}) {
    EXPECT_EQ(png.at(pixel(layout.pixel_x(x)), pixel(layout.pixel_y(y))), point_color)
        << "x = " << x;
    const int bar_row = pixel((layout.pixel_y(y) + layout.pixel_y(high)) / 2);
    const int bar_column = pixel(layout.pixel_x(x));
    bool bar = false;
    for (int dx = -1; dx <= 1; ++dx) {
      const logs::RgbColor c = png.at(bar_column + dx, bar_row);
      bar = bar || (c.red > c.green && c.red > c.blue && c.red > 150);  // vermillion-ish
    }
    EXPECT_TRUE(bar) << "error bar at x = " << x;
  }

  const logs::RgbColor band = png.at(pixel(layout.pixel_x(0.5)), pixel(layout.pixel_y(2)));
  EXPECT_NE(band, kWhite);
  EXPECT_NE(band, logs::plot_series_color(0));
  EXPECT_GT(band.blue, band.red + 20) << "a blue tint expected";
}

// log2 x: the ticks are the powers of two covering the data (1, 2, ..., 1024), equal
// ratios of x are equal pixel distances, and the markers land on the log2 mapping.
TEST(LinePlot, Log2AxisTicksAtPowersOfTwo) {
  const ScratchDir dir;
  const auto path = dir / "log2.png";
  logs::PlotSeries series;
  series.label = "rank";
  series.points_only = true;
  for (int k = 0; k <= 10; ++k) {
    series.x.push_back(std::exp2(k));
    series.y.push_back(k % 3);
  }
  logs::PlotOptions options;
  options.log2_x = true;
  options.width = 900;
  const logs::LinePlotLayout layout = logs::draw_line_plot({series}, path, options);
  EXPECT_TRUE(layout.log2_x);
  EXPECT_EQ(layout.x_ticks, (std::vector<double>{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}));
  const double octave = layout.pixel_x(2) - layout.pixel_x(1);
  EXPECT_GT(octave, 40);
  EXPECT_NEAR(layout.pixel_x(1024) - layout.pixel_x(512), octave, 1e-9 * layout.width);
  const DecodedPng png = decode_png(path);
  for (std::size_t i = 0; i < series.x.size(); ++i) {
    EXPECT_EQ(png.at(pixel(layout.pixel_x(series.x[i])), pixel(layout.pixel_y(series.y[i]))),
              logs::plot_series_color(0))
        << "x = " << series.x[i];
  }
}

// log2 x refuses a finite x <= 0 (naming the series, index and value) and leaves no
// file; an existing picture at the path is unchanged.
TEST(LinePlot, Log2AxisRefusesNonPositiveX) {
  const ScratchDir dir;
  const auto path = dir / "log2.png";
  logs::draw_line_plot({flat_series("flat", 1)}, path);
  const std::string before = read_file(path);
  logs::PlotSeries series{"zero rank", {0, 1, 2}, {1, 2, 3}, {}, {}, false};
  logs::PlotOptions options;
  options.log2_x = true;
  EXPECT_CONTAINS(logs_error([&] { logs::draw_line_plot({series}, path, options); }),
                  path.string() +
                      ": cannot draw the line plot: series 0 ('zero rank'): x[0] = 0 is not "
                      "positive (the x axis is log2)");
  series.x = {1, -2, 4};
  EXPECT_CONTAINS(logs_error([&] { logs::draw_line_plot({series}, path, options); }),
                  "x[1] = -2 is not positive");
  EXPECT_EQ(read_file(path), before);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"log2.png"});
}

// Every refused input throws logs::Error naming the path and the problem, and leaves
// neither the picture nor a temporary file behind.
TEST(LinePlot, BadInputIsNamedAndLeavesNoFile) {
  const ScratchDir dir;
  const auto path = dir / "bad.png";
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const logs::PlotSeries good = flat_series("good", 1);
  struct Case {
    std::vector<logs::PlotSeries> series;
    logs::PlotOptions options;
    std::string message;
  };
  logs::PlotOptions tiny;
  tiny.width = 100;
  const std::vector<Case> cases = {
      {{}, {}, "cannot draw the line plot: no series"},
      {{good, {"short", {1, 2, 3}, {1, 2}, {}, {}, false}},
       {},
       "series 1 ('short') has 3 x values for 2 y values"},
      {{{"", {1, 2}, {1, 2}, {0}, {3}, false}}, {}, "series 0 has 1 y_low values for 2 y values"},
      {{{"", {1, 2}, {1, 2}, {0, 0}, {3, 3, 3}, false}},
       {},
       "series 0 has 3 y_high values for 2 y values"},
      {{{"one-sided", {1, 2}, {1, 2}, {0, 0}, {}, false}},
       {},
       "has 2 y_low and 0 y_high values: give both"},
      {{{"all nan", {nan, 1}, {1, nan}, {}, {}, false}},
       {},
       "nothing to plot (no point has a finite x and y)"},
      {{good}, tiny, "the size 100x440 is outside 240x160 to 32767x32767"},
  };
  for (const Case& bad : cases) {
    const std::string message =
        logs_error([&] { logs::draw_line_plot(bad.series, path, bad.options); });
    EXPECT_CONTAINS(message, path.string());
    EXPECT_CONTAINS(message, bad.message);
    EXPECT_TRUE(dir.entries().empty()) << bad.message;
  }
}

// A path in a missing folder is an error naming the path; nothing appears.
TEST(LinePlot, UnwritablePathIsNamedAndLeavesNoFile) {
  const ScratchDir dir;
  const auto path = dir / "missing_folder" / "plot.png";
  const std::string message =
      logs_error([&] { logs::draw_line_plot({flat_series("a", 1)}, path); });
  EXPECT_CONTAINS(message, path.string());
  EXPECT_CONTAINS(message, "No such file or directory");
  EXPECT_TRUE(dir.entries().empty());
}

// Non-finite points are skipped, not refused: a series with NaN and infinity among its
// points (in x or y) draws, and its range ignores them: only the finite points 0..4 x 1..3
// span the axes.
TEST(LinePlot, NonFinitePointsAreSkipped) {
  const ScratchDir dir;
  const auto path = dir / "gaps.png";
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  logs::PlotSeries series{"gaps", {0, 1, 2, 3, 4, nan, 5}, {1, inf, 2, nan, 3, 100, -inf}, {}, {},
                          false};
  const logs::LinePlotLayout layout = logs::draw_line_plot({series}, path);
  EXPECT_LT(layout.y_bottom, 1);
  EXPECT_GT(layout.y_bottom, 0);
  EXPECT_GT(layout.y_top, 3);
  EXPECT_LT(layout.y_top, 4);
  EXPECT_LT(layout.x_left, 0);
  EXPECT_GT(layout.x_right, 4);
  EXPECT_LT(layout.x_right, 4.5);
  const DecodedPng png = decode_png(path);
  EXPECT_EQ(png.at(pixel(layout.pixel_x(4)), pixel(layout.pixel_y(3))), logs::plot_series_color(0));
}

// The palette gives 8 distinct colours, none white or near-white (all readable on the
// white background), and repeats after 8.
TEST(LinePlot, PaletteHasEightDistinctColours) {
  std::set<std::tuple<int, int, int>> seen;
  for (std::size_t s = 0; s < 8; ++s) {
    const logs::RgbColor c = logs::plot_series_color(s);
    seen.emplace(c.red, c.green, c.blue);
    EXPECT_LT(c.red + c.green + c.blue, 3 * 235) << "series " << s;
  }
  EXPECT_EQ(seen.size(), 8U);
  EXPECT_EQ(logs::plot_series_color(8), logs::plot_series_color(0));
}
