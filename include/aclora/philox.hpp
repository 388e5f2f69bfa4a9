/// @file philox.hpp
/// @brief Philox-4x32-10, the counter-based generator behind all noise, and the
/// Gaussian transform. Usable in host and CUDA device code.
#pragma once

#include <cmath>
#include <cstdint>

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

/// Box-Muller: two 32-bit words to two independent N(0, 1) draws. The first word maps
/// to (0, 1] so the logarithm is finite.
template <class Real>
ACLORA_HOST_DEVICE inline void box_muller(std::uint32_t first, std::uint32_t second, Real& z0,
                                          Real& z1) {
  constexpr Real two_pow_minus_32 = Real(2.3283064365386962890625e-10);
  constexpr Real two_pi = Real(6.283185307179586476925286766559);
  const Real u1 = (Real(first) + Real(1)) * two_pow_minus_32;
  const Real u2 = Real(second) * two_pow_minus_32;
  const Real radius = std::sqrt(Real(-2) * std::log(u1));
  z0 = radius * std::cos(two_pi * u2);
  z1 = radius * std::sin(two_pi * u2);
}

}  // namespace aclora
