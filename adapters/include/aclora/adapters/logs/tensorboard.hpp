#pragma once
/// @file
/// @brief TensorBoard event files written without TensorFlow or any protobuf library.
///
/// @code
/// aclora::logs::EventWriter events(run_dir / "tensorboard");
/// events.add_scalars(step, {{"train/loss", loss}, {"train/lr", lr}});
/// state.events_file = events.path();      // saved with the training state
/// state.events_offset = events.offset();
/// // on resume:
/// auto events = aclora::logs::EventWriter::resume(state.events_file, state.events_offset);
/// @endcode

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "aclora/adapters/logs/append_file.hpp"
#include "aclora/adapters/logs/crc32c.hpp"
#include "aclora/adapters/logs/error.hpp"
#include "aclora/adapters/logs/tensorboard_event.hpp"

namespace aclora::logs {

/// Seconds since the Unix epoch, with microsecond resolution (an Event's wall_time).
inline double unix_seconds_now() {
  const auto since_epoch = std::chrono::system_clock::now().time_since_epoch();
  return static_cast<double>(
             std::chrono::duration_cast<std::chrono::microseconds>(since_epoch).count()) /
         1e6;
}

/// How EventWriter names and opens a new event file.
struct EventFileOptions {
  /// Wall time (Unix seconds) of the file_version event; its whole seconds name
  /// the file. Unset: now.
  std::optional<double> start_time;
  /// Host name in the file name. Empty: gethostname().
  std::string hostname;
};

/// Writes one TensorBoard event file, events.out.tfevents.SECONDS.HOST in a folder
/// (SECONDS: whole Unix seconds of the start time, HOST: the host name; ".1",
/// ".2", ... is appended when that name is taken). The file
/// starts with the file_version event "brain.Event:2"; each add writes one Event
/// record (all scalars of the call in one Summary) and hands it to the kernel
/// before returning, so TensorBoard sees it at once and a crash loses nothing
/// added. Resume works as for MetricsFile: store path() and offset() with the
/// training state, and resume() cuts off the records written after it.
class EventWriter {
 public:
  /// Creates folder (and its parents) when missing, then a new event file in it,
  /// and writes the file_version event.
  /// @throws Error naming the folder or file when it cannot be created or written.
  explicit EventWriter(const std::filesystem::path& folder, const EventFileOptions& options = {})
      : EventWriter(folder, options.start_time.value_or(unix_seconds_now()), options.hostname) {}

  /// Reopens the event file at path, truncated to offset (a value offset()
  /// returned). Offset 0 starts the file again with a file_version event (wall
  /// time now).
  /// @throws Error naming the file: missing (with offset above 0), shorter than
  /// offset (both sizes in the message), offset not at a record boundary, or
  /// cannot be opened.
  static EventWriter resume(const std::filesystem::path& path, std::uint64_t offset) {
    EventWriter writer(AppendFile::open_at(path, offset, [&path](int fd, std::uint64_t end) {
      check_record_boundary(fd, end, path);
    }));
    if (offset == 0) {
      std::string record;
      append_record(record, encode_file_version_event(unix_seconds_now()));
      writer.file_.append(record);
    }
    return writer;
  }

  /// Adds one scalar at step with wall time now.
  /// @throws Error naming the file for an empty or non-UTF-8 tag or a failed write.
  void add_scalar(std::string_view tag, double value, std::int64_t step) {
    add_scalar(tag, value, step, unix_seconds_now());
  }

  /// Adds one scalar at step with the given wall time (Unix seconds).
  /// @throws Error naming the file for an empty or non-UTF-8 tag or a failed write.
  void add_scalar(std::string_view tag, double value, std::int64_t step, double wall_time) {
    add_scalars(step, {Scalar{std::string(tag), value}}, wall_time);
  }

  /// Adds the scalars of one step in one Event (one write) with wall time now.
  /// @throws Error naming the file for an empty or non-UTF-8 tag or a failed write;
  /// nothing is written then.
  void add_scalars(std::int64_t step, const std::vector<Scalar>& scalars) {
    add_scalars(step, scalars, unix_seconds_now());
  }

