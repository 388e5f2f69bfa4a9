#pragma once
/// @file
/// @brief Shape arithmetic with overflow checks, shared by reader and writer.

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>

namespace aclora::safetensors {

/// "[4, 8]" for messages.
inline std::string shape_to_string(std::span<const std::int64_t> shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) {
      out += ", ";
    }
    out += std::to_string(shape[i]);
  }
  out += "]";
  return out;
}

/// Product of the dimensions, or nullopt when a dimension is negative or the
/// product does not fit in int64. A zero dimension gives 0 whatever the others.
inline std::optional<std::int64_t> checked_numel(std::span<const std::int64_t> shape) {
  bool has_zero = false;
  for (const std::int64_t dimension : shape) {
    if (dimension < 0) {
      return std::nullopt;
    }
    has_zero = has_zero || dimension == 0;
  }
  if (has_zero) {
    return 0;
  }
  std::int64_t count = 1;
  for (const std::int64_t dimension : shape) {
    if (count > std::numeric_limits<std::int64_t>::max() / dimension) {
      return std::nullopt;
    }
    count *= dimension;
  }
  return count;
}

/// numel * element_size, or nullopt on overflow of int64.
inline std::optional<std::int64_t> checked_byte_size(std::int64_t numel, std::size_t element_size) {
  const auto size = static_cast<std::int64_t>(element_size);
  if (numel > std::numeric_limits<std::int64_t>::max() / size) {
    return std::nullopt;
  }
  return numel * size;
}

}  // namespace aclora::safetensors
