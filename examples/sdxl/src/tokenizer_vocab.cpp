// Loading CLIP BPE vocabularies: open_clip's .txt.gz, HF vocab.json + merges.txt, and HF
// tokenizer.json.
#include <zlib.h>

#include <aclora/adapters/json.hpp>
#include <algorithm>
#include <fstream>
#include <sstream>

#include "sdxl/tokenizer.hpp"
#include "tokenizer_state.hpp"
#include "utf8.hpp"

namespace sdxl {
namespace {

// 49152 - 256 - 2: the merges the CLIP vocabulary uses (later lines are ignored).
constexpr size_t kClipMerges = 48894;
constexpr std::string_view kStartToken = "<|startoftext|>";
constexpr std::string_view kEndToken = "<|endoftext|>";

// CLIP's reversible byte -> symbol map: printable Latin-1 bytes map to themselves,
// the other 68 bytes to U+0100 + n in byte order.
std::array<std::string, 256> make_byte_symbols(std::array<std::uint8_t, 256>& order) {
  std::array<std::string, 256> symbols;
  const auto printable = [](int b) {
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  };
  size_t position = 0;
  for (int b = 0; b < 256; ++b) {
    if (printable(b)) {
      detail::append_utf8(symbols[b], static_cast<char32_t>(b));
      order[position++] = static_cast<std::uint8_t>(b);
    }
  }
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    if (!printable(b)) {
      detail::append_utf8(symbols[b], static_cast<char32_t>(256 + n++));
      order[position++] = static_cast<std::uint8_t>(b);
    }
  }
  return symbols;
}

std::string read_text_file(const std::filesystem::path& path, std::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw TokenizerError(std::string(what) + " not found or unreadable: " + path.string());
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad())
    throw TokenizerError(std::string(what) + " could not be read: " + path.string());
  return buffer.str();
}

std::string read_gzip_file(const std::filesystem::path& path) {
  if (!std::filesystem::is_regular_file(path))
    throw TokenizerError("BPE vocabulary not found: " + path.string());
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr)
    throw TokenizerError("cannot open BPE vocabulary: " + path.string());
  std::string out;
  char buffer[1 << 16];
  int got = 0;
  while ((got = gzread(file, buffer, sizeof buffer)) > 0)
    out.append(buffer, got);
  int errnum = Z_OK;
  const char* message = gzerror(file, &errnum);
  const bool not_gzip = gzdirect(file) != 0;
  const std::string error = (got < 0 || (errnum != Z_OK && errnum != Z_STREAM_END)) ? message : "";
  gzclose(file);
  if (not_gzip)
    throw TokenizerError("BPE vocabulary is not gzip-compressed: " + path.string());
  if (!error.empty())
    throw TokenizerError("BPE vocabulary is corrupt (" + error + "): " + path.string());
  return out;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t begin = 0;
  while (begin <= text.size()) {
    size_t end = text.find('\n', begin);
    if (end == std::string::npos)
      end = text.size();
    lines.push_back(text.substr(begin, end - begin));
    begin = end + 1;
  }
  return lines;
}

// Parses merge lines [1, 1 + kClipMerges) as "first second" into ranks; returns the
// merges in order.
std::vector<std::pair<std::string, std::string>> parse_merges(const std::string& text,
                                                              const std::string& source) {
  try {
    detail::utf8_to_utf32(text);
  } catch (const std::invalid_argument& e) {
    throw TokenizerError("merges in " + source + ": " + e.what());
  }
  std::vector<std::string> lines = split_lines(text);
  while (!lines.empty() && lines.back().empty())
    lines.pop_back();
  if (lines.empty() || lines.front().find("#version") == std::string::npos)
    throw TokenizerError("merges in " + source + " lack the \"#version\" header line");
  std::vector<std::pair<std::string, std::string>> merges;
  for (size_t i = 1; i < lines.size() && merges.size() < kClipMerges; ++i) {
    std::string line = lines[i];
    if (!line.empty() && line.back() == '\r')
      line.pop_back();
    std::istringstream fields(line);
    std::string first, second, extra;
    if (!(fields >> first >> second) || (fields >> extra))
      throw TokenizerError("merges in " + source + ", line " + std::to_string(i + 1) +
                           ": expected two symbols, got \"" + line + "\"");
    merges.emplace_back(std::move(first), std::move(second));
  }
  return merges;
}

std::unique_ptr<ClipTokenizer::State> new_state(int max_length) {
  if (max_length < 2)
    throw TokenizerError("max length must be at least 2 (start and end token), got " +
                         std::to_string(max_length));
  auto state = std::make_unique<ClipTokenizer::State>();
  state->max_length = max_length;
  std::array<std::uint8_t, 256> order{};
  state->byte_symbols = make_byte_symbols(order);
  return state;
}

