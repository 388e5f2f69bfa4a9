// Tests of the half-precision and float8 conversions against known bit
// patterns, and of the dtype table.

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

#include "aclora/adapters/safetensors.hpp"

namespace st = aclora::safetensors;

namespace {

std::uint32_t bits(float value) {
  return std::bit_cast<std::uint32_t>(value);
}
float from_bits(std::uint32_t value) {
  return std::bit_cast<float>(value);
}

}  // namespace

// Known binary16 patterns decode to the exact float values.
TEST(Half, F16ToF32KnownPatterns) {
  EXPECT_EQ(bits(st::f16_to_f32(0x0000)), bits(0.0f));
  EXPECT_EQ(bits(st::f16_to_f32(0x8000)), bits(-0.0f));
  EXPECT_EQ(st::f16_to_f32(0x3C00), 1.0f);
  EXPECT_EQ(st::f16_to_f32(0xC000), -2.0f);
  EXPECT_EQ(st::f16_to_f32(0x3555), 0.333251953125f);
  EXPECT_EQ(st::f16_to_f32(0x7BFF), 65504.0f);            // largest finite
  EXPECT_EQ(st::f16_to_f32(0x0400), 0x1p-14f);            // smallest normal
  EXPECT_EQ(st::f16_to_f32(0x0001), 0x1p-24f);            // smallest subnormal
  EXPECT_EQ(st::f16_to_f32(0x03FF), 1023.0f * 0x1p-24f);  // largest subnormal
  EXPECT_EQ(st::f16_to_f32(0x8001), -0x1p-24f);
  EXPECT_EQ(st::f16_to_f32(0x7C00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(st::f16_to_f32(0xFC00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(st::f16_to_f32(0x7E00)));
  EXPECT_TRUE(std::isnan(st::f16_to_f32(0x7C01)));  // signalling NaN stays NaN
  EXPECT_TRUE(std::signbit(st::f16_to_f32(0xFE00)));
}

// Every finite binary16 value survives f16 -> f32 -> f16 bit-exactly, and
// every NaN stays NaN.
TEST(Half, F16RoundTripsAllPatterns) {
  for (std::uint32_t h = 0; h <= 0xFFFF; ++h) {
    const auto half = static_cast<std::uint16_t>(h);
    const float wide = st::f16_to_f32(half);
    if ((half & 0x7C00) == 0x7C00 && (half & 0x3FF) != 0) {
      EXPECT_TRUE(std::isnan(wide)) << h;
      EXPECT_TRUE(std::isnan(st::f16_to_f32(st::f32_to_f16(wide)))) << h;
    } else {
      EXPECT_EQ(st::f32_to_f16(wide), half) << h;
    }
  }
}

// float -> f16 rounds to nearest with ties to even, in the normal and the
// subnormal range, overflows to infinity from 65520, underflows to zero.
TEST(Half, F32ToF16RoundsToNearestEven) {
  // Normal range: 1 + 2^-11 is half-way between 1 (0x3C00, even) and 1 + 2^-10.
  EXPECT_EQ(st::f32_to_f16(1.0f + 0x1p-11f), 0x3C00);
  EXPECT_EQ(st::f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3C02);  // tie between 0x3C01 and 0x3C02
  EXPECT_EQ(st::f32_to_f16(std::nextafter(1.0f + 0x1p-11f, 2.0f)), 0x3C01);
  EXPECT_EQ(st::f32_to_f16(std::nextafter(1.0f + 0x1p-11f, 0.0f)), 0x3C00);
  EXPECT_EQ(st::f32_to_f16(-1.0f - 0x1p-11f), 0xBC00);
  // Overflow boundary: 65519.996 rounds down to 65504, 65520 (the tie) up to inf.
  EXPECT_EQ(st::f32_to_f16(std::nextafter(65520.0f, 0.0f)), 0x7BFF);
  EXPECT_EQ(st::f32_to_f16(65520.0f), 0x7C00);
  EXPECT_EQ(st::f32_to_f16(1e10f), 0x7C00);
  EXPECT_EQ(st::f32_to_f16(-1e10f), 0xFC00);
  // Subnormal range: 2^-25 is the tie between 0 and the smallest subnormal.
  EXPECT_EQ(st::f32_to_f16(0x1p-25f), 0x0000);
  EXPECT_EQ(st::f32_to_f16(std::nextafter(0x1p-25f, 1.0f)), 0x0001);
  EXPECT_EQ(st::f32_to_f16(-0x1p-25f), 0x8000);
  EXPECT_EQ(st::f32_to_f16(3 * 0x1p-25f), 0x0002);  // 1.5 units: tie, to even 2
  EXPECT_EQ(st::f32_to_f16(5 * 0x1p-25f), 0x0002);  // 2.5 units: tie, to even 2
  EXPECT_EQ(st::f32_to_f16(0x1p-24f), 0x0001);
  EXPECT_EQ(st::f32_to_f16(0x1p-14f - 0x1p-25f), 0x0400);  // rounds up into the normals
  EXPECT_EQ(st::f32_to_f16(1e-30f), 0x0000);
  EXPECT_EQ(st::f32_to_f16(std::numeric_limits<float>::denorm_min()), 0x0000);
  // Specials.
  EXPECT_EQ(st::f32_to_f16(std::numeric_limits<float>::infinity()), 0x7C00);
  EXPECT_EQ(st::f32_to_f16(-std::numeric_limits<float>::infinity()), 0xFC00);
  const std::uint16_t nan = st::f32_to_f16(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(nan & 0x7C00, 0x7C00);
  EXPECT_NE(nan & 0x3FF, 0);
  // A NaN whose payload sits only in the low float bits must not become inf.
  const std::uint16_t low_payload = st::f32_to_f16(from_bits(0x7F800001u));
  EXPECT_NE(low_payload & 0x3FF, 0);
}

// f32 -> f16 agrees with the exact rounding computed in double for a sweep
// of values across all binades (checks every rounding path against a
// reference that does not share code with the implementation).
TEST(Half, F32ToF16MatchesReferenceRounding) {
  const auto reference = [](float value) {
    // Nearest of the candidates (ties to the even pattern), from the exact f16 table.
    const double x = value;
    std::uint16_t best = 0;
    double best_error = std::numeric_limits<double>::infinity();
    for (std::uint32_t h = 0; h < 0x7C00; ++h) {
      const double candidate = st::f16_to_f32(static_cast<std::uint16_t>(h));
      const double error = std::abs(candidate - x);
      if (error < best_error || (error == best_error && (h & 1) == 0)) {
        best_error = error;
        best = static_cast<std::uint16_t>(h);
      }
    }
    return best;
  };
  std::uint32_t pattern = 0x33000000u;  // 2^-25
  while (pattern < 0x477FF000u) {       // up to the overflow threshold
    // The sampled value, and the one with the low 13 bits set to an exact tie
    // (in the normal range) between two neighbouring halves.
    for (const std::uint32_t candidate : {pattern, (pattern & ~0x1FFFu) | 0x1000u}) {
      const float value = from_bits(candidate);
      ASSERT_EQ(st::f32_to_f16(value), reference(value)) << value;
    }
    pattern += 0x0003F1C7u;  // odd stride: hits varied mantissas and exponents
  }
}

// bfloat16 decodes by shifting, encodes with round to nearest even.
TEST(Half, Bf16ConversionsAreExact) {
  EXPECT_EQ(st::bf16_to_f32(0x3F80), 1.0f);
  EXPECT_EQ(st::bf16_to_f32(0xC0490000 >> 16), -3.140625f);
  EXPECT_EQ(st::bf16_to_f32(0x0001), from_bits(0x00010000u));  // subnormal
  EXPECT_EQ(st::bf16_to_f32(0x7F80), std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(st::bf16_to_f32(0x7FC0)));
  EXPECT_EQ(st::f32_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(st::f32_to_bf16(from_bits(0x3F808000u)), 0x3F80);  // tie, to even
  EXPECT_EQ(st::f32_to_bf16(from_bits(0x3F818000u)), 0x3F82);  // tie, to even (up)
  EXPECT_EQ(st::f32_to_bf16(from_bits(0x3F808001u)), 0x3F81);  // above the tie
  EXPECT_EQ(st::f32_to_bf16(from_bits(0x3F807FFFu)), 0x3F80);  // below the tie
  EXPECT_EQ(st::f32_to_bf16(from_bits(0x7F7FFFFFu)), 0x7F80);  // max float rounds to inf
  EXPECT_EQ(st::f32_to_bf16(-std::numeric_limits<float>::infinity()), 0xFF80);
  EXPECT_EQ(st::f32_to_bf16(from_bits(0x00008000u)), 0x0000);  // subnormal tie to even 0
  EXPECT_EQ(st::f32_to_bf16(from_bits(0x00018000u)), 0x0002);  // subnormal tie to even 2
  EXPECT_TRUE(std::isnan(st::bf16_to_f32(st::f32_to_bf16(from_bits(0x7F800001u)))));
  EXPECT_TRUE(std::isnan(st::bf16_to_f32(st::f32_to_bf16(from_bits(0xFFC00000u)))));
  for (std::uint32_t h = 0; h <= 0xFFFF; ++h) {
    if ((h & 0x7F80) != 0x7F80 || (h & 0x7F) == 0) {  // all but NaNs
      ASSERT_EQ(st::f32_to_bf16(st::bf16_to_f32(static_cast<std::uint16_t>(h))), h);
    }
  }
}

// float8 decodings match the format definitions.
TEST(Half, Float8Decodings) {
  EXPECT_EQ(st::f8_e4m3_to_f32(0x38), 1.0f);    // 0.0111.000
  EXPECT_EQ(st::f8_e4m3_to_f32(0x7E), 448.0f);  // largest finite
  EXPECT_EQ(st::f8_e4m3_to_f32(0xFE), -448.0f);
  EXPECT_EQ(st::f8_e4m3_to_f32(0x01), 0x1p-9f);  // smallest subnormal
  EXPECT_EQ(st::f8_e4m3_to_f32(0x08), 0x1p-6f);  // smallest normal
  EXPECT_EQ(st::f8_e4m3_to_f32(0x78), 256.0f);   // exponent 15 is finite in "fn"
  EXPECT_TRUE(std::isnan(st::f8_e4m3_to_f32(0x7F)));
  EXPECT_TRUE(std::isnan(st::f8_e4m3_to_f32(0xFF)));
  EXPECT_EQ(st::f8_e5m2_to_f32(0x3C), 1.0f);
  EXPECT_EQ(st::f8_e5m2_to_f32(0x7B), 57344.0f);  // largest finite
  EXPECT_EQ(st::f8_e5m2_to_f32(0x01), 0x1p-16f);  // smallest subnormal
  EXPECT_EQ(st::f8_e5m2_to_f32(0x7C), std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(st::f8_e5m2_to_f32(0x7D)));
}

// Names, sizes and parsing of every dtype agree; unknown names are rejected.
TEST(Dtype, NamesSizesAndParsing) {
  for (const st::Dtype dtype : st::kAllDtypes) {
    EXPECT_EQ(st::parse_dtype(st::dtype_name(dtype)), dtype);
    EXPECT_GT(st::dtype_size(dtype), 0u);
  }
  EXPECT_EQ(st::dtype_size(st::Dtype::BF16), 2u);
  EXPECT_EQ(st::dtype_size(st::Dtype::F8_E5M2), 1u);
  EXPECT_EQ(st::dtype_size(st::Dtype::U64), 8u);
  EXPECT_EQ(st::dtype_name(st::Dtype::F8_E4M3), "F8_E4M3");
  EXPECT_FALSE(st::parse_dtype("f32"));
  EXPECT_FALSE(st::parse_dtype("F4"));
  EXPECT_FALSE(st::parse_dtype(""));
}
