// Tests of aclora::json: strict parsing, exact integers, escapes, limits, dump.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "aclora/adapters/json.hpp"

namespace json = aclora::json;

namespace {

// Parses text expecting failure; returns the message.
std::string parse_error(std::string_view text, const json::ParseOptions& options = {}) {
  try {
    json::parse(text, options);
  } catch (const json::Error& error) {
    return error.what();
  }
  ADD_FAILURE() << "parse accepted: " << text;
  return {};
}

}  // namespace

// Every kind of value parses, and object members keep their file order.
TEST(Json, ParsesEveryKindAndKeepsMemberOrder) {
  const json::Value v = json::parse(R"( {"z": null, "a": [true, false, 1, -2.5, "s"], "m": {}} )");
  ASSERT_TRUE(v.is_object());
  const json::Object& members = v.as_object();
  ASSERT_EQ(members.size(), 3u);
  EXPECT_EQ(members[0].first, "z");
  EXPECT_EQ(members[1].first, "a");
  EXPECT_EQ(members[2].first, "m");
  EXPECT_TRUE(v.find("z")->is_null());
  const json::Array& a = v.find("a")->as_array();
  EXPECT_TRUE(a[0].as_bool());
  EXPECT_FALSE(a[1].as_bool());
  EXPECT_EQ(a[2].as_int(), 1);
  EXPECT_EQ(a[3].as_double(), -2.5);
  EXPECT_EQ(a[4].as_string(), "s");
  EXPECT_TRUE(v.find("m")->as_object().empty());
  EXPECT_EQ(v.find("missing"), nullptr);
}

// Integer literals within int64 are exact (no trip through double), beyond it
// they become doubles; fractions and exponents are doubles.
TEST(Json, IntegersAreExactWithinInt64) {
  const json::Value v = json::parse(
      "[9007199254740993, -9223372036854775808, 9223372036854775807, 9223372036854775808, 1.0, "
      "1e2]");
  const json::Array& a = v.as_array();
  EXPECT_EQ(a[0].as_int(), 9007199254740993LL);
  EXPECT_EQ(a[1].as_int(), std::numeric_limits<std::int64_t>::min());
  EXPECT_EQ(a[2].as_int(), std::numeric_limits<std::int64_t>::max());
  EXPECT_FALSE(a[3].is_integer());
  EXPECT_EQ(a[3].as_double(), 9223372036854775808.0);
  EXPECT_FALSE(a[4].is_integer());
  EXPECT_FALSE(a[5].is_integer());
  EXPECT_EQ(a[5].as_double(), 100.0);
  EXPECT_THROW(a[4].as_int(), json::Error);
}

// Tiny literals underflow to zero; huge ones are rejected.
TEST(Json, NumberRangeUnderflowsToZeroAndRejectsOverflow) {
  EXPECT_EQ(json::parse("1e-400").as_double(), 0.0);
  EXPECT_TRUE(std::signbit(json::parse("-1e-400").as_double()));
  EXPECT_EQ(json::parse("5e-324").as_double(), std::numeric_limits<double>::denorm_min());
  EXPECT_NE(parse_error("1e400").find("out of the double range"), std::string::npos);
  EXPECT_NE(parse_error("-123.4e999").find("out of the double range"), std::string::npos);
}

// All escapes decode, \u escapes become UTF-8, surrogate pairs combine.
TEST(Json, DecodesEscapesAndSurrogatePairs) {
  const std::string s =
      json::parse(R"("q\" b\\ s\/ \b\f\n\r\t \u0041\u00e9\u20ac\ud83d\ude00 \u0000")").as_string();
  const std::string expected = std::string("q\" b\\ s/ \b\f\n\r\t A\xC3\xA9\xE2\x82\xAC") +
                               "\xF0\x9F\x98\x80 " + std::string(1, '\0');
  EXPECT_EQ(s, expected);
}

// Raw UTF-8 in strings passes through unchanged.
TEST(Json, AcceptsRawUtf8InStrings) {
  EXPECT_EQ(json::parse("\"caf\xC3\xA9 \xF0\x9F\x98\x80\"").as_string(),
            "caf\xC3\xA9 \xF0\x9F\x98\x80");
}

