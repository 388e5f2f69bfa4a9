#pragma once
/// @file
/// @brief A 64-bit checksum that runs at memory speed, for telling a corrupt, truncated or
/// changed file from the one a manifest or a cache key describes (not for security).

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <span>
#include <string>

namespace aclora::io {

/// FNV-1a over 64-bit little-endian words (the tail byte by byte), continuing from `seed`
/// (so a checksum can run over several pieces).
inline std::uint64_t checksum(std::span<const std::byte> bytes,
                              std::uint64_t seed = 14695981039346656037ull) {
  constexpr std::uint64_t prime = 1099511628211ull;
  std::uint64_t hash = seed;
  const std::size_t words = bytes.size() / 8;
  for (std::size_t i = 0; i < words; ++i) {
    std::uint64_t word;
    std::memcpy(&word, bytes.data() + 8 * i, 8);
    hash = (hash ^ word) * prime;
  }
  for (std::size_t i = 8 * words; i < bytes.size(); ++i)
    hash = (hash ^ static_cast<std::uint64_t>(bytes[i])) * prime;
  return hash;
}

/// The checksum of a string's bytes.
inline std::uint64_t checksum(const std::string& text,
                              std::uint64_t seed = 14695981039346656037ull) {
  return checksum(std::as_bytes(std::span(text.data(), text.size())), seed);
}

/// 16 lower-case hex digits.
inline std::string hex64(std::uint64_t value) {
  char buffer[17];
  std::snprintf(buffer, sizeof buffer, "%016llx", static_cast<unsigned long long>(value));
  return buffer;
}

}  // namespace aclora::io
