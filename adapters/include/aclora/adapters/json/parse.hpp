#pragma once
/// @file
/// @brief Strict JSON parser (RFC 8259) for aclora::json::Value.
///
/// Accepts exactly one JSON value surrounded by optional whitespace. Rejects:
/// trailing characters, text that is not UTF-8, control characters in strings,
/// bad escapes and unpaired UTF-16 surrogates in \\u escapes, leading zeros,
/// numbers outside the double range, nesting deeper than ParseOptions::max_depth,
/// and (unless allowed) duplicate object keys.

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "aclora/adapters/json/printable.hpp"
#include "aclora/adapters/json/utf8.hpp"
#include "aclora/adapters/json/value.hpp"

namespace aclora::json {

/// Limits and leniencies of parse().
struct ParseOptions {
  /// Most arrays/objects nested inside each other (the outermost counts as 1).
  std::size_t max_depth = 128;
  /// When false (default), an object with the same key twice is an error.
  bool allow_duplicate_keys = false;
};

namespace detail {

class Parser {
 public:
  Parser(std::string_view text, const ParseOptions& options) : text_(text), options_(options) {}

  Value parse_document() {
    skip_whitespace();
    Value value = parse_value();
    skip_whitespace();
    if (pos_ != text_.size()) {
      fail("unexpected characters after the JSON value");
    }
    return value;
  }

 private:
  [[noreturn]] void fail(std::string_view problem) const { fail_at(pos_, problem); }

  [[noreturn]] void fail_at(std::size_t where, std::string_view problem) const {
    std::size_t line = 1;
    std::size_t line_start = 0;
    for (std::size_t i = 0; i < where && i < text_.size(); ++i) {
      if (text_[i] == '\n') {
        ++line;
        line_start = i + 1;
      }
    }
    throw Error("JSON error at line " + std::to_string(line) + ", column " +
                std::to_string(where - line_start + 1) + " (byte " + std::to_string(where) +
                "): " + std::string(problem));
  }

  bool at_end() const { return pos_ >= text_.size(); }
  char peek() const { return text_[pos_]; }

  void skip_whitespace() {
    while (!at_end() && (peek() == ' ' || peek() == '\t' || peek() == '\n' || peek() == '\r')) {
      ++pos_;
    }
  }

  void expect_literal(std::string_view literal) {
    if (text_.substr(pos_, literal.size()) != literal) {
      // Appended, not concatenated: g++ 12 warns falsely (-Wstringop-overflow) on the latter.
      std::string message = "invalid literal (expected '";
      message.append(literal).append("')");
      fail(message);
    }
    pos_ += literal.size();
  }

  Value parse_value() {
    if (at_end()) {
      fail("unexpected end of text, expected a value");
    }
    switch (peek()) {
      case '{':
        return parse_object();
      case '[':
        return parse_array();
      case '"':
        return Value(parse_string());
      case 't':
        expect_literal("true");
        return Value(true);
      case 'f':
        expect_literal("false");
        return Value(false);
      case 'n':
        expect_literal("null");
        return Value(nullptr);
      default:
        if (peek() == '-' || (peek() >= '0' && peek() <= '9')) {
          return Value(parse_number());
        }
        fail("unexpected character '" + printable(text_.substr(pos_, 1)) + "', expected a value");
    }
  }

  void enter_container() {
    if (++depth_ > options_.max_depth) {
      fail("nesting deeper than " + std::to_string(options_.max_depth) + " levels");
    }
  }

  Value parse_array() {
    enter_container();
    ++pos_;  // '['
    Array array;
    skip_whitespace();
    if (!at_end() && peek() == ']') {
      ++pos_;
      --depth_;
      return Value(std::move(array));
    }
    while (true) {
      skip_whitespace();
      array.push_back(parse_value());
      skip_whitespace();
      if (at_end()) {
        fail("unexpected end of text inside an array");
      }
      if (peek() == ',') {
        ++pos_;
      } else if (peek() == ']') {
        ++pos_;
        break;
      } else {
        fail("expected ',' or ']' in an array");
      }
    }
    --depth_;
    return Value(std::move(array));
  }

