// The Euler sampler's plan and the training schedule match the reference numbers
// of sdxl.md (diffusers EulerDiscreteScheduler, "leading" spacing, steps_offset 1).
#include <gtest/gtest.h>

#include <stdexcept>

#include "sdxl/scheduler.hpp"

namespace {

// abar_0 and abar_999 of the scaled-linear schedule.
TEST(NoiseSchedule, AlphasCumprodEndpointsMatchReference) {
  const auto alphas = sdxl::NoiseSchedule{}.alphas_cumprod();
  ASSERT_EQ(alphas.size(), 1000u);
  EXPECT_NEAR(alphas.front(), 0.99915, 1e-6);
  EXPECT_NEAR(alphas.back(), 0.0046601, 1e-7);
}

// 50 leading steps: 981, 961, ..., 1; first sigma 13.1204, initial scale 13.1585, final 0.
TEST(EulerPlan, FiftyStepsMatchReference) {
  const auto plan = sdxl::euler_plan(sdxl::NoiseSchedule{}, 50);
  ASSERT_EQ(plan.timesteps.size(), 50u);
  ASSERT_EQ(plan.sigmas.size(), 51u);
  for (int i = 0; i < 50; ++i)
    EXPECT_EQ(plan.timesteps[i], static_cast<float>((49 - i) * 20 + 1));
  EXPECT_NEAR(plan.sigmas.front(), 13.1204, 1e-4);
  EXPECT_NEAR(plan.init_noise_sigma, 13.1585, 1e-4);
  EXPECT_EQ(plan.sigmas.back(), 0.0f);
  for (int i = 0; i + 1 < 51; ++i)
    EXPECT_GT(plan.sigmas[i], plan.sigmas[i + 1]);
}

// Step counts outside [1, 1000] are rejected with a message naming the range.
TEST(EulerPlan, RejectsStepCountsOutsideTheSchedule) {
  EXPECT_THROW(sdxl::euler_plan(sdxl::NoiseSchedule{}, 0), std::invalid_argument);
  EXPECT_THROW(sdxl::euler_plan(sdxl::NoiseSchedule{}, 1001), std::invalid_argument);
  EXPECT_EQ(sdxl::euler_plan(sdxl::NoiseSchedule{}, 1000).timesteps.front(), 1000.0f);
}

}  // namespace
