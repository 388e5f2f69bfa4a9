#pragma once
// Helpers shared by the log tests: scratch folders, whole-file reads, error capture.

#include <gtest/gtest.h>

#include <stdlib.h>
#include "scratch_dir.hpp"

#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "aclora/adapters/logs/error.hpp"

#define EXPECT_CONTAINS(haystack, needle)                          \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) \
      << "text: " << (haystack) << "\nexpected to contain: " << (needle)

namespace aclora::test {

/// The whole file as bytes in a string (empty when it cannot be read).
inline std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

/// Writes bytes to path, replacing it.
inline void write_file(const std::filesystem::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

/// The message of the logs::Error action throws; a test failure when it throws none.
inline std::string logs_error(const std::function<void()>& action) {
  try {
    action();
  } catch (const aclora::logs::Error& error) {
    return error.what();
  }
  ADD_FAILURE() << "no aclora::logs::Error thrown";
  return {};
}

}  // namespace aclora::test