  Value parse_object() {
    enter_container();
    ++pos_;  // '{'
    Object object;
    std::vector<std::size_t> key_positions;
    skip_whitespace();
    if (!at_end() && peek() == '}') {
      ++pos_;
      --depth_;
      return Value(std::move(object));
    }
    while (true) {
      skip_whitespace();
      if (at_end() || peek() != '"') {
        fail(at_end() ? "unexpected end of text inside an object" : "expected a string key");
      }
      key_positions.push_back(pos_);
      std::string key = parse_string();
      skip_whitespace();
      if (at_end() || peek() != ':') {
        fail("expected ':' after an object key");
      }
      ++pos_;
      skip_whitespace();
      Value member = parse_value();
      object.emplace_back(std::move(key), std::move(member));
      skip_whitespace();
      if (at_end()) {
        fail("unexpected end of text inside an object");
      }
      if (peek() == ',') {
        ++pos_;
      } else if (peek() == '}') {
        ++pos_;
        break;
      } else {
        fail("expected ',' or '}' in an object");
      }
    }
    if (!options_.allow_duplicate_keys) {
      check_unique_keys(object, key_positions);
    }
    --depth_;
    return Value(std::move(object));
  }

  void check_unique_keys(const Object& object, const std::vector<std::size_t>& positions) const {
    if (object.size() < 2) {
      return;
    }
    std::vector<std::size_t> order(object.size());
    for (std::size_t i = 0; i < order.size(); ++i) {
      order[i] = i;
    }
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
      return object[a].first < object[b].first;
    });
    for (std::size_t i = 1; i < order.size(); ++i) {
      if (object[order[i - 1]].first == object[order[i]].first) {
        fail_at(positions[order[i]], "duplicate key \"" + printable(object[order[i]].first) + "\"");
      }
    }
  }

