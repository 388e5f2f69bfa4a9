#pragma once
/// @file tokenizer.hpp
/// @brief CLIP byte-level BPE tokenizer, as used by both SDXL text encoders.
///
/// Pipeline: clean_prompt_text() (text_cleanup.hpp), split into pieces (the special
/// tokens, contractions 's 't 're 've 'm 'll 'd, runs of Unicode letters, single
/// Unicode digits, runs of other non-space characters), each piece's UTF-8 bytes
/// mapped to byte symbols, "</w>" appended to the last symbol, then the lowest-ranked
/// adjacent pair merged until no pair has a rank. Symbols missing from the vocabulary
/// become the end-of-text id (the reference tokenizers' unknown token).

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace sdxl {

/// Which token fills a framed sequence after its end-of-text token.
enum class PadToken {
  kEndOfText,    ///< "<|endoftext|>": SDXL "tokenizer" (CLIP ViT-L)
  kExclamation,  ///< "!" (id 0 in the real vocabulary): SDXL "tokenizer_2" (bigG)
};

/// Thrown for missing, unreadable or malformed vocabulary files.
class TokenizerError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A CLIP BPE tokenizer. Immutable after loading except for an internal,
/// mutex-guarded cache of piece -> ids, so one instance may be shared by threads.
class ClipTokenizer {
 public:
  /// Loads open_clip's bpe_simple_vocab_16e6.txt.gz (gzip; first line a header,
  /// then merges): the vocabulary is the 256 byte symbols, the same with "</w>",
  /// the first 48,894 merges, then "<|startoftext|>" and "<|endoftext|>"
  /// (49,408 entries).
  /// @throws TokenizerError when the file is missing, not gzip, or malformed.
  static ClipTokenizer from_bpe_gz(const std::filesystem::path& gz_file,
                                   PadToken pad = PadToken::kEndOfText, int max_length = 77);

  /// Loads a Hugging Face vocab.json (token -> id) and merges.txt ("#version"
  /// header line, then one "a b" pair per line, at most 48,894 used).
  /// @throws TokenizerError when a file is missing or malformed, or when the
  ///         vocabulary lacks "<|startoftext|>", "<|endoftext|>" or the pad token.
  static ClipTokenizer from_vocab_files(const std::filesystem::path& vocab_json,
                                        const std::filesystem::path& merges_txt,
                                        PadToken pad = PadToken::kEndOfText, int max_length = 77);

  /// Loads a Hugging Face tokenizer.json (what transformers 5 writes instead of vocab.json
  /// and merges.txt): a "model" of type BPE with "vocab" (token -> id) and "merges" ("a b"
  /// strings, or [a, b] pairs as newer tokenizers versions write them; at most 48,894
  /// used); "added_tokens" entries missing from the vocabulary are added. The word suffix
  /// must be "</w>" as in CLIP.
  /// @throws TokenizerError when the file is missing or malformed, or lacks
  ///         "<|startoftext|>", "<|endoftext|>" or the pad token.
  static ClipTokenizer from_tokenizer_json(const std::filesystem::path& tokenizer_json,
                                           PadToken pad = PadToken::kEndOfText,
                                           int max_length = 77);

  /// Loads a diffusers tokenizer folder: vocab.json + merges.txt, else tokenizer.json.
  /// The pad token and max length come from special_tokens_map.json /
  /// tokenizer_config.json when present ("pad_token": "<|endoftext|>" or "!",
  /// "model_max_length"), else from the arguments.
  /// @throws TokenizerError as from_vocab_files / from_tokenizer_json, when the folder has
  ///         neither, or for a pad token other than "<|endoftext|>" and "!".
  static ClipTokenizer from_folder(const std::filesystem::path& folder,
                                   PadToken default_pad = PadToken::kEndOfText,
                                   int default_max_length = 77);

  /// Token ids of a prompt without the start/end tokens and without truncation.
  /// @throws std::invalid_argument when the text is not valid UTF-8.
  std::vector<std::int64_t> encode(std::string_view text) const;

  /// Frames ids as [start] + ids + [end] + padding, exactly max_length() long;
  /// longer input is truncated so that the last slot still holds the end token.
  std::vector<std::int64_t> frame(std::span<const std::int64_t> ids) const;

  /// frame(encode(text)).
  std::vector<std::int64_t> tokenize(std::string_view text) const;

  /// The pieces the cleaned text is split into before BPE (UTF-8), for inspection.
  std::vector<std::string> split(std::string_view cleaned_text) const;

  /// Number of vocabulary entries (49,408 for the real CLIP vocabulary).
  std::int64_t vocab_size() const;
  std::int64_t start_id() const;  ///< id of "<|startoftext|>"
  std::int64_t end_id() const;    ///< id of "<|endoftext|>"
  std::int64_t pad_id() const;    ///< id used after the end token
  int max_length() const;         ///< framed length (77)
  /// id of a vocabulary entry in byte-symbol form (e.g. "a</w>"); -1 when absent.
  std::int64_t token_id(std::string_view symbol) const;

  ~ClipTokenizer();
  /// Movable; a moved-from tokenizer may only be destroyed or assigned to.
  ClipTokenizer(ClipTokenizer&&) noexcept;
  /// Move assignment (see the move constructor).
  ClipTokenizer& operator=(ClipTokenizer&&) noexcept;

  /// Opaque implementation state (defined in the library sources).
  struct State;

 private:
  explicit ClipTokenizer(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace sdxl
