#pragma once
/// @file
/// @brief The rank picture: a PNG heatmap of K per module over the RESTARTs, rows
/// grouped by block, a colour bar for K from 0 to R, and the loss curve below with
/// the restart epochs marked. Needs cairo (CMake target aclora::rank_picture).
///
/// @code
/// aclora::logs::RankHistory history;
/// history.add_restart(report, epoch);              // after each RESTART
/// history.epoch_losses.emplace_back(epoch, loss);  // after each epoch
/// aclora::logs::draw_rank_picture(history, run_dir / "ranks.png");
/// @endcode

#include <cairo.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <memory>
#include <numbers>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "aclora/adapters/io/atomic_file.hpp"
#include "aclora/adapters/logs/error.hpp"
#include "aclora/adapters/logs/module_group.hpp"
#include "aclora/adapters/logs/rank_history.hpp"
#include "aclora/adapters/logs/rank_picture_layout.hpp"

namespace aclora::logs {

namespace detail {

struct CairoSurfaceDeleter {
  void operator()(cairo_surface_t* surface) const { cairo_surface_destroy(surface); }
};
struct CairoContextDeleter {
  void operator()(cairo_t* context) const { cairo_destroy(context); }
};

enum class Align { kLeft, kCenter, kRight };

class Canvas {
 public:
  explicit Canvas(cairo_t* context) : cr_(context) {}

  void color(RgbColor c) const {
    cairo_set_source_rgb(cr_, c.red / 255.0, c.green / 255.0, c.blue / 255.0);
  }
  void fill_rect(double x, double y, double width, double height, RgbColor c) const {
    color(c);
    cairo_rectangle(cr_, x, y, width, height);
    cairo_fill(cr_);
  }
  void outline(double x, double y, double width, double height, RgbColor c) const {
    color(c);
    cairo_set_line_width(cr_, 1);
    cairo_rectangle(cr_, x - 0.5, y - 0.5, width + 1, height + 1);
    cairo_stroke(cr_);
  }
  void line(double x0, double y0, double x1, double y1, RgbColor c, double width = 1) const {
    color(c);
    cairo_set_line_width(cr_, width);
    cairo_move_to(cr_, x0, y0);
    cairo_line_to(cr_, x1, y1);
    cairo_stroke(cr_);
  }
  void font(double size, bool bold = false) const {
    cairo_select_font_face(cr_, "sans-serif", CAIRO_FONT_SLANT_NORMAL,
                           bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr_, size);
  }
  double text_width(const std::string& text) const {
    cairo_text_extents_t extents{};
    cairo_text_extents(cr_, text.c_str(), &extents);
    return extents.x_advance;
  }
  // Text whose baseline is at y, aligned at x; cut with "..." to at most max_width.
  void text(const std::string& text, double x, double y, Align align, RgbColor c,
            double max_width = std::numeric_limits<double>::infinity()) const {
    const std::string shown = fit(text, max_width);
    const double width = text_width(shown);
    const double left =
        align == Align::kLeft ? x : (align == Align::kCenter ? x - width / 2 : x - width);
    color(c);
    cairo_move_to(cr_, left, y);
    cairo_show_text(cr_, shown.c_str());
  }
  // Text turned a quarter left (reads bottom to top), centred on (x, y).
  void vertical_text(const std::string& text, double x, double y, RgbColor c) const {
    cairo_save(cr_);
    cairo_translate(cr_, x, y);
    cairo_rotate(cr_, -std::numbers::pi / 2);
    this->text(text, 0, 0, Align::kCenter, c);
    cairo_restore(cr_);
  }
  cairo_t* context() const { return cr_; }

 private:
  std::string fit(const std::string& text, double max_width) const {
    if (text_width(text) <= max_width) {
      return text;
    }
    std::string cut = text;
    while (!cut.empty()) {
      cut.pop_back();
      while (!cut.empty() && (static_cast<unsigned char>(cut.back()) & 0xC0U) == 0x80U) {
        cut.pop_back();  // never split a UTF-8 character
      }
      if (!cut.empty() && (static_cast<unsigned char>(cut.back()) & 0x80U) != 0) {
        cut.pop_back();  // the lead byte of the character just cut
      }
      if (text_width(cut + "...") <= max_width) {
        return cut + "...";
      }
    }
    return "";
  }

