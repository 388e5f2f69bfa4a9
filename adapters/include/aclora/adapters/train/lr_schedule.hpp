/// @file lr_schedule.hpp
/// @brief Learning-rate schedules as diffusers' get_scheduler defines them, as pure
/// functions of the optimizer step (so a resumed run needs only the step count).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <string>
#include <string_view>

#include "aclora/adapters/train/error.hpp"

namespace aclora::train {

/// The shape of the schedule.
enum class LrScheduleKind {
  constant,              ///< lr throughout
  constant_with_warmup,  ///< linear ramp from 0 over the warmup steps, then lr
  linear,                ///< ramp up over the warmup, then linear decay to 0 at the last step
  cosine,                ///< ramp up over the warmup, then half a cosine down to 0
};

/// The schedule kind of a name: "constant", "constant_with_warmup", "linear", "cosine".
/// @throws Error for any other name (listing the valid ones).
inline LrScheduleKind lr_schedule_kind(std::string_view name) {
  if (name == "constant")
    return LrScheduleKind::constant;
  if (name == "constant_with_warmup")
    return LrScheduleKind::constant_with_warmup;
  if (name == "linear")
    return LrScheduleKind::linear;
  if (name == "cosine")
    return LrScheduleKind::cosine;
  throw Error("unknown learning-rate schedule '" + std::string(name) +
              "' (constant, constant_with_warmup, linear or cosine)");
}

/// A learning-rate schedule over a run of `total_steps` optimizer steps.
struct LrSchedule {
  LrScheduleKind kind = LrScheduleKind::constant;  ///< shape
  double base_lr = 1e-4;                           ///< peak learning rate
  std::int64_t warmup_steps = 0;                   ///< length of the ramp from 0
  std::int64_t total_steps = 1;                    ///< optimizer steps of the whole run

  /// The learning rate of the update that follows `step` completed updates (diffusers'
  /// LambdaLR convention: the first update uses step 0).
  double at(std::int64_t step) const {
    const double warmup = static_cast<double>(std::max<std::int64_t>(warmup_steps, 0));
    const double s = static_cast<double>(step);
    if (kind != LrScheduleKind::constant && s < warmup)
      return base_lr * s / std::max(1.0, warmup);
    switch (kind) {
      case LrScheduleKind::constant:
      case LrScheduleKind::constant_with_warmup:
        return base_lr;
      case LrScheduleKind::linear: {
        const double remaining = static_cast<double>(total_steps) - s;
        return base_lr *
               std::max(0.0, remaining / std::max(1.0, static_cast<double>(total_steps) - warmup));
      }
      case LrScheduleKind::cosine: {
        const double progress =
            (s - warmup) / std::max(1.0, static_cast<double>(total_steps) - warmup);
        return base_lr * std::max(0.0, 0.5 * (1.0 + std::cos(std::numbers::pi * progress)));
      }
    }
    return base_lr;
  }
};

}  // namespace aclora::train