// Unpaired surrogates in \u escapes are errors naming the problem.
TEST(Json, RejectsUnpairedSurrogates) {
  EXPECT_NE(parse_error(R"("\ud800")").find("high surrogate"), std::string::npos);
  EXPECT_NE(parse_error(R"("\ud800\u0041")").find("high surrogate"), std::string::npos);
  EXPECT_NE(parse_error(R"("\udc00")").find("low surrogate"), std::string::npos);
  EXPECT_NE(parse_error(R"("\u12G4")").find("hex digit"), std::string::npos);
  EXPECT_NE(parse_error(R"("\u12")").find("\\u escape"), std::string::npos);
}

// Text that is not UTF-8 (overlong, encoded surrogate, truncated, stray
// continuation, above U+10FFFF) is rejected.
TEST(Json, RejectsInvalidUtf8) {
  for (const std::string bad : {"\"\xC0\xAF\"", "\"\xED\xA0\x80\"", "\"\xE2\x82\"", "\"\x80\"",
                                "\"\xF4\x90\x80\x80\"", "\"\xFF\""}) {
    EXPECT_NE(parse_error(bad).find("invalid UTF-8"), std::string::npos) << bad;
  }
}

// Everything RFC 8259 does not allow is rejected with a message.
TEST(Json, RejectsNonStandardSyntax) {
  const struct {
    const char* text;
    const char* words;
  } cases[] = {
      {"", "unexpected end"},
      {"   ", "unexpected end"},
      {"[1] x", "unexpected characters after"},
      {"{} {}", "unexpected characters after"},
      {"[1,]", "expected a value"},
      {"{\"a\":1,}", "expected a string key"},
      {"{'a':1}", "expected a string key"},
      {"{\"a\" 1}", "expected ':'"},
      {"[1 2]", "expected ',' or ']'"},
      {"{\"a\":1 \"b\":2}", "expected ',' or '}'"},
      {"[1", "unexpected end of text inside an array"},
      {"{\"a\":1", "unexpected end of text inside an object"},
      {"\"abc", "unterminated string"},
      {"\"a\nb\"", "control character"},
      {"\"\\x\"", "invalid escape"},
      {"01", "leading zero"},
      {"-", "expected a digit"},
      {"+1", "unexpected character"},
      {".5", "unexpected character"},
      {"1.", "after the decimal point"},
      {"1e", "exponent"},
      {"NaN", "unexpected character"},
      {"Infinity", "unexpected character"},
      {"tru", "invalid literal"},
      {"nul", "invalid literal"},
      {"// c\n1", "unexpected character"},
  };
  for (const auto& c : cases) {
    const std::string message = parse_error(c.text);
    EXPECT_NE(message.find(c.words), std::string::npos) << c.text << " -> " << message;
  }
}

// Error messages locate the problem by line, column and byte.
TEST(Json, ErrorMessageGivesLineAndColumn) {
  const std::string message = parse_error("{\n  \"a\": [1,\n  2,, 3]\n}");
  EXPECT_NE(message.find("line 3, column 5 (byte 17)"), std::string::npos) << message;
}

// Nesting is limited (default 128); deeper documents fail instead of
// exhausting the stack.
TEST(Json, EnforcesNestingDepthLimit) {
  const auto nested = [](std::size_t depth) {
    return std::string(depth, '[') + std::string(depth, ']');
  };
  EXPECT_NO_THROW(json::parse(nested(128)));
  EXPECT_NE(parse_error(nested(129)).find("nesting deeper than 128"), std::string::npos);
  EXPECT_NE(parse_error(nested(100000)).find("nesting deeper"), std::string::npos);
  json::ParseOptions shallow;
  shallow.max_depth = 2;
  EXPECT_NO_THROW(json::parse("{\"a\":[1]}", shallow));
  EXPECT_NE(parse_error("{\"a\":[[1]]}", shallow).find("nesting deeper than 2"), std::string::npos);
}

