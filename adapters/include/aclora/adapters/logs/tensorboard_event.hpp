#pragma once
/// @file
/// @brief TensorBoard Event messages and the record framing of event files, encoded by hand.
///
/// A record is: uint64 little-endian length, uint32 masked CRC-32C of those 8
/// bytes, the payload (an encoded Event), uint32 masked CRC-32C of the payload.
/// Event fields used: wall_time (1, double), step (2, int64), file_version
/// (3, string), summary (5, Summary); Summary.value (1, repeated Value);
/// Value.tag (1, string), Value.simple_value (2, float).

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "aclora/adapters/json/printable.hpp"
#include "aclora/adapters/json/utf8.hpp"
#include "aclora/adapters/logs/crc32c.hpp"
#include "aclora/adapters/logs/error.hpp"
#include "aclora/adapters/logs/protobuf.hpp"

namespace aclora::logs {

/// The file_version every event file starts with.
inline constexpr std::string_view kEventFileVersion = "brain.Event:2";

/// Bytes a record adds around its payload: 8 (length) + 4 + 4 (two CRCs).
inline constexpr std::uint64_t kRecordOverhead = 16;

/// One scalar of a step: a tag (e.g. "train/loss") and its value, stored as a float.
struct Scalar {
  std::string tag;  ///< non-empty UTF-8; '/' groups charts in TensorBoard
  double value;     ///< written as simple_value (float); NaN and infinities pass through
};

/// Checks a scalar tag: non-empty and valid UTF-8 (protobuf strings must be).
/// @throws Error naming the tag.
inline void check_scalar_tag(std::string_view tag) {
  if (tag.empty()) {
    throw Error("TensorBoard scalar tag is empty");
  }
  if (!json::utf8::is_valid(tag)) {
    throw Error("TensorBoard scalar tag '" + json::printable(tag) + "' is not valid UTF-8");
  }
}

/// The Event {wall_time, file_version} that opens an event file.
inline std::string encode_file_version_event(double wall_time,
                                             std::string_view file_version = kEventFileVersion) {
  std::string event;
  protobuf::append_double_field(event, 1, wall_time);
  protobuf::append_bytes_field(event, 3, file_version);
  return event;
}

/// The Event {wall_time, step, summary {value {tag, simple_value}...}} holding
/// the given scalars (one Summary.value each, in order).
/// @throws Error for a tag check_scalar_tag() refuses.
inline std::string encode_scalars_event(double wall_time, std::int64_t step,
                                        const std::vector<Scalar>& scalars) {
  std::string summary;
  for (const Scalar& scalar : scalars) {
    check_scalar_tag(scalar.tag);
    std::string value;
    protobuf::append_bytes_field(value, 1, scalar.tag);
    protobuf::append_float_field(value, 2, static_cast<float>(scalar.value));
    protobuf::append_bytes_field(summary, 1, value);
  }
  std::string event;
  protobuf::append_double_field(event, 1, wall_time);
  protobuf::append_int64_field(event, 2, step);
  protobuf::append_bytes_field(event, 5, summary);
  return event;
}

/// Appends payload framed as one record (length, masked CRC of the length,
/// payload, masked CRC of the payload) to out.
inline void append_record(std::string& out, std::string_view payload) {
  std::string length;
  protobuf::append_little_endian(length, payload.size(), 8);
  out += length;
  protobuf::append_little_endian(out, masked_crc32c(length), 4);
  out += payload;
  protobuf::append_little_endian(out, masked_crc32c(payload), 4);
}

}  // namespace aclora::logs
