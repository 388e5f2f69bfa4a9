#pragma once
/// @file
/// @brief Making untrusted strings (JSON keys, tensor names) safe to put in an
/// error message.

#include <cstddef>
#include <string>
#include <string_view>

#include "aclora/adapters/json/utf8.hpp"

namespace aclora::json {

/// Copy of text for an error message: control characters and bytes that are
/// not UTF-8 become \\xNN (NN: two upper-case hex digits), quotes and backslashes are kept as they
/// are, and text longer than max_bytes is cut (at a character boundary) with "..." added.
inline std::string printable(std::string_view text, std::size_t max_bytes = 120) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  std::size_t pos = 0;
  while (pos < text.size()) {
    if (out.size() >= max_bytes) {
      out += "...";
      break;
    }
    const auto byte = static_cast<unsigned char>(text[pos]);
    const std::size_t length = utf8::sequence_length(text, pos);
    if (length == 0 || byte < 0x20 || byte == 0x7F) {
      out += "\\x";
      out.push_back(kHex[byte >> 4]);
      out.push_back(kHex[byte & 0xF]);
      ++pos;
    } else {
      out.append(text.substr(pos, length));
      pos += length;
    }
  }
  return out;
}

}  // namespace aclora::json
