#pragma once
/// @file
/// @brief A progress bar for epochs and steps: redrawn in place on a terminal,
/// one line per finished epoch otherwise (log files, CI).
///
/// @code
/// aclora::logs::Progress progress(epochs, steps_per_epoch);
/// for (int epoch = 0; epoch < epochs; ++epoch) {
///   progress.begin_epoch(epoch);
///   for (...) progress.step(loss);
///   progress.end_epoch();
///   if (restarted) progress.message("restart 2: total rank 5120 -> 3391");
/// }
/// @endcode

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <iostream>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>

namespace aclora::logs {

/// A monotonic clock in seconds (any origin). Tests inject a fake one.
using ProgressClock = std::function<double()>;

/// Seconds of std::chrono::steady_clock.
inline double steady_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

/// Where and how Progress writes.
struct ProgressOutput {
  /// The stream written to (not owned; must outlive the Progress).
  std::ostream* stream = &std::cerr;
  /// True: one line redrawn in place (carriage return). False: quiet during an
  /// epoch, one line per finished epoch.
  bool is_terminal = false;
  /// Terminal columns, asked at each redraw (the window may be resized). Empty: 80.
  std::function<std::size_t()> terminal_width;
  /// Least time between two redraws of the bar, in seconds (the first and the
  /// last step of an epoch are always drawn).
  double redraw_interval = 0.1;
};

/// Columns of the terminal behind fd (ioctl TIOCGWINSZ); fallback when fd is not
/// a terminal or reports 0 columns.
inline std::size_t terminal_columns(int fd, std::size_t fallback = 80) {
  winsize size{};
  if (::ioctl(fd, TIOCGWINSZ, &size) == 0 && size.ws_col > 0) {
    return size.ws_col;
  }
  return fallback;
}

/// Output to std::cerr: a bar when stderr is a terminal (isatty), its width
/// from the terminal.
inline ProgressOutput stderr_progress_output() {
  ProgressOutput output;
  output.stream = &std::cerr;
  output.is_terminal = ::isatty(STDERR_FILENO) == 1;
  output.terminal_width = [] { return terminal_columns(STDERR_FILENO); };
  return output;
}

/// Seconds as H:MM:SS (hours unbounded, rounded down to whole seconds); "?" when
/// negative or not finite.
inline std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0 || seconds > 1e15) {
    return "?";
  }
  const auto whole = static_cast<std::uint64_t>(seconds);
  char buffer[48];
  std::snprintf(buffer, sizeof buffer, "%llu:%02u:%02u",
                static_cast<unsigned long long>(whole / 3600),
                static_cast<unsigned>((whole / 60) % 60), static_cast<unsigned>(whole % 60));
  return buffer;
}

/// Speed as "12.34 it/s", or "3.21 s/it" below one step per second; "? it/s" when unknown.
inline std::string format_rate(double steps_per_second) {
  if (!std::isfinite(steps_per_second) || steps_per_second <= 0) {
    return "? it/s";
  }
  char buffer[48];
  if (steps_per_second >= 1) {
    std::snprintf(buffer, sizeof buffer, "%.2f it/s", steps_per_second);
  } else {
    std::snprintf(buffer, sizeof buffer, "%.2f s/it", 1 / steps_per_second);
  }
  return buffer;
}

/// Progress of a training run of total_epochs epochs of steps_per_epoch steps.
///
/// On a terminal: one line, redrawn in place (carriage return), such as
/// "epoch 3/10 step 120/500 [####.......] 4.21 it/s loss 0.1234 0:00:28<0:01:30"
/// (the last part: elapsed, then ETA), cut to the terminal's width; the bar is
/// left out when it does not fit, and the line stays when the epoch ends.
/// Elsewhere nothing is written during an epoch and end_epoch() writes
/// "epoch 3/10: 500 steps, mean loss 0.1234, 4.21 it/s, elapsed 0:01:58".
/// Epochs are given 0-based and shown 1-based; elapsed time and ETA are the epoch's.
class Progress {
 public:
  /// steps_per_epoch 0 means unknown (no bar, no ETA).
  /// An empty clock means steady_seconds().
  Progress(int total_epochs, std::size_t steps_per_epoch,
           ProgressOutput output = stderr_progress_output(), ProgressClock clock = {})
      : total_epochs_(total_epochs),
        steps_per_epoch_(steps_per_epoch),
        output_(std::move(output)),
        clock_(clock ? std::move(clock) : ProgressClock(steady_seconds)) {}

  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  /// Ends the bar's line when an epoch was left open on a terminal.
  ~Progress() {
    if (output_.is_terminal && drawn_length_ > 0) {
      *output_.stream << '\n' << std::flush;
    }
  }

  /// Starts epoch (0-based). steps_done: steps of it already done before a
  /// resume (counted in step s/S, not in the speed or the mean loss).
  void begin_epoch(int epoch, std::size_t steps_done = 0) {
    epoch_ = epoch;
    steps_done_before_ = steps_done;
    steps_ = 0;
    loss_sum_ = 0;
    last_loss_ = std::nan("");
    epoch_start_ = clock_();
    in_epoch_ = true;
    if (output_.is_terminal) {
      draw();
    }
  }

