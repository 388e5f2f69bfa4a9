#pragma once
/// @file
/// @brief Converting a stored tensor's elements to float or double.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "aclora/adapters/safetensors/dtype.hpp"
#include "aclora/adapters/safetensors/half.hpp"
#include "aclora/adapters/safetensors/tensor_view.hpp"

namespace aclora::safetensors {

namespace detail {

// Loads element i of a little-endian buffer whose storage type is Stored
// (memcpy: the data need not be aligned).
template <class Stored>
Stored load(const std::byte* data, std::size_t i) {
  Stored value;
  std::memcpy(&value, data + i * sizeof(Stored), sizeof(Stored));
  return value;
}

template <class Out, class Stored, class Convert>
void convert_all(const TensorView& view, std::vector<Out>& out, Convert convert) {
  const std::byte* data = view.bytes.data();
  for (std::size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<Out>(convert(load<Stored>(data, i)));
  }
}

}  // namespace detail

/// The tensor's elements converted to Out (float or double), row-major.
/// F16, BF16 and F8 are widened exactly; F64 to float rounds to nearest;
/// integers convert as static_cast does (64-bit values above 2^24 / 2^53 round);
/// BOOL gives 1 for any non-zero byte, else 0.
template <class Out>
requires(std::is_same_v<Out, float> ||
         std::is_same_v<Out, double>) std::vector<Out> convert_to(const TensorView& view) {
  std::vector<Out> out(view.bytes.size() / dtype_size(view.dtype));
  const auto identity = [](auto value) { return value; };
  switch (view.dtype) {
    case Dtype::BOOL:
      detail::convert_all<Out, std::uint8_t>(view, out,
                                             [](std::uint8_t b) { return b != 0 ? 1 : 0; });
      break;
    case Dtype::U8:
      detail::convert_all<Out, std::uint8_t>(view, out, identity);
      break;
    case Dtype::I8:
      detail::convert_all<Out, std::int8_t>(view, out, identity);
      break;
    case Dtype::I16:
      detail::convert_all<Out, std::int16_t>(view, out, identity);
      break;
    case Dtype::U16:
      detail::convert_all<Out, std::uint16_t>(view, out, identity);
      break;
    case Dtype::F16:
      detail::convert_all<Out, std::uint16_t>(view, out, f16_to_f32);
      break;
    case Dtype::BF16:
      detail::convert_all<Out, std::uint16_t>(view, out, bf16_to_f32);
      break;
    case Dtype::I32:
      detail::convert_all<Out, std::int32_t>(view, out, identity);
      break;
    case Dtype::U32:
      detail::convert_all<Out, std::uint32_t>(view, out, identity);
      break;
    case Dtype::F32:
      detail::convert_all<Out, float>(view, out, identity);
      break;
    case Dtype::F64:
      detail::convert_all<Out, double>(view, out, identity);
      break;
    case Dtype::I64:
      detail::convert_all<Out, std::int64_t>(view, out, identity);
      break;
    case Dtype::U64:
      detail::convert_all<Out, std::uint64_t>(view, out, identity);
      break;
    case Dtype::F8_E4M3:
      detail::convert_all<Out, std::uint8_t>(view, out, f8_e4m3_to_f32);
      break;
    case Dtype::F8_E5M2:
      detail::convert_all<Out, std::uint8_t>(view, out, f8_e5m2_to_f32);
      break;
  }
  return out;
}

}  // namespace aclora::safetensors
