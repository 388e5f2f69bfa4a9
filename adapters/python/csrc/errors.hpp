/// @file errors.hpp
/// @brief aclora's C++ errors raised in Python as aclora.Error (defined in aclora/_error.py)
/// with the module name, module index, layer index and layer role ("down" / "up") as
/// attributes.
#pragma once

#include <pybind11/pybind11.h>

#include <exception>
#include <optional>
#include <string>

#include "aclora/adapters/lora/model.hpp"
#include "aclora/error.hpp"

namespace aclora::python {

namespace py = pybind11;

/// "down" for layer 0 and "up" for layer 1 of a LoRA module.
inline const char* layer_role(std::size_t layer) {
  return layer == 0 ? "down" : "up";
}

namespace detail {

inline void raise_python_error(const std::string& message, const std::string& reason,
                               const std::optional<ErrorLocation>& location) {
  py::object error_class = py::module_::import("aclora._error").attr("Error");
  py::dict fields;
  fields["reason"] = reason;
  if (location) {
    fields["module_name"] = location->module_name;
    fields["module_index"] = location->module_index;
    if (location->layer_index) {
      fields["layer_index"] = *location->layer_index;
      fields["layer"] = layer_role(*location->layer_index);
    }
  }
  py::object instance = error_class(message, **fields);
  PyErr_SetObject(error_class.ptr(), instance.ptr());
}

// The core's message with the layer's role: "... layer 1 (up): reason".
inline std::string message_with_role(const Error& error) {
  const auto& location = error.location();
  if (!location || !location->layer_index)
    return error.what();
  std::string text = "aclora: module ";
  if (!location->module_name.empty())
    text += "'" + location->module_name + "' ";
  text += "(#" + std::to_string(location->module_index) + "), layer " +
          std::to_string(*location->layer_index) + " (" + layer_role(*location->layer_index) +
          "): " + error.reason();
  return text;
}

}  // namespace detail

/// Registers the translation of aclora::Error and aclora::lora::Error into aclora.Error.
inline void register_error_translation() {
  py::register_exception_translator([](std::exception_ptr pointer) {
    if (!pointer)
      return;
    try {
      std::rethrow_exception(pointer);
    } catch (const Error& error) {
      detail::raise_python_error(detail::message_with_role(error), error.reason(),
                                 error.location());
    } catch (const lora::Error& error) {
      detail::raise_python_error(error.what(), error.what(), std::nullopt);
    }
  });
}

}  // namespace aclora::python
