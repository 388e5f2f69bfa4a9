// The noise generator: Philox-4x32-10 against the Random123 known-answer vectors, the
// Gaussian transform's moments, and the keys that separate noise streams.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <set>
#include <vector>

#include "aclora/noise.hpp"
#include "aclora/philox.hpp"

namespace {

using aclora::PhiloxBlock;

void expect_block(PhiloxBlock actual, PhiloxBlock expected) {
  for (int w = 0; w < 4; ++w)
    EXPECT_EQ(actual.word[w], expected.word[w]) << "word " << w;
}

// philox4x32_10 with counter and key all zeros (Random123 kat_vectors).
TEST(Philox, KnownAnswerZeros) {
  expect_block(aclora::philox4x32_10(PhiloxBlock{{0, 0, 0, 0}}, 0, 0),
               PhiloxBlock{{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}});
}

// philox4x32_10 with counter and key all ones (0xffffffff).
TEST(Philox, KnownAnswerOnes) {
  const std::uint32_t ones = 0xffffffffu;
  expect_block(aclora::philox4x32_10(PhiloxBlock{{ones, ones, ones, ones}}, ones, ones),
               PhiloxBlock{{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}});
}

// philox4x32_10 with the pi-digits counter and key.
TEST(Philox, KnownAnswerPiDigits) {
  expect_block(aclora::philox4x32_10(PhiloxBlock{{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}},
                                     0xa4093822, 0x299f31d0),
               PhiloxBlock{{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}});
}

// Mean, variance, skewness and kurtosis of 1e6 draws of gaussian_at match N(0, 1)
// (bounds are about 5 standard errors).
template <class Real>
void expect_standard_normal_moments() {
  const aclora::NoiseKey key{0x1234567890abcdefull, aclora::noise_key(7, 3, 11, 1).stream};
  constexpr int draws = 1000000;
  double m1 = 0, m2 = 0, m3 = 0, m4 = 0;
  for (int i = 0; i < draws; ++i) {
    const double z = static_cast<double>(aclora::gaussian_at<Real>(key, i));
    ASSERT_TRUE(std::isfinite(z));
    m1 += z;
    m2 += z * z;
    m3 += z * z * z;
    m4 += z * z * z * z;
  }
  m1 /= draws;
  m2 /= draws;
  m3 /= draws;
  m4 /= draws;
  EXPECT_NEAR(m1, 0.0, 0.005);
  EXPECT_NEAR(m2, 1.0, 0.007);
  EXPECT_NEAR(m3, 0.0, 0.02);
  EXPECT_NEAR(m4, 3.0, 0.05);
}

TEST(Gaussian, MomentsOfAMillionDoubleDraws) {
  expect_standard_normal_moments<double>();
}
TEST(Gaussian, MomentsOfAMillionFloatDraws) {
  expect_standard_normal_moments<float>();
}

// gaussian_at(index) is lane index % 4 of block index / 4, so any thread can produce any
// entry; float and double transforms of the same bits agree to float precision.
TEST(Gaussian, DrawIndexMapsToBlockAndLane) {
  const aclora::NoiseKey key{42, 99};
  for (std::uint64_t block : {0ull, 1ull, 12345ull, (1ull << 33) + 5}) {
    double values[4];
    float single[4];
    aclora::gaussian_block<double>(key, block, values);
    aclora::gaussian_block<float>(key, block, single);
    for (std::uint64_t lane = 0; lane < 4; ++lane) {
      EXPECT_EQ(aclora::gaussian_at<double>(key, 4 * block + lane), values[lane]);
      EXPECT_NEAR(single[lane], values[lane], 1e-4 * (1.0 + std::abs(values[lane])));
    }
  }
}

// The extreme inputs of Box-Muller (first word 0 or all ones) give finite draws.
TEST(Gaussian, BoxMullerIsFiniteAtExtremes) {
  for (std::uint32_t first : {0u, 1u, 0xffffffffu}) {
    for (std::uint32_t second : {0u, 0x80000000u, 0xffffffffu}) {
      double z0, z1;
      aclora::box_muller<double>(first, second, z0, z1);
      EXPECT_TRUE(std::isfinite(z0) && std::isfinite(z1));
      float f0, f1;
      aclora::box_muller<float>(first, second, f0, f1);
      EXPECT_TRUE(std::isfinite(f0) && std::isfinite(f1));
    }
  }
}

// Every part of a noise key (seed, restart number, module identity, layer) changes
// the stream or the key: 2 x 3 x 3 x 2 combinations give 36 distinct keys.
TEST(NoiseKey, EveryPartSeparatesStreams) {
  std::set<std::pair<std::uint64_t, std::uint64_t>> keys;
  for (std::uint64_t seed : {0ull, 1ull}) {
    for (std::uint64_t restart : {0ull, 1ull, 2ull}) {
      for (std::uint64_t module : {aclora::module_identity("a", 0), aclora::module_identity("b", 0),
                                   aclora::module_identity("", 0)}) {
        for (std::size_t layer : {0u, 1u}) {
          const auto key = aclora::noise_key(seed, restart, module, layer);
          keys.insert({key.seed, key.stream});
        }
      }
    }
  }
  EXPECT_EQ(keys.size(), 36u);
}

// A named module's identity ignores its position; an unnamed one's is its position.
TEST(NoiseKey, NamedModulesIgnorePositionUnnamedUseIt) {
  EXPECT_EQ(aclora::module_identity("unet.up.0.attn1.to_q", 0),
            aclora::module_identity("unet.up.0.attn1.to_q", 17));
  EXPECT_NE(aclora::module_identity("to_q", 0), aclora::module_identity("to_k", 0));
  EXPECT_NE(aclora::module_identity("", 0), aclora::module_identity("", 1));
  EXPECT_EQ(aclora::module_identity("", 5), aclora::module_identity("", 5));
}

// The word-by-word generator of the vectorised noise paths equals philox4x32_10 block by
// block, including across the 2^32 boundary of the low counter word.
TEST(Philox, WordsInStructureOfArraysMatchTheScalarGenerator) {
  const aclora::NoiseKey key{0x0123456789ABCDEFull, 0xFEDCBA9876543210ull};
  const std::uint64_t first = 0xFFFFFFFDull;
  constexpr std::size_t blocks = 7;
  std::vector<std::uint32_t> words(4 * blocks);
  aclora::philox_words(key, first, blocks, words.data());
  for (std::size_t b = 0; b < blocks; ++b) {
    const std::uint64_t block = first + b;
    const aclora::PhiloxBlock expected = aclora::philox4x32_10(
        {{static_cast<std::uint32_t>(block), static_cast<std::uint32_t>(block >> 32),
          static_cast<std::uint32_t>(key.stream), static_cast<std::uint32_t>(key.stream >> 32)}},
        static_cast<std::uint32_t>(key.seed), static_cast<std::uint32_t>(key.seed >> 32));
    for (std::size_t k = 0; k < 4; ++k)
      EXPECT_EQ(words[k * blocks + b], expected.word[k]) << b;
  }
}

// box_muller_words (the vectorised float transform over philox_words' layout) and
// gaussian_floats give exactly gaussian_block<float>'s bits, block by block.
TEST(Gaussian, FloatWordsAreBitIdenticalToTheScalarTransform) {
  const aclora::NoiseKey key{0x0123456789ABCDEFull, 0x0F1E2D3C4B5A6978ull};
  const std::uint64_t first = 0xFFFFFF00ull;
  constexpr std::size_t blocks = 1000;
  std::vector<std::uint32_t> words(4 * blocks);
  std::vector<float> draws(4 * blocks);
  aclora::gaussian_floats(key, first, blocks, words.data(), draws.data());
  for (std::size_t b = 0; b < blocks; ++b) {
    float expected[4];
    aclora::gaussian_block<float>(key, first + b, expected);
    EXPECT_EQ(std::memcmp(expected, draws.data() + 4 * b, sizeof expected), 0) << b;
  }
}

// The float transform against the double one on the same words: within 2^-11 + 2^-16 of
// it for every draw (the worst case, near u1 = 1, comes from rounding u1 to float), and
// within 1e-6 where |log u1| > 2^-8 (there the core's log, sqrt and sine / cosine err by a
// few float ulps). 2^22 draws, plus the extreme words 0, 1, 2^31 and 2^32 - 1.
TEST(Gaussian, FloatTransformIsWithinItsBoundOfTheDoubleOne) {
  const aclora::NoiseKey key{99, 7};
  constexpr std::size_t blocks = std::size_t{1} << 20;
  std::vector<std::uint32_t> words(4 * blocks);
  std::vector<float> draws(4 * blocks);
  aclora::gaussian_floats(key, 0, blocks, words.data(), draws.data());
  double worst = 0.0, worst_away_from_one = 0.0;
  for (std::size_t b = 0; b < blocks; ++b) {
    double expected[4];
    aclora::gaussian_block<double>(key, b, expected);
    for (int lane = 0; lane < 4; ++lane) {
      const double error = std::abs(draws[4 * b + lane] - expected[lane]);
      worst = std::max(worst, error);
      const std::uint32_t first = words[(lane < 2 ? 0 : 2) * blocks + b];
      if (std::abs(std::log((first + 1.0) * 0x1p-32)) > 0x1p-8)
        worst_away_from_one = std::max(worst_away_from_one, error);
    }
  }
  EXPECT_LE(worst, 0x1p-11 + 0x1p-16);
  EXPECT_LE(worst_away_from_one, 1e-6);
  for (std::uint32_t first : {0u, 1u, 0x80000000u, 0xffffffffu}) {
    for (std::uint32_t second : {0u, 1u, 0x40000000u, 0x80000000u, 0xffffffffu}) {
      double z0, z1;
      float f0, f1;
      aclora::box_muller<double>(first, second, z0, z1);
      aclora::box_muller<float>(first, second, f0, f1);
      EXPECT_LE(std::abs(f0 - z0), 0x1p-11 + 0x1p-16) << first << " " << second;
      EXPECT_LE(std::abs(f1 - z1), 0x1p-11 + 0x1p-16) << first << " " << second;
    }
  }
}

// The core's float log, square root and turns-based sine / cosine against the C library
// in double over their whole input ranges (every 509th float of (0, 1] and [0, 1], and
// [0, 64) for the root): log within 2 float ulps, the root within 4, sine and cosine within
// 2e-7 absolute.
TEST(Gaussian, FloatMathIsAccurate) {
  double log_ulps = 0.0, root_ulps = 0.0, trig = 0.0;
  for (std::uint32_t bits = 0x2f800000u; bits <= 0x3f800000u; bits += 509) {  // [2^-32, 1]
    float x;
    std::memcpy(&x, &bits, sizeof x);
    const double exact = std::log(static_cast<double>(x));
    if (exact != 0.0) {
      const double ulp = std::ldexp(1.0, std::ilogb(exact) - 23);
      log_ulps = std::max(log_ulps, std::abs(aclora::detail::log_positive(x) - exact) / ulp);
    }
    float sine, cosine;
    aclora::detail::sincos_turns(x, sine, cosine);
    const double angle = 6.283185307179586476925286766559 * x;
    trig = std::max({trig, std::abs(sine - std::sin(angle)), std::abs(cosine - std::cos(angle))});
    const float y = 64.0f * x;
    const double root = std::sqrt(static_cast<double>(y));
    const double root_ulp = std::ldexp(1.0, std::ilogb(root) - 23);
    root_ulps =
        std::max(root_ulps, std::abs(aclora::detail::sqrt_nonnegative(y) - root) / root_ulp);
  }
  EXPECT_LE(log_ulps, 2.0);
  EXPECT_LE(root_ulps, 4.0);
  EXPECT_LE(trig, 2e-7);
  EXPECT_EQ(aclora::detail::sqrt_nonnegative(0.0f), 0.0f);
  EXPECT_EQ(aclora::detail::log_positive(1.0f), 0.0f);
}

// Known answers of the key mixers from their published definitions: SplitMix64's first
// output for state 0 and the FNV-1a 64-bit hash of "a" (a named module's identity).
TEST(NoiseKey, MixersMatchPublishedVectors) {
  EXPECT_EQ(aclora::mix64(0), 0xe220a8397b1dcdafull);
  EXPECT_EQ(aclora::module_identity("a", 3), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(aclora::module_identity("", 0), aclora::mix64(0xA5A5A5A5A5A5A5A5ull));
}

}  // namespace
