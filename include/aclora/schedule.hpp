/// @file schedule.hpp
/// @brief The loss-derived threshold schedule of AC-LoRA (paper eq. 5-6, Algorithm 1).
#pragma once

#include <cmath>
#include <cstddef>
#include <string>

#include "aclora/error.hpp"

namespace aclora {

/// p = 1 - L^alpha clamped to [0, 1]: the share of each layer's energy that counts as
/// signal. @throws Error when `mean_loss` is not finite and > 0 or `alpha` is not finite.
inline double threshold_from_loss(double mean_loss, double alpha) {
  if (!std::isfinite(mean_loss) || !(mean_loss > 0.0)) {
    throw Error("mean loss must be finite and > 0, got " + std::to_string(mean_loss));
  }
  if (!std::isfinite(alpha))
    throw Error("alpha must be finite");
  const double p = 1.0 - std::pow(mean_loss, alpha);
  return p < 0.0 ? 0.0 : (p > 1.0 ? 1.0 : p);
}

/// When RESTART runs and how strict it is: N total epochs, a restart every E epochs.
struct Schedule {
  int total_epochs = 100;     ///< N >= 1
  int restart_interval = 10;  ///< E >= 1

  /// alpha(e) = 1 + e / (N - 1), and 1 when N = 1. @throws Error for an epoch outside [0, N).
  double alpha(int epoch) const {
    check(epoch);
    if (total_epochs == 1)
      return 1.0;
    return 1.0 + static_cast<double>(epoch) / static_cast<double>(total_epochs - 1);
  }

  /// True when a restart follows this epoch's training: e mod E == 0.
  bool due(int epoch) const {
    check(epoch);
    return epoch % restart_interval == 0;
  }

  /// p for the mean loss L since the last restart at 0-based epoch e.
  double threshold(double mean_loss, int epoch) const {
    return threshold_from_loss(mean_loss, alpha(epoch));
  }

 private:
  void check(int epoch) const {
    if (total_epochs < 1)
      throw Error("schedule: total_epochs must be >= 1");
    if (restart_interval < 1)
      throw Error("schedule: restart_interval must be >= 1");
    if (epoch < 0 || epoch >= total_epochs) {
      throw Error("schedule: epoch " + std::to_string(epoch) + " outside [0, " +
                  std::to_string(total_epochs) + ")");
    }
  }
};

/// The per-epoch losses recorded since the last restart; their mean is L.
class LossWindow {
 public:
  /// Adds one epoch's training loss. @throws Error when it is not finite.
  void record(double loss) {
    if (!std::isfinite(loss))
      throw Error("recorded loss is not finite");
    sum_ += loss;
    ++count_;
  }
  /// Arithmetic mean of the recorded losses. @throws Error when none was recorded.
  double mean() const {
    if (count_ == 0)
      throw Error("no loss recorded since the last restart");
    return sum_ / static_cast<double>(count_);
  }
  /// Number of losses recorded.
  std::size_t count() const { return count_; }
  /// Empties the window (after each restart).
  void clear() {
    sum_ = 0.0;
    count_ = 0;
  }

 private:
  double sum_ = 0.0;
  std::size_t count_ = 0;
};

}  // namespace aclora
