#pragma once
/// @file
/// @brief Parsing and full validation of a safetensors file's layout
/// (length prefix, JSON header, tensor table, data buffer).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "aclora/adapters/json/dump.hpp"
#include "aclora/adapters/json/parse.hpp"
#include "aclora/adapters/json/printable.hpp"
#include "aclora/adapters/safetensors/dtype.hpp"
#include "aclora/adapters/safetensors/error.hpp"
#include "aclora/adapters/safetensors/shape.hpp"
#include "aclora/adapters/safetensors/tensor_view.hpp"

namespace aclora::safetensors {

/// Largest header length accepted (the reference implementation's limit).
inline constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;
/// Key of the optional string-to-string metadata map in the header.
inline constexpr std::string_view kMetadataKey = "__metadata__";

/// The validated content of a safetensors file.
struct ParsedFile {
  /// The "__metadata__" map (empty when the header has none).
  std::map<std::string, std::string> metadata;
  /// Sorted by data offset (ties keep header order).
  std::vector<TensorView> tensors;
  /// Bytes of the JSON header (without the 8-byte length).
  std::uint64_t header_bytes = 0;
};

namespace detail {

struct RawEntry {
  std::string name;
  Dtype dtype;
  std::vector<std::int64_t> shape;
  std::int64_t begin;
  std::int64_t end;
};

class HeaderValidator {
 public:
  HeaderValidator(std::string_view label, std::span<const std::byte> file)
      : label_(label), file_(file) {}

  ParsedFile run() {
    ParsedFile parsed;
    const std::uint64_t header_length = read_length();
    parsed.header_bytes = header_length;
    const std::string_view text(reinterpret_cast<const char*>(file_.data()) + 8,
                                static_cast<std::size_t>(header_length));
    const std::span<const std::byte> buffer = file_.subspan(8 + header_length);
    if (text.empty()) {
      fail("header is empty (header length is 0)");
    }
    json::Value header;
    try {
      header = json::parse(text);
    } catch (const json::Error& error) {
      fail(std::string("header is not valid JSON: ") + error.what());
    }
    if (!header.is_object()) {
      fail("header is a JSON " + std::string(json::kind_name(header.kind())) + ", not an object");
    }
    if (text.front() != '{') {
      // The reference implementation requires this too; writers never add it.
      fail("header has whitespace before its opening '{'");
    }
    std::vector<RawEntry> entries;
    for (const auto& [key, value] : header.as_object()) {
      if (key == kMetadataKey) {
        parsed.metadata = read_metadata(value);
      } else {
        entries.push_back(read_entry(key, value, buffer.size()));
      }
    }
    check_layout(entries, buffer.size());
    parsed.tensors.reserve(entries.size());
    for (RawEntry& entry : entries) {
      TensorView view;
      view.name = std::move(entry.name);
      view.dtype = entry.dtype;
      view.shape = std::move(entry.shape);
      view.bytes = buffer.subspan(static_cast<std::size_t>(entry.begin),
                                  static_cast<std::size_t>(entry.end - entry.begin));
      parsed.tensors.push_back(std::move(view));
    }
    return parsed;
  }

 private:
  [[noreturn]] void fail(const std::string& problem) const {
    throw Error(std::string(label_) + ": " + problem);
  }
  [[noreturn]] void fail_tensor(std::string_view name, const std::string& problem) const {
    fail("tensor '" + json::printable(name) + "': " + problem);
  }

  static std::string describe(const json::Value& value) {
    return json::printable(json::dump(value), 60);
  }

  std::uint64_t read_length() const {
    if (file_.empty()) {
      fail("file is empty (a safetensors file starts with an 8-byte header length)");
    }
    if (file_.size() < 8) {
      fail("file is " + std::to_string(file_.size()) +
           " bytes, too short for the 8-byte header length (truncated)");
    }
    std::uint64_t length = 0;
    for (int i = 7; i >= 0; --i) {
      length = (length << 8) | std::to_integer<std::uint64_t>(file_[static_cast<std::size_t>(i)]);
    }
    if (length > kMaxHeaderBytes) {
      fail("header length " + std::to_string(length) + " exceeds the limit of " +
           std::to_string(kMaxHeaderBytes) + " bytes (corrupt or not a safetensors file)");
    }
    if (length > file_.size() - 8) {
      fail("header length " + std::to_string(length) + " runs past the end of the file (only " +
           std::to_string(file_.size() - 8) + " bytes follow the length; truncated)");
    }
    return length;
  }

  std::map<std::string, std::string> read_metadata(const json::Value& value) const {
    if (!value.is_object()) {
      fail("__metadata__ is a JSON " + std::string(json::kind_name(value.kind())) +
           ", not an object of strings");
    }
    std::map<std::string, std::string> metadata;
    for (const auto& [key, entry] : value.as_object()) {
      if (!entry.is_string()) {
        fail("__metadata__ value of '" + json::printable(key) + "' is a " +
             std::string(json::kind_name(entry.kind())) + ", not a string");
      }
      metadata.emplace(key, entry.as_string());
    }
    return metadata;
  }

  std::int64_t read_non_negative(std::string_view name, const json::Value& value,
                                 const std::string& what) const {
    if (!value.is_integer() || value.as_int() < 0) {
      fail_tensor(name, what + " is " + describe(value) + ", not a non-negative integer");
    }
    return value.as_int();
  }

