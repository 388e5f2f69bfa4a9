#pragma once
/// @file
/// @brief Element types of safetensors files: names, sizes, C++ type mapping.

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace aclora::safetensors {

/// Element type of a stored tensor. F8_E4M3 is the "fn" variant (no infinity,
/// NaN = all exponent and mantissa bits set), as in PyTorch's float8_e4m3fn.
enum class Dtype : std::uint8_t {
  BOOL,
  U8,
  I8,
  I16,
  U16,
  F16,
  BF16,
  I32,
  U32,
  F32,
  F64,
  I64,
  U64,
  F8_E4M3,
  F8_E5M2
};

/// Every Dtype, in declaration order.
inline constexpr std::array<Dtype, 15> kAllDtypes = {
    Dtype::BOOL, Dtype::U8,   Dtype::I8,  Dtype::I16,     Dtype::U16,
    Dtype::F16,  Dtype::BF16, Dtype::I32, Dtype::U32,     Dtype::F32,
    Dtype::F64,  Dtype::I64,  Dtype::U64, Dtype::F8_E4M3, Dtype::F8_E5M2};

/// The name used in safetensors headers: "BOOL", "F32", "F8_E4M3", ...
constexpr std::string_view dtype_name(Dtype dtype) {
  switch (dtype) {
    case Dtype::BOOL:
      return "BOOL";
    case Dtype::U8:
      return "U8";
    case Dtype::I8:
      return "I8";
    case Dtype::I16:
      return "I16";
    case Dtype::U16:
      return "U16";
    case Dtype::F16:
      return "F16";
    case Dtype::BF16:
      return "BF16";
    case Dtype::I32:
      return "I32";
    case Dtype::U32:
      return "U32";
    case Dtype::F32:
      return "F32";
    case Dtype::F64:
      return "F64";
    case Dtype::I64:
      return "I64";
    case Dtype::U64:
      return "U64";
    case Dtype::F8_E4M3:
      return "F8_E4M3";
    case Dtype::F8_E5M2:
      return "F8_E5M2";
  }
  return "?";
}

/// Bytes per element.
constexpr std::size_t dtype_size(Dtype dtype) {
  switch (dtype) {
    case Dtype::BOOL:
    case Dtype::U8:
    case Dtype::I8:
    case Dtype::F8_E4M3:
    case Dtype::F8_E5M2:
      return 1;
    case Dtype::I16:
    case Dtype::U16:
    case Dtype::F16:
    case Dtype::BF16:
      return 2;
    case Dtype::I32:
    case Dtype::U32:
    case Dtype::F32:
      return 4;
    case Dtype::F64:
    case Dtype::I64:
    case Dtype::U64:
      return 8;
  }
  return 0;
}

/// True for the floating-point kinds (F16, BF16, F32, F64, F8_E4M3, F8_E5M2).
constexpr bool is_floating(Dtype dtype) {
  return dtype == Dtype::F16 || dtype == Dtype::BF16 || dtype == Dtype::F32 ||
         dtype == Dtype::F64 || dtype == Dtype::F8_E4M3 || dtype == Dtype::F8_E5M2;
}

/// The Dtype for a header name (exact, case-sensitive); nullopt when unknown.
constexpr std::optional<Dtype> parse_dtype(std::string_view name) {
  for (const Dtype dtype : kAllDtypes) {
    if (dtype_name(dtype) == name) {
      return dtype;
    }
  }
  return std::nullopt;
}

/// The Dtype whose elements are stored exactly as C++ type T, as the member
/// `value`; only declared (incomplete) for other types.
/// (F16, BF16 and F8 have no C++ type: use the byte interface for them.)
template <class T>
struct dtype_of;
/// dtype_of for bool: stored as Dtype::BOOL.
template <>
struct dtype_of<bool> {
  static constexpr Dtype value = Dtype::BOOL;  ///< The matching Dtype.
};
/// dtype_of for std::uint8_t: stored as Dtype::U8.
template <>
struct dtype_of<std::uint8_t> {
  static constexpr Dtype value = Dtype::U8;  ///< The matching Dtype.
};
/// dtype_of for std::int8_t: stored as Dtype::I8.
template <>
struct dtype_of<std::int8_t> {
  static constexpr Dtype value = Dtype::I8;  ///< The matching Dtype.
};
/// dtype_of for std::int16_t: stored as Dtype::I16.
template <>
struct dtype_of<std::int16_t> {
  static constexpr Dtype value = Dtype::I16;  ///< The matching Dtype.
};
/// dtype_of for std::uint16_t: stored as Dtype::U16.
template <>
struct dtype_of<std::uint16_t> {
  static constexpr Dtype value = Dtype::U16;  ///< The matching Dtype.
};
/// dtype_of for std::int32_t: stored as Dtype::I32.
template <>
struct dtype_of<std::int32_t> {
  static constexpr Dtype value = Dtype::I32;  ///< The matching Dtype.
};
/// dtype_of for std::uint32_t: stored as Dtype::U32.
template <>
struct dtype_of<std::uint32_t> {
  static constexpr Dtype value = Dtype::U32;  ///< The matching Dtype.
};
/// dtype_of for float: stored as Dtype::F32.
template <>
struct dtype_of<float> {
  static constexpr Dtype value = Dtype::F32;  ///< The matching Dtype.
};
/// dtype_of for double: stored as Dtype::F64.
template <>
struct dtype_of<double> {
  static constexpr Dtype value = Dtype::F64;  ///< The matching Dtype.
};
/// dtype_of for std::int64_t: stored as Dtype::I64.
template <>
struct dtype_of<std::int64_t> {
  static constexpr Dtype value = Dtype::I64;  ///< The matching Dtype.
};
/// dtype_of for std::uint64_t: stored as Dtype::U64.
template <>
struct dtype_of<std::uint64_t> {
  static constexpr Dtype value = Dtype::U64;  ///< The matching Dtype.
};

/// True when T has a dtype_of specialization.
template <class T>
concept StorableElement = requires {
  dtype_of<T>::value;
};

}  // namespace aclora::safetensors