void set_ranks(ClipTokenizer::State& state,
               const std::vector<std::pair<std::string, std::string>>& merges) {
  state.merge_ranks.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank)  // a repeated pair keeps its last rank
    state.merge_ranks.insert_or_assign(merges[rank].first + " " + merges[rank].second,
                                       static_cast<int>(rank));
}

std::int64_t required_id(const ClipTokenizer::State& state, std::string_view token,
                         const std::string& source) {
  auto it = state.vocab.find(std::string(token));
  if (it == state.vocab.end())
    throw TokenizerError("vocabulary " + source + " has no \"" + std::string(token) + "\" entry");
  return it->second;
}

void set_special_ids(ClipTokenizer::State& state, PadToken pad, const std::string& source) {
  state.start_id = required_id(state, kStartToken, source);
  state.end_id = required_id(state, kEndToken, source);
  state.pad_id = pad == PadToken::kEndOfText ? state.end_id : required_id(state, "!", source);
}

// A special-token entry of a HF json file: a plain string or {"content": "..."}.
const std::string* token_content(const aclora::json::Value* value) {
  if (value == nullptr)
    return nullptr;
  if (value->is_string())
    return &value->as_string();
  if (const auto* content = value->find("content"); content != nullptr && content->is_string())
    return &content->as_string();
  return nullptr;
}

aclora::json::Value parse_json_file(const std::filesystem::path& path, std::string_view what) {
  const std::string text = read_text_file(path, what);
  try {
    return aclora::json::parse(text);
  } catch (const aclora::json::Error& e) {
    throw TokenizerError(std::string(what) + " is not valid JSON (" + e.what() +
                         "): " + path.string());
  }
}

}  // namespace

ClipTokenizer ClipTokenizer::from_bpe_gz(const std::filesystem::path& gz_file, PadToken pad,
                                         int max_length) {
  auto state = new_state(max_length);
  const std::string source = gz_file.string();
  const auto merges = parse_merges(read_gzip_file(gz_file), source);
  if (merges.size() != kClipMerges)
    throw TokenizerError("BPE vocabulary " + source +
                         " is truncated: " + std::to_string(merges.size()) + " merges, expected " +
                         std::to_string(kClipMerges));
  std::array<std::uint8_t, 256> order{};
  make_byte_symbols(order);
  std::vector<std::string> entries;
  entries.reserve(2 * 256 + merges.size() + 2);
  for (std::uint8_t b : order)
    entries.push_back(state->byte_symbols[b]);
  for (std::uint8_t b : order)
    entries.push_back(state->byte_symbols[b] + "</w>");
  for (const auto& [first, second] : merges)
    entries.push_back(first + second);
  entries.emplace_back(kStartToken);
  entries.emplace_back(kEndToken);
  state->vocab.reserve(entries.size());
  // A repeated entry keeps its last id (as building a dict from the list does).
  for (size_t id = 0; id < entries.size(); ++id)
    state->vocab.insert_or_assign(entries[id], static_cast<std::int64_t>(id));
  set_ranks(*state, merges);
  set_special_ids(*state, pad, source);
  return ClipTokenizer(std::move(state));
}

ClipTokenizer ClipTokenizer::from_vocab_files(const std::filesystem::path& vocab_json,
                                              const std::filesystem::path& merges_txt, PadToken pad,
                                              int max_length) {
  auto state = new_state(max_length);
  const std::string source = vocab_json.string();
  const aclora::json::Value vocab = parse_json_file(vocab_json, "vocab.json");
  if (!vocab.is_object())
    throw TokenizerError("vocab.json must hold an object of token -> id: " + source);
  state->vocab.reserve(vocab.as_object().size());
  for (const auto& [token, id] : vocab.as_object()) {
    if (!id.is_integer() || id.as_int() < 0)
      throw TokenizerError("vocab.json entry \"" + token +
                           "\" has no non-negative integer id: " + source);
    state->vocab.emplace(token, id.as_int());
  }
  set_ranks(*state, parse_merges(read_text_file(merges_txt, "merges.txt"), merges_txt.string()));
  set_special_ids(*state, pad, source);
  return ClipTokenizer(std::move(state));
}

