#pragma once
/// @file
/// @brief CRC-32C (Castagnoli), table-driven, and the masked form TensorBoard records use.

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace aclora::logs {

namespace detail {

// One table entry per byte value for the reflected polynomial 0x82F63B78.
constexpr std::array<std::uint32_t, 256> make_crc32c_table() {
  std::array<std::uint32_t, 256> table{};
  for (std::uint32_t byte = 0; byte < 256; ++byte) {
    std::uint32_t crc = byte;
    for (int bit = 0; bit < 8; ++bit) {
      crc = (crc & 1U) != 0 ? (crc >> 1) ^ 0x82F63B78U : crc >> 1;
    }
    table[byte] = crc;
  }
  return table;
}

inline constexpr std::array<std::uint32_t, 256> kCrc32cTable = make_crc32c_table();

}  // namespace detail

/// Continues a CRC-32C over more bytes: crc32c_extend(crc32c(a), b) == crc32c(a + b).
/// Start from 0 for the CRC of b alone.
constexpr std::uint32_t crc32c_extend(std::uint32_t crc, std::string_view bytes) {
  crc = ~crc;
  for (const char c : bytes) {
    crc = detail::kCrc32cTable[(crc ^ static_cast<unsigned char>(c)) & 0xFFU] ^ (crc >> 8);
  }
  return ~crc;
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78, initial and final
/// XOR 0xFFFFFFFF) of bytes; crc32c("123456789") == 0xE3069283.
constexpr std::uint32_t crc32c(std::string_view bytes) {
  return crc32c_extend(0, bytes);
}

/// CRC-32C of raw bytes.
inline std::uint32_t crc32c(std::span<const std::byte> bytes) {
  return crc32c(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

/// The masked CRC stored in TFRecord / TensorBoard files:
/// ((crc >> 15) | (crc << 17)) + 0xa282ead8, in uint32 arithmetic.
constexpr std::uint32_t mask_crc32c(std::uint32_t crc) {
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8U;
}

/// Inverse of mask_crc32c().
constexpr std::uint32_t unmask_crc32c(std::uint32_t masked) {
  const std::uint32_t rotated = masked - 0xa282ead8U;
  return (rotated >> 17) | (rotated << 15);
}

/// mask_crc32c(crc32c(bytes)).
constexpr std::uint32_t masked_crc32c(std::string_view bytes) {
  return mask_crc32c(crc32c(bytes));
}

}  // namespace aclora::logs