// Duplicate keys are rejected (by default) at the second occurrence.
TEST(Json, RejectsDuplicateKeysUnlessAllowed) {
  const std::string message = parse_error(R"({"b":1,"a":2,"b":3})");
  EXPECT_NE(message.find("duplicate key \"b\""), std::string::npos) << message;
  EXPECT_NE(message.find("byte 13"), std::string::npos) << message;
  EXPECT_NE(parse_error(R"({"x":{"a":1,"a":1}})").find("duplicate key \"a\""), std::string::npos);
  json::ParseOptions lenient;
  lenient.allow_duplicate_keys = true;
  EXPECT_EQ(json::parse(R"({"a":1,"a":2})", lenient).as_object().size(), 2u);
}

// dump() then parse() gives back an equal value, including awkward strings
// and doubles that need all 17 digits.
TEST(Json, DumpRoundTrips) {
  json::Value v;
  v["name"] = "tab\t quote\" backslash\\ nul" + std::string(1, '\0') + " \x01 \xC3\xA9";
  v["numbers"] = json::Array{0,
                             -1,
                             std::numeric_limits<std::int64_t>::min(),
                             0.1,
                             1e300,
                             -2.2250738585072014e-308,
                             0.30000000000000004};
  v["nested"]["list"].push_back(nullptr);
  v["nested"]["list"].push_back(true);
  v["empty_array"] = json::Array{};
  v["empty_object"] = json::Object{};
  for (const int indent : {-1, 0, 2}) {
    const std::string text = json::dump(v, indent);
    EXPECT_EQ(json::parse(text), v) << text;
  }
}

// The compact form has no whitespace; control characters are escaped; the
// indented form puts one member per line.
TEST(Json, DumpFormatsExactly) {
  json::Value v;
  v["a"] = json::Array{1, 2.5};
  v["s"] = "x\ny\x1f";
  EXPECT_EQ(json::dump(v), R"({"a":[1,2.5],"s":"x\ny\u001f"})");
  EXPECT_EQ(json::dump(v, 2), "{\n  \"a\": [\n    1,\n    2.5\n  ],\n  \"s\": \"x\\ny\\u001f\"\n}");
  EXPECT_EQ(json::dump(json::Value(0.1)), "0.1");
}

// Values JSON cannot represent make dump() throw.
TEST(Json, DumpRejectsNonFiniteAndInvalidUtf8) {
  EXPECT_THROW(json::dump(json::Value(std::numeric_limits<double>::infinity())), json::Error);
  EXPECT_THROW(json::dump(json::Value(std::nan(""))), json::Error);
  EXPECT_THROW(json::dump(json::Value("\xFF")), json::Error);
  json::Value object;
  object["\xC0"] = 1;
  EXPECT_THROW(json::dump(object), json::Error);
}

// Typed accessors throw on the wrong kind and name both kinds.
TEST(Json, AccessorsCheckTheKind) {
  const json::Value v = json::parse("[1]");
  try {
    (void)v.as_object();
    FAIL() << "as_object on an array did not throw";
  } catch (const json::Error& error) {
    EXPECT_NE(std::string(error.what()).find("array, expected object"), std::string::npos);
  }
  EXPECT_THROW((void)v.as_string(), json::Error);
  EXPECT_THROW((void)json::Value("1").as_int(), json::Error);
  json::Value number = 3;
  EXPECT_THROW(number["key"], json::Error);
  EXPECT_THROW(number.push_back(1), json::Error);
}

// Integral constructors: unsigned values above int64 become doubles.
TEST(Json, UnsignedBeyondInt64BecomesDouble) {
  EXPECT_TRUE(json::Value(std::uint64_t{5}).is_integer());
  const json::Value big(std::numeric_limits<std::uint64_t>::max());
  EXPECT_FALSE(big.is_integer());
  EXPECT_EQ(big.as_double(), 18446744073709551616.0);
}

// printable() escapes control and non-UTF-8 bytes and truncates long text.
TEST(Json, PrintableMakesUntrustedTextSafe) {
  EXPECT_EQ(json::printable("a\nb\xFF\xC3\xA9"), "a\\x0Ab\\xFF\xC3\xA9");
  EXPECT_EQ(json::printable(std::string(200, 'x'), 10), std::string(10, 'x') + "...");
}