  /// Records one finished step and its loss; redraws the bar on a terminal.
  void step(double loss) {
    ++steps_;
    loss_sum_ += loss;
    last_loss_ = loss;
    if (!output_.is_terminal) {
      return;
    }
    const double now = clock_();
    const bool last = steps_per_epoch_ > 0 && steps_done() >= steps_per_epoch_;
    if (last || steps_ == 1 || now - last_draw_ >= output_.redraw_interval) {
      draw(now);
    }
  }

  /// Ends the epoch: the final bar stays on its line (terminal), or the one
  /// summary line is written.
  void end_epoch() {
    if (!in_epoch_) {
      return;
    }
    const double now = clock_();
    if (output_.is_terminal) {
      draw(now);
      *output_.stream << '\n' << std::flush;
      drawn_length_ = 0;
    } else {
      *output_.stream << epoch_label() << ": " << steps_done() << " steps, mean loss "
                      << format_loss(mean_loss()) << ", " << format_rate(rate(now - epoch_start_))
                      << ", elapsed " << format_duration(now - epoch_start_) << '\n'
                      << std::flush;
    }
    in_epoch_ = false;
  }

  /// Writes text as a line of its own (e.g. a restart summary). On a terminal
  /// the bar is cleared first and redrawn below the text.
  void message(std::string_view text) {
    if (output_.is_terminal && drawn_length_ > 0) {
      *output_.stream << '\r' << std::string(drawn_length_, ' ') << '\r';
      drawn_length_ = 0;
    }
    *output_.stream << text << '\n';
    if (output_.is_terminal && in_epoch_) {
      draw();
    }
    *output_.stream << std::flush;
  }

  /// Steps of the current epoch done so far (resumed ones included).
  std::size_t steps_done() const { return steps_done_before_ + steps_; }
  /// Mean of the losses given to step() in the current epoch (NaN before the first).
  double mean_loss() const {
    return steps_ > 0 ? loss_sum_ / static_cast<double>(steps_) : std::nan("");
  }

 private:
  static std::string format_loss(double loss) {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%.4g", loss);
    return buffer;
  }

  std::string epoch_label() const {
    return "epoch " + std::to_string(epoch_ + 1) + "/" + std::to_string(total_epochs_);
  }

  double rate(double elapsed) const {
    return elapsed > 0 && steps_ > 0 ? static_cast<double>(steps_) / elapsed : std::nan("");
  }

  void draw() { draw(clock_()); }

  void draw(double now) {
    const double elapsed = now - epoch_start_;
    const double speed = rate(elapsed);
    std::string eta = "?";
    if (steps_per_epoch_ > 0 && std::isfinite(speed)) {
      const std::size_t left = steps_per_epoch_ - std::min(steps_per_epoch_, steps_done());
      eta = format_duration(static_cast<double>(left) / speed);
    }
    // The step count is padded to the width of the total so that the line keeps its length.
    const std::string total = steps_per_epoch_ > 0 ? std::to_string(steps_per_epoch_) : "?";
    std::string done = std::to_string(steps_done());
    if (done.size() < total.size()) {
      done.insert(0, total.size() - done.size(), ' ');
    }
    const std::string left_part = epoch_label() + " step " + done + "/" + total;
    const std::string right_part = format_rate(speed) + " loss " +
                                   (steps_ > 0 ? format_loss(last_loss_) : std::string("?")) + " " +
                                   format_duration(elapsed) + "<" + eta;
    const std::size_t width =
        std::max<std::size_t>(output_.terminal_width ? output_.terminal_width() : 80, 2);
    // One column short of the width: writing the last column makes some terminals wrap.
    const std::size_t limit = width - 1;
    std::string line = left_part + " " + right_part;
    // The bar's width assumes a right part of at least 40 columns, so that it does not
    // jump about as the numbers change length.
    const std::size_t taken = left_part.size() + std::max<std::size_t>(right_part.size(), 40) + 4;
    const std::size_t room = limit > taken ? limit - taken : 0;
    if (steps_per_epoch_ > 0 && room >= 10) {
      const std::size_t bar_width = std::min<std::size_t>(room, 30);
      const std::size_t filled =
          bar_width * std::min(steps_done(), steps_per_epoch_) / steps_per_epoch_;
      line = left_part + " [" + std::string(filled, '#') + std::string(bar_width - filled, '.') +
             "] " + right_part;
    }
    if (line.size() > limit) {
      line.resize(limit);
    }
    *output_.stream << '\r' << line;
    if (line.size() < drawn_length_) {
      *output_.stream << std::string(drawn_length_ - line.size(), ' ');
    }
    *output_.stream << std::flush;
    drawn_length_ = line.size();
    last_draw_ = now;
  }

  int total_epochs_;
  std::size_t steps_per_epoch_;
  ProgressOutput output_;
  ProgressClock clock_;
  int epoch_ = 0;
  std::size_t steps_done_before_ = 0;
  std::size_t steps_ = 0;
  double loss_sum_ = 0;
  double last_loss_ = 0;
  double epoch_start_ = 0;
  double last_draw_ = 0;
  std::size_t drawn_length_ = 0;
  bool in_epoch_ = false;
};

}  // namespace aclora::logs
