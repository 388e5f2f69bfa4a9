// Tests of the CRC-32C and the protobuf encoding pieces used by the TensorBoard writer.

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>

#include "aclora/adapters/logs/crc32c.hpp"
#include "aclora/adapters/logs/protobuf.hpp"

namespace logs = aclora::logs;

// The CRC-32C check value of the Castagnoli polynomial: crc32c("123456789") = 0xE3069283.
TEST(Crc32c, KnownAnswerOfTheCheckString) {
  EXPECT_EQ(logs::crc32c(std::string_view("123456789")), 0xE3069283U);
  static_assert(logs::crc32c(std::string_view("123456789")) == 0xE3069283U);
}

// Published CRC-32C vectors (RFC 3720, iSCSI): 32 zero bytes, 32 0xFF bytes, 0..31,
// 31..0; and the empty input is 0.
TEST(Crc32c, KnownAnswersOfRfc3720) {
  std::string zeros(32, '\0');
  std::string ones(32, '\xFF');
  std::string ascending;
  std::string descending;
  for (int i = 0; i < 32; ++i) {
    ascending.push_back(static_cast<char>(i));
    descending.push_back(static_cast<char>(31 - i));
  }
  EXPECT_EQ(logs::crc32c(zeros), 0x8A9136AAU);
  EXPECT_EQ(logs::crc32c(ones), 0x62A8AB43U);
  EXPECT_EQ(logs::crc32c(ascending), 0x46DD794EU);
  EXPECT_EQ(logs::crc32c(descending), 0x113FDB5CU);
  EXPECT_EQ(logs::crc32c(std::string_view()), 0U);
}

// Extending a CRC over a second piece equals the CRC of the concatenation.
TEST(Crc32c, ExtendEqualsTheCrcOfTheConcatenation) {
  const std::string a = "aclora writes ";
  const std::string b = "TensorBoard event files";
  EXPECT_EQ(logs::crc32c_extend(logs::crc32c(a), b), logs::crc32c(a + b));
}

// The mask is ((crc >> 15) | (crc << 17)) + 0xa282ead8 in uint32 arithmetic and unmask
// inverts it.
TEST(Crc32c, MaskMatchesTheFormulaAndUnmaskInvertsIt) {
  for (const std::uint32_t crc : {0U, 1U, 0xE3069283U, 0xFFFFFFFFU, 0x80000000U, 0x12345678U}) {
    const std::uint32_t expected = ((crc >> 15) | (crc << 17)) + 0xa282ead8U;
    EXPECT_EQ(logs::mask_crc32c(crc), expected);
    EXPECT_EQ(logs::unmask_crc32c(logs::mask_crc32c(crc)), crc);
  }
}

// Varints: 7 bits per byte, low groups first, high bit = more; negative int64 takes 10 bytes.
TEST(Protobuf, VarintsMatchTheWireFormat) {
  const auto varint = [](std::uint64_t value) {
    std::string out;
    logs::protobuf::append_varint(out, value);
    return out;
  };
  EXPECT_EQ(varint(0), std::string(1, '\0'));
  EXPECT_EQ(varint(1), "\x01");
  EXPECT_EQ(varint(127), "\x7F");
  EXPECT_EQ(varint(128), "\x80\x01");
  EXPECT_EQ(varint(300), "\xAC\x02");
  EXPECT_EQ(varint(std::numeric_limits<std::uint64_t>::max()).size(), 10U);
  std::string negative;
  logs::protobuf::append_int64_field(negative, 2, -1);
  EXPECT_EQ(negative, "\x10\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\x01");
}

// Fixed-width fields are little-endian IEEE 754 after their key; strings are key,
// length, bytes.
TEST(Protobuf, FixedAndLengthDelimitedFields) {
  std::string out;
  logs::protobuf::append_double_field(out, 1, 1.0);
  EXPECT_EQ(out, std::string("\x09\x00\x00\x00\x00\x00\x00\xF0\x3F", 9));
  out.clear();
  logs::protobuf::append_float_field(out, 2, 1.0F);
  EXPECT_EQ(out, std::string("\x15\x00\x00\x80\x3F", 5));
  out.clear();
  logs::protobuf::append_bytes_field(out, 3, "brain.Event:2");
  EXPECT_EQ(out,
            "\x1A\x0D"
            "brain.Event:2");
}