  const json::Value& member(std::string_view name, const json::Value& entry,
                            std::string_view key) const {
    const json::Value* found = entry.find(key);
    if (found == nullptr) {
      fail_tensor(name, "missing \"" + std::string(key) + "\"");
    }
    return *found;
  }

  RawEntry read_entry(const std::string& name, const json::Value& entry,
                      std::size_t buffer_size) const {
    if (!entry.is_object()) {
      fail_tensor(name, "header entry is a JSON " + std::string(json::kind_name(entry.kind())) +
                            ", not an object");
    }
    RawEntry raw{name, Dtype::F32, {}, 0, 0};

    const json::Value& dtype = member(name, entry, "dtype");
    if (!dtype.is_string()) {
      fail_tensor(name, "\"dtype\" is " + describe(dtype) + ", not a string");
    }
    const auto parsed_dtype = parse_dtype(dtype.as_string());
    if (!parsed_dtype) {
      fail_tensor(name, "unknown dtype '" + json::printable(dtype.as_string()) + "'");
    }
    raw.dtype = *parsed_dtype;

    const json::Value& shape = member(name, entry, "shape");
    if (!shape.is_array()) {
      fail_tensor(name, "\"shape\" is " + describe(shape) + ", not an array");
    }
    for (std::size_t i = 0; i < shape.as_array().size(); ++i) {
      raw.shape.push_back(
          read_non_negative(name, shape.as_array()[i], "shape entry " + std::to_string(i)));
    }
    const auto numel = checked_numel(raw.shape);
    if (!numel) {
      fail_tensor(name, "shape " + shape_to_string(raw.shape) +
                            " has more elements than fit in a 64-bit integer");
    }
    const auto needed = checked_byte_size(*numel, dtype_size(raw.dtype));
    if (!needed) {
      fail_tensor(name, "shape " + shape_to_string(raw.shape) + " of " +
                            std::string(dtype_name(raw.dtype)) +
                            " needs more bytes than fit in a 64-bit integer");
    }

    const json::Value& offsets = member(name, entry, "data_offsets");
    if (!offsets.is_array() || offsets.as_array().size() != 2) {
      fail_tensor(name, "\"data_offsets\" is " + describe(offsets) +
                            ", not an array of two integers [begin, end]");
    }
    raw.begin = read_non_negative(name, offsets.as_array()[0], "data_offsets begin");
    raw.end = read_non_negative(name, offsets.as_array()[1], "data_offsets end");
    const std::string range =
        "[" + std::to_string(raw.begin) + ", " + std::to_string(raw.end) + ")";
    if (raw.end < raw.begin) {
      fail_tensor(name, "data_offsets " + range + " end before they begin");
    }
    if (static_cast<std::uint64_t>(raw.end) > buffer_size) {
      fail_tensor(name, "data_offsets " + range + " run past the end of the data buffer (" +
                            std::to_string(buffer_size) +
                            " bytes): out of range, or the file is truncated");
    }
    if (raw.end - raw.begin != *needed) {
      fail_tensor(name, "data_offsets " + range + " span " + std::to_string(raw.end - raw.begin) +
                            " bytes but shape " + shape_to_string(raw.shape) + " of " +
                            std::string(dtype_name(raw.dtype)) + " needs " +
                            std::to_string(*needed) + " bytes");
    }
    return raw;
  }

  // Offsets must tile the buffer: sorted by begin, the first starts at 0,
  // each starts where the previous ended, the last ends at the buffer's end.
  void check_layout(std::vector<RawEntry>& entries, std::size_t buffer_size) const {
    std::stable_sort(entries.begin(), entries.end(), [](const RawEntry& a, const RawEntry& b) {
      return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    std::int64_t position = 0;
    const RawEntry* previous = nullptr;
    for (const RawEntry& entry : entries) {
      if (entry.begin > position) {
        if (previous == nullptr) {
          fail("gap: the first " + std::to_string(entry.begin) +
               " bytes of the data buffer belong to no tensor (tensor '" +
               json::printable(entry.name) + "' starts at " + std::to_string(entry.begin) + ")");
        }
        fail("gap of " + std::to_string(entry.begin - position) +
             " bytes in the data buffer between tensor '" + json::printable(previous->name) +
             "' (ends at " + std::to_string(position) + ") and tensor '" +
             json::printable(entry.name) + "' (starts at " + std::to_string(entry.begin) + ")");
      }
      if (entry.begin < position) {
        fail("tensor '" + json::printable(entry.name) + "' data_offsets [" +
             std::to_string(entry.begin) + ", " + std::to_string(entry.end) + ") overlap tensor '" +
             json::printable(previous->name) + "' (which ends at " + std::to_string(position) +
             ")");
      }
      position = entry.end;
      previous = &entry;
    }
    if (static_cast<std::uint64_t>(position) < buffer_size) {
      fail(std::to_string(buffer_size - static_cast<std::size_t>(position)) +
           " trailing bytes after the tensor data (data buffer is " + std::to_string(buffer_size) +
           " bytes, tensors end at " + std::to_string(position) + ")");
    }
  }

  std::string_view label_;
  std::span<const std::byte> file_;
};

}  // namespace detail

/// Validates a whole safetensors file held in memory and returns its metadata
/// and tensor table (views into file). label names the file in messages.
/// @throws Error "<label>: <problem>" for every deviation from the format.
inline ParsedFile parse_file(std::string_view label, std::span<const std::byte> file) {
  return detail::HeaderValidator(label, file).run();
}

}  // namespace aclora::safetensors
