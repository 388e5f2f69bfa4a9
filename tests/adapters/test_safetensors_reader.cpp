// Tests of safetensors::Reader: a file from the reference implementation
// reads correctly, and every malformed input gives an Error that names the
// file and the problem.

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "aclora/adapters/safetensors.hpp"
#include "safetensors_test_support.hpp"

namespace st = aclora::safetensors;
using aclora::test::make_file;
using aclora::test::ScratchDir;

namespace {

// Runs from_bytes on the image and returns the Error message (fails the test
// when no Error is thrown).
std::string reader_error(const std::vector<std::byte>& image, std::string label = "bad.st") {
  try {
    st::Reader::from_bytes(image, std::move(label));
  } catch (const st::Error& error) {
    return error.what();
  }
  ADD_FAILURE() << "Reader accepted the file";
  return {};
}

std::string reader_error(std::string_view header, std::size_t data_size) {
  return reader_error(make_file(header, data_size));
}

#define EXPECT_CONTAINS(haystack, needle)                          \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) \
      << "message: " << (haystack) << "\nexpected to contain: " << (needle)

std::filesystem::path reference_file() {
  return std::filesystem::path(ACLORA_TEST_DATA_DIR) / "python_reference.safetensors";
}

}  // namespace

// A file written by the reference Python implementation (data/make_reference.py)
// reads back with the values it was written with, for every dtype it holds.
TEST(SafetensorsReader, ReadsReferenceImplementationFile) {
  const st::Reader file = st::Reader::open(reference_file());
  EXPECT_EQ(file.metadata().at("format"), "pt");
  EXPECT_EQ(file.metadata().at("ss_network_dim"), "16");
  EXPECT_EQ(file.metadata().at("note"), "caf\xC3\xA9 \xE2\x9C\x93");
  EXPECT_EQ(file.names().size(), 14u);
  const std::vector<double> floats = {-2.0, -0.5, 1.0, 2.5, 4.0, 5.5};
  for (const char* name : {"f16", "f32", "f64"}) {
    EXPECT_EQ(file.to_f64(name), floats) << name;
    EXPECT_EQ(file.tensor(name).shape, (std::vector<std::int64_t>{2, 3}));
  }
  const std::vector<double> unsigned_values = {0, 3, 6, 9, 12, 15};
  const std::vector<double> signed_values = {-7, -4, -1, 2, 5, 8};
  for (const char* name : {"u8", "u16", "u32", "u64"}) {
    EXPECT_EQ(file.to_f64(name), unsigned_values) << name;
  }
  for (const char* name : {"i8", "i16", "i32", "i64"}) {
    EXPECT_EQ(file.to_f64(name), signed_values) << name;
  }
  EXPECT_EQ(file.tensor("f16").dtype, st::Dtype::F16);
  EXPECT_EQ(file.as<std::int64_t>("i64")[0], -7);
  EXPECT_EQ(file.as<std::uint64_t>("u64")[5], 15u);
  EXPECT_EQ(file.as<double>("f64")[3], 2.5);
  EXPECT_EQ(file.to_f32("bool"), (std::vector<float>{1, 0, 1, 1}));
  EXPECT_EQ(file.tensor("empty").numel(), 0);
  EXPECT_TRUE(file.to_f32("empty").empty());
  EXPECT_TRUE(file.tensor("scalar").shape.empty());
  EXPECT_EQ(file.to_f32("scalar"), std::vector<float>{3.25f});
  EXPECT_EQ(file.path(), reference_file());
}

// names() lists tensors in data-offset order and agrees with tensors().
TEST(SafetensorsReader, NamesAreInDataOffsetOrder) {
  const st::Reader file = st::Reader::open(reference_file());
  const std::byte* previous = nullptr;
  ASSERT_EQ(file.names().size(), file.tensors().size());
  for (std::size_t i = 0; i < file.names().size(); ++i) {
    const st::TensorView& view = file.tensor(file.names()[i]);
    EXPECT_EQ(&view, &file.tensors()[i]);
    if (previous != nullptr) {
      EXPECT_GE(view.bytes.data(), previous);
    }
    previous = view.bytes.data();
  }
}

// Views stay valid when the Reader is moved (the storage does not move).
TEST(SafetensorsReader, ViewsSurviveMoves) {
  st::Reader first = st::Reader::open(reference_file());
  const std::byte* data = first.tensor("f32").bytes.data();
  st::Reader second = std::move(first);
  EXPECT_EQ(second.tensor("f32").bytes.data(), data);
  st::Reader third = st::Reader::from_bytes(make_file("{}", 0));
  third = std::move(second);
  EXPECT_EQ(third.to_f32("f32")[0], -2.0f);
}

