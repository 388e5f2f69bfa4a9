#pragma once
/// @file
/// @brief A read-only view of one tensor inside a loaded safetensors file.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "aclora/adapters/safetensors/dtype.hpp"

namespace aclora::safetensors {

/// One tensor of a file: name, element type, row-major shape, and its raw
/// little-endian bytes. The bytes point into the Reader's storage and stay
/// valid as long as the Reader (or the Reader it was moved into) lives.
struct TensorView {
  std::string name;          ///< The tensor's key in the header.
  Dtype dtype = Dtype::F32;  ///< Element type of bytes.
  /// Dimensions, outermost first; empty for a scalar.
  std::vector<std::int64_t> shape;
  /// numel() * dtype_size(dtype) bytes.
  std::span<const std::byte> bytes;

  /// Number of elements: the product of shape (1 for a scalar, 0 when a
  /// dimension is 0). The Reader has checked that it does not overflow.
  std::int64_t numel() const {
    std::int64_t count = 1;
    for (const std::int64_t dimension : shape) {
      count *= dimension;
    }
    return count;
  }
};

}  // namespace aclora::safetensors
