#pragma once
// Helpers shared by the safetensors tests: scratch directories and
// hand-made file images (to build malformed files the Writer refuses to write).

#include <gtest/gtest.h>

#include <stdlib.h>
#include "scratch_dir.hpp"

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

namespace aclora::test {

/// The 8-byte little-endian length prefix for n.
inline std::vector<std::byte> length_prefix(std::uint64_t n) {
  std::vector<std::byte> out(8);
  for (int i = 0; i < 8; ++i) {
    out[static_cast<std::size_t>(i)] = static_cast<std::byte>((n >> (8 * i)) & 0xFF);
  }
  return out;
}

/// A file image: length prefix (of header's length), header text, then
/// data_size bytes of data (values 0, 1, 2, ... mod 256).
inline std::vector<std::byte> make_file(std::string_view header, std::size_t data_size) {
  std::vector<std::byte> out = length_prefix(header.size());
  for (const char c : header) {
    out.push_back(static_cast<std::byte>(c));
  }
  for (std::size_t i = 0; i < data_size; ++i) {
    out.push_back(static_cast<std::byte>(i & 0xFF));
  }
  return out;
}

inline void write_raw(const std::filesystem::path& path, const std::vector<std::byte>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

inline std::vector<std::byte> read_raw(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> out(chars.size());
  for (std::size_t i = 0; i < chars.size(); ++i) {
    out[i] = static_cast<std::byte>(chars[i]);
  }
  return out;
}

}  // namespace aclora::test