ClipTokenizer ClipTokenizer::from_tokenizer_json(const std::filesystem::path& tokenizer_json,
                                                 PadToken pad, int max_length) {
  auto state = new_state(max_length);
  const std::string source = tokenizer_json.string();
  const aclora::json::Value root = parse_json_file(tokenizer_json, "tokenizer.json");
  const aclora::json::Value* model = root.is_object() ? root.find("model") : nullptr;
  if (model == nullptr || !model->is_object())
    throw TokenizerError("tokenizer.json has no \"model\" object: " + source);
  if (const auto* type = model->find("type");
      type != nullptr && !(type->is_string() && type->as_string() == "BPE"))
    throw TokenizerError("tokenizer.json model type " + aclora::json::dump(*type) +
                         " is not BPE: " + source);
  if (const auto* suffix = model->find("end_of_word_suffix");
      suffix != nullptr && !suffix->is_null() &&
      !(suffix->is_string() && suffix->as_string() == "</w>"))
    throw TokenizerError("tokenizer.json end_of_word_suffix " + aclora::json::dump(*suffix) +
                         " is not \"</w>\" (not a CLIP tokenizer): " + source);
  const aclora::json::Value* vocab = model->find("vocab");
  if (vocab == nullptr || !vocab->is_object())
    throw TokenizerError("tokenizer.json model has no \"vocab\" object of token -> id: " + source);
  state->vocab.reserve(vocab->as_object().size() + 2);
  for (const auto& [token, id] : vocab->as_object()) {
    if (!id.is_integer() || id.as_int() < 0)
      throw TokenizerError("tokenizer.json vocab entry \"" + token +
                           "\" has no non-negative integer id: " + source);
    state->vocab.emplace(token, id.as_int());
  }
  if (const auto* added = root.find("added_tokens"); added != nullptr && added->is_array()) {
    for (const auto& entry : added->as_array()) {
      const auto* content = entry.find("content");
      const auto* id = entry.find("id");
      if (content != nullptr && content->is_string() && id != nullptr && id->is_integer() &&
          id->as_int() >= 0)
        state->vocab.emplace(content->as_string(), id->as_int());  // kept if in vocab already
    }
  }
  const aclora::json::Value* merges = model->find("merges");
  if (merges == nullptr || !merges->is_array())
    throw TokenizerError("tokenizer.json model has no \"merges\" array: " + source);
  std::vector<std::pair<std::string, std::string>> pairs;
  for (const auto& merge : merges->as_array()) {
    if (pairs.size() == kClipMerges)
      break;
    const std::string where = "tokenizer.json merge " + std::to_string(pairs.size() + 1) + " " +
                              aclora::json::dump(merge);
    if (merge.is_string()) {  // "a b" (tokenizers before 0.20)
      const std::string& text = merge.as_string();
      const auto space = text.find(' ');
      if (space == std::string::npos || space == 0 || space + 1 == text.size() ||
          text.find(' ', space + 1) != std::string::npos)
        throw TokenizerError(where + ": expected two symbols: " + source);
      pairs.emplace_back(text.substr(0, space), text.substr(space + 1));
    } else if (merge.is_array() && merge.as_array().size() == 2 &&
               merge.as_array()[0].is_string() && merge.as_array()[1].is_string()) {  // [a, b]
      pairs.emplace_back(merge.as_array()[0].as_string(), merge.as_array()[1].as_string());
    } else {
      throw TokenizerError(where + ": expected \"a b\" or [\"a\", \"b\"]: " + source);
    }
  }
  set_ranks(*state, pairs);
  set_special_ids(*state, pad, source);
  return ClipTokenizer(std::move(state));
}

ClipTokenizer ClipTokenizer::from_folder(const std::filesystem::path& folder, PadToken default_pad,
                                         int default_max_length) {
  if (!std::filesystem::is_directory(folder))
    throw TokenizerError("tokenizer folder not found: " + folder.string());
  PadToken pad = default_pad;
  int max_length = default_max_length;
  for (const char* name : {"tokenizer_config.json", "special_tokens_map.json"}) {
    const auto path = folder / name;
    if (!std::filesystem::exists(path))
      continue;
    const aclora::json::Value config = parse_json_file(path, name);
    if (const std::string* token = token_content(config.find("pad_token"))) {
      if (*token == kEndToken) {
        pad = PadToken::kEndOfText;
      } else if (*token == "!") {
        pad = PadToken::kExclamation;
      } else {
        throw TokenizerError(std::string(name) + ": unsupported pad_token \"" + *token +
                             "\" (expected \"<|endoftext|>\" or \"!\"): " + path.string());
      }
    }
    if (const auto* length = config.find("model_max_length");
        length != nullptr && length->is_integer()) {
      max_length = static_cast<int>(std::clamp<std::int64_t>(length->as_int(), 2, 1 << 20));
    }
  }
  namespace fs = std::filesystem;
  const bool has_vocab = fs::exists(folder / "vocab.json");
  const bool has_merges = fs::exists(folder / "merges.txt");
  if (has_vocab && has_merges)
    return from_vocab_files(folder / "vocab.json", folder / "merges.txt", pad, max_length);
  if (fs::exists(folder / "tokenizer.json"))
    return from_tokenizer_json(folder / "tokenizer.json", pad, max_length);
  if (has_vocab || has_merges)  // names the missing one
    return from_vocab_files(folder / "vocab.json", folder / "merges.txt", pad, max_length);
  throw TokenizerError("tokenizer folder " + folder.string() +
                       " has neither vocab.json + merges.txt nor tokenizer.json");
}

}  // namespace sdxl
