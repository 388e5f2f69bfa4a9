#pragma once
// Internal state of sdxl::ClipTokenizer, shared by the tokenizer sources.

#include <array>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "sdxl/tokenizer.hpp"

namespace sdxl {

struct ClipTokenizer::State {
  static constexpr size_t kMaxCacheEntries = 1 << 16;

  std::array<std::string, 256> byte_symbols;            // byte -> UTF-8 of its symbol
  std::unordered_map<std::string, std::int64_t> vocab;  // symbol string -> id
  std::unordered_map<std::string, int> merge_ranks;     // "first second" -> rank
  std::int64_t start_id = -1;
  std::int64_t end_id = -1;
  std::int64_t pad_id = -1;
  int max_length = 77;

  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<std::int64_t>> cache;

  /// BPE ids of one piece (UTF-8 text, not a special token).
  std::vector<std::int64_t> bpe_ids(const std::string& piece_utf8) const;
};

}  // namespace sdxl
