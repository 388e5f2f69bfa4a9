/// @file noise.hpp
/// @brief Noise policies and the deterministic key of every layer's noise stream.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "aclora/config.hpp"
#include "aclora/philox.hpp"

namespace aclora {

/// Where the Gaussian noise of a RESTART goes.
enum class NoisePolicy {
  whole,      ///< G over the whole matrix (the paper's practice; default)
  discarded,  ///< G restricted to the discarded directions along the rank axis (eq. 2)
  none,       ///< no noise: plain truncation (an ablation)
};

/// The policy's name as users write it: "whole", "discarded" or "none".
constexpr std::string_view noise_name(NoisePolicy policy) {
  switch (policy) {
    case NoisePolicy::whole:
      return "whole";
    case NoisePolicy::discarded:
      return "discarded";
    case NoisePolicy::none:
      return "none";
  }
  return "?";
}

/// Identifies one layer's noise stream: a Philox key (the user's seed) and a stream
/// number derived from (restart number, module identity, layer index).
struct NoiseKey {
  std::uint64_t seed = 0;    ///< the Philox key: the user's seed
  std::uint64_t stream = 0;  ///< high half of the Philox counter: the layer's stream
};

/// SplitMix64 finaliser: a fast bijective 64-bit mixer.
constexpr std::uint64_t mix64(std::uint64_t value) {
  value += 0x9E3779B97F4A7C15ull;
  value = (value ^ (value >> 30)) * 0xBF58476D1CE4E5B9ull;
  value = (value ^ (value >> 27)) * 0x94D049BB133111EBull;
  return value ^ (value >> 31);
}

/// A module's identity for noise: the 64-bit FNV-1a hash of its name, or a mix of its
/// position when it has no name.
constexpr std::uint64_t module_identity(std::string_view name, std::size_t position) {
  if (name.empty())
    return mix64(0xA5A5A5A5A5A5A5A5ull ^ static_cast<std::uint64_t>(position));
  std::uint64_t hash = 0xCBF29CE484222325ull;
  for (char c : name) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 0x100000001B3ull;
  }
  return hash;
}

/// The key of one layer's stream for a given restart.
constexpr NoiseKey noise_key(std::uint64_t seed, std::uint64_t restart_index,
                             std::uint64_t module_id, std::size_t layer_index) {
  const std::uint64_t stream =
      mix64(module_id ^ mix64(restart_index ^ mix64(static_cast<std::uint64_t>(layer_index))));
  return NoiseKey{seed, stream};
}

/// The four standard normal draws of block `block` of a stream. Entry (i, j) of a
/// rows x cols layer uses draw (i * cols + j): block (i * cols + j) / 4, lane % 4.
/// Every backend uses this numbering, so noise does not depend on memory layout.
template <class Real>
ACLORA_HOST_DEVICE inline void gaussian_block(const NoiseKey& key, std::uint64_t block,
                                              Real out[4]) {
  const PhiloxBlock counter{
      {static_cast<std::uint32_t>(block), static_cast<std::uint32_t>(block >> 32),
       static_cast<std::uint32_t>(key.stream), static_cast<std::uint32_t>(key.stream >> 32)}};
  const PhiloxBlock bits = philox4x32_10(counter, static_cast<std::uint32_t>(key.seed),
                                         static_cast<std::uint32_t>(key.seed >> 32));
  box_muller<Real>(bits.word[0], bits.word[1], out[0], out[1]);
  box_muller<Real>(bits.word[2], bits.word[3], out[2], out[3]);
}

/// The standard normal draw number `index` of a stream (one Philox call).
template <class Real>
ACLORA_HOST_DEVICE inline Real gaussian_at(const NoiseKey& key, std::uint64_t index) {
  Real block[4];
  gaussian_block<Real>(key, index / 4, block);
  return block[index % 4];
}

/// Philox-4x32-10 of the `blocks` consecutive blocks [first_block, first_block + blocks)
/// of a stream, written word by word: word k of block b at words[k * blocks + b] (so
/// `words` holds 4 * blocks values). The same values as gaussian_block's generator, in a
/// structure-of-arrays layout whose rounds the compiler can vectorise (host code).
inline void philox_words(const NoiseKey& key, std::uint64_t first_block, std::size_t blocks,
                         std::uint32_t* words) {
  std::uint32_t* const w0 = words;
  std::uint32_t* const w1 = w0 + blocks;
  std::uint32_t* const w2 = w1 + blocks;
  std::uint32_t* const w3 = w2 + blocks;
  for (std::size_t b = 0; b < blocks; ++b) {
    const std::uint64_t block = first_block + b;
    w0[b] = static_cast<std::uint32_t>(block);
    w1[b] = static_cast<std::uint32_t>(block >> 32);
    w2[b] = static_cast<std::uint32_t>(key.stream);
    w3[b] = static_cast<std::uint32_t>(key.stream >> 32);
  }
  auto key0 = static_cast<std::uint32_t>(key.seed);
  auto key1 = static_cast<std::uint32_t>(key.seed >> 32);
  for (int round = 0; round < 10; ++round) {
    for (std::size_t b = 0; b < blocks; ++b) {
      const std::uint64_t product0 = std::uint64_t{0xD2511F53u} * w0[b];
      const std::uint64_t product1 = std::uint64_t{0xCD9E8D57u} * w2[b];
      const std::uint32_t next0 = static_cast<std::uint32_t>(product1 >> 32) ^ w1[b] ^ key0;
      const std::uint32_t next2 = static_cast<std::uint32_t>(product0 >> 32) ^ w3[b] ^ key1;
      w1[b] = static_cast<std::uint32_t>(product1);
      w3[b] = static_cast<std::uint32_t>(product0);
      w0[b] = next0;
      w2[b] = next2;
    }
    key0 += 0x9E3779B9u;
    key1 += 0xBB67AE85u;
  }
}

/// Box-Muller in float over philox_words' layout: `words` holds 4 * blocks words (word k of
/// block b at words[k * blocks + b]); writes the 4 * blocks standard normal draws of those
/// blocks in stream order (the draws of block b at draws[4 b .. 4 b + 3]). Bit-identical to
/// box_muller<float>, hence to gaussian_block<float> of the same blocks (host and device);
/// free of library calls, so the compiler vectorises the loop.
inline void box_muller_words(const std::uint32_t* words, std::size_t blocks, float* draws) {
  const std::uint32_t* const w0 = words;
  const std::uint32_t* const w1 = w0 + blocks;
  const std::uint32_t* const w2 = w1 + blocks;
  const std::uint32_t* const w3 = w2 + blocks;
  for (std::size_t b = 0; b < blocks; ++b) {
    float z0, z1, z2, z3;
    box_muller<float>(w0[b], w1[b], z0, z1);
    box_muller<float>(w2[b], w3[b], z2, z3);
    draws[4 * b] = z0;
    draws[4 * b + 1] = z1;
    draws[4 * b + 2] = z2;
    draws[4 * b + 3] = z3;
  }
}

/// The float draws of blocks [first_block, first_block + blocks) of a stream:
/// philox_words into `words` (scratch of 4 * blocks words), then box_muller_words into
/// `draws` (4 * blocks floats). Draw i of the stream lands at draws[i - 4 * first_block];
/// the values equal gaussian_block<float>'s.
inline void gaussian_floats(const NoiseKey& key, std::uint64_t first_block, std::size_t blocks,
                            std::uint32_t* words, float* draws) {
  philox_words(key, first_block, blocks, words);
  box_muller_words(words, blocks, draws);
}

}  // namespace aclora
