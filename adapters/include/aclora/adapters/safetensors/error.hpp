#pragma once
/// @file
/// @brief The exception thrown by the safetensors reader and writer.

#include <stdexcept>

namespace aclora::safetensors {

/// Any safetensors failure: malformed or truncated file, I/O error, misuse
/// (unknown tensor name, wrong type). The message starts with the file (or
/// label) and states the exact problem.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace aclora::safetensors
