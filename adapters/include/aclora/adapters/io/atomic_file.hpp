#pragma once
/// @file
/// @brief Files that appear whole or not at all: a temporary file next to the target,
/// written, fsync'ed, renamed over the target, and the directory fsync'ed.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace aclora::io {

/// An I/O failure: the message reads "<label>: <what failed>: <reason>".
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// fsync of a directory (makes a rename inside it durable); failures are ignored.
inline void sync_directory(const std::filesystem::path& directory) {
  const int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

/// A file written next to its target and renamed over it by commit(). Until then the
/// target is untouched; a file that is destroyed uncommitted removes its temporary.
class AtomicFile {
 public:
  /// Creates ".<name>.tmp-<pid>-<n>" in the target's directory.
  /// @param target the file to write  @param label names it in error messages
  /// @throws Error when it cannot.
  AtomicFile(const std::filesystem::path& target, std::string label)
      : target_(target), label_(std::move(label)) {
    if (!target.has_filename())
      throw Error(label_ + ": cannot write: the path names a directory, not a file");
    directory_ = target.has_parent_path() ? target.parent_path() : std::filesystem::path(".");
    static std::atomic<unsigned> counter{0};
    for (int attempt = 0; attempt < 100; ++attempt) {
      std::string name = ".";  // appended piece by piece: g++ 12 warns on a + chain here
      name += target.filename().string();
      name += ".tmp-";
      name += std::to_string(::getpid());
      name += "-";
      name += std::to_string(counter.fetch_add(1));
      const std::filesystem::path candidate = directory_ / name;
      fd_ = ::open(candidate.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
      if (fd_ >= 0) {
        path_ = candidate;
        return;
      }
      if (errno != EEXIST) {
        throw Error(label_ + ": cannot create a temporary file in '" + directory_.string() +
                    "': " + std::strerror(errno));
      }
    }
    throw Error(label_ + ": cannot create a temporary file in '" + directory_.string() +
                "': too many leftover temporary files");
  }
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  /// Closes and removes the temporary file unless committed.
  ~AtomicFile() {
    if (fd_ >= 0)
      ::close(fd_);
    if (!committed_ && !path_.empty())
      ::unlink(path_.c_str());
  }

  /// Appends `size` bytes. @throws Error when the write fails (disk full...).
  void write(const void* data, std::size_t size) {
    const char* cursor = static_cast<const char*>(data);
    while (size > 0) {
      const ::ssize_t written = ::write(fd_, cursor, size);
      if (written < 0) {
        if (errno == EINTR)
          continue;
        fail("cannot write");
      }
      cursor += written;
      size -= static_cast<std::size_t>(written);
    }
  }
  /// Appends text.
  void write(std::string_view text) { write(text.data(), text.size()); }

  /// fsync, close, rename over the target, fsync the directory.
  /// @throws Error when a step fails (the target is then untouched).
  void commit() {
    if (::fsync(fd_) != 0)
      fail("cannot fsync");
    const int fd = std::exchange(fd_, -1);
    if (::close(fd) != 0)
      fail("cannot close");
    if (::rename(path_.c_str(), target_.c_str()) != 0)
      fail("cannot rename the temporary file over the target");
    committed_ = true;
    sync_directory(directory_);  // make the rename durable; failure does not undo it
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(label_ + ": " + what + ": " + std::strerror(errno));
  }

  std::filesystem::path target_;
  std::filesystem::path directory_;
  std::filesystem::path path_;
  std::string label_;
  int fd_ = -1;
  bool committed_ = false;
};

/// Writes `bytes` to `target` atomically (see AtomicFile). @throws Error on failure.
inline void write_file_atomically(const std::filesystem::path& target, std::string_view bytes) {
  AtomicFile file(target, target.string());
  file.write(bytes);
  file.commit();
}

/// A folder built under a temporary name next to its target and renamed to it by
/// commit(), so that it appears complete or not at all. The target must not exist.
/// Destroyed uncommitted, it removes the temporary folder and everything in it.
class AtomicDirectory {
 public:
  /// Creates ".<name>.tmp-<pid>" next to `target`. @throws Error when the target exists or
  /// the folder cannot be created.
  explicit AtomicDirectory(const std::filesystem::path& target) : target_(target) {
    namespace fs = std::filesystem;
    const fs::path name =
        target.has_filename() ? target.filename() : target.parent_path().filename();
    parent_ = target.has_parent_path() ? target.parent_path() : fs::path(".");
    std::error_code error;
    if (fs::exists(target, error))
      throw Error(target.string() + ": exists already (nothing was overwritten)");
    path_ = parent_ / ("." + name.string() + ".tmp-" + std::to_string(::getpid()));
    fs::remove_all(path_, error);
    if (!fs::create_directories(path_, error)) {
      throw Error(target.string() + ": cannot create a folder in '" + parent_.string() +
                  "': " + (error ? error.message() : std::string("exists")));
    }
  }
  AtomicDirectory(const AtomicDirectory&) = delete;
  AtomicDirectory& operator=(const AtomicDirectory&) = delete;
  /// Removes the temporary folder unless committed.
  ~AtomicDirectory() {
    if (!committed_) {
      std::error_code ignored;
      std::filesystem::remove_all(path_, ignored);
    }
  }

  /// The temporary folder to write the files into.
  const std::filesystem::path& path() const { return path_; }

  /// fsyncs the temporary folder, renames it to the target and fsyncs the parent.
  /// @throws Error when the rename fails (the target is then untouched).
  void commit() {
    sync_directory(path_);
    if (::rename(path_.c_str(), target_.c_str()) != 0)
      throw Error(target_.string() +
                  ": cannot rename the temporary folder: " + std::strerror(errno));
    committed_ = true;
    sync_directory(parent_);
  }

 private:
  std::filesystem::path target_;
  std::filesystem::path parent_;
  std::filesystem::path path_;
  bool committed_ = false;
};

}  // namespace aclora::io