// Asking for a missing tensor names it and the file.
TEST(SafetensorsReader, MissingTensorNamesFileAndTensor) {
  const st::Reader file = st::Reader::from_bytes(make_file("{}", 0), "lora.safetensors");
  EXPECT_FALSE(file.contains("x"));
  try {
    (void)file.tensor("x");
    FAIL() << "no Error";
  } catch (const st::Error& error) {
    EXPECT_STREQ(error.what(), "lora.safetensors: no tensor 'x'");
  }
  EXPECT_THROW(file.to_f32("x"), st::Error);
}

// as<T> refuses a T that does not match the dtype, and misaligned data.
TEST(SafetensorsReader, TypedViewChecksDtypeAndAlignment) {
  const st::Reader file = st::Reader::open(reference_file());
  try {
    (void)file.as<float>("f16");
    FAIL() << "no Error";
  } catch (const st::Error& error) {
    EXPECT_CONTAINS(error.what(), "tensor 'f16' is F16, cannot view it as F32");
  }
  // A 55-byte header puts the data at offset 63: misaligned for float.
  const std::string header = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}} )";
  ASSERT_EQ(header.size(), 55u);
  const st::Reader odd = st::Reader::from_bytes(make_file(header, 4), "odd.st");
  EXPECT_CONTAINS(
      [&] {
        try {
          (void)odd.as<float>("a");
        } catch (const st::Error& error) {
          return std::string(error.what());
        }
        return std::string("no error");
      }(),
      "not aligned");
  EXPECT_EQ(odd.to_f32("a").size(), 1u);  // converting copies still work
}

// Conversions: BOOL gives 0/1 for any byte, F8 kinds decode, values are row-major.
TEST(SafetensorsReader, ConvertsBoolAndFloat8) {
  std::vector<std::byte> image =
      make_file(R"({"b":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]},)"
                R"("e4":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[3,5]},)"
                R"("e5":{"dtype":"F8_E5M2","shape":[1],"data_offsets":[5,6]}})",
                6);
  const std::size_t data = image.size() - 6;
  image[data + 0] = std::byte{0};
  image[data + 1] = std::byte{7};
  image[data + 2] = std::byte{1};
  image[data + 3] = std::byte{0x38};  // 1.0
  image[data + 4] = std::byte{0xFE};  // -448
  image[data + 5] = std::byte{0x3C};  // 1.0
  const st::Reader file = st::Reader::from_bytes(image);
  EXPECT_EQ(file.to_f32("b"), (std::vector<float>{0, 1, 1}));
  EXPECT_EQ(file.to_f64("e4"), (std::vector<double>{1.0, -448.0}));
  EXPECT_EQ(file.to_f32("e5"), std::vector<float>{1.0f});
}

// Zero-sized tensors may share an offset, also with the next tensor; extra
// fields in an entry are ignored (as the reference implementation does);
// whitespace padding after the JSON is accepted.
TEST(SafetensorsReader, AcceptsEmptyTensorsExtraFieldsAndPadding) {
  const st::Reader file = st::Reader::from_bytes(
      make_file(R"({"z1":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},)"
                R"("a":{"dtype":"U8","shape":[2],"data_offsets":[0,2],"extra":[1]},)"
                R"("z2":{"dtype":"I64","shape":[3,0,5],"data_offsets":[2,2]}}     )",
                2));
  EXPECT_EQ(file.names(), (std::vector<std::string>{"z1", "a", "z2"}));
  EXPECT_EQ(file.tensor("z2").numel(), 0);
  EXPECT_EQ(file.as<std::uint8_t>("a")[1], 1);
}

// Not a file at all: missing path and directory.
TEST(SafetensorsReader, RejectsMissingFileAndDirectory) {
  const ScratchDir dir;
  try {
    st::Reader::open(dir / "missing.safetensors");
    FAIL() << "no Error";
  } catch (const st::Error& error) {
    EXPECT_CONTAINS(error.what(), (dir / "missing.safetensors").string());
    EXPECT_CONTAINS(error.what(), "cannot open: No such file or directory");
  }
  try {
    st::Reader::open(dir.path());
    FAIL() << "no Error";
  } catch (const st::Error& error) {
    EXPECT_CONTAINS(error.what(), "not a regular file");
  }
}

