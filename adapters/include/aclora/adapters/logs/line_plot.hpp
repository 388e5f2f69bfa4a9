#pragma once
/// @file
/// @brief A line plot as a PNG: metric curves with optional spread bands or error bars,
/// points-only series, "nice" axis ticks (linear or log2 x), grid lines, a legend right of
/// the plot, title and axis labels. Needs cairo (CMake target aclora::rank_picture).
///
/// @code
/// aclora::logs::PlotSeries restart{"RESTART", ranks, mean_loss, low, high};
/// aclora::logs::PlotOptions options{"final loss", "rank r", "loss", true};
/// aclora::logs::draw_line_plot({restart}, options, "report/loss_vs_rank.png");
/// @endcode

#include <cairo.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <memory>
#include <numbers>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "aclora/adapters/io/atomic_file.hpp"
#include "aclora/adapters/logs/error.hpp"
#include "aclora/adapters/logs/rank_picture.hpp"
#include "aclora/adapters/logs/rank_picture_layout.hpp"

namespace aclora::logs {

/// One curve (or set of markers) of a line plot.
struct PlotSeries {
  /// Name in the legend (an empty label gets no legend entry).
  std::string label;
  /// Abscissae; same size as y. A point whose x or y is not finite is skipped (a line
  /// breaks there).
  std::vector<double> x;
  /// Ordinates; same size as x.
  std::vector<double> y;
  /// Lower end of the spread at each point (a shaded band for a line, an error bar for
  /// points_only): empty, or the size of y, and then y_high too. Non-finite ends are skipped.
  std::vector<double> y_low;
  /// Upper end of the spread at each point: empty, or the size of y, and then y_low too.
  std::vector<double> y_high;
  /// A marker per point and no line (e.g. a method placed at its mean rank).
  bool points_only = false;
};

/// Choices for draw_line_plot().
struct PlotOptions {
  std::string title;    ///< above the plot; empty: none
  std::string x_label;  ///< under the x axis; empty: none
  std::string y_label;  ///< left of the y axis (reads bottom to top); empty: none
  /// x on a log2 scale (ticks at powers of two, labelled 1, 2, 4, ...); every finite x
  /// must then be positive.
  bool log2_x = false;
  int width = 720;   ///< picture width in pixels, 240 to 32767
  int height = 440;  ///< picture height in pixels, 160 to 32767
};

/// Where the data went in a line plot. Pixel coordinates have their origin at the top
/// left corner, x to the right, y down; pixel (i, j) covers [i, i + 1] x [j, j + 1], so
/// the point drawn for (x, y) lies in pixel (floor(pixel_x(x)), floor(pixel_y(y))).
struct LinePlotLayout {
  int width = 0;                ///< picture width in pixels
  int height = 0;               ///< picture height in pixels
  int plot_x = 0;               ///< left edge of the plot area (the frame)
  int plot_y = 0;               ///< top edge of the plot area
  int plot_width = 0;           ///< width of the plot area
  int plot_height = 0;          ///< height of the plot area
  double x_left = 0;            ///< x value at the left edge of the plot area
  double x_right = 1;           ///< x value at the right edge
  double y_bottom = 0;          ///< y value at the bottom edge
  double y_top = 1;             ///< y value at the top edge
  bool log2_x = false;          ///< x mapped by log2 (x_left and x_right are then positive)
  std::vector<double> x_ticks;  ///< x values of the labelled ticks (grid lines), ascending
  std::vector<double> y_ticks;  ///< y values of the labelled ticks (grid lines), ascending

