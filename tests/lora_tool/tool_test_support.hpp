#pragma once
// Helpers shared by the aclora-lora tests: running a command line in process, fixture paths,
// whole files, the planted ranks and the metadata of written files.

#include <gtest/gtest.h>

#include <cstddef>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "aclora/adapters/json/parse.hpp"
#include "lora_test_support.hpp"
#include "lora_tool/tool.hpp"

namespace aclora::test {

/// What one command line did.
struct ToolResult {
  int status = 0;   ///< exit status
  std::string out;  ///< what it printed on the output stream
  std::string err;  ///< what it printed on the error stream
};

/// Runs aclora-lora with `args` (without the program name).
inline ToolResult run_tool(const std::vector<std::string>& args) {
  std::ostringstream out, err;
  ToolResult result;
  result.status = aclora::lora_tool::run(args, out, err);
  result.out = out.str();
  result.err = err.str();
  return result;
}

/// A file of tests/fixtures/lora.
inline std::string fixture(const char* name) {
  return (lora_fixtures() / name).string();
}

/// The bytes of a file.
inline std::string read_all(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

/// Writes `bytes` to `path`.
inline void write_all(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

/// The planted true rank of every module, by kohya key (expected.json).
inline std::map<std::string, std::size_t> true_ranks() {
  const auto root = aclora::json::parse(read_all(lora_fixtures() / "expected.json"));
  std::map<std::string, std::size_t> ranks;
  for (const auto& module : root.find("lora")->find("modules")->as_array())
    ranks[module.find("kohya_key")->as_string()] =
        static_cast<std::size_t>(module.find("true_rank")->as_int());
  return ranks;
}

/// A metadata entry holding a JSON object of module -> whole number, as a map.
inline std::map<std::string, std::size_t> module_numbers(
    const std::map<std::string, std::string>& metadata, const std::string& key) {
  std::map<std::string, std::size_t> numbers;
  const auto found = metadata.find(key);
  if (found == metadata.end()) {
    ADD_FAILURE() << "no metadata entry " << key;
    return numbers;
  }
  const aclora::json::Value parsed = aclora::json::parse(found->second);
  for (const auto& [name, value] : parsed.as_object())
    numbers[name] = static_cast<std::size_t>(value.as_int());
  return numbers;
}

}  // namespace aclora::test
