#pragma once
/// @file
/// @brief A log file written by appending whole records, with exact resume by truncation.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "aclora/adapters/logs/error.hpp"

namespace aclora::logs {

/// A file that grows by whole records (a JSON line, a TensorBoard record).
///
/// Each append() hands the record to the kernel with write() before it returns,
/// so a crash of the process loses nothing that was appended; sync() also makes
/// it survive a power loss. A failed append (disk full, file size limit) cuts
/// the file back to where the record began before throwing, so the file never
/// ends in half a record. offset() is the number of bytes written so far: a
/// training state stores it, and open_at() with that offset cuts off whatever a
/// run wrote after the state was saved. Movable, not copyable.
class AppendFile {
 public:
  /// Called by open_at() with the open file (readable with pread) and a resume
  /// offset above 0, after the size check and before the truncation; throws
  /// Error when the offset does not sit on a record boundary of the file's format.
  using BoundaryCheck = std::function<void(int fd, std::uint64_t offset)>;

  /// Opens path, truncates it to resume_offset and positions writes there. A
  /// missing file is created when resume_offset is 0; 0 therefore starts a
  /// fresh file. Files that are not regular (a pipe, /dev/full) are written
  /// without truncation and accept only resume_offset 0.
  /// @throws Error "PATH: cannot open: REASON", "PATH: cannot resume at byte N:
  /// the file has only M bytes", "PATH: cannot resume at byte N: the file does
  /// not exist", or whatever check throws.
  static AppendFile open_at(const std::filesystem::path& path, std::uint64_t resume_offset,
                            const BoundaryCheck& check = {}) {
    const std::string label = path.string();
    // The boundary check reads the file, so it needs read access too.
    int flags = ((check && resume_offset > 0) ? O_RDWR : O_WRONLY) | O_APPEND | O_CLOEXEC;
    if (resume_offset == 0) {
      flags |= O_CREAT;
    }
    const int fd = ::open(path.c_str(), flags, 0666);
    if (fd < 0) {
      if (errno == ENOENT && resume_offset > 0) {
        throw Error(label + ": cannot resume at byte " + std::to_string(resume_offset) +
                    ": the file does not exist");
      }
      throw Error(label + ": cannot open: " + std::strerror(errno));
    }
    AppendFile file(fd, path);
    struct stat info {};
    if (::fstat(fd, &info) != 0) {
      throw Error(label + ": cannot stat: " + std::strerror(errno));
    }
    file.regular_ = S_ISREG(info.st_mode);
    if (!file.regular_) {
      if (resume_offset != 0) {
        throw Error(label + ": cannot resume at byte " + std::to_string(resume_offset) +
                    ": not a regular file");
      }
      return file;
    }
    const auto size = static_cast<std::uint64_t>(info.st_size);
    if (size < resume_offset) {
      throw Error(label + ": cannot resume at byte " + std::to_string(resume_offset) +
                  ": the file has only " + std::to_string(size) + " bytes");
    }
    if (check && resume_offset > 0) {
      check(fd, resume_offset);
    }
    if (size != resume_offset && ::ftruncate(fd, static_cast<::off_t>(resume_offset)) != 0) {
      throw Error(label + ": cannot truncate to byte " + std::to_string(resume_offset) + ": " +
                  std::strerror(errno));
    }
    file.offset_ = resume_offset;
    return file;
  }

  /// Creates path, which must not exist yet (O_EXCL); std::nullopt when it exists.
  /// @throws Error "PATH: cannot create: REASON" for any other failure.
  static std::optional<AppendFile> create_new(const std::filesystem::path& path) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) {
      if (errno == EEXIST) {
        return std::nullopt;
      }
      throw Error(path.string() + ": cannot create: " + std::strerror(errno));
    }
    return AppendFile(fd, path);
  }

  AppendFile(const AppendFile&) = delete;
  AppendFile& operator=(const AppendFile&) = delete;
  /// Takes over other's file; other is left closed.
  AppendFile(AppendFile&& other) noexcept
      : fd_(std::exchange(other.fd_, -1)),
        path_(std::move(other.path_)),
        offset_(std::exchange(other.offset_, 0)),
        regular_(other.regular_) {}
  /// Closes this file, then takes over other's; other is left closed.
  AppendFile& operator=(AppendFile&& other) noexcept {
    if (this != &other) {
      close_quietly();
      fd_ = std::exchange(other.fd_, -1);
      path_ = std::move(other.path_);
      offset_ = std::exchange(other.offset_, 0);
      regular_ = other.regular_;
    }
    return *this;
  }
  /// Closes the file (everything appended is already in the kernel's hands).
  ~AppendFile() { close_quietly(); }

  /// Writes bytes at the end of the file before returning. On failure the file
  /// is cut back to offset() (regular files) and nothing counts as written.
  /// @throws Error "PATH: write failed: REASON".
  void append(std::string_view bytes) {
    const char* cursor = bytes.data();
    std::size_t left = bytes.size();
    while (left > 0) {
      const ::ssize_t written = ::write(fd_, cursor, left);
      if (written < 0 && errno == EINTR) {
        continue;
      }
      if (written <= 0) {
        const int reason = written < 0 ? errno : EIO;
        if (regular_) {
          // Best effort: drop the partial record so the file ends on a boundary.
          static_cast<void>(::ftruncate(fd_, static_cast<::off_t>(offset_)));
        }
        throw Error(path_.string() + ": write failed: " + std::strerror(reason));
      }
      cursor += written;
      left -= static_cast<std::size_t>(written);
    }
    offset_ += bytes.size();
  }

  /// Makes everything appended so far durable (fsync), e.g. before a training
  /// state that stores offset() is saved. A no-op for files that are not regular.
  /// @throws Error "PATH: fsync failed: REASON".
  void sync() {
    if (regular_ && ::fsync(fd_) != 0) {
      throw Error(path_.string() + ": fsync failed: " + std::strerror(errno));
    }
  }

  /// Bytes in the file so far: the resume offset plus everything appended since.
  std::uint64_t offset() const { return offset_; }
  /// The path the file was opened with.
  const std::filesystem::path& path() const { return path_; }

 private:
  AppendFile(int fd, std::filesystem::path path) : fd_(fd), path_(std::move(path)) {}

  void close_quietly() noexcept {
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }

  int fd_ = -1;
  std::filesystem::path path_;
  std::uint64_t offset_ = 0;
  bool regular_ = true;
};

}  // namespace aclora::logs