  cairo_t* cr_;
};

inline constexpr RgbColor kBlack{0, 0, 0};
inline constexpr RgbColor kGrey{110, 110, 110};
inline constexpr RgbColor kLightGrey{200, 200, 200};
inline constexpr RgbColor kBand{238, 238, 242};
inline constexpr RgbColor kWhite{255, 255, 255};
inline constexpr RgbColor kLossBlue{31, 99, 180};
inline constexpr RgbColor kRestartOrange{230, 120, 20};

// Round tick positions (1, 2 or 5 times a power of ten) covering [low, high].
inline std::vector<double> nice_ticks(double low, double high, int target, double min_step = 0) {
  std::vector<double> ticks;
  if (!(high > low) || !std::isfinite(low) || !std::isfinite(high)) {
    ticks.push_back(low);
    return ticks;
  }
  const double rough = (high - low) / std::max(target, 1);
  const double power = std::pow(10.0, std::floor(std::log10(rough)));
  double step = power;
  for (const double factor : {1.0, 2.0, 5.0, 10.0}) {
    step = factor * power;
    if (step >= rough) {
      break;
    }
  }
  step = std::max(step, min_step);
  for (double tick = std::ceil(low / step - 1e-9) * step; tick <= high + step * 1e-9;
       tick += step) {
    ticks.push_back(std::abs(tick) < step * 1e-9 ? 0.0 : tick);
  }
  return ticks;
}

inline std::string tick_label(double value, double step) {
  char buffer[48];
  if (std::abs(value) >= 1e6 || (value != 0 && std::abs(value) < 1e-4)) {
    std::snprintf(buffer, sizeof buffer, "%.3g", value);
  } else {
    const int decimals =
        step > 0 ? std::clamp(static_cast<int>(-std::floor(std::log10(step) + 1e-9)), 0, 8) : 0;
    std::snprintf(buffer, sizeof buffer, "%.*f", decimals, value);
  }
  return buffer;
}

struct GroupRun {
  std::string name;
  std::size_t begin;
  std::size_t end;
};

inline std::vector<GroupRun> group_runs(const std::vector<std::string>& modules,
                                        const ModuleGrouping& group) {
  std::vector<GroupRun> runs;
  for (std::size_t i = 0; i < modules.size(); ++i) {
    std::string name = group ? group(modules[i]) : default_module_group(modules[i]);
    if (runs.empty() || runs.back().name != name) {
      runs.push_back(GroupRun{std::move(name), i, i + 1});
    } else {
      runs.back().end = i + 1;
    }
  }
  return runs;
}

inline void check_history(const RankHistory& history, const std::string& label) {
  const std::size_t rows = history.modules.size();
  if (!history.allocated_ranks.empty() && history.allocated_ranks.size() != rows) {
    throw Error(label + ": cannot draw the rank picture: " +
                std::to_string(history.allocated_ranks.size()) + " allocated ranks for " +
                std::to_string(rows) + " modules");
  }
  for (std::size_t j = 0; j < history.restarts.size(); ++j) {
    const RestartColumn& column = history.restarts[j];
    const std::string where = label + ": cannot draw the rank picture: restart " +
                              std::to_string(j) + " (epoch " + std::to_string(column.epoch) + ")";
    if (column.ranks.size() != rows) {
      throw Error(where + " has " + std::to_string(column.ranks.size()) + " ranks for " +
                  std::to_string(rows) + " modules");
    }
    for (std::size_t i = 0; i < rows; ++i) {
      if (column.ranks[i] > history.allocated_rank_of(i)) {
        throw Error(where + ": module '" + history.modules[i] +
                    "' keeps K = " + std::to_string(column.ranks[i]) +
                    " of only R = " + std::to_string(history.allocated_rank_of(i)));
      }
    }
  }
}

inline void draw_heatmap(const Canvas& canvas, const RankHistory& history,
                         const RankPictureLayout& layout, const RankPictureOptions& options) {
  const double scale = static_cast<double>(history.rank_scale());
  const std::size_t rows = history.modules.size();
  const std::string title = !options.title.empty()
                                ? options.title
                                : "kept rank K per module (" + std::to_string(rows) +
                                      " modules, R = " + std::to_string(history.rank_scale()) + ")";
  canvas.font(15, true);
  canvas.text(title, 12, 28, Align::kLeft, kBlack);

  // Group bands and labels in the column left of the heatmap.
  const std::vector<GroupRun> runs = group_runs(history.modules, options.group);
  canvas.font(11);
  double last_label_y = -1e9;
  for (std::size_t g = 0; g < runs.size(); ++g) {
    const double top = layout.map_y + static_cast<double>(runs[g].begin) * layout.row_height;
    const double bottom = layout.map_y + static_cast<double>(runs[g].end) * layout.row_height;
    if (g % 2 == 1) {
      canvas.fill_rect(24, top, layout.map_x - 28, bottom - top, kBand);
    }
    const double middle = (top + bottom) / 2;
    if (middle - last_label_y >= 12) {
      canvas.text(runs[g].name, layout.map_x - 8, middle + 4, Align::kRight, kBlack,
                  layout.map_x - 36);
      last_label_y = middle;
    }
  }
  canvas.font(12);
  canvas.vertical_text("modules, grouped by block", 14, layout.map_y + layout.map_height / 2.0,
                       kGrey);

  // Cells: one per module and RESTART, a 1-pixel white gap between wide columns.
  if (rows == 0 || history.restarts.empty()) {
    canvas.font(12);
    canvas.text(rows == 0 ? "no modules" : "no restart yet", layout.map_x + layout.map_width / 2.0,
                layout.map_y + layout.map_height / 2.0 + 4, Align::kCenter, kGrey);
  }
  const double cell_width =
      layout.column_width >= 4 ? layout.column_width - 1 : layout.column_width;
  for (std::size_t j = 0; j < history.restarts.size(); ++j) {
    const double x = layout.map_x + static_cast<double>(j) * layout.column_width;
    for (std::size_t i = 0; i < rows; ++i) {
      const double y = layout.map_y + static_cast<double>(i) * layout.row_height;
      const double fraction = static_cast<double>(history.restarts[j].ranks[i]) / scale;
      canvas.fill_rect(x, y, cell_width, layout.row_height, rank_color(fraction));
    }
  }
  canvas.outline(layout.map_x, layout.map_y, layout.map_width, layout.map_height, kLightGrey);

  // Restart epochs under the columns (every k-th when the columns are narrow).
  canvas.font(10);
  const int every = layout.column_width > 0
                        ? std::max(1, (28 + layout.column_width - 1) / layout.column_width)
                        : 1;
  const double labels_y = layout.map_y + layout.map_height + 15;
  for (std::size_t j = 0; j < history.restarts.size(); j += static_cast<std::size_t>(every)) {
    const double x = layout.map_x + (static_cast<double>(j) + 0.5) * layout.column_width;
    canvas.text(std::to_string(history.restarts[j].epoch), x, labels_y, Align::kCenter, kBlack);
  }
  canvas.font(12);
  canvas.text("restart epoch", layout.map_x + layout.map_width / 2.0,
              layout.map_y + layout.map_height + 40, Align::kCenter, kGrey);

  // Colour bar: K from 0 (bottom) to R (top).
  const int bar_height = layout.colorbar_height;
  for (int y = 0; y < bar_height; ++y) {
    const double fraction = bar_height > 1 ? 1.0 - static_cast<double>(y) / (bar_height - 1) : 1;
    canvas.fill_rect(layout.colorbar_x, layout.map_y + y, kColorbarWidth, 1, rank_color(fraction));
  }
  canvas.outline(layout.colorbar_x, layout.map_y, kColorbarWidth, bar_height, kLightGrey);
  canvas.font(12, true);
  canvas.text("K", layout.colorbar_x + kColorbarWidth / 2.0, layout.map_y - 6, Align::kCenter,
              kBlack);
  canvas.font(10);
  const double top_value = scale;
  std::vector<double> ticks = nice_ticks(0, top_value, 4, 1);
  const auto tick_y = [&](double value) {
    return layout.map_y + (1 - value / top_value) * (bar_height - 1) + 0.5;
  };
  for (const double tick : ticks) {
    if (tick < top_value && tick_y(tick) - tick_y(top_value) < 12) {
      continue;  // too close to the R label
    }
    if (tick <= top_value) {
      canvas.text(tick_label(tick, 1), layout.colorbar_x + kColorbarWidth + 5, tick_y(tick) + 4,
                  Align::kLeft, kBlack);
    }
  }
  canvas.text(tick_label(top_value, 1) + " = R", layout.colorbar_x + kColorbarWidth + 5,
              tick_y(top_value) + 4, Align::kLeft, kBlack);
}

inline void draw_loss_curve(const Canvas& canvas, const RankHistory& history,
                            const RankPictureLayout& layout) {
  const double left = layout.loss_x;
  const double top = layout.loss_y;
  const double width = layout.loss_width;
  const double height = layout.loss_height;
  canvas.font(13, true);
  canvas.text("mean loss per epoch (restarts: dashed lines)", left, top - 12, Align::kLeft, kBlack);
  canvas.fill_rect(left, top, width, height, kWhite);
  canvas.outline(left, top, width, height, kLightGrey);

  double low_loss = std::numeric_limits<double>::infinity();
  double high_loss = -low_loss;
  double first_epoch = low_loss;
  double last_epoch = -low_loss;
  for (const auto& [epoch, loss] : history.epoch_losses) {
    if (std::isfinite(loss)) {
      low_loss = std::min(low_loss, loss);
      high_loss = std::max(high_loss, loss);
      first_epoch = std::min(first_epoch, static_cast<double>(epoch));
      last_epoch = std::max(last_epoch, static_cast<double>(epoch));
    }
  }
  if (!std::isfinite(low_loss)) {
    canvas.font(12);
    canvas.text("no loss recorded yet", left + width / 2, top + height / 2, Align::kCenter, kGrey);
    return;
  }
  for (const RestartColumn& column : history.restarts) {
    first_epoch = std::min(first_epoch, static_cast<double>(column.epoch));
    last_epoch = std::max(last_epoch, static_cast<double>(column.epoch));
  }
  if (last_epoch <= first_epoch) {
    first_epoch -= 1;
    last_epoch += 1;
  }
  const double spread = high_loss - low_loss;
  const double pad = spread > 0 ? spread * 0.06 : std::max(std::abs(high_loss) * 0.1, 1e-3);
  low_loss -= pad;
  high_loss += pad;
  const double inner = 8;  // keep points off the frame
  const auto x_of = [&](double epoch) {
    return left + inner + (epoch - first_epoch) / (last_epoch - first_epoch) * (width - 2 * inner);
  };
  const auto y_of = [&](double loss) {
    return top + (high_loss - loss) / (high_loss - low_loss) * height;
  };

  // Axes: loss ticks on the left, epoch ticks below.
  canvas.font(10);
  const std::vector<double> loss_ticks = nice_ticks(low_loss, high_loss, 5);
  const double loss_step = loss_ticks.size() > 1 ? loss_ticks[1] - loss_ticks[0] : 1;
  for (const double tick : loss_ticks) {
    const double y = y_of(tick);
    canvas.line(left, y, left + width, y, RgbColor{236, 236, 236});
    canvas.text(tick_label(tick, loss_step), left - 6, y + 4, Align::kRight, kBlack);
  }
  const std::vector<double> epoch_ticks = nice_ticks(first_epoch, last_epoch, 10, 1);
  for (const double tick : epoch_ticks) {
    const double x = x_of(tick);
    canvas.line(x, top + height, x, top + height + 4, kGrey);
    canvas.text(tick_label(tick, 1), x, top + height + 16, Align::kCenter, kBlack);
  }
  canvas.font(12);
  canvas.text("epoch", left + width / 2, top + height + 38, Align::kCenter, kGrey);

  // Restart epochs.
  cairo_t* cr = canvas.context();
  const double dash[] = {5, 4};
  cairo_set_dash(cr, dash, 2, 0);
  for (const RestartColumn& column : history.restarts) {
    const double x = std::round(x_of(column.epoch)) + 0.5;
    canvas.line(x, top, x, top + height, kRestartOrange, 1);
  }
  cairo_set_dash(cr, nullptr, 0, 0);

  // The curve (broken where a loss is not finite), dots when there are few points.
  canvas.color(kLossBlue);
  cairo_set_line_width(cr, 1.6);
  bool drawing = false;
  for (const auto& [epoch, loss] : history.epoch_losses) {
    if (!std::isfinite(loss)) {
      drawing = false;
      continue;
    }
    if (drawing) {
      cairo_line_to(cr, x_of(epoch), y_of(loss));
    } else {
      cairo_move_to(cr, x_of(epoch), y_of(loss));
      drawing = true;
    }
  }
  cairo_stroke(cr);
  if (history.epoch_losses.size() <= 120) {
    for (const auto& [epoch, loss] : history.epoch_losses) {
      if (std::isfinite(loss)) {
        cairo_arc(cr, x_of(epoch), y_of(loss), 2.2, 0, 2 * std::numbers::pi);
        cairo_fill(cr);
      }
    }
  }
}

inline cairo_status_t write_png_bytes(void* closure, const unsigned char* data,
                                      unsigned int length) {
  auto* sink = static_cast<std::pair<io::AtomicFile*, std::string>*>(closure);
  try {
    sink->first->write(data, length);
  } catch (const io::Error& error) {
    sink->second = error.what();
    return CAIRO_STATUS_WRITE_ERROR;
  }
  return CAIRO_STATUS_SUCCESS;
}

// Paints a width x height picture (white background) with draw(canvas, surface) and
// writes it as a PNG at path atomically. what names the picture in error messages.
template <typename Draw>
void write_picture(const std::filesystem::path& path, const std::string& what, int width,
                   int height, Draw&& draw) {
  const std::string label = path.string();
  std::optional<io::AtomicFile> file;
  try {
    file.emplace(path, label);
  } catch (const io::Error& error) {
    throw Error(error.what());
  }
  const std::unique_ptr<cairo_surface_t, CairoSurfaceDeleter> surface(
      cairo_image_surface_create(CAIRO_FORMAT_RGB24, width, height));
  if (cairo_surface_status(surface.get()) != CAIRO_STATUS_SUCCESS) {
    throw Error(label + ": cannot create a " + std::to_string(width) + "x" +
                std::to_string(height) + " " + what + ": " +
                cairo_status_to_string(cairo_surface_status(surface.get())));
  }
  const std::unique_ptr<cairo_t, CairoContextDeleter> context(cairo_create(surface.get()));
  const Canvas canvas(context.get());
  canvas.fill_rect(0, 0, width, height, kWhite);
  draw(canvas, surface.get());
  if (cairo_status(context.get()) != CAIRO_STATUS_SUCCESS) {
    throw Error(label + ": cannot draw the " + what + ": " +
                cairo_status_to_string(cairo_status(context.get())));
  }
  cairo_surface_flush(surface.get());
  std::pair<io::AtomicFile*, std::string> sink{&*file, {}};
  const cairo_status_t status =
      cairo_surface_write_to_png_stream(surface.get(), write_png_bytes, &sink);
  if (status != CAIRO_STATUS_SUCCESS) {
    throw Error(!sink.second.empty()
                    ? sink.second
                    : label + ": cannot encode the PNG: " + cairo_status_to_string(status));
  }
  try {
    file->commit();
  } catch (const io::Error& error) {
    throw Error(error.what());
  }
}

}  // namespace detail

/// Draws history as a PNG at path and returns its layout (layout.width x
/// layout.height is the picture's size; equal to rank_picture_layout(history,
/// options)). Rows are the modules in history order, labelled once per run of
/// modules of the same group; columns are the RESTARTs, labelled with their
/// epochs; the colour of a cell is rank_color(K / R_max). Below: the mean loss
/// per epoch with the restart epochs as dashed vertical lines. The file is
/// written atomically (temporary file in the same folder, then rename): on any
/// error nothing is left behind and an existing file at path is unchanged.
/// @throws Error naming path: a column whose rank count differs from the module
/// count, K above R, a folder that is missing or not writable, a drawing or
/// write failure.
inline RankPictureLayout draw_rank_picture(const RankHistory& history,
                                           const std::filesystem::path& path,
                                           const RankPictureOptions& options = {}) {
  const std::string label = path.string();
  detail::check_history(history, label);
  const RankPictureLayout layout = rank_picture_layout(history, options);
  detail::write_picture(path, "rank picture", layout.width, layout.height,
                        [&](const detail::Canvas& canvas, cairo_surface_t*) {
                          detail::draw_heatmap(canvas, history, layout, options);
                          detail::draw_loss_curve(canvas, history, layout);
                        });
  return layout;
}

}  // namespace aclora::logs
