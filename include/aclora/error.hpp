/// @file error.hpp
/// @brief The error type raised by every part of aclora.
#pragma once

#include <cstddef>
#include <optional>
#include <stdexcept>
#include <string>

namespace aclora {

/// Where in a model an error was found: module (name and position) and layer.
struct ErrorLocation {
  std::string module_name;                 ///< module name, empty when unnamed
  std::size_t module_index = 0;            ///< position of the module in the list
  std::optional<std::size_t> layer_index;  ///< layer within the module, if any
};

/// Raised for invalid input (loss, schedule, shapes, non-finite entries...).
/// what() reads "aclora: module 'name' (#3), layer 1: <reason>" when a location is known,
/// "aclora: <reason>" otherwise. When an Error escapes a RESTART no matrix was modified.
class Error : public std::runtime_error {
 public:
  /// An error without a location.
  explicit Error(const std::string& reason)
      : std::runtime_error("aclora: " + reason), reason_(reason) {}

  /// An error located at a module (and optionally a layer).
  Error(ErrorLocation location, const std::string& reason)
      : std::runtime_error(format(location, reason)), reason_(reason), location_(location) {}

  /// The reason alone, without the location prefix.
  const std::string& reason() const noexcept { return reason_; }
  /// The location, when the error concerns one module or layer.
  const std::optional<ErrorLocation>& location() const noexcept { return location_; }

 private:
  static std::string format(const ErrorLocation& at, const std::string& reason) {
    std::string text = "aclora: module ";
    if (!at.module_name.empty())
      text += "'" + at.module_name + "' ";
    text += "(#" + std::to_string(at.module_index) + ")";
    if (at.layer_index)
      text += ", layer " + std::to_string(*at.layer_index);
    return text + ": " + reason;
  }

  std::string reason_;
  std::optional<ErrorLocation> location_;
};

}  // namespace aclora
