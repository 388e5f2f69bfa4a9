#pragma once
/// @file
/// @brief Bit-exact conversions between float and the 16- and 8-bit float
/// formats stored in safetensors files (IEEE binary16, bfloat16, float8).

#include <bit>
#include <cstdint>

namespace aclora::safetensors {

/// IEEE binary16 bits to float. Exact for every input (subnormals included);
/// infinities stay infinite, NaNs stay NaN with their payload shifted up.
inline float f16_to_f32(std::uint16_t bits) {
  const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x8000u) << 16;
  const std::uint32_t exponent = (bits >> 10) & 0x1Fu;
  const std::uint32_t mantissa = bits & 0x3FFu;
  if (exponent == 0x1F) {  // infinity or NaN
    return std::bit_cast<float>(sign | 0x7F800000u | (mantissa << 13));
  }
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in float
    const float magnitude = static_cast<float>(mantissa) * 0x1p-24f;
    return std::bit_cast<float>(sign | std::bit_cast<std::uint32_t>(magnitude));
  }
  return std::bit_cast<float>(sign | ((exponent + (127 - 15)) << 23) | (mantissa << 13));
}

/// float to IEEE binary16 bits, rounding to nearest, ties to even. Values from
/// 65520 up become infinity; results below the smallest subnormal round to
/// (signed) zero; NaN stays a (quiet) NaN.
inline std::uint16_t f32_to_f16(float value) {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(value);
  const auto sign = static_cast<std::uint16_t>((bits >> 16) & 0x8000u);
  const std::uint32_t magnitude = bits & 0x7FFFFFFFu;
  if (magnitude > 0x7F800000u) {  // NaN: keep the top payload bits, force quiet
    return static_cast<std::uint16_t>(sign | 0x7E00u | ((magnitude >> 13) & 0x3FFu));
  }
  if (magnitude >= 0x477FF000u) {  // >= 65520 (half-way past 65504): infinity
    return static_cast<std::uint16_t>(sign | 0x7C00u);
  }
  if (magnitude >= 0x38800000u) {  // normal half (>= 2^-14)
    std::uint32_t half = (magnitude >> 13) - ((127u - 15u) << 10);
    const std::uint32_t rest = magnitude & 0x1FFFu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) {
      ++half;  // a carry into the exponent is the correct rounding
    }
    return static_cast<std::uint16_t>(sign | half);
  }
  if (magnitude <= 0x33000000u) {  // <= 2^-25: rounds to zero (2^-25 is a tie to even 0)
    return sign;
  }
  // Subnormal half: value = m * 2^(e - 150) with the implicit bit in m; the
  // half's unit is 2^-24, so shift m right by 126 - e and round.
  const std::uint32_t exponent = magnitude >> 23;
  const std::uint32_t significand = (magnitude & 0x7FFFFFu) | 0x800000u;
  const std::uint32_t shift = 126u - exponent;  // 14 .. 24
  std::uint32_t half = significand >> shift;
  const std::uint32_t rest = significand & ((1u << shift) - 1u);
  const std::uint32_t halfway = 1u << (shift - 1u);
  if (rest > halfway || (rest == halfway && (half & 1u))) {
    ++half;  // may become 0x400, the smallest normal: still correct
  }
  return static_cast<std::uint16_t>(sign | half);
}

/// bfloat16 bits to float (exact: bfloat16 is the top half of a float).
inline float bf16_to_f32(std::uint16_t bits) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
}

/// float to bfloat16 bits, rounding to nearest, ties to even; overflow gives
/// infinity, NaN stays a (quiet) NaN.
inline std::uint16_t f32_to_bf16(float value) {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(value);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) {
    return static_cast<std::uint16_t>((bits >> 16) | 0x0040u);
  }
  const std::uint32_t rounding = 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<std::uint16_t>((bits + rounding) >> 16);
}

/// float8 e4m3 "fn" bits (bias 7, no infinity, S.1111.111 is NaN, max 448) to float.
inline float f8_e4m3_to_f32(std::uint8_t bits) {
  const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x80u) << 24;
  const std::uint32_t exponent = (bits >> 3) & 0xFu;
  const std::uint32_t mantissa = bits & 0x7u;
  if (exponent == 0xF && mantissa == 0x7) {
    return std::bit_cast<float>(sign | 0x7FC00000u);
  }
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-9
    const float magnitude = static_cast<float>(mantissa) * 0x1p-9f;
    return std::bit_cast<float>(sign | std::bit_cast<std::uint32_t>(magnitude));
  }
  return std::bit_cast<float>(sign | ((exponent + (127 - 7)) << 23) | (mantissa << 20));
}

/// float8 e5m2 bits (bias 15, IEEE-style infinity and NaN) to float. e5m2 is
/// the top byte of a binary16, so this is exact.
inline float f8_e5m2_to_f32(std::uint8_t bits) {
  return f16_to_f32(static_cast<std::uint16_t>(bits << 8));
}

}  // namespace aclora::safetensors