  unsigned parse_hex4() {
    if (text_.size() - pos_ < 4) {
      fail("truncated \\u escape");
    }
    unsigned value = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = text_[pos_++];
      value <<= 4;
      if (c >= '0' && c <= '9') {
        value |= static_cast<unsigned>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        value |= static_cast<unsigned>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        value |= static_cast<unsigned>(c - 'A' + 10);
      } else {
        --pos_;
        fail("invalid hex digit in \\u escape");
      }
    }
    return value;
  }

  void parse_unicode_escape(std::string& out) {
    const std::size_t escape_start = pos_ - 2;  // at the backslash
    const unsigned first = parse_hex4();
    if (first >= 0xDC00 && first <= 0xDFFF) {
      fail_at(escape_start, "unpaired low surrogate in \\u escape");
    }
    if (first < 0xD800 || first > 0xDBFF) {
      utf8::append(out, first);
      return;
    }
    if (text_.substr(pos_, 2) != "\\u") {
      fail_at(escape_start, "high surrogate in \\u escape not followed by a low surrogate");
    }
    pos_ += 2;
    const unsigned second = parse_hex4();
    if (second < 0xDC00 || second > 0xDFFF) {
      fail_at(escape_start, "high surrogate in \\u escape not followed by a low surrogate");
    }
    utf8::append(out, 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00));
  }

  std::string parse_string() {
    ++pos_;  // opening quote
    std::string out;
    while (true) {
      // Copy the run of plain characters in one go.
      const std::size_t run_start = pos_;
      while (!at_end()) {
        const auto byte = static_cast<unsigned char>(peek());
        if (byte == '"' || byte == '\\' || byte < 0x20) {
          break;
        }
        if (byte < 0x80) {
          ++pos_;
        } else {
          const std::size_t length = utf8::sequence_length(text_, pos_);
          if (length == 0) {
            fail("invalid UTF-8 in a string");
          }
          pos_ += length;
        }
      }
      out.append(text_.substr(run_start, pos_ - run_start));
      if (at_end()) {
        fail("unterminated string");
      }
      const char c = peek();
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c != '\\') {
        fail("unescaped control character in a string");
      }
      ++pos_;
      if (at_end()) {
        fail("unterminated escape in a string");
      }
      const char escape = text_[pos_++];
      switch (escape) {
        case '"':
          out.push_back('"');
          break;
        case '\\':
          out.push_back('\\');
          break;
        case '/':
          out.push_back('/');
          break;
        case 'b':
          out.push_back('\b');
          break;
        case 'f':
          out.push_back('\f');
          break;
        case 'n':
          out.push_back('\n');
          break;
        case 'r':
          out.push_back('\r');
          break;
        case 't':
          out.push_back('\t');
          break;
        case 'u':
          parse_unicode_escape(out);
          break;
        default:
          --pos_;
          fail("invalid escape '\\" + printable(text_.substr(pos_, 1)) + "' in a string");
      }
    }
  }

  static bool is_digit(char c) { return c >= '0' && c <= '9'; }

  Number parse_number() {
    const std::size_t start = pos_;
    bool integral = true;
    if (peek() == '-') {
      ++pos_;
    }
    if (at_end() || !is_digit(peek())) {
      fail("expected a digit in a number");
    }
    if (peek() == '0') {
      ++pos_;
      if (!at_end() && is_digit(peek())) {
        fail("leading zero in a number");
      }
    } else {
      while (!at_end() && is_digit(peek())) {
        ++pos_;
      }
    }
    if (!at_end() && peek() == '.') {
      integral = false;
      ++pos_;
      if (at_end() || !is_digit(peek())) {
        fail("expected a digit after the decimal point");
      }
      while (!at_end() && is_digit(peek())) {
        ++pos_;
      }
    }
    if (!at_end() && (peek() == 'e' || peek() == 'E')) {
      integral = false;
      ++pos_;
      if (!at_end() && (peek() == '+' || peek() == '-')) {
        ++pos_;
      }
      if (at_end() || !is_digit(peek())) {
        fail("expected a digit in the exponent");
      }
      while (!at_end() && is_digit(peek())) {
        ++pos_;
      }
    }
    const char* first = text_.data() + start;
    const char* last = text_.data() + pos_;
    if (integral) {
      std::int64_t value = 0;
      const auto [end, error] = std::from_chars(first, last, value);
      if (error == std::errc() && end == last) {
        return Number(value);
      }
      // Out of int64 range: fall through to a double.
    }
    double value = 0;
    const auto [end, error] = std::from_chars(first, last, value);
    if (error == std::errc::result_out_of_range) {
      if (magnitude_exceeds_one(start)) {
        fail_at(start, "number out of the double range");
      }
      // Underflow: the literal is smaller than the smallest subnormal.
      return Number(text_[start] == '-' ? -0.0 : 0.0);
    }
    if (error != std::errc() || end != last) {
      fail_at(start, "malformed number");
    }
    return Number(value);
  }

  // For an out-of-range literal, tells overflow from underflow: true when the
  // decimal exponent (position of the first non-zero digit plus the written
  // exponent) is positive.
  bool magnitude_exceeds_one(std::size_t start) const {
    std::size_t i = start;
    if (text_[i] == '-') {
      ++i;
    }
    long long exponent = 0;  // decimal exponent of the first significant digit
    bool seen_point = false;
    bool seen_significant = false;
    for (; i < pos_ && text_[i] != 'e' && text_[i] != 'E'; ++i) {
      if (text_[i] == '.') {
        seen_point = true;
        continue;
      }
      if (!seen_significant && text_[i] != '0') {
        seen_significant = true;
      }
      if (seen_significant && !seen_point) {
        ++exponent;
      } else if (!seen_significant && seen_point) {
        --exponent;
      }
    }
    long long written = 0;
    if (i < pos_) {
      ++i;  // 'e'
      bool negative = false;
      if (text_[i] == '+' || text_[i] == '-') {
        negative = text_[i] == '-';
        ++i;
      }
      for (; i < pos_; ++i) {
        written = std::min<long long>(written * 10 + (text_[i] - '0'), 1'000'000'000LL);
      }
      if (negative) {
        written = -written;
      }
    }
    return exponent + written > 0;
  }

  std::string_view text_;
  const ParseOptions& options_;
  std::size_t pos_ = 0;
  std::size_t depth_ = 0;
};

}  // namespace detail

/// Parses one JSON document.
/// @throws Error naming the line, column, byte offset and the problem.
inline Value parse(std::string_view text, const ParseOptions& options = {}) {
  return detail::Parser(text, options).parse_document();
}

}  // namespace aclora::json
