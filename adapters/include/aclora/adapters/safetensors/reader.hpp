#pragma once
/// @file
/// @brief Reading safetensors files: memory-mapped, fully validated on open.

#include <bit>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "aclora/adapters/json/printable.hpp"
#include "aclora/adapters/safetensors/convert.hpp"
#include "aclora/adapters/safetensors/dtype.hpp"
#include "aclora/adapters/safetensors/error.hpp"
#include "aclora/adapters/safetensors/header.hpp"
#include "aclora/adapters/safetensors/mapped_file.hpp"
#include "aclora/adapters/safetensors/tensor_view.hpp"

namespace aclora::safetensors {

static_assert(std::endian::native == std::endian::little,
              "aclora::safetensors reads little-endian data in place: big-endian hosts are not "
              "supported");

/// A loaded safetensors file. open() maps the file and validates all of it
/// (header, every tensor entry, the exact tiling of the data buffer) before
/// returning, so every later access is in bounds. Tensor bytes are views into
/// the mapping: nothing is copied until to_f32()/to_f64().
///
/// Movable (views stay valid across moves), not copyable; the destructor
/// unmaps. A moved-from Reader may only be destroyed or assigned to.
class Reader {
 public:
  /// Maps and validates the file.
  /// @throws Error "<path>: <problem>" (missing file, not a regular file,
  /// truncated, bad header, bad offsets, ...).
  static Reader open(const std::filesystem::path& path) {
    auto storage = std::make_unique<Storage>();
    storage->mapped = MappedFile::open(path);
    storage->bytes = storage->mapped.bytes();
    return Reader(std::move(storage), path, path.string());
  }

  /// Validates a file image held in memory, with the same checks as open().
  /// label names it in error messages.
  /// @throws Error "<label>: <problem>".
  static Reader from_bytes(std::vector<std::byte> bytes, std::string label = "<memory>") {
    auto storage = std::make_unique<Storage>();
    storage->owned = std::move(bytes);
    storage->bytes = storage->owned;
    return Reader(std::move(storage), {}, std::move(label));
  }

  /// Moves the file; TensorView bytes stay valid (the storage does not move).
  Reader(Reader&&) noexcept = default;
  /// Moves the file; TensorView bytes of the source stay valid, those of the
  /// replaced file do not.
  Reader& operator=(Reader&&) noexcept = default;
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;
  ~Reader() = default;

  /// The "__metadata__" map (empty when the file has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  /// Tensor names, in data-offset order.
  const std::vector<std::string>& names() const { return names_; }
  /// All tensors, in data-offset order (same order as names()).
  const std::vector<TensorView>& tensors() const { return tensors_; }
  /// True when the file holds a tensor of that name.
  bool contains(std::string_view name) const { return index_.find(name) != index_.end(); }

  /// The tensor of that name.
  /// @throws Error "<label>: no tensor '<name>'".
  const TensorView& tensor(std::string_view name) const {
    const auto found = index_.find(name);
    if (found == index_.end()) {
      throw Error(label_ + ": no tensor '" + json::printable(name) + "'");
    }
    return tensors_[found->second];
  }

  /// The tensor's elements as float (see convert_to for the rules per dtype).
  /// @throws Error when there is no such tensor.
  std::vector<float> to_f32(std::string_view name) const { return convert_to<float>(tensor(name)); }
  /// The tensor's elements as double (see convert_to for the rules per dtype).
  /// @throws Error when there is no such tensor.
  std::vector<double> to_f64(std::string_view name) const {
    return convert_to<double>(tensor(name));
  }

  /// Zero-copy typed view of the tensor's elements. T must be the C++ type of
  /// the stored dtype (float for F32, std::int64_t for I64, ...; see
  /// dtype_of) and the data must be aligned for T, which holds for files whose
  /// header length is a multiple of 8 (all standard writers pad it so).
  /// @throws Error when there is no such tensor, the dtype differs, or the
  /// data is misaligned.
  template <class T>
  std::span<const T> as(std::string_view name) const {
    static_assert(StorableElement<T> && !std::is_same_v<T, bool>,
                  "as<T>: T must be a C++ type with a safetensors dtype (not bool): float, "
                  "double, std::int8_t ... std::uint64_t; use tensor(name).bytes otherwise");
    const TensorView& view = tensor(name);
    if (view.dtype != dtype_of<T>::value) {
      throw Error(label_ + ": tensor '" + json::printable(name) + "' is " +
                  std::string(dtype_name(view.dtype)) + ", cannot view it as " +
                  std::string(dtype_name(dtype_of<T>::value)) + " (use to_f32/to_f64 to convert)");
    }
    const auto address = reinterpret_cast<std::uintptr_t>(view.bytes.data());
    if (address % alignof(T) != 0) {
      throw Error(label_ + ": tensor '" + json::printable(name) + "' data is not aligned to " +
                  std::to_string(alignof(T)) + " bytes (header length " +
                  std::to_string(header_bytes_) + " is not a multiple of 8); use to_f32/to_f64");
    }
    return {reinterpret_cast<const T*>(view.bytes.data()), view.bytes.size() / sizeof(T)};
  }

  /// The path given to open(); empty for from_bytes().
  const std::filesystem::path& path() const { return path_; }
  /// The name used in error messages: the path, or from_bytes()'s label.
  const std::string& label() const { return label_; }
  /// Length of the JSON header in bytes (without the 8-byte length prefix).
  std::uint64_t header_bytes() const { return header_bytes_; }

 private:
  struct Storage {
    MappedFile mapped;
    std::vector<std::byte> owned;
    std::span<const std::byte> bytes;
  };

  Reader(std::unique_ptr<Storage> storage, std::filesystem::path path, std::string label)
      : storage_(std::move(storage)), path_(std::move(path)), label_(std::move(label)) {
    ParsedFile parsed = parse_file(label_, storage_->bytes);
    metadata_ = std::move(parsed.metadata);
    tensors_ = std::move(parsed.tensors);
    header_bytes_ = parsed.header_bytes;
    names_.reserve(tensors_.size());
    for (std::size_t i = 0; i < tensors_.size(); ++i) {
      names_.push_back(tensors_[i].name);
      index_.emplace(tensors_[i].name, i);
    }
  }

  // Heap-held so that moving the Reader never moves the bytes the views see.
  std::unique_ptr<Storage> storage_;
  std::filesystem::path path_;
  std::string label_;
  std::map<std::string, std::string> metadata_;
  std::vector<TensorView> tensors_;
  std::vector<std::string> names_;
  std::map<std::string, std::size_t, std::less<>> index_;
  std::uint64_t header_bytes_ = 0;
};

}  // namespace aclora::safetensors
