#include "sdxl/scheduler.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace sdxl {

std::vector<float> NoiseSchedule::alphas_cumprod() const {
  // betas = linspace(sqrt(start), sqrt(end), T)^2 in fp32; the running product is fp32 too.
  const float first = static_cast<float>(std::sqrt(beta_start));
  const float last = static_cast<float>(std::sqrt(beta_end));
  const float step = (last - first) / static_cast<float>(train_steps - 1);
  std::vector<float> result(train_steps);
  float product = 1.0f;
  for (int t = 0; t < train_steps; ++t) {
    // Symmetric evaluation (from the nearer end), as torch.linspace does.
    const float root = t < train_steps / 2 ? first + step * static_cast<float>(t)
                                           : last - step * static_cast<float>(train_steps - 1 - t);
    product *= 1.0f - root * root;
    result[t] = product;
  }
  return result;
}

std::vector<float> NoiseSchedule::sigmas() const {
  std::vector<float> result = alphas_cumprod();
  for (float& value : result)
    value = std::sqrt((1.0f - value) / value);
  return result;
}

EulerPlan euler_plan(const NoiseSchedule& schedule, int steps) {
  if (steps < 1 || steps > schedule.train_steps) {
    throw std::invalid_argument("steps must be in [1, " + std::to_string(schedule.train_steps) +
                                "], got " + std::to_string(steps));
  }
  const std::vector<float> table = schedule.sigmas();
  const int ratio = schedule.train_steps / steps;
  EulerPlan plan;
  for (int i = steps - 1; i >= 0; --i) {
    const int t = i * ratio + 1;  // steps_offset 1
    plan.timesteps.push_back(static_cast<float>(t));
    // Leading timesteps are integers, so the reference's interpolation is exact; like
    // np.interp it clamps past the table (t = 1000 when steps = 1000).
    plan.sigmas.push_back(table[std::min(t, schedule.train_steps - 1)]);
  }
  plan.sigmas.push_back(0.0f);
  const float largest = *std::max_element(plan.sigmas.begin(), plan.sigmas.end());
  plan.init_noise_sigma = std::sqrt(largest * largest + 1.0f);
  return plan;
}

}  // namespace sdxl
