/// @file philox.hpp
/// @brief Philox-4x32-10, the counter-based generator behind all noise, and the
/// Gaussian transform. Usable in host and CUDA device code.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "aclora/config.hpp"

namespace aclora {

/// Four 32-bit words: a Philox counter or output block.
struct PhiloxBlock {
  std::uint32_t word[4];  ///< the words, least significant first
};

/// Philox-4x32 with 10 rounds (Salmon et al., SC11): a bijection of the 128-bit counter
/// under a 64-bit key. Output i of a stream is philox(key, counter i): no state, so any
/// thread can produce any part of the stream.
ACLORA_HOST_DEVICE inline PhiloxBlock philox4x32_10(PhiloxBlock counter, std::uint32_t key0,
                                                    std::uint32_t key1) {
  constexpr std::uint32_t multiplier0 = 0xD2511F53u;
  constexpr std::uint32_t multiplier1 = 0xCD9E8D57u;
  constexpr std::uint32_t weyl0 = 0x9E3779B9u;
  constexpr std::uint32_t weyl1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    const std::uint64_t product0 = static_cast<std::uint64_t>(multiplier0) * counter.word[0];
    const std::uint64_t product1 = static_cast<std::uint64_t>(multiplier1) * counter.word[2];
    const auto high0 = static_cast<std::uint32_t>(product0 >> 32);
    const auto low0 = static_cast<std::uint32_t>(product0);
    const auto high1 = static_cast<std::uint32_t>(product1 >> 32);
    const auto low1 = static_cast<std::uint32_t>(product1);
    counter =
        PhiloxBlock{{high1 ^ counter.word[1] ^ key0, low1, high0 ^ counter.word[3] ^ key1, low0}};
    key0 += weyl0;
    key1 += weyl1;
  }
  return counter;
}

namespace detail {

// Single-precision arithmetic that gives the same bits in host and CUDA device code: on the
// device the round-to-nearest intrinsics keep nvcc from contracting a * b + c into an FMA.
ACLORA_HOST_DEVICE inline float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
ACLORA_HOST_DEVICE inline float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
ACLORA_HOST_DEVICE inline float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
ACLORA_HOST_DEVICE inline std::uint32_t float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return static_cast<std::uint32_t>(__float_as_int(x));
#else
  std::uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return bits;
#endif
}
ACLORA_HOST_DEVICE inline float bits_float(std::uint32_t bits) {
#if defined(__CUDA_ARCH__)
  return __int_as_float(static_cast<int>(bits));
#else
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
#endif
}
// Branch-free selections on the bit patterns (so that loops over them vectorise):
// `when` is 0 or 1.
ACLORA_HOST_DEVICE inline float select_bits(std::uint32_t when, float yes, float no) {
  const std::uint32_t mask = 0u - when;
  return bits_float((float_bits(yes) & mask) | (float_bits(no) & ~mask));
}
ACLORA_HOST_DEVICE inline float negate_if(std::uint32_t when, float x) {
  return bits_float(float_bits(x) ^ (when << 31));
}

// Natural logarithm of a positive normal float, without libm (so that loops over it
// vectorise and every platform rounds alike): x = 2^k m with m in [sqrt(1/2), sqrt(2)),
// f = m - 1 (exact), log(1 + f) = f - f^2 / 2 + s (f^2 / 2 + R(s^2)) with s = f / (2 + f) and
// R the minimax polynomial of the classic fdlibm logf; k log 2 split in a high part exact in
// float and a low part. Error below 1 ulp on (0, 1].
ACLORA_HOST_DEVICE inline float log_positive(float x) {
  constexpr float lg1 = 0.66666662693f, lg2 = 0.40000972152f, lg3 = 0.28498786688f,
                  lg4 = 0.24279078841f, ln2_high = 6.9313812256e-01f, ln2_low = 9.0580006145e-06f;
  const auto bits = static_cast<std::int32_t>(float_bits(x));  // positive: no sign bit
  const std::int32_t k = (bits - 0x3f3504f3) >> 23;            // m = x 2^-k in [sqrt(1/2), sqrt(2))
  const float f = add_rn(bits_float(static_cast<std::uint32_t>(bits - k * (1 << 23))), -1.0f);
  const float s = div_rn(f, add_rn(2.0f, f));
  const float z = mul_rn(s, s);
  const float w = mul_rn(z, z);
  const float r =
      add_rn(mul_rn(z, add_rn(lg1, mul_rn(w, lg3))), mul_rn(w, add_rn(lg2, mul_rn(w, lg4))));
  const float half_f_squared = mul_rn(mul_rn(0.5f, f), f);
  const auto kf = static_cast<float>(k);
  return add_rn(add_rn(add_rn(add_rn(mul_rn(s, add_rn(half_f_squared, r)), mul_rn(kf, ln2_low)),
                              -half_f_squared),
                       f),
                mul_rn(kf, ln2_high));
}