  /// Adds the scalars of one step in one Event with the given wall time (Unix seconds).
  /// @throws Error naming the file for an empty or non-UTF-8 tag or a failed write;
  /// nothing is written then.
  void add_scalars(std::int64_t step, const std::vector<Scalar>& scalars, double wall_time) {
    std::string record;
    try {
      append_record(record, encode_scalars_event(wall_time, step, scalars));
    } catch (const Error& error) {
      throw Error(file_.path().string() + ": " + error.what());
    }
    file_.append(record);
  }

  /// Makes every record added so far durable (fsync). Records are visible to
  /// TensorBoard without it: each add already wrote them to the file.
  /// @throws Error naming the file when fsync fails.
  void flush() { file_.sync(); }
  /// Same as flush() (the name MetricsFile uses).
  /// @throws Error naming the file when fsync fails.
  void sync() { flush(); }

  /// The event file.
  const std::filesystem::path& path() const { return file_.path(); }
  /// Bytes in the file so far (the value to store for a later resume()).
  std::uint64_t offset() const { return file_.offset(); }

 private:
  explicit EventWriter(AppendFile file) : file_(std::move(file)) {}

  EventWriter(const std::filesystem::path& folder, double start_time, const std::string& hostname)
      : file_(create_event_file(folder, start_time, hostname)) {
    std::string record;
    append_record(record, encode_file_version_event(start_time));
    file_.append(record);
  }

  static AppendFile create_event_file(const std::filesystem::path& folder, double start_time,
                                      const std::string& hostname) {
    std::error_code error;
    std::filesystem::create_directories(folder, error);
    if (error) {
      throw Error(folder.string() + ": cannot create the folder: " + error.message());
    }
    std::string host = hostname.empty() ? local_hostname() : hostname;
    for (char& c : host) {
      if (c == '/') {
        c = '_';
      }
    }
    const std::string stem = "events.out.tfevents." +
                             std::to_string(static_cast<std::int64_t>(std::floor(start_time))) +
                             "." + host;
    for (int attempt = 0; attempt < 1000; ++attempt) {
      const std::string name = attempt == 0 ? stem : stem + "." + std::to_string(attempt);
      if (auto file = AppendFile::create_new(folder / name)) {
        return std::move(*file);
      }
    }
    throw Error((folder / stem).string() + ": cannot create: 1000 files of that name exist");
  }

  static std::string local_hostname() {
    char buffer[256] = {};
    if (::gethostname(buffer, sizeof buffer - 1) != 0 || buffer[0] == '\0') {
      return "localhost";
    }
    return buffer;
  }

  // Walks the record headers from the start; end must be where one record ends.
  static void check_record_boundary(int fd, std::uint64_t end, const std::filesystem::path& path) {
    std::uint64_t position = 0;
    while (position < end) {
      unsigned char header[12];
      const ::ssize_t got = ::pread(fd, header, sizeof header, static_cast<::off_t>(position));
      if (got != static_cast<::ssize_t>(sizeof header)) {
        throw Error(path.string() + ": cannot resume at byte " + std::to_string(end) +
                    ": cannot read the record header at byte " + std::to_string(position));
      }
      std::uint64_t length = 0;
      std::uint32_t stored = 0;
      for (int i = 0; i < 8; ++i) {
        length |= static_cast<std::uint64_t>(header[i]) << (8 * i);
      }
      for (int i = 0; i < 4; ++i) {
        stored |= static_cast<std::uint32_t>(header[8 + i]) << (8 * i);
      }
      const std::string_view length_bytes(reinterpret_cast<const char*>(header), 8);
      if (stored != masked_crc32c(length_bytes)) {
        throw Error(path.string() + ": cannot resume at byte " + std::to_string(end) +
                    ": the record at byte " + std::to_string(position) +
                    " has a bad length checksum (not an event file?)");
      }
      if (length > end - position) {
        break;
      }
      position += length + kRecordOverhead;
    }
    if (position != end) {
      throw Error(path.string() + ": cannot resume at byte " + std::to_string(end) +
                  ": it is not the end of a record");
    }
  }

  AppendFile file_;
};

}  // namespace aclora::logs