  /// The horizontal pixel coordinate of abscissa x.
  double pixel_x(double x) const {
    const auto scale = [this](double value) { return log2_x ? std::log2(value) : value; };
    return plot_x + (scale(x) - scale(x_left)) / (scale(x_right) - scale(x_left)) * plot_width;
  }
  /// The vertical pixel coordinate of ordinate y.
  double pixel_y(double y) const { return plot_y + (y_top - y) / (y_top - y_bottom) * plot_height; }
};

/// The colour of series number index (0-based) in a line plot: the Okabe-Ito palette
/// (readable for colour-blind readers), strongest colours first, repeating after 8
/// (series 8 and later are drawn dashed). Lines and markers have exactly this colour.
inline RgbColor plot_series_color(std::size_t index) {
  static constexpr std::array<RgbColor, 8> kOkabeIto = {{
      {0, 114, 178},    // blue
      {213, 94, 0},     // vermillion
      {0, 158, 115},    // bluish green
      {230, 159, 0},    // orange
      {204, 121, 167},  // reddish purple
      {86, 180, 233},   // sky blue
      {0, 0, 0},        // black
      {240, 228, 66},   // yellow
  }};
  return kOkabeIto[index % kOkabeIto.size()];
}

namespace detail {

inline constexpr int kMinPlotPictureWidth = 240;
inline constexpr int kMinPlotPictureHeight = 160;
inline constexpr int kMaxPictureSide = 32767;  // cairo's limit for image surfaces

// A text context on a 1x1 scratch surface, to measure labels before the picture exists.
class TextMeasure {
 public:
  TextMeasure()
      : surface_(cairo_image_surface_create(CAIRO_FORMAT_RGB24, 1, 1)),
        context_(cairo_create(surface_.get())),
        canvas_(context_.get()) {}
  const Canvas& canvas() const { return canvas_; }

 private:
  std::unique_ptr<cairo_surface_t, CairoSurfaceDeleter> surface_;
  std::unique_ptr<cairo_t, CairoContextDeleter> context_;
  Canvas canvas_;
};

inline std::string series_name(const std::vector<PlotSeries>& series, std::size_t index) {
  std::string name = "series " + std::to_string(index);
  if (!series[index].label.empty()) {
    name += " ('" + series[index].label + "')";
  }
  return name;
}

inline bool finite_point(const PlotSeries& series, std::size_t i) {
  return std::isfinite(series.x[i]) && std::isfinite(series.y[i]);
}

inline void check_series(const std::vector<PlotSeries>& series, const PlotOptions& options,
                         const std::string& where) {
  if (options.width < kMinPlotPictureWidth || options.height < kMinPlotPictureHeight ||
      options.width > kMaxPictureSide || options.height > kMaxPictureSide) {
    throw Error(where + ": the size " + std::to_string(options.width) + "x" +
                std::to_string(options.height) + " is outside " +
                std::to_string(kMinPlotPictureWidth) + "x" + std::to_string(kMinPlotPictureHeight) +
                " to " + std::to_string(kMaxPictureSide) + "x" + std::to_string(kMaxPictureSide));
  }
  if (series.empty()) {
    throw Error(where + ": no series");
  }
  bool any_finite = false;
  for (std::size_t s = 0; s < series.size(); ++s) {
    const PlotSeries& one = series[s];
    const std::string name = where + ": " + series_name(series, s);
    if (one.x.size() != one.y.size()) {
      throw Error(name + " has " + std::to_string(one.x.size()) + " x values for " +
                  std::to_string(one.y.size()) + " y values");
    }
    if (one.y_low.empty() != one.y_high.empty()) {
      throw Error(name + " has " + std::to_string(one.y_low.size()) + " y_low and " +
                  std::to_string(one.y_high.size()) +
                  " y_high values: give both (as many as y values) or neither");
    }
    for (const auto& [spread, spread_name] :
         {std::pair{&one.y_low, "y_low"}, std::pair{&one.y_high, "y_high"}}) {
      if (!spread->empty() && spread->size() != one.y.size()) {
        throw Error(name + " has " + std::to_string(spread->size()) + " " + spread_name +
                    " values for " + std::to_string(one.y.size()) + " y values");
      }
    }
    for (std::size_t i = 0; i < one.x.size(); ++i) {
      if (options.log2_x && std::isfinite(one.x[i]) && one.x[i] <= 0) {
        char value[32];
        std::snprintf(value, sizeof value, "%g", one.x[i]);
        throw Error(name + ": x[" + std::to_string(i) + "] = " + value +
                    " is not positive (the x axis is log2)");
      }
      any_finite = any_finite || finite_point(one, i);
    }
  }
  if (!any_finite) {
    throw Error(where + ": nothing to plot (no point has a finite x and y)");
  }
}

inline std::string log2_tick_label(double value) {
  const double exponent = std::log2(value);
  char buffer[48];
  if (exponent == std::round(exponent) && (exponent < -4 || exponent > 16)) {
    std::snprintf(buffer, sizeof buffer, "2^%d", static_cast<int>(exponent));
  } else {
    std::snprintf(buffer, sizeof buffer, "%.6g", value);
  }
  return buffer;
}

// Ticks at powers of two, every k-th exponent with the smallest k that keeps the labels
// apart, or nice linear ticks when the range holds fewer than two powers of two.
inline std::vector<double> log2_ticks(double left, double right, double plot_width,
                                      const Canvas& measure) {
  const double first = std::ceil(std::log2(left) - 1e-9);
  const double last = std::floor(std::log2(right) + 1e-9);
  std::vector<double> ticks;
  if (last - first < 1) {
    for (const double tick :
         nice_ticks(left, right, std::max(2, static_cast<int>(plot_width / 80)))) {
      if (tick > 0) {
        ticks.push_back(tick);
      }
    }
    return ticks;
  }
  measure.font(10);
  double widest = 0;
  for (double exponent = first; exponent <= last; ++exponent) {
    widest = std::max(widest, measure.text_width(log2_tick_label(std::exp2(exponent))));
  }
  const double octave = plot_width / (std::log2(right) - std::log2(left));
  const double every = std::max(1.0, std::ceil((widest + 14) / octave));
  for (double exponent = first; exponent <= last; exponent += every) {
    ticks.push_back(std::exp2(exponent));
  }
  return ticks;
}

struct DataRange {
  double x_low = std::numeric_limits<double>::infinity();
  double x_high = -std::numeric_limits<double>::infinity();
  double y_low = std::numeric_limits<double>::infinity();
  double y_high = -std::numeric_limits<double>::infinity();

