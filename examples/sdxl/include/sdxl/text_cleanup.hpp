#pragma once
/// @file text_cleanup.hpp
/// @brief Prompt text normalisation applied before CLIP tokenisation.
///
/// Mirrors the cleanup of the reference CLIP tokenizers (OpenAI CLIP / open_clip):
/// ftfy's character fixes, HTML unescaping applied twice, whitespace collapsing,
/// stripping and Unicode lowercasing. ftfy's mojibake repair (re-decoding text that
/// was decoded with the wrong codec, C1-control reinterpretation) is out of scope:
/// prompts are taken to be correctly decoded UTF-8.

#include <string>
#include <string_view>

namespace sdxl {

/// Decodes HTML character references the way Python's html.unescape does: numeric
/// references (decimal `&#NNN;`, hexadecimal `&#xHH;`, with or without ';', Windows-1252 fix-ups
/// for 0x80-0x9F, U+FFFD for surrogates / out-of-range values, invalid code points removed) and
/// named references (&amp; &lt; &gt; &quot; &apos; &#39;, the Latin-1 names, the
/// common typographic names; the legacy Latin-1 names also without ';').
/// Unknown names are left as they are. Input and output are UTF-8.
/// @throws std::invalid_argument if the input is not valid UTF-8.
std::string html_unescape(std::string_view utf8);

/// The ftfy steps that do not guess encodings: HTML unescaping of ';'-terminated
/// entities when the text holds no '<', ANSI terminal escapes removed, Latin
/// ligatures expanded, full/half-width forms mapped to normal width, curly quotes
/// straightened, stray control characters removed, NFC normalisation.
/// @throws std::invalid_argument if the input is not valid UTF-8.
std::string fix_text_characters(std::string_view utf8);

/// Full CLIP prompt cleanup: fix_text_characters, html_unescape twice, whitespace
/// runs collapsed to one space, stripped, lowercased with Unicode full case mapping
/// (ICU root locale, as Python's str.lower).
/// @throws std::invalid_argument if the input is not valid UTF-8.
std::string clean_prompt_text(std::string_view utf8);

/// True for the code points Python's str.split() treats as whitespace (Unicode
/// White_Space plus the information separators U+001C..U+001F).
bool is_python_whitespace(char32_t c);

}  // namespace sdxl
