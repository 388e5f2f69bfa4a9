#pragma once
/// @file
/// @brief The exception thrown by the log writers (metrics, TensorBoard, rank picture).

#include <stdexcept>

namespace aclora::logs {

/// Any failure of a log writer: a file that cannot be opened, created, written,
/// synced or renamed, a resume offset that does not fit the file, a record that
/// cannot be encoded. The message starts with the file's path and states the
/// problem, e.g. "runs/a/metrics.jsonl: write failed: No space left on device".
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace aclora::logs
