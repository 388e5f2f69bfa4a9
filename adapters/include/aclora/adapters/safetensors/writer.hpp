#pragma once
/// @file
/// @brief Writing safetensors files atomically (temporary file + fsync + rename).

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

#include "aclora/adapters/io/atomic_file.hpp"
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
    add_entry(std::move(name), dtype, std::move(shape), bytes, true);
  }

  /// Adds a tensor whose bytes are NOT copied: they must stay valid and unchanged until the
  /// last write() or to_bytes() (for large tensors that already sit in memory).
  /// @throws Error as add().
  void add_view(std::string name, Dtype dtype, std::vector<std::int64_t> shape,
                std::span<const std::byte> bytes) {
    add_entry(std::move(name), dtype, std::move(shape), bytes, false);
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
      const auto size = static_cast<std::int64_t>(entry.data().size());
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
      out.insert(out.end(), entry.data().begin(), entry.data().end());
    }
    return out;
  }

  /// Writes the file: a temporary file in the target's directory is written,
  /// fsync'ed and renamed over path, then the directory is fsync'ed. On any
  /// failure the temporary file is removed, an existing file at path is left
  /// untouched, and Error "<path>: <what failed>: <reason>" is thrown.
  void write(const std::filesystem::path& path) const {
    try {
      io::AtomicFile file(path, path.string());
      const std::string head = header();
      file.write(head.data(), head.size());
      for (const Entry& entry : entries_)
        file.write(entry.data().data(), entry.data().size());
      file.commit();
    } catch (const io::Error& error) {
      throw Error(error.what());
    }
  }

 private:
  void add_entry(std::string name, Dtype dtype, std::vector<std::int64_t> shape,
                 std::span<const std::byte> bytes, bool copy) {
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
    Entry entry{std::move(name), dtype, std::move(shape), {}, bytes, copy};
    if (copy)
      entry.owned.assign(bytes.begin(), bytes.end());
    entries_.push_back(std::move(entry));
  }

  struct Entry {
    std::string name;
    Dtype dtype;
    std::vector<std::int64_t> shape;
    std::vector<std::byte> owned;     // the copy made by add(); empty for add_view()
    std::span<const std::byte> view;  // the caller's bytes (add_view)
    bool copied = true;
    std::span<const std::byte> data() const { return copied ? std::span(owned) : view; }
  };

  std::map<std::string, std::string> metadata_;
  std::vector<Entry> entries_;
  std::set<std::string, std::less<>> names_;
};

}  // namespace aclora::safetensors
