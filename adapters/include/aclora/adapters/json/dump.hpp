#pragma once
/// @file
/// @brief JSON serializer for aclora::json::Value.

#include <charconv>
#include <cmath>
#include <cstddef>
#include <string>
#include <string_view>

#include "aclora/adapters/json/utf8.hpp"
#include "aclora/adapters/json/value.hpp"

namespace aclora::json {

namespace detail {

inline void dump_string(std::string& out, std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  if (const auto bad = utf8::first_invalid(text)) {
    throw Error("cannot write a JSON string that is not valid UTF-8 (bad byte at offset " +
                std::to_string(*bad) + ")");
  }
  out.push_back('"');
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (byte < 0x20) {
          out += "\\u00";
          out.push_back(kHex[byte >> 4]);
          out.push_back(kHex[byte & 0xF]);
        } else {
          out.push_back(c);
        }
    }
  }
  out.push_back('"');
}

inline void dump_number(std::string& out, const Number& number) {
  char buffer[64];
  std::to_chars_result result{};
  if (number.is_integer()) {
    result = std::to_chars(buffer, buffer + sizeof buffer, number.integer());
  } else {
    if (!std::isfinite(number.real())) {
      throw Error("cannot write a non-finite number (inf or nan) as JSON");
    }
    // Shortest text that reads back to the same double.
    result = std::to_chars(buffer, buffer + sizeof buffer, number.real());
  }
  out.append(buffer, result.ptr);
}

inline void newline_indent(std::string& out, int indent, int level) {
  if (indent >= 0) {
    out.push_back('\n');
    out.append(static_cast<std::size_t>(indent) * static_cast<std::size_t>(level), ' ');
  }
}

inline void dump_value(std::string& out, const Value& value, int indent, int level) {
  switch (value.kind()) {
    case Kind::kNull:
      out += "null";
      return;
    case Kind::kBool:
      out += value.as_bool() ? "true" : "false";
      return;
    case Kind::kNumber:
      dump_number(out, value.as_number());
      return;
    case Kind::kString:
      dump_string(out, value.as_string());
      return;
    case Kind::kArray: {
      const Array& array = value.as_array();
      out.push_back('[');
      for (std::size_t i = 0; i < array.size(); ++i) {
        if (i > 0) {
          out.push_back(',');
        }
        newline_indent(out, indent, level + 1);
        dump_value(out, array[i], indent, level + 1);
      }
      if (!array.empty()) {
        newline_indent(out, indent, level);
      }
      out.push_back(']');
      return;
    }
    case Kind::kObject: {
      const Object& object = value.as_object();
      out.push_back('{');
      for (std::size_t i = 0; i < object.size(); ++i) {
        if (i > 0) {
          out.push_back(',');
        }
        newline_indent(out, indent, level + 1);
        dump_string(out, object[i].first);
        out += indent >= 0 ? ": " : ":";
        dump_value(out, object[i].second, indent, level + 1);
      }
      if (!object.empty()) {
        newline_indent(out, indent, level);
      }
      out.push_back('}');
      return;
    }
  }
}

}  // namespace detail

/// Serializes a value. indent < 0 gives the compact form (no whitespace);
/// indent >= 0 puts each array element and object member on its own line,
/// indented by that many spaces per level. Object members keep their order.
/// @throws Error for non-finite numbers and for strings that are not UTF-8.
inline std::string dump(const Value& value, int indent = -1) {
  std::string out;
  detail::dump_value(out, value, indent, 0);
  return out;
}

/// Appends the JSON string literal for text (quoted and escaped) to out.
/// @throws Error when text is not valid UTF-8.
inline void append_quoted(std::string& out, std::string_view text) {
  detail::dump_string(out, text);
}

}  // namespace aclora::json
