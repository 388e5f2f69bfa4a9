#pragma once
/// @file
/// @brief Writing safetensors files atomically (temporary file + fsync + rename).

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "aclora/adapters/json/dump.hpp"
#include "aclora/adapters/json/printable.hpp"
#include "aclora/adapters/json/utf8.hpp"
#include "aclora/adapters/json/value.hpp"
#include "aclora/adapters/safetensors/dtype.hpp"
#include "aclora/adapters/safetensors/error.hpp"
#include "aclora/adapters/safetensors/header.hpp"
#include "aclora/adapters/safetensors/shape.hpp"

namespace aclora::safetensors {

/// Collects tensors and metadata, then writes one safetensors file.
///
/// Layout written: "__metadata__" first (when any metadata was set, keys
/// sorted), then the tensors in the order they were added, data offsets
/// contiguous from 0; the JSON header is padded with spaces so that the data
/// buffer starts at a multiple of 8 bytes. Tensors are copied on add().
class Writer {
 public:
  /// Sets (or replaces) one metadata entry.
  /// @throws Error when key or value is not valid UTF-8.
  void set_metadata(std::string key, std::string value) {
    if (!json::utf8::is_valid(key) || !json::utf8::is_valid(value)) {
      throw Error("safetensors writer: metadata entry '" + json::printable(key) +
                  "': key and value must be valid UTF-8");
    }
    metadata_.insert_or_assign(std::move(key), std::move(value));
  }

  /// Adds a tensor from raw little-endian bytes (copied).
  /// @throws Error for a duplicate or reserved ("__metadata__") or non-UTF-8
  /// name, a negative dimension, an element count that overflows, or
  /// bytes.size() != numel * dtype_size(dtype).
  void add(std::string name, Dtype dtype, std::vector<std::int64_t> shape,
           std::span<const std::byte> bytes) {
    const std::string where = "safetensors writer: tensor '" + json::printable(name) + "': ";
    if (name == kMetadataKey) {
      throw Error(where + "the name __metadata__ is reserved for the metadata map");
    }
    if (!json::utf8::is_valid(name)) {
      throw Error(where + "name is not valid UTF-8");
    }
    if (names_.contains(name)) {
      throw Error(where + "duplicate tensor name");
    }
    const auto numel = checked_numel(shape);
    if (!numel) {
      throw Error(where + "shape " + shape_to_string(shape) +
                  " has a negative dimension or too many elements");
    }
    const auto needed = checked_byte_size(*numel, dtype_size(dtype));
    if (!needed || static_cast<std::uint64_t>(*needed) != bytes.size()) {
      throw Error(where + "got " + std::to_string(bytes.size()) + " bytes but shape " +
                  shape_to_string(shape) + " of " + std::string(dtype_name(dtype)) + " needs " +
                  (needed ? std::to_string(*needed) : std::string("more than 2^63")) + " bytes");
    }
    names_.insert(name);
    entries_.push_back(Entry{std::move(name), dtype, std::move(shape),
                             std::vector<std::byte>(bytes.begin(), bytes.end())});
  }

  /// Adds a tensor of a C++ element type (float -> F32, double -> F64,
  /// std::int32_t -> I32, std::uint16_t -> U16, ...; see dtype_of). For F16,
  /// BF16 and F8 data use the byte overload with std::as_bytes.
  /// @throws Error as the byte overload (values.size() must equal numel).
  template <class T>
  requires StorableElement<T>
  void add(std::string name, std::vector<std::int64_t> shape, std::span<const T> values) {
    add(std::move(name), dtype_of<T>::value, std::move(shape), std::as_bytes(values));
  }

  /// Same as the span overload, for a std::vector (not std::vector<bool>).
  template <class T>
  requires(StorableElement<T> && !std::is_same_v<T, bool>) void add(std::string name,
                                                                    std::vector<std::int64_t> shape,
                                                                    const std::vector<T>& values) {
    add(std::move(name), std::move(shape), std::span<const T>(values));
  }

  /// Number of tensors added.
  std::size_t size() const { return entries_.size(); }
  /// True when a tensor of that name was added.
  bool contains(std::string_view name) const { return names_.find(name) != names_.end(); }
  /// The metadata set so far.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  /// The 8-byte length prefix plus the padded JSON header.
  std::string header() const {
    json::Value root = json::Object{};
    if (!metadata_.empty()) {
      json::Object metadata;
      for (const auto& [key, value] : metadata_) {
        metadata.emplace_back(key, json::Value(value));
      }
      root.as_object().emplace_back(std::string(kMetadataKey), json::Value(std::move(metadata)));
    }
    std::int64_t offset = 0;
    for (const Entry& entry : entries_) {
      json::Array shape(entry.shape.begin(), entry.shape.end());
      const auto size = static_cast<std::int64_t>(entry.data.size());
      json::Object info;
      info.emplace_back("dtype", json::Value(dtype_name(entry.dtype)));
      info.emplace_back("shape", json::Value(std::move(shape)));
      info.emplace_back("data_offsets", json::Value(json::Array{offset, offset + size}));
      root.as_object().emplace_back(entry.name, json::Value(std::move(info)));
      offset += size;
    }
    std::string text = json::dump(root);
    text.append((8 - text.size() % 8) % 8, ' ');
    if (text.size() > kMaxHeaderBytes) {
      throw Error("safetensors writer: header of " + std::to_string(text.size()) +
                  " bytes exceeds the " + std::to_string(kMaxHeaderBytes) + "-byte limit");
    }
    std::string out(8, '\0');
    for (std::size_t i = 0; i < 8; ++i) {
      out[i] = static_cast<char>((text.size() >> (8 * i)) & 0xFF);
    }
    return out + text;
  }