// Empty and too-short files, on disk and in memory.
TEST(SafetensorsReader, RejectsEmptyAndShortFiles) {
  const ScratchDir dir;
  aclora::test::write_raw(dir / "empty.safetensors", {});
  try {
    st::Reader::open(dir / "empty.safetensors");
    FAIL() << "no Error";
  } catch (const st::Error& error) {
    EXPECT_CONTAINS(error.what(), (dir / "empty.safetensors").string() + ": file is empty");
  }
  EXPECT_CONTAINS(reader_error(std::vector<std::byte>(5)),
                  "bad.st: file is 5 bytes, too short for the 8-byte header length");
}

// The header length must fit in the file and under the 100 MB limit.
TEST(SafetensorsReader, RejectsBadHeaderLength) {
  std::vector<std::byte> past_end(8 + 10, std::byte{' '});
  const std::vector<std::byte> prefix = aclora::test::length_prefix(100);
  std::copy(prefix.begin(), prefix.end(), past_end.begin());
  EXPECT_CONTAINS(reader_error(past_end),
                  "header length 100 runs past the end of the file (only 10 bytes follow");
  EXPECT_CONTAINS(reader_error(aclora::test::length_prefix(100'000'001)),
                  "header length 100000001 exceeds the limit of 100000000 bytes");
  EXPECT_CONTAINS(reader_error(aclora::test::length_prefix(~std::uint64_t{0})),
                  "header length 18446744073709551615 exceeds the limit");
  EXPECT_CONTAINS(reader_error(aclora::test::length_prefix(0)), "header is empty");
}

// The header must be JSON, an object, without duplicate keys.
TEST(SafetensorsReader, RejectsBadJsonHeader) {
  EXPECT_CONTAINS(reader_error("{\"a\":", 0), "bad.st: header is not valid JSON: JSON error at");
  EXPECT_CONTAINS(reader_error("{} trailing", 0), "unexpected characters after the JSON value");
  EXPECT_CONTAINS(reader_error("{\"\xFF\":1}", 0), "invalid UTF-8");
  EXPECT_CONTAINS(reader_error("[1,2]", 0), "bad.st: header is a JSON array, not an object");
  EXPECT_CONTAINS(reader_error("\"x\"", 0), "header is a JSON string, not an object");
  EXPECT_CONTAINS(reader_error("  {}    ", 0), "header has whitespace before its opening '{'");
  EXPECT_CONTAINS(reader_error(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                               R"("a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                               2),
                  "duplicate key \"a\"");
}

// __metadata__ must be an object of strings.
TEST(SafetensorsReader, RejectsMetadataThatIsNotStrings) {
  EXPECT_CONTAINS(reader_error(R"({"__metadata__":{"epochs":10}})", 0),
                  "bad.st: __metadata__ value of 'epochs' is a number, not a string");
  EXPECT_CONTAINS(reader_error(R"({"__metadata__":{"a":"b","c":null}})", 0),
                  "__metadata__ value of 'c' is a null, not a string");
  EXPECT_CONTAINS(reader_error(R"({"__metadata__":["a"]})", 0),
                  "__metadata__ is a JSON array, not an object of strings");
}

// Each tensor entry needs dtype, shape and data_offsets of the right types.
TEST(SafetensorsReader, RejectsMalformedTensorEntries) {
  const struct {
    const char* header;
    const char* words;
  } cases[] = {
      {R"({"t":7})", "tensor 't': header entry is a JSON number, not an object"},
      {R"({"t":{"shape":[1],"data_offsets":[0,1]}})", "tensor 't': missing \"dtype\""},
      {R"({"t":{"dtype":"U8","data_offsets":[0,1]}})", "tensor 't': missing \"shape\""},
      {R"({"t":{"dtype":"U8","shape":[1]}})", "tensor 't': missing \"data_offsets\""},
      {R"({"t":{"dtype":8,"shape":[1],"data_offsets":[0,1]}})",
       "tensor 't': \"dtype\" is 8, not a string"},
      {R"({"t":{"dtype":"F4","shape":[1],"data_offsets":[0,1]}})",
       "tensor 't': unknown dtype 'F4'"},
      {R"({"t":{"dtype":"f32","shape":[1],"data_offsets":[0,1]}})", "unknown dtype 'f32'"},
      {R"({"t":{"dtype":"U8","shape":{},"data_offsets":[0,1]}})",
       "tensor 't': \"shape\" is {}, not an array"},
      {R"({"t":{"dtype":"U8","shape":[1,-3],"data_offsets":[0,1]}})",
       "tensor 't': shape entry 1 is -3, not a non-negative integer"},
      {R"({"t":{"dtype":"U8","shape":[2.5],"data_offsets":[0,1]}})",
       "shape entry 0 is 2.5, not a non-negative integer"},
      {R"({"t":{"dtype":"U8","shape":["1"],"data_offsets":[0,1]}})",
       "shape entry 0 is \"1\", not a non-negative integer"},
      {R"({"t":{"dtype":"U8","shape":[1],"data_offsets":[0]}})",
       "tensor 't': \"data_offsets\" is [0], not an array of two integers"},
      {R"({"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1,2]}})",
       "not an array of two integers"},
      {R"({"t":{"dtype":"U8","shape":[1],"data_offsets":[-1,1]}})",
       "data_offsets begin is -1, not a non-negative integer"},
      {R"({"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1e0]}})",
       "data_offsets end is 1, not a non-negative integer"},
      {R"({"t":{"dtype":"U8","shape":[0],"data_offsets":[1,0]}})",
       "tensor 't': data_offsets [1, 0) end before they begin"},
  };
  for (const auto& c : cases) {
    EXPECT_CONTAINS(reader_error(c.header, 1), c.words);
  }
}