// Square root of a float in [0, 2^64) without libm: reciprocal square root from the
// exponent-halving bit estimate, three Newton steps, times x (0 gives 0). About 2 ulp.
ACLORA_HOST_DEVICE inline float sqrt_nonnegative(float x) {
  float y = bits_float(0x5f375a86u - (float_bits(x) >> 1));
  for (int step = 0; step < 3; ++step)
    y = mul_rn(y, add_rn(1.5f, -mul_rn(mul_rn(mul_rn(0.5f, x), y), y)));
  return mul_rn(x, y);
}

// sin(2 pi t) and cos(2 pi t) for t in [0, 1] (angle in turns), without libm: the nearest
// quarter turn q / 4 is removed exactly, leaving r in [-1/8, 1/8]; Taylor polynomials of
// sin(2 pi r) (to r^9) and cos(2 pi r) (to r^10) truncate below 2e-9; the quadrant swaps
// and negates them. Error a few ulp.
ACLORA_HOST_DEVICE inline void sincos_turns(float t, float& sine, float& cosine) {
  constexpr double a = 6.283185307179586476925286766559;  // 2 pi
  constexpr float s1 = static_cast<float>(a), s3 = static_cast<float>(-a * a * a / 6),
                  s5 = static_cast<float>(a * a * a * a * a / 120),
                  s7 = static_cast<float>(-a * a * a * a * a * a * a / 5040),
                  s9 = static_cast<float>(a * a * a * a * a * a * a * a * a / 362880);
  constexpr float c2 = static_cast<float>(-a * a / 2), c4 = static_cast<float>(a * a * a * a / 24),
                  c6 = static_cast<float>(-a * a * a * a * a * a / 720),
                  c8 = static_cast<float>(a * a * a * a * a * a * a * a / 40320),
                  c10 = static_cast<float>(-a * a * a * a * a * a * a * a * a * a / 3628800);
  const auto quarter = static_cast<std::int32_t>(add_rn(mul_rn(4.0f, t), 0.5f));  // 0..4
  const float r = add_rn(t, -mul_rn(static_cast<float>(quarter), 0.25f));
  const float r2 = mul_rn(r, r);
  const float sin_r = mul_rn(
      r,
      add_rn(
          s1,
          mul_rn(r2, add_rn(s3, mul_rn(r2, add_rn(s5, mul_rn(r2, add_rn(s7, mul_rn(r2, s9)))))))));
  const float cos_r = add_rn(
      1.0f,
      mul_rn(
          r2,
          add_rn(c2,
                 mul_rn(r2,
                        add_rn(c4,
                               mul_rn(r2, add_rn(c6, mul_rn(r2, add_rn(c8, mul_rn(r2, c10))))))))));
  const auto q = static_cast<std::uint32_t>(quarter);
  sine = negate_if((q >> 1) & 1u, select_bits(q & 1u, cos_r, sin_r));
  cosine = negate_if(((q + 1u) >> 1) & 1u, select_bits(q & 1u, sin_r, cos_r));
}

}  // namespace detail

/// Box-Muller: two 32-bit words to two independent N(0, 1) draws,
/// z0 = sqrt(-2 log u1) cos(2 pi u2), z1 = sqrt(-2 log u1) sin(2 pi u2), with
/// u1 = (first + 1) 2^-32 in (0, 1] (so the logarithm is finite) and u2 = second 2^-32.
/// Real = double uses the C library's functions. Real = float uses the core's own
/// single-precision log, square root and sine / cosine (detail::log_positive,
/// sqrt_nonnegative, sincos_turns): the same bits in host and device code and on every
/// platform (host builds without FMA contraction, the default on x86-64), and the
/// arithmetic that box_muller_words evaluates over arrays.
template <class Real>
ACLORA_HOST_DEVICE inline void box_muller(std::uint32_t first, std::uint32_t second, Real& z0,
                                          Real& z1) {
  if constexpr (std::is_same_v<Real, float>) {
    constexpr float two_pow_minus_32 = 2.3283064365386962890625e-10f;
    const float u1 =
        detail::mul_rn(detail::add_rn(static_cast<float>(first), 1.0f), two_pow_minus_32);
    const float u2 = detail::mul_rn(static_cast<float>(second), two_pow_minus_32);
    // -2 log u1 >= 0; the sign bit is cleared with a mask rather than a branch.
    const float squared = detail::mul_rn(-2.0f, detail::log_positive(u1));
    const std::uint32_t bits = detail::float_bits(squared);
    const float radius = detail::sqrt_nonnegative(detail::bits_float(bits & ~(0u - (bits >> 31))));
    float sine, cosine;
    detail::sincos_turns(u2, sine, cosine);
    z0 = detail::mul_rn(radius, cosine);
    z1 = detail::mul_rn(radius, sine);
  } else {
    constexpr Real two_pow_minus_32 = Real(2.3283064365386962890625e-10);
    constexpr Real two_pi = Real(6.283185307179586476925286766559);
    const Real u1 = (Real(first) + Real(1)) * two_pow_minus_32;
    const Real u2 = Real(second) * two_pow_minus_32;
    const Real radius = std::sqrt(Real(-2) * std::log(u1));
    z0 = radius * std::cos(two_pi * u2);
    z1 = radius * std::sin(two_pi * u2);
  }
}

}  // namespace aclora
