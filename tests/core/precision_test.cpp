// The precision policy: resolution of `automatic` per device class, and the accuracy
// bounds of aclora/precision.hpp (known answers of the documented formulas, their order
// across settings, and their dependence on the sizes and the gap).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "aclora/precision.hpp"

namespace {

using aclora::Precision;
using aclora::StorageType;

// automatic is fp64 on CPUs and on full-rate-float64 GPUs (compute capability 6.0, 7.0, 8.0,
// 9.0), fp32 on the others; explicit requests stand.
TEST(Precision, AutomaticFollowsTheDeviceClass) {
  EXPECT_EQ(aclora::resolve_precision(Precision::automatic, true), Precision::fp64);
  EXPECT_EQ(aclora::resolve_precision(Precision::automatic, false), Precision::fp32);
  EXPECT_EQ(aclora::resolve_precision(Precision::tf32, true), Precision::tf32);
  EXPECT_EQ(aclora::resolve_precision(Precision::fp64, false), Precision::fp64);
  for (int major : {6, 7, 8, 9})
    EXPECT_TRUE(aclora::full_rate_float64(major, 0)) << major;
  for (auto [major, minor] : {std::pair{6, 1}, {7, 5}, {8, 6}, {8, 9}, {12, 0}, {10, 0}})
    EXPECT_FALSE(aclora::full_rate_float64(major, minor)) << major << "." << minor;
}

// Unit roundoffs of the storage formats and the float32 sum limit 256 + 4 R.
TEST(Precision, StorageRoundoffAndSumLimit) {
  EXPECT_EQ(aclora::unit_roundoff(StorageType::f64), std::ldexp(1.0, -53));
  EXPECT_EQ(aclora::unit_roundoff(StorageType::f32), std::ldexp(1.0, -24));
  EXPECT_EQ(aclora::unit_roundoff(StorageType::f16), std::ldexp(1.0, -11));
  EXPECT_EQ(aclora::unit_roundoff(StorageType::bf16), std::ldexp(1.0, -8));
  EXPECT_EQ(aclora::float32_sum_limit(64), 512u);
}

// Known answers of the documented formulas for R = 8, n = 96 (computed separately from
// the derivation on the contract page): fp32 eta = c_G + 16 R^2 u (1 + c_G) + 4 u with
// c_G = (1 + 2^-24)^2 (1 + gamma_96(2^-24)) (1 + gamma_1(2^-53)) - 1, and delta from it;
// fp64 eta with c_G = gamma_96(2^-53).
TEST(Precision, KnownAnswersOfTheBounds) {
  EXPECT_NEAR(aclora::gram_tolerance(Precision::fp32, 8, 96), 5.841288730046965e-06, 1e-18);
  EXPECT_NEAR(aclora::energy_share_tolerance(Precision::fp32, 8, 96), 6.608882409662908e-05, 1e-16);
  EXPECT_NEAR(aclora::gram_tolerance(Precision::fp64, 8, 96), 1.247890679678689e-13, 1e-25);
}

// Each bound orders fp64 < fp32 < tf32, grows with R and with n (up to the float32 chunk
// limit for fp32), and automatic gets fp32's.
TEST(Precision, BoundsOrderAndGrowth) {
  for (auto bound : {&aclora::gram_tolerance, &aclora::energy_share_tolerance}) {
    EXPECT_LT(bound(Precision::fp64, 64, 1280), bound(Precision::fp32, 64, 1280));
    EXPECT_LT(bound(Precision::fp32, 64, 1280), bound(Precision::tf32, 64, 1280));
    EXPECT_EQ(bound(Precision::automatic, 64, 1280), bound(Precision::fp32, 64, 1280));
    EXPECT_LT(bound(Precision::fp32, 16, 1280), bound(Precision::fp32, 64, 1280));
    EXPECT_LT(bound(Precision::fp32, 64, 128), bound(Precision::fp32, 64, 1280));
    EXPECT_LT(bound(Precision::fp64, 64, 1280), bound(Precision::fp64, 64, 12800));
  }
}

// The truncation bound: the storage's rounding is its floor, it shrinks as the gap opens,
// needs no gap when K >= R, and never exceeds sqrt(2) plus the arithmetic terms.
TEST(Precision, TruncationBoundFollowsGapAndStorage) {
  const auto bound = [](Precision p, std::size_t kept, double gap, StorageType s) {
    return aclora::truncation_tolerance(p, 64, 1280, kept, gap, s);
  };
  EXPECT_GT(bound(Precision::fp64, 4, 0.1, StorageType::bf16), std::ldexp(1.0, -8));
  EXPECT_LT(bound(Precision::fp64, 4, 0.1, StorageType::bf16), 1.01 * std::ldexp(1.0, -8));
  EXPECT_LT(bound(Precision::fp32, 4, 0.5, StorageType::f32),
            bound(Precision::fp32, 4, 0.01, StorageType::f32));
  EXPECT_EQ(bound(Precision::fp32, 64, 0.0, StorageType::f32),
            bound(Precision::fp32, 64, 0.5, StorageType::f32));
  EXPECT_LT(bound(Precision::fp32, 64, 0.0, StorageType::f32), 1e-3);
  EXPECT_LT(bound(Precision::fp32, 4, 0.0, StorageType::f32), 1.5);
  EXPECT_GT(bound(Precision::fp32, 4, 0.0, StorageType::f32), 1.4);
}

// The relative gap (d_K^2 - d_{K+1}^2) / sum d^2, with d_{q+1} = 0, and 0 for an empty or
// zero spectrum; huge values do not overflow.
TEST(Precision, RelativeGap) {
  const std::vector<double> d{2, 1, 1};
  EXPECT_DOUBLE_EQ(aclora::relative_gap(d, 1), 0.5);
  EXPECT_DOUBLE_EQ(aclora::relative_gap(d, 2), 0.0);
  EXPECT_DOUBLE_EQ(aclora::relative_gap(d, 3), 1.0 / 6.0);
  EXPECT_DOUBLE_EQ(aclora::relative_gap(d, 5), 1.0 / 6.0);
  EXPECT_EQ(aclora::relative_gap(std::vector<double>{0, 0}, 1), 0.0);
  EXPECT_EQ(aclora::relative_gap(std::vector<double>{}, 1), 0.0);
  EXPECT_DOUBLE_EQ(aclora::relative_gap(std::vector<double>{2e300, 1e300, 1e300}, 1), 0.5);
}

}  // namespace