  void add_y(double y) {
    if (std::isfinite(y)) {
      y_low = std::min(y_low, y);
      y_high = std::max(y_high, y);
    }
  }
};

inline DataRange data_range(const std::vector<PlotSeries>& series, bool log2_x) {
  DataRange range;
  for (const PlotSeries& one : series) {
    for (std::size_t i = 0; i < one.x.size(); ++i) {
      if (!finite_point(one, i)) {
        continue;
      }
      const double x = log2_x ? std::log2(one.x[i]) : one.x[i];
      range.x_low = std::min(range.x_low, x);
      range.x_high = std::max(range.x_high, x);
      range.add_y(one.y[i]);
      if (!one.y_low.empty()) {
        range.add_y(one.y_low[i]);
        range.add_y(one.y_high[i]);
      }
    }
  }
  return range;
}

// Widens [low, high] by fraction of its span on both sides (by a unit-ish amount when
// the span is 0).
inline std::pair<double, double> padded(double low, double high, double fraction) {
  const double span = high - low;
  const double pad = span > 0 ? span * fraction : std::max(std::abs(high) * 0.1, 1e-3);
  return {low - pad, high + pad};
}

inline constexpr int kLegendSample = 26;  // line sample in a legend entry
inline constexpr int kLegendRow = 20;     // legend entry height

inline LinePlotLayout line_plot_layout(const std::vector<PlotSeries>& series,
                                       const PlotOptions& options, const Canvas& measure,
                                       const std::string& where) {
  LinePlotLayout layout;
  layout.width = options.width;
  layout.height = options.height;
  layout.log2_x = options.log2_x;
  const DataRange range = data_range(series, options.log2_x);
  const auto [x_left, x_right] = padded(range.x_low, range.x_high, 0.03);
  const auto [y_bottom, y_top] = padded(range.y_low, range.y_high, 0.05);
  if (!std::isfinite(x_right - x_left) || !std::isfinite(y_top - y_bottom)) {
    throw Error(where + ": the data's range is too wide to plot");
  }
  layout.x_left = options.log2_x ? std::exp2(x_left) : x_left;
  layout.x_right = options.log2_x ? std::exp2(x_right) : x_right;
  layout.y_bottom = y_bottom;
  layout.y_top = y_top;

  layout.plot_y = options.title.empty() ? 16 : 40;
  const int bottom_band = options.x_label.empty() ? 30 : 50;
  layout.plot_height = options.height - layout.plot_y - bottom_band;
  layout.y_ticks = nice_ticks(y_bottom, y_top, std::max(2, layout.plot_height / 45));
  const double y_step = layout.y_ticks.size() > 1 ? layout.y_ticks[1] - layout.y_ticks[0] : 1;
  measure.font(10);
  double tick_width = 0;
  for (const double tick : layout.y_ticks) {
    tick_width = std::max(tick_width, measure.text_width(tick_label(tick, y_step)));
  }
  layout.plot_x = static_cast<int>(std::ceil(tick_width)) + (options.y_label.empty() ? 14 : 34);

  measure.font(11);
  double legend_text = 0;
  for (const PlotSeries& one : series) {
    if (!one.label.empty()) {
      legend_text = std::max(legend_text, measure.text_width(one.label));
    }
  }
  const int right_band =
      legend_text > 0 ? static_cast<int>(std::min(std::ceil(legend_text) + kLegendSample + 30,
                                                  std::floor(options.width * 0.35)))
                      : 16;
  layout.plot_width = options.width - layout.plot_x - right_band;

  layout.x_ticks = options.log2_x
                       ? log2_ticks(layout.x_left, layout.x_right, layout.plot_width, measure)
                       : nice_ticks(x_left, x_right, std::max(2, layout.plot_width / 80));
  return layout;
}

inline void draw_axes(const Canvas& canvas, const LinePlotLayout& layout,
                      const PlotOptions& options) {
  const double left = layout.plot_x;
  const double top = layout.plot_y;
  const double right = left + layout.plot_width;
  const double bottom = top + layout.plot_height;
  constexpr RgbColor kGrid{232, 232, 232};
  canvas.font(10);
  const double y_step = layout.y_ticks.size() > 1 ? layout.y_ticks[1] - layout.y_ticks[0] : 1;
  for (const double tick : layout.y_ticks) {
    const double y = std::floor(layout.pixel_y(tick)) + 0.5;
    canvas.line(left, y, right, y, kGrid);
    canvas.line(left - 4, y, left, y, kGrey);
    canvas.text(tick_label(tick, y_step), left - 6, y + 3.5, Align::kRight, kBlack);
  }
  const double x_step = layout.x_ticks.size() > 1 ? layout.x_ticks[1] - layout.x_ticks[0] : 1;
  for (const double tick : layout.x_ticks) {
    const double x = std::floor(layout.pixel_x(tick)) + 0.5;
    canvas.line(x, top, x, bottom, kGrid);
    canvas.line(x, bottom, x, bottom + 4, kGrey);
    canvas.text(layout.log2_x ? log2_tick_label(tick) : tick_label(tick, x_step), x, bottom + 16,
                Align::kCenter, kBlack);
  }
  canvas.outline(left, top, layout.plot_width, layout.plot_height, kGrey);
  if (!options.title.empty()) {
    canvas.font(14, true);
    canvas.text(options.title, left + layout.plot_width / 2.0, 26, Align::kCenter, kBlack,
                layout.width - 20);
  }
  canvas.font(12);
  if (!options.x_label.empty()) {
    canvas.text(options.x_label, left + layout.plot_width / 2.0, bottom + 38, Align::kCenter,
                kBlack, layout.plot_width);
  }
  if (!options.y_label.empty()) {
    canvas.vertical_text(options.y_label, 14, top + layout.plot_height / 2.0, kBlack);
  }
}

inline void set_rgba(cairo_t* cr, RgbColor c, double alpha) {
  cairo_set_source_rgba(cr, c.red / 255.0, c.green / 255.0, c.blue / 255.0, alpha);
}

// A filled marker centred on (x, y): circle, square, diamond or triangle by series.
inline void draw_marker(cairo_t* cr, std::size_t series_index, double x, double y, double size) {
  switch (series_index % 4) {
    case 0:
      cairo_arc(cr, x, y, size, 0, 2 * std::numbers::pi);
      break;
    case 1:
      cairo_rectangle(cr, x - size * 0.9, y - size * 0.9, size * 1.8, size * 1.8);
      break;
    case 2:
      cairo_move_to(cr, x, y - size * 1.25);
      cairo_line_to(cr, x + size * 1.25, y);
      cairo_line_to(cr, x, y + size * 1.25);
      cairo_line_to(cr, x - size * 1.25, y);
      cairo_close_path(cr);
      break;
    default:
      cairo_move_to(cr, x, y - size * 1.3);
      cairo_line_to(cr, x + size * 1.25, y + size * 0.9);
      cairo_line_to(cr, x - size * 1.25, y + size * 0.9);
      cairo_close_path(cr);
      break;
  }
  cairo_fill(cr);
}

inline bool has_spread(const PlotSeries& one, std::size_t i) {
  return !one.y_low.empty() && std::isfinite(one.y_low[i]) && std::isfinite(one.y_high[i]);
}

// Shaded band between y_low and y_high, broken where a point or its spread is missing.
inline void draw_band(cairo_t* cr, const LinePlotLayout& layout, const PlotSeries& one,
                      RgbColor color) {
  std::vector<std::size_t> run;
  const auto flush = [&] {
    if (run.size() >= 2) {
      cairo_move_to(cr, layout.pixel_x(one.x[run[0]]), layout.pixel_y(one.y_high[run[0]]));
      for (const std::size_t i : run) {
        cairo_line_to(cr, layout.pixel_x(one.x[i]), layout.pixel_y(one.y_high[i]));
      }
      for (auto i = run.rbegin(); i != run.rend(); ++i) {
        cairo_line_to(cr, layout.pixel_x(one.x[*i]), layout.pixel_y(one.y_low[*i]));
      }
      cairo_close_path(cr);
      set_rgba(cr, color, 0.2);
      cairo_fill(cr);
    } else if (run.size() == 1) {  // a lone point: an error bar instead
      const double x = layout.pixel_x(one.x[run[0]]);
      set_rgba(cr, color, 1);
      cairo_set_line_width(cr, 1.2);
      cairo_move_to(cr, x, layout.pixel_y(one.y_low[run[0]]));
      cairo_line_to(cr, x, layout.pixel_y(one.y_high[run[0]]));
      cairo_stroke(cr);
    }
    run.clear();
  };
  for (std::size_t i = 0; i < one.x.size(); ++i) {
    if (finite_point(one, i) && has_spread(one, i)) {
      run.push_back(i);
    } else {
      flush();
    }
  }
  flush();
}

inline void draw_error_bars(cairo_t* cr, const LinePlotLayout& layout, const PlotSeries& one,
                            RgbColor color) {
  set_rgba(cr, color, 1);
  cairo_set_line_width(cr, 1.2);
  for (std::size_t i = 0; i < one.x.size(); ++i) {
    if (!finite_point(one, i) || !has_spread(one, i)) {
      continue;
    }
    const double x = layout.pixel_x(one.x[i]);
    const double low = layout.pixel_y(one.y_low[i]);
    const double high = layout.pixel_y(one.y_high[i]);
    cairo_move_to(cr, x, low);
    cairo_line_to(cr, x, high);
    for (const double end : {low, high}) {
      cairo_move_to(cr, x - 4, end);
      cairo_line_to(cr, x + 4, end);
    }
    cairo_stroke(cr);
  }
}

inline void draw_line(cairo_t* cr, const LinePlotLayout& layout, const PlotSeries& one,
                      std::size_t index) {
  set_rgba(cr, plot_series_color(index), 1);
  cairo_set_line_width(cr, 2);
  const double dash[] = {7, 4};
  cairo_set_dash(cr, dash, index >= 8 ? 2 : 0, 0);
  bool drawing = false;
  for (std::size_t i = 0; i < one.x.size(); ++i) {
    if (!finite_point(one, i)) {
      drawing = false;
      continue;
    }
    const double x = layout.pixel_x(one.x[i]);
    const double y = layout.pixel_y(one.y[i]);
    if (drawing) {
      cairo_line_to(cr, x, y);
    } else {
      cairo_move_to(cr, x, y);
      drawing = true;
    }
  }
  cairo_stroke(cr);
  cairo_set_dash(cr, nullptr, 0, 0);
}

inline constexpr std::size_t kMostPointsWithMarkers = 40;  // lines with more: no markers

// Markers: always for points_only, for a line when it has few finite points.
inline bool shows_markers(const PlotSeries& one) {
  std::size_t finite = 0;
  for (std::size_t i = 0; i < one.x.size(); ++i) {
    if (finite_point(one, i)) {
      ++finite;
    }
  }
  return one.points_only || finite <= kMostPointsWithMarkers;
}

inline void draw_markers(cairo_t* cr, const LinePlotLayout& layout, const PlotSeries& one,
                         std::size_t index) {
  if (!shows_markers(one)) {
    return;
  }
  set_rgba(cr, plot_series_color(index), 1);
  for (std::size_t i = 0; i < one.x.size(); ++i) {
    if (finite_point(one, i)) {
      draw_marker(cr, index, layout.pixel_x(one.x[i]), layout.pixel_y(one.y[i]),
                  one.points_only ? 4 : 2.6);
    }
  }
}

inline void draw_legend(const Canvas& canvas, const LinePlotLayout& layout,
                        const std::vector<PlotSeries>& series) {
  cairo_t* cr = canvas.context();
  const double left = layout.plot_x + layout.plot_width + 14;
  const double text_width = layout.width - left - kLegendSample - 12;
  double y = layout.plot_y + 10;
  const double last_row = layout.plot_y + layout.plot_height - kLegendRow;
  canvas.font(11);
  std::size_t shown = 0;
  std::size_t labelled = 0;
  for (std::size_t s = 0; s < series.size(); ++s) {
    if (series[s].label.empty()) {
      continue;
    }
    ++labelled;
    if (y > last_row) {
      continue;
    }
    const RgbColor color = plot_series_color(s);
    const double middle = y + kLegendRow / 2.0;
    if (!series[s].points_only) {
      set_rgba(cr, color, 1);
      cairo_set_line_width(cr, 2);
      const double dash[] = {7, 4};
      cairo_set_dash(cr, dash, s >= 8 ? 2 : 0, 0);
      cairo_move_to(cr, left, middle);
      cairo_line_to(cr, left + kLegendSample, middle);
      cairo_stroke(cr);
      cairo_set_dash(cr, nullptr, 0, 0);
    }
    if (shows_markers(series[s])) {
      set_rgba(cr, color, 1);
      draw_marker(cr, s, left + kLegendSample / 2.0, middle, series[s].points_only ? 4 : 2.6);
    }
    canvas.text(series[s].label, left + kLegendSample + 6, middle + 4, Align::kLeft, kBlack,
                text_width);
    y += kLegendRow;
    ++shown;
  }
  if (shown < labelled) {
    canvas.text("... " + std::to_string(labelled - shown) + " more", left, y + kLegendRow / 2.0 + 4,
                Align::kLeft, kGrey, layout.width - left - 4);
  }
}

}  // namespace detail

/// Draws series as a line plot in a PNG at png and returns where the data went.
/// Series number s has colour plot_series_color(s); a series is a line (with a marker
/// per point when it has at most 40 finite points) and a shaded band from y_low to
/// y_high, or, when points_only, a marker per point with error bars from y_low to
/// y_high. Points whose x or y is not finite are skipped (a line breaks there). Both
/// axes span the finite data and spreads with a small margin; the legend is right of
/// the plot area. The file is written atomically (temporary file in the same folder,
/// then rename): on any error nothing is left behind and an existing file at png is
/// unchanged.
/// @throws Error naming png and the problem: no series; a series whose x and y sizes
/// differ, or whose y_low or y_high is neither empty nor the size of y (or only one of
/// them given); a finite x that is not positive when options.log2_x; no point with a
/// finite x and y; a size outside 240x160 to 32767x32767; a folder that is missing or
/// not writable; a drawing or write failure.
inline LinePlotLayout draw_line_plot(const std::vector<PlotSeries>& series,
                                     const std::filesystem::path& png,
                                     const PlotOptions& options = {}) {
  const std::string where = png.string() + ": cannot draw the line plot";
  detail::check_series(series, options, where);
  const detail::TextMeasure measure;
  const LinePlotLayout layout = detail::line_plot_layout(series, options, measure.canvas(), where);
  detail::write_picture(png, "line plot", layout.width, layout.height,
                        [&](const detail::Canvas& canvas, cairo_surface_t*) {
                          detail::draw_axes(canvas, layout, options);
                          cairo_t* cr = canvas.context();
                          cairo_save(cr);
                          cairo_rectangle(cr, layout.plot_x, layout.plot_y, layout.plot_width,
                                          layout.plot_height);
                          cairo_clip(cr);
                          for (std::size_t s = 0; s < series.size(); ++s) {
                            if (!series[s].y_low.empty() && !series[s].points_only) {
                              detail::draw_band(cr, layout, series[s], plot_series_color(s));
                            }
                          }
                          for (std::size_t s = 0; s < series.size(); ++s) {
                            if (!series[s].points_only) {
                              detail::draw_line(cr, layout, series[s], s);
                            }
                          }
                          for (std::size_t s = 0; s < series.size(); ++s) {
                            if (!series[s].y_low.empty() && series[s].points_only) {
                              detail::draw_error_bars(cr, layout, series[s], plot_series_color(s));
                            }
                          }
                          for (std::size_t s = 0; s < series.size(); ++s) {
                            detail::draw_markers(cr, layout, series[s], s);
                          }
                          cairo_restore(cr);
                          detail::draw_legend(canvas, layout, series);
                        });
  return layout;
}

}  // namespace aclora::logs