  /// The complete file image.
  std::vector<std::byte> to_bytes() const {
    const std::string head = header();
    std::vector<std::byte> out(reinterpret_cast<const std::byte*>(head.data()),
                               reinterpret_cast<const std::byte*>(head.data()) + head.size());
    for (const Entry& entry : entries_) {
      out.insert(out.end(), entry.data.begin(), entry.data.end());
    }
    return out;
  }

  /// Writes the file: a temporary file in the target's directory is written,
  /// fsync'ed and renamed over path, then the directory is fsync'ed. On any
  /// failure the temporary file is removed, an existing file at path is left
  /// untouched, and Error "<path>: <what failed>: <reason>" is thrown.
  void write(const std::filesystem::path& path) const {
    const std::string label = path.string();
    if (!path.has_filename()) {
      throw Error(label + ": cannot write: the path names a directory, not a file");
    }
    const std::string head = header();
    const std::filesystem::path directory =
        path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
    TempFile temp = TempFile::create(directory, path.filename().string(), label);
    temp.write_all(head.data(), head.size());
    for (const Entry& entry : entries_) {
      temp.write_all(entry.data.data(), entry.data.size());
    }
    temp.commit(path);
    // Make the rename itself durable; failure here does not undo the write.
    const int dir_fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd >= 0) {
      ::fsync(dir_fd);
      ::close(dir_fd);
    }
  }

 private:
  struct Entry {
    std::string name;
    Dtype dtype;
    std::vector<std::int64_t> shape;
    std::vector<std::byte> data;
  };

  // A temporary file next to the target; removed unless commit() succeeded.
  class TempFile {
   public:
    static TempFile create(const std::filesystem::path& directory, const std::string& filename,
                           const std::string& label) {
      static std::atomic<unsigned> counter{0};
      for (int attempt = 0; attempt < 100; ++attempt) {
        const std::filesystem::path candidate =
            directory / ("." + filename + ".tmp-" + std::to_string(::getpid()) + "-" +
                         std::to_string(counter.fetch_add(1)));
        const int fd = ::open(candidate.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0) {
          return TempFile(fd, candidate, label);
        }
        if (errno != EEXIST) {
          throw Error(label + ": cannot create a temporary file in '" + directory.string() +
                      "': " + std::strerror(errno));
        }
      }
      throw Error(label + ": cannot create a temporary file in '" + directory.string() +
                  "': too many leftover temporary files");
    }

    TempFile(const TempFile&) = delete;
    TempFile& operator=(const TempFile&) = delete;
    TempFile(TempFile&& other) noexcept
        : fd_(std::exchange(other.fd_, -1)),
          path_(std::move(other.path_)),
          label_(std::move(other.label_)),
          committed_(std::exchange(other.committed_, true)) {}
    TempFile& operator=(TempFile&&) = delete;

    ~TempFile() {
      if (fd_ >= 0) {
        ::close(fd_);
      }
      if (!committed_) {
        ::unlink(path_.c_str());
      }
    }

    void write_all(const void* data, std::size_t size) {
      const char* cursor = static_cast<const char*>(data);
      while (size > 0) {
        const ::ssize_t written = ::write(fd_, cursor, size);
        if (written < 0) {
          if (errno == EINTR) {
            continue;
          }
          fail("cannot write");
        }
        cursor += written;
        size -= static_cast<std::size_t>(written);
      }
    }

    void commit(const std::filesystem::path& target) {
      if (::fsync(fd_) != 0) {
        fail("cannot fsync");
      }
      const int fd = std::exchange(fd_, -1);
      if (::close(fd) != 0) {
        fail("cannot close");
      }
      if (::rename(path_.c_str(), target.c_str()) != 0) {
        fail("cannot rename the temporary file over the target");
      }
      committed_ = true;
    }

   private:
    TempFile(int fd, std::filesystem::path path, std::string label)
        : fd_(fd), path_(std::move(path)), label_(std::move(label)) {}

    [[noreturn]] void fail(const std::string& what) const {
      throw Error(label_ + ": " + what + ": " + std::strerror(errno));
    }

    int fd_ = -1;
    std::filesystem::path path_;
    std::string label_;
    bool committed_ = false;
  };

  std::map<std::string, std::string> metadata_;
  std::vector<Entry> entries_;
  std::set<std::string, std::less<>> names_;
};

}  // namespace aclora::safetensors
