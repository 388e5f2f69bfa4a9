/// @file scheduler.hpp
/// @brief The SDXL noise schedule and the Euler sampler's timesteps and sigmas
/// (diffusers' EulerDiscreteScheduler with "leading" spacing and steps_offset 1).
#pragma once

#include <cstddef>
#include <vector>

namespace sdxl {

/// Training noise schedule: scaled-linear betas from 0.00085 to 0.012 over 1000 steps.
struct NoiseSchedule {
  int train_steps = 1000;       ///< T, the number of training timesteps
  double beta_start = 0.00085;  ///< beta_0
  double beta_end = 0.012;      ///< beta_{T-1}

  /// abar_t = prod_{s <= t} (1 - beta_s), computed in fp32 as the reference does.
  std::vector<float> alphas_cumprod() const;
  /// sigma_t = sqrt((1 - abar_t) / abar_t) for t = 0 .. train_steps - 1 (fp32).
  std::vector<float> sigmas() const;
};

/// The sampling plan of an Euler run with n steps.
struct EulerPlan {
  std::vector<float> timesteps;   ///< n values, decreasing: (n-1..0) * (1000 / n) + 1
  std::vector<float> sigmas;      ///< n + 1 values; the last is 0
  float init_noise_sigma = 1.0f;  ///< sqrt(sigma_max^2 + 1): scale of the initial noise
};

/// Timesteps and sigmas for `steps` Euler steps ("leading" spacing, offset 1).
/// @throws std::invalid_argument when steps is not in [1, train_steps].
EulerPlan euler_plan(const NoiseSchedule& schedule, int steps);

}  // namespace sdxl
