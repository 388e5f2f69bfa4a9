#pragma once
// A small reader of TensorBoard event files for the tests: checks both CRCs of every
// record and decodes the Event fields the writer uses (unknown fields are skipped).

#include <bit>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "aclora/adapters/logs/crc32c.hpp"

namespace aclora::test {

struct ReadScalar {
  std::string tag;
  float value = 0;
};

struct ReadEvent {
  double wall_time = 0;
  std::int64_t step = 0;
  std::string file_version;
  bool has_summary = false;
  std::vector<ReadScalar> scalars;
};

class ProtoCursor {
 public:
  explicit ProtoCursor(std::string_view bytes) : bytes_(bytes) {}
  bool done() const { return position_ == bytes_.size(); }

  std::uint64_t varint() {
    std::uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      const auto byte = static_cast<unsigned char>(take(1)[0]);
      value |= static_cast<std::uint64_t>(byte & 0x7FU) << shift;
      if ((byte & 0x80U) == 0) {
        return value;
      }
    }
    throw std::runtime_error("varint longer than 10 bytes");
  }
  std::uint64_t little_endian(int count) {
    const std::string_view bytes = take(static_cast<std::size_t>(count));
    std::uint64_t value = 0;
    for (int i = 0; i < count; ++i) {
      value |=
          static_cast<std::uint64_t>(static_cast<unsigned char>(bytes[static_cast<std::size_t>(i)]))
          << (8 * i);
    }
    return value;
  }
  std::string_view length_delimited() { return take(varint()); }
  void skip(std::uint32_t wire_type) {
    switch (wire_type) {
      case 0:
        varint();
        return;
      case 1:
        take(8);
        return;
      case 2:
        length_delimited();
        return;
      case 5:
        take(4);
        return;
      default:
        throw std::runtime_error("unsupported wire type " + std::to_string(wire_type));
    }
  }

 private:
  std::string_view take(std::uint64_t count) {
    if (count > bytes_.size() - position_) {
      throw std::runtime_error("protobuf field runs past the end of its message");
    }
    const std::string_view out = bytes_.substr(position_, count);
    position_ += count;
    return out;
  }

  std::string_view bytes_;
  std::size_t position_ = 0;
};

inline ReadScalar decode_summary_value(std::string_view bytes) {
  ReadScalar scalar;
  ProtoCursor cursor(bytes);
  bool has_value = false;
  while (!cursor.done()) {
    const std::uint64_t key = cursor.varint();
    const auto field = key >> 3;
    const auto wire = static_cast<std::uint32_t>(key & 7U);
    if (field == 1 && wire == 2) {
      scalar.tag = std::string(cursor.length_delimited());
    } else if (field == 2 && wire == 5) {
      scalar.value = std::bit_cast<float>(static_cast<std::uint32_t>(cursor.little_endian(4)));
      has_value = true;
    } else {
      cursor.skip(wire);
    }
  }
  if (!has_value) {
    throw std::runtime_error("Summary.Value without simple_value");
  }
  return scalar;
}

inline ReadEvent decode_event(std::string_view bytes) {
  ReadEvent event;
  ProtoCursor cursor(bytes);
  while (!cursor.done()) {
    const std::uint64_t key = cursor.varint();
    const auto field = key >> 3;
    const auto wire = static_cast<std::uint32_t>(key & 7U);
    if (field == 1 && wire == 1) {
      event.wall_time = std::bit_cast<double>(cursor.little_endian(8));
    } else if (field == 2 && wire == 0) {
      event.step = static_cast<std::int64_t>(cursor.varint());
    } else if (field == 3 && wire == 2) {
      event.file_version = std::string(cursor.length_delimited());
    } else if (field == 5 && wire == 2) {
      event.has_summary = true;
      ProtoCursor summary(cursor.length_delimited());
      while (!summary.done()) {
        const std::uint64_t summary_key = summary.varint();
        if ((summary_key >> 3) == 1 && (summary_key & 7U) == 2) {
          event.scalars.push_back(decode_summary_value(summary.length_delimited()));
        } else {
          summary.skip(static_cast<std::uint32_t>(summary_key & 7U));
        }
      }
    } else {
      cursor.skip(wire);
    }
  }
  return event;
}

/// All events of a file image; throws std::runtime_error naming the byte offset of a
/// record whose framing or either CRC is wrong.
inline std::vector<ReadEvent> read_events(std::string_view file) {
  std::vector<ReadEvent> events;
  std::size_t position = 0;
  const auto u32 = [&](std::size_t at) {
    std::uint32_t value = 0;
    for (int i = 0; i < 4; ++i) {
      value |= static_cast<std::uint32_t>(
                   static_cast<unsigned char>(file[at + static_cast<std::size_t>(i)]))
               << (8 * i);
    }
    return value;
  };
  while (position < file.size()) {
    const std::string where = "record at byte " + std::to_string(position);
    if (file.size() - position < 12) {
      throw std::runtime_error(where + ": truncated header");
    }
    const std::string_view length_bytes = file.substr(position, 8);
    std::uint64_t length = 0;
    for (int i = 0; i < 8; ++i) {
      length |= static_cast<std::uint64_t>(
                    static_cast<unsigned char>(length_bytes[static_cast<std::size_t>(i)]))
                << (8 * i);
    }
    if (u32(position + 8) != aclora::logs::masked_crc32c(length_bytes)) {
      throw std::runtime_error(where + ": bad length CRC");
    }
    if (file.size() - position < 16 || length > file.size() - position - 16) {
      throw std::runtime_error(where + ": truncated payload");
    }
    const std::string_view payload = file.substr(position + 12, length);
    if (u32(position + 12 + length) != aclora::logs::masked_crc32c(payload)) {
      throw std::runtime_error(where + ": bad payload CRC");
    }
    events.push_back(decode_event(payload));
    position += 16 + length;
  }
  return events;
}

}  // namespace aclora::test
