#pragma once
// Internal UTF-8 <-> UTF-32 helpers for the tokenizer sources.

#include <string>
#include <string_view>

namespace sdxl::detail {

/// Decodes strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF).
/// @throws std::invalid_argument naming the byte offset of the first bad sequence.
std::u32string utf8_to_utf32(std::string_view utf8);

/// Appends the UTF-8 encoding of one code point (must be a valid scalar value).
void append_utf8(std::string& out, char32_t c);

std::string utf32_to_utf8(std::u32string_view text);

}  // namespace sdxl::detail
