#pragma once
/// @file
/// @brief The few pieces of the protobuf wire format that TensorBoard events need,
/// written by hand: varints, fixed64 / fixed32 little-endian, length-delimited fields.

#include <bit>
#include <cstdint>
#include <string>
#include <string_view>

namespace aclora::logs::protobuf {

/// Protobuf wire types used here.
enum class WireType : std::uint8_t {
  kVarint = 0,           ///< int32, int64, uint64, bool, enum
  kFixed64 = 1,          ///< double, fixed64
  kLengthDelimited = 2,  ///< string, bytes, embedded message
  kFixed32 = 5,          ///< float, fixed32
};

/// Appends value as a base-128 varint (1 to 10 bytes, low groups first).
inline void append_varint(std::string& out, std::uint64_t value) {
  while (value >= 0x80U) {
    out.push_back(static_cast<char>((value & 0x7FU) | 0x80U));
    value >>= 7;
  }
  out.push_back(static_cast<char>(value));
}

/// Appends a field key: (field_number << 3) | wire_type, as a varint.
inline void append_key(std::string& out, std::uint32_t field_number, WireType type) {
  append_varint(out,
                (static_cast<std::uint64_t>(field_number) << 3) | static_cast<std::uint64_t>(type));
}

/// Appends the low `bytes` bytes of value, least significant first.
inline void append_little_endian(std::string& out, std::uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) {
    out.push_back(static_cast<char>((value >> (8 * i)) & 0xFFU));
  }
}

/// Appends an int64 field (two's complement varint: negative values take 10 bytes).
inline void append_int64_field(std::string& out, std::uint32_t field_number, std::int64_t value) {
  append_key(out, field_number, WireType::kVarint);
  append_varint(out, static_cast<std::uint64_t>(value));
}

/// Appends a double field (IEEE 754 binary64, little-endian).
inline void append_double_field(std::string& out, std::uint32_t field_number, double value) {
  append_key(out, field_number, WireType::kFixed64);
  append_little_endian(out, std::bit_cast<std::uint64_t>(value), 8);
}

/// Appends a float field (IEEE 754 binary32, little-endian).
inline void append_float_field(std::string& out, std::uint32_t field_number, float value) {
  append_key(out, field_number, WireType::kFixed32);
  append_little_endian(out, std::bit_cast<std::uint32_t>(value), 4);
}

/// Appends a length-delimited field: a string, bytes, or an encoded embedded message.
inline void append_bytes_field(std::string& out, std::uint32_t field_number,
                               std::string_view bytes) {
  append_key(out, field_number, WireType::kLengthDelimited);
  append_varint(out, bytes.size());
  out.append(bytes);
}

}  // namespace aclora::logs::protobuf
