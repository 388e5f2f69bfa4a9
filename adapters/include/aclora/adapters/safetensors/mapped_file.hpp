#pragma once
/// @file
/// @brief Read-only memory mapping of a whole file (POSIX mmap).

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <utility>

#include "aclora/adapters/safetensors/error.hpp"

namespace aclora::safetensors {

/// A whole regular file mapped read-only; unmapped in the destructor.
/// Movable, not copyable. An empty file is "mapped" as an empty span.
/// Note: if another process truncates the file while it is mapped, reading
/// the lost pages raises SIGBUS; safetensors files are not edited in place.
class MappedFile {
 public:
  /// @throws Error "<path>: cannot open: <reason>" or "<path>: not a regular file".
  static MappedFile open(const std::filesystem::path& path) {
    const std::string label = path.string();
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      throw Error(label + ": cannot open: " + std::strerror(errno));
    }
    struct FdCloser {
      int fd;
      ~FdCloser() { ::close(fd); }
    } closer{fd};
    struct stat info {};
    if (::fstat(fd, &info) != 0) {
      throw Error(label + ": cannot stat: " + std::strerror(errno));
    }
    if (!S_ISREG(info.st_mode)) {
      throw Error(label + ": not a regular file");
    }
    MappedFile file;
    file.size_ = static_cast<std::size_t>(info.st_size);
    if (file.size_ == 0) {
      return file;  // mmap cannot map 0 bytes
    }
    void* address = ::mmap(nullptr, file.size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (address == MAP_FAILED) {
      throw Error(label + ": cannot memory-map " + std::to_string(file.size_) +
                  " bytes: " + std::strerror(errno));
    }
    file.address_ = address;
    return file;
  }

  MappedFile() = default;
  /// Takes over other's mapping; other is left empty.
  MappedFile(MappedFile&& other) noexcept
      : address_(std::exchange(other.address_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  /// Unmaps this file's mapping, then takes over other's; other is left empty.
  MappedFile& operator=(MappedFile&& other) noexcept {
    if (this != &other) {
      unmap();
      address_ = std::exchange(other.address_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() { unmap(); }

  /// The file's bytes (empty for an empty file).
  std::span<const std::byte> bytes() const {
    return {static_cast<const std::byte*>(address_), address_ != nullptr ? size_ : 0};
  }

 private:
  void unmap() noexcept {
    if (address_ != nullptr) {
      ::munmap(address_, size_);
      address_ = nullptr;
    }
  }

  void* address_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace aclora::safetensors
