#pragma once
/// @file
/// @brief The JSON value type of aclora's small JSON layer (RFC 8259).
///
/// One value is null, a boolean, a number, a string, an array or an object.
/// Objects keep their members in insertion order (a parsed object keeps the
/// file's order), so a dump reproduces the order a writer chose.

#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace aclora::json {

/// Thrown by parse() for malformed text, by dump() for values JSON cannot hold
/// (non-finite numbers, strings that are not UTF-8), and by the typed accessors
/// of Value when the value has another kind.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Value;
/// A JSON array.
using Array = std::vector<Value>;
/// A JSON object: members in insertion order; keys are unique in parsed objects.
using Object = std::vector<std::pair<std::string, Value>>;

/// The kind of a JSON value.
enum class Kind : std::uint8_t { kNull, kBool, kNumber, kString, kArray, kObject };

/// Name of a kind for messages: "null", "boolean", "number", "string", "array", "object".
constexpr std::string_view kind_name(Kind kind) {
  switch (kind) {
    case Kind::kNull:
      return "null";
    case Kind::kBool:
      return "boolean";
    case Kind::kNumber:
      return "number";
    case Kind::kString:
      return "string";
    case Kind::kArray:
      return "array";
    case Kind::kObject:
      return "object";
  }
  return "?";
}

/// A JSON number. Integer literals that fit in int64 are kept exactly (offsets
/// and shapes must not pass through a double); everything else is a double.
class Number {
 public:
  constexpr Number() = default;
  /// An exact integer.
  constexpr explicit Number(std::int64_t value) : integer_(value), real_(0), is_integer_(true) {}
  /// A double; kept as a double even when it holds a whole number.
  constexpr explicit Number(double value) : integer_(0), real_(value), is_integer_(false) {}

  /// True when the number is held as an exact int64 (an integer literal in range).
  constexpr bool is_integer() const { return is_integer_; }
  /// The exact integer; only meaningful when is_integer().
  constexpr std::int64_t integer() const { return integer_; }
  /// The value as a double (rounded for integers beyond 2^53).
  constexpr double real() const { return is_integer_ ? static_cast<double>(integer_) : real_; }

  /// Two integers compare exactly; otherwise the values compare as doubles.
  friend constexpr bool operator==(const Number& a, const Number& b) {
    if (a.is_integer_ && b.is_integer_) {
      return a.integer_ == b.integer_;
    }
    return a.real() == b.real();
  }

 private:
  std::int64_t integer_ = 0;
  double real_ = 0;
  bool is_integer_ = true;
};

/// A JSON value. Default-constructed it is null.
class Value {
 public:
  Value() = default;
  /// Null.
  Value(std::nullptr_t) {}
  /// A boolean.
  Value(bool value) : data_(value) {}
  /// Any integral type except bool: exact when it fits in int64, else a double.
  template <class T>
  requires(std::is_integral_v<T> && !std::is_same_v<T, bool>) Value(T value)
      : data_(make_integer(value)) {}
  /// A number held as a double (also for whole numbers).
  Value(double value) : data_(Number(value)) {}
  /// A number held as a double (widened exactly from float).
  Value(float value) : data_(Number(static_cast<double>(value))) {}
  /// A number.
  Value(Number value) : data_(value) {}
  /// A string (UTF-8 is checked by dump(), not here).
  Value(std::string value) : data_(std::move(value)) {}
  /// A string, copied.
  Value(std::string_view value) : data_(std::string(value)) {}
  /// A string copied from a NUL-terminated C string (must not be null).
  Value(const char* value) : data_(std::string(value)) {}
  /// An array.
  Value(Array value) : data_(std::move(value)) {}
  /// An object.
  Value(Object value) : data_(std::move(value)) {}

