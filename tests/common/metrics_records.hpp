// The records of a metrics.jsonl file (aclora::logs), for tests of training runs.
#pragma once

#include <aclora/adapters/json/parse.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace aclora::test {

/// Every record of the file, in order; with `drop_timings` without their "seconds" fields
/// (the only values that differ between two runs of the same training).
inline std::vector<json::Value> metrics_records(const std::filesystem::path& path,
                                                bool drop_timings = false) {
  std::vector<json::Value> records;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    json::Value record = json::parse(line);
    if (drop_timings)
      std::erase_if(record.as_object(),
                    [](const auto& member) { return member.first == "seconds"; });
    records.push_back(std::move(record));
  }
  return records;
}

}  // namespace aclora::test
