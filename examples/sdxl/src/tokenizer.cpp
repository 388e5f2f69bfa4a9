// CLIP BPE: splitting, merging, framing (see tokenizer.hpp).
#include "sdxl/tokenizer.hpp"

#include <unicode/uchar.h>

#include <algorithm>
#include <limits>

#include "sdxl/text_cleanup.hpp"
#include "tokenizer_state.hpp"
#include "utf8.hpp"

namespace sdxl {
namespace {

constexpr std::u32string_view kSpecialTokens[] = {U"<|startoftext|>", U"<|endoftext|>"};

bool is_letter(char32_t c) {
  return (U_GET_GC_MASK(static_cast<UChar32>(c)) & U_GC_L_MASK) != 0;
}
bool is_number(char32_t c) {
  return (U_GET_GC_MASK(static_cast<UChar32>(c)) & U_GC_N_MASK) != 0;
}

char32_t ascii_lower(char32_t c) {
  return (c >= U'A' && c <= U'Z') ? c + 32 : c;
}

bool starts_with_ci(std::u32string_view text, size_t at, std::u32string_view word) {
  if (text.size() - at < word.size())
    return false;
  for (size_t i = 0; i < word.size(); ++i)
    if (ascii_lower(text[at + i]) != word[i])
      return false;
  return true;
}

// Case-insensitive match of a contraction suffix: the reference pattern runs with
// IGNORECASE (simple case folding), under which U+017F LONG S also matches 's'.
bool suffix_matches(std::u32string_view text, size_t at, std::u32string_view suffix) {
  if (text.size() - at < suffix.size())
    return false;
  for (size_t i = 0; i < suffix.size(); ++i) {
    const char32_t c = text[at + i];
    if (ascii_lower(c) != suffix[i] && !(c == 0x17F && suffix[i] == U's'))
      return false;
  }
  return true;
}

// Length of the contraction ('s 't 're 've 'm 'll 'd) starting at `at`, 0 if none.
size_t contraction_length(std::u32string_view text, size_t at) {
  if (text[at] != U'\'')
    return 0;
  static constexpr std::u32string_view kSuffixes[] = {U"s", U"t", U"re", U"ve", U"m", U"ll", U"d"};
  for (std::u32string_view suffix : kSuffixes)
    if (suffix_matches(text, at + 1, suffix))
      return 1 + suffix.size();
  return 0;
}

// The reference pattern, alternative by alternative at each position: a special
// token, a contraction, a run of letters, one digit, a run of other non-space
// characters; whitespace is skipped.
std::vector<std::u32string> split_pieces(std::u32string_view text) {
  std::vector<std::u32string> pieces;
  size_t i = 0;
  while (i < text.size()) {
    const char32_t c = text[i];
    size_t len = 0;
    for (std::u32string_view token : kSpecialTokens) {
      if (c == U'<' && starts_with_ci(text, i, token)) {
        len = token.size();
        break;
      }
    }
    if (len == 0)
      len = contraction_length(text, i);
    if (len == 0 && is_letter(c)) {
      len = 1;
      while (i + len < text.size() && is_letter(text[i + len]))
        ++len;
    } else if (len == 0 && is_number(c)) {
      len = 1;
    } else if (len == 0 && !is_python_whitespace(c)) {
      len = 1;
      while (i + len < text.size()) {
        const char32_t d = text[i + len];
        if (is_python_whitespace(d) || is_letter(d) || is_number(d))
          break;
        ++len;
      }
    }
    if (len == 0) {
      ++i;
      continue;
    }
    pieces.emplace_back(text.substr(i, len));
    i += len;
  }
  return pieces;
}

// Cuts the exact (case-sensitive) special tokens out of the raw text, as the HF
// tokenizer does with its added tokens before cleaning; returns alternating text
// chunks and special tokens (special tokens flagged).
std::vector<std::pair<std::string_view, bool>> cut_special_tokens(std::string_view raw) {
  static constexpr std::string_view kRaw[] = {"<|startoftext|>", "<|endoftext|>"};
  std::vector<std::pair<std::string_view, bool>> chunks;
  size_t begin = 0;
  size_t i = 0;
  while (i < raw.size()) {
    bool cut = false;
    if (raw[i] == '<') {
      for (std::string_view token : kRaw) {
        if (raw.substr(i, token.size()) == token) {
          if (i > begin)
            chunks.emplace_back(raw.substr(begin, i - begin), false);
          chunks.emplace_back(raw.substr(i, token.size()), true);
          i += token.size();
          begin = i;
          cut = true;
          break;
        }
      }
    }
    if (!cut)
      ++i;
  }
  if (begin < raw.size())
    chunks.emplace_back(raw.substr(begin), false);
  return chunks;
}

}  // namespace

ClipTokenizer::ClipTokenizer(std::unique_ptr<State> state) : state_(std::move(state)) {}
ClipTokenizer::~ClipTokenizer() = default;
ClipTokenizer::ClipTokenizer(ClipTokenizer&&) noexcept = default;
ClipTokenizer& ClipTokenizer::operator=(ClipTokenizer&&) noexcept = default;

std::vector<std::int64_t> ClipTokenizer::State::bpe_ids(const std::string& piece_utf8) const {
  {
    std::lock_guard<std::mutex> lock(cache_mutex);
    if (auto it = cache.find(piece_utf8); it != cache.end())
      return it->second;
  }
  std::vector<std::string> word;
  for (unsigned char b : piece_utf8)
    word.push_back(byte_symbols[b]);
  word.back() += "</w>";
  std::string key;
  while (word.size() > 1) {
    int best_rank = std::numeric_limits<int>::max();
    size_t best = 0;
    for (size_t i = 0; i + 1 < word.size(); ++i) {
      key.assign(word[i]).append(" ").append(word[i + 1]);
      if (auto it = merge_ranks.find(key); it != merge_ranks.end() && it->second < best_rank) {
        best_rank = it->second;
        best = i;
      }
    }
    if (best_rank == std::numeric_limits<int>::max())
      break;
    const std::string first = word[best];
    const std::string second = word[best + 1];
    std::vector<std::string> merged;
    merged.reserve(word.size());
    for (size_t i = 0; i < word.size();) {
      if (i + 1 < word.size() && word[i] == first && word[i + 1] == second) {
        merged.push_back(first + second);
        i += 2;
      } else {
        merged.push_back(std::move(word[i]));
        ++i;
      }
    }
    word = std::move(merged);
  }
  std::vector<std::int64_t> ids;
  ids.reserve(word.size());
  for (const std::string& symbol : word) {
    auto it = vocab.find(symbol);
    ids.push_back(it == vocab.end() ? end_id : it->second);
  }
  std::lock_guard<std::mutex> lock(cache_mutex);
  if (cache.size() < kMaxCacheEntries)
    cache.emplace(piece_utf8, ids);
  return ids;
}

std::vector<std::string> ClipTokenizer::split(std::string_view cleaned_text) const {
  std::vector<std::string> out;
  for (const std::u32string& piece : split_pieces(detail::utf8_to_utf32(cleaned_text)))
    out.push_back(detail::utf32_to_utf8(piece));
  return out;
}

std::vector<std::int64_t> ClipTokenizer::encode(std::string_view text) const {
  detail::utf8_to_utf32(text);  // reject invalid UTF-8 before any cutting
  std::vector<std::int64_t> ids;
  const auto special_id = [&](std::u32string_view token) {
    return token == kSpecialTokens[0] ? state_->start_id : state_->end_id;
  };
  for (const auto& [chunk, is_special] : cut_special_tokens(text)) {
    if (is_special) {
      ids.push_back(special_id(detail::utf8_to_utf32(chunk)));
      continue;
    }
    for (const std::u32string& piece :
         split_pieces(detail::utf8_to_utf32(clean_prompt_text(chunk)))) {
      if (piece == kSpecialTokens[0] || piece == kSpecialTokens[1]) {
        ids.push_back(special_id(piece));
      } else {
        const auto piece_ids = state_->bpe_ids(detail::utf32_to_utf8(piece));
        ids.insert(ids.end(), piece_ids.begin(), piece_ids.end());
      }
    }
  }
  return ids;
}

std::vector<std::int64_t> ClipTokenizer::frame(std::span<const std::int64_t> ids) const {
  const size_t length = static_cast<size_t>(state_->max_length);
  const size_t kept = std::min(ids.size(), length - 2);
  std::vector<std::int64_t> out;
  out.reserve(length);
  out.push_back(state_->start_id);
  out.insert(out.end(), ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(kept));
  out.push_back(state_->end_id);
  out.resize(length, state_->pad_id);
  return out;
}

std::vector<std::int64_t> ClipTokenizer::tokenize(std::string_view text) const {
  return frame(encode(text));
}

std::int64_t ClipTokenizer::vocab_size() const {
  return static_cast<std::int64_t>(state_->vocab.size());
}
std::int64_t ClipTokenizer::start_id() const {
  return state_->start_id;
}
std::int64_t ClipTokenizer::end_id() const {
  return state_->end_id;
}
std::int64_t ClipTokenizer::pad_id() const {
  return state_->pad_id;
}
int ClipTokenizer::max_length() const {
  return state_->max_length;
}

std::int64_t ClipTokenizer::token_id(std::string_view symbol) const {
  auto it = state_->vocab.find(std::string(symbol));
  return it == state_->vocab.end() ? -1 : it->second;
}

}  // namespace sdxl