  /// Which kind of value this is.
  Kind kind() const { return static_cast<Kind>(data_.index()); }
  /// True for null.
  bool is_null() const { return kind() == Kind::kNull; }
  /// True for a boolean.
  bool is_bool() const { return kind() == Kind::kBool; }
  /// True for a number (integer or double).
  bool is_number() const { return kind() == Kind::kNumber; }
  /// True for numbers held as an exact int64.
  bool is_integer() const { return is_number() && std::get<Number>(data_).is_integer(); }
  /// True for a string.
  bool is_string() const { return kind() == Kind::kString; }
  /// True for an array.
  bool is_array() const { return kind() == Kind::kArray; }
  /// True for an object.
  bool is_object() const { return kind() == Kind::kObject; }

  /// @throws Error when not a boolean.
  bool as_bool() const { return get<bool>(Kind::kBool); }
  /// @throws Error when not a number.
  const Number& as_number() const { return get<Number>(Kind::kNumber); }
  /// @throws Error when not a number.
  double as_double() const { return as_number().real(); }
  /// @throws Error when not a number held as an exact int64.
  std::int64_t as_int() const {
    const Number& number = as_number();
    if (!number.is_integer()) {
      throw Error("JSON value is a non-integer number, expected an integer");
    }
    return number.integer();
  }
  /// @throws Error when not a string.
  const std::string& as_string() const { return get<std::string>(Kind::kString); }
  /// @throws Error when not an array.
  const Array& as_array() const { return get<Array>(Kind::kArray); }
  /// Mutable access to the array.
  /// @throws Error when not an array.
  Array& as_array() { return get<Array>(Kind::kArray); }
  /// @throws Error when not an object.
  const Object& as_object() const { return get<Object>(Kind::kObject); }
  /// Mutable access to the object's members.
  /// @throws Error when not an object.
  Object& as_object() { return get<Object>(Kind::kObject); }

  /// Member lookup in an object: nullptr when absent or when this is not an object.
  const Value* find(std::string_view key) const {
    if (!is_object()) {
      return nullptr;
    }
    for (const auto& [name, value] : std::get<Object>(data_)) {
      if (name == key) {
        return &value;
      }
    }
    return nullptr;
  }
  /// True when this is an object with a member named key.
  bool contains(std::string_view key) const { return find(key) != nullptr; }

  /// Member access for building objects: a null value becomes an empty object,
  /// a missing key is appended with a null value.
  /// @throws Error when this is neither null nor an object.
  Value& operator[](std::string_view key) {
    if (is_null()) {
      data_ = Object{};
    }
    Object& object = as_object();
    for (auto& [name, value] : object) {
      if (name == key) {
        return value;
      }
    }
    object.emplace_back(std::string(key), Value());
    return object.back().second;
  }

  /// Appends to an array; a null value becomes an empty array first.
  /// @throws Error when this is neither null nor an array.
  void push_back(Value value) {
    if (is_null()) {
      data_ = Array{};
    }
    as_array().push_back(std::move(value));
  }

  /// Deep equality; object members compare in order.
  friend bool operator==(const Value& a, const Value& b) { return a.data_ == b.data_; }

 private:
  template <class T>
  static Number make_integer(T value) {
    if constexpr (std::is_signed_v<T> || sizeof(T) < sizeof(std::int64_t)) {
      return Number(static_cast<std::int64_t>(value));
    } else {
      if (value <= static_cast<T>(std::numeric_limits<std::int64_t>::max())) {
        return Number(static_cast<std::int64_t>(value));
      }
      return Number(static_cast<double>(value));
    }
  }

  template <class T>
  const T& get(Kind wanted) const {
    if (kind() != wanted) {
      throw Error("JSON value is " + std::string(kind_name(kind())) + ", expected " +
                  std::string(kind_name(wanted)));
    }
    return std::get<T>(data_);
  }
  template <class T>
  T& get(Kind wanted) {
    if (kind() != wanted) {
      throw Error("JSON value is " + std::string(kind_name(kind())) + ", expected " +
                  std::string(kind_name(wanted)));
    }
    return std::get<T>(data_);
  }

  // Alternative order matches Kind.
  std::variant<std::nullptr_t, bool, Number, std::string, Array, Object> data_;
};

}  // namespace aclora::json
