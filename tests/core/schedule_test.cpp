// The threshold schedule p = 1 - L^alpha(e), alpha(e) = 1 + e / (N - 1), restarts at
// e mod E == 0, and the loss window whose mean is L.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "aclora/schedule.hpp"

namespace {

using aclora::Error;
using aclora::LossWindow;
using aclora::Schedule;
using aclora::threshold_from_loss;

// alpha runs linearly from 1 at epoch 0 to 2 at the last epoch.
TEST(Schedule, AlphaIsLinearFromOneToTwo) {
  const Schedule schedule{100, 10};
  EXPECT_DOUBLE_EQ(schedule.alpha(0), 1.0);
  EXPECT_DOUBLE_EQ(schedule.alpha(99), 2.0);
  EXPECT_NEAR(schedule.alpha(33), 4.0 / 3.0, 1e-12);
  EXPECT_NEAR(schedule.alpha(90), 1.0 + 90.0 / 99.0, 1e-12);
}

// p for hand-computed (L, e, N): 1 - 0.25^2, 1 - 0.5^1.5, 1 - 0.04^1.5, 1 - 0.3^1.
TEST(Schedule, ThresholdMatchesHandComputedValues) {
  EXPECT_NEAR(Schedule({3, 1}).threshold(0.25, 2), 0.9375, 1e-12);
  EXPECT_NEAR(Schedule({3, 1}).threshold(0.5, 1), 1.0 - 0.35355339059327373, 1e-12);
  EXPECT_NEAR(Schedule({5, 1}).threshold(0.04, 2), 0.992, 1e-12);
  EXPECT_NEAR(Schedule({5, 1}).threshold(0.3, 0), 0.7, 1e-12);
  EXPECT_NEAR(threshold_from_loss(0.1, 2.0), 0.99, 1e-12);
}

// A one-epoch schedule uses alpha = 1 (no division by N - 1 = 0), so p = 1 - L.
TEST(Schedule, SingleEpochUsesAlphaOne) {
  const Schedule schedule{1, 1};
  EXPECT_EQ(schedule.alpha(0), 1.0);
  EXPECT_NEAR(schedule.threshold(0.2, 0), 0.8, 1e-12);
  EXPECT_TRUE(schedule.due(0));
  EXPECT_THROW(schedule.alpha(1), Error);
}

// L >= 1 gives p = 0 (clamped), whatever alpha.
TEST(Schedule, LossAtLeastOneGivesZeroThreshold) {
  const Schedule schedule{100, 10};
  EXPECT_EQ(schedule.threshold(1.0, 0), 0.0);
  EXPECT_EQ(schedule.threshold(1.0, 50), 0.0);
  EXPECT_EQ(schedule.threshold(2.5, 0), 0.0);
  EXPECT_EQ(schedule.threshold(1e300, 99), 0.0);
}

// L <= 0, NaN and infinity are errors, as is a non-finite alpha.
TEST(Schedule, NonPositiveOrNonFiniteLossIsAnError) {
  const Schedule schedule{100, 10};
  for (double loss :
       {0.0, -0.0, -0.1, std::numeric_limits<double>::quiet_NaN(),
        std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity()}) {
    EXPECT_THROW(schedule.threshold(loss, 10), Error) << "loss " << loss;
  }
  EXPECT_THROW(threshold_from_loss(0.5, std::numeric_limits<double>::infinity()), Error);
  EXPECT_THROW(threshold_from_loss(0.5, std::numeric_limits<double>::quiet_NaN()), Error);
}

// E = 10 over 100 epochs: restarts follow exactly epochs 0, 10, ..., 90.
TEST(Schedule, DueEveryIntervalFromEpochZero) {
  const Schedule schedule{100, 10};
  std::vector<int> due;
  for (int epoch = 0; epoch < 100; ++epoch) {
    if (schedule.due(epoch))
      due.push_back(epoch);
  }
  EXPECT_EQ(due, (std::vector<int>{0, 10, 20, 30, 40, 50, 60, 70, 80, 90}));
}

// Epochs outside [0, N) and a schedule with N < 1 or E < 1 are errors.
TEST(Schedule, InvalidEpochOrScheduleIsAnError) {
  EXPECT_THROW(Schedule({100, 10}).due(-1), Error);
  EXPECT_THROW(Schedule({100, 10}).due(100), Error);
  EXPECT_THROW(Schedule({100, 10}).alpha(100), Error);
  EXPECT_THROW(Schedule({0, 10}).alpha(0), Error);
  EXPECT_THROW(Schedule({100, 0}).due(0), Error);
}

// The window's mean is the arithmetic mean of the recorded losses; clear() empties it.
TEST(LossWindow, MeanOfRecordedLossesAndClear) {
  LossWindow window;
  EXPECT_THROW(window.mean(), Error);
  window.record(0.5);
  window.record(0.25);
  window.record(0.75);
  EXPECT_EQ(window.count(), 3u);
  EXPECT_DOUBLE_EQ(window.mean(), 0.5);
  window.clear();
  EXPECT_EQ(window.count(), 0u);
  EXPECT_THROW(window.mean(), Error);
  window.record(0.125);
  EXPECT_DOUBLE_EQ(window.mean(), 0.125);
}

// A non-finite loss is refused and leaves the window unchanged.
TEST(LossWindow, NonFiniteLossIsRefused) {
  LossWindow window;
  window.record(0.5);
  EXPECT_THROW(window.record(std::numeric_limits<double>::quiet_NaN()), Error);
  EXPECT_THROW(window.record(std::numeric_limits<double>::infinity()), Error);
  EXPECT_EQ(window.count(), 1u);
  EXPECT_DOUBLE_EQ(window.mean(), 0.5);
}

}  // namespace