// Element counts and byte sizes that overflow 64 bits are rejected, not wrapped.
TEST(SafetensorsReader, RejectsOverflowingShapes) {
  EXPECT_CONTAINS(
      reader_error(R"({"t":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,0]}})",
                   0),
      "tensor 't': shape [4294967296, 4294967296] has more elements than fit in a 64-bit integer");
  EXPECT_CONTAINS(
      reader_error(R"({"t":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})",
                   0),
      "shape [4611686018427387904] of F32 needs more bytes than fit in a 64-bit integer");
  EXPECT_CONTAINS(reader_error(R"({"t":{"dtype":"U8","shape":[18446744073709551616],)"
                               R"("data_offsets":[0,0]}})",
                               0),
                  "shape entry 0 is 18446744073709551616, not a non-negative integer");
}

// The byte range of each tensor must equal numel * dtype size (the example
// message from the design notes).
TEST(SafetensorsReader, RejectsShapeSizeMismatch) {
  EXPECT_EQ(
      reader_error(make_file(R"({"x.lora_down.weight":{"dtype":"F32","shape":[4,8],)"
                             R"("data_offsets":[0,100]}})",
                             100),
                   "lora.safetensors"),
      "lora.safetensors: tensor 'x.lora_down.weight': data_offsets [0, 100) span 100 bytes but "
      "shape [4, 8] of F32 needs 128 bytes");
}

// Offsets beyond the buffer (wrong offsets, or a truncated file).
TEST(SafetensorsReader, RejectsOutOfRangeAndTruncatedData) {
  EXPECT_CONTAINS(reader_error(R"({"t":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8),
                  "tensor 't': data_offsets [0, 16) run past the end of the data buffer (8 "
                  "bytes): out of range, or the file is truncated");
  st::Writer writer;
  writer.add("w", {3}, std::vector<double>{1, 2, 3});
  std::vector<std::byte> image = writer.to_bytes();
  image.pop_back();
  EXPECT_CONTAINS(reader_error(image), "tensor 'w': data_offsets [0, 24) run past the end");
  EXPECT_CONTAINS(reader_error(image), "truncated");
}

// Offsets must tile the buffer: no overlap, no gap, nothing left over.
TEST(SafetensorsReader, RejectsOverlapsGapsAndTrailingBytes) {
  EXPECT_CONTAINS(reader_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                               R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                               12),
                  "bad.st: tensor 'b' data_offsets [4, 12) overlap tensor 'a' (which ends at 8)");
  EXPECT_CONTAINS(reader_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                               R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                               8),
                  "overlap");
  EXPECT_CONTAINS(reader_error(R"({"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]},)"
                               R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                               20),
                  "gap of 4 bytes in the data buffer between tensor 'a' (ends at 8) and tensor "
                  "'b' (starts at 12)");
  EXPECT_CONTAINS(reader_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12),
                  "gap: the first 4 bytes of the data buffer belong to no tensor");
  EXPECT_CONTAINS(reader_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 11),
                  "bad.st: 3 trailing bytes after the tensor data (data buffer is 11 bytes, "
                  "tensors end at 8)");
  EXPECT_CONTAINS(reader_error("{}", 5), "5 trailing bytes");
}

// Names in messages are made printable (control bytes escaped).
TEST(SafetensorsReader, MessagesEscapeControlCharactersInNames) {
  EXPECT_CONTAINS(reader_error(R"({"a\nb":{"dtype":"F4","shape":[1],"data_offsets":[0,1]}})", 1),
                  "tensor 'a\\x0Ab': unknown dtype 'F4'");
}
