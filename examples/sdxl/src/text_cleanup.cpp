// Prompt cleanup before CLIP tokenisation (see text_cleanup.hpp).
#include "sdxl/text_cleanup.hpp"

#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include <stdexcept>

#include "utf8.hpp"
#include "windows1252.hpp"

namespace sdxl {
namespace {

icu::UnicodeString to_icu(std::string_view utf8) {
  return icu::UnicodeString::fromUTF8(
      icu::StringPiece(utf8.data(), static_cast<int32_t>(utf8.size())));
}

std::string from_icu(const icu::UnicodeString& s) {
  std::string out;
  s.toUTF8String(out);
  return out;
}

bool is_ascii_alnum(char32_t c) {
  return (c >= U'0' && c <= U'9') || (c >= U'a' && c <= U'z') || (c >= U'A' && c <= U'Z');
}

// ftfy's conservative HTML step: only ';'-terminated references of at most 24
// alphanumerics.
std::u32string unescape_terminated_entities(const std::u32string& in) {
  std::u32string out;
  size_t i = 0;
  while (i < in.size()) {
    if (in[i] == U'&') {
      size_t j = i + 1;
      if (j < in.size() && in[j] == U'#')
        ++j;
      size_t k = j;
      while (k < in.size() && k - j < 25 && is_ascii_alnum(in[k]))
        ++k;
      if (k > j && k - j <= 24 && k < in.size() && in[k] == U';') {
        const std::u32string ref = in.substr(i, k + 1 - i);
        const std::u32string decoded =
            detail::utf8_to_utf32(html_unescape(detail::utf32_to_utf8(ref)));
        // A reference that did not decode completely is kept verbatim.
        if (decoded.find(U';') == std::u32string::npos) {
          out += decoded;
          i = k + 1;
          continue;
        }
      }
    }
    out.push_back(in[i++]);
  }
  return out;
}

// ESC '[' (digits | ';')* letter
std::u32string remove_terminal_escapes(const std::u32string& in) {
  std::u32string out;
  size_t i = 0;
  while (i < in.size()) {
    if (in[i] == 0x1B && i + 1 < in.size() && in[i + 1] == U'[') {
      size_t k = i + 2;
      while (k < in.size() && ((in[k] >= U'0' && in[k] <= U'9') || in[k] == U';'))
        ++k;
      if (k < in.size() && ((in[k] >= U'a' && in[k] <= U'z') || (in[k] >= U'A' && in[k] <= U'Z'))) {
        i = k + 1;
        continue;
      }
    }
    out.push_back(in[i++]);
  }
  return out;
}

const char32_t* ligature_expansion(char32_t c) {
  switch (c) {
    case 0x132:
      return U"IJ";
    case 0x133:
      return U"ij";
    case 0x149:
      return U"\u02BCn";
    case 0x1F1:
      return U"DZ";
    case 0x1F2:
      return U"Dz";
    case 0x1F3:
      return U"dz";
    case 0x1C4:
      return U"D\u017D";
    case 0x1C5:
      return U"D\u017E";
    case 0x1C6:
      return U"d\u017E";
    case 0x1C7:
      return U"LJ";
    case 0x1C8:
      return U"Lj";
    case 0x1C9:
      return U"lj";
    case 0x1CA:
      return U"NJ";
    case 0x1CB:
      return U"Nj";
    case 0x1CC:
      return U"nj";
    case 0xFB00:
      return U"ff";
    case 0xFB01:
      return U"fi";
    case 0xFB02:
      return U"fl";
    case 0xFB03:
      return U"ffi";
    case 0xFB04:
      return U"ffl";
    case 0xFB05:
      return U"\u017Ft";
    case 0xFB06:
      return U"st";
    default:
      return nullptr;
  }
}

bool is_removed_control(char32_t c) {
  return c <= 0x08 || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F ||
         (c >= 0x206A && c <= 0x206F) || c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC);
}

// Full-width / half-width forms (U+FF01..U+FFEF) and the ideographic space map to
// their NFKC equivalents.
void append_width_fixed(std::u32string& out, char32_t c, const icu::Normalizer2& nfkc) {
  if (c == 0x3000) {
    out.push_back(U' ');
    return;
  }
  if (c >= 0xFF01 && c <= 0xFFEF) {
    UErrorCode status = U_ZERO_ERROR;
    icu::UnicodeString one(static_cast<UChar32>(c));
    const icu::UnicodeString mapped = nfkc.normalize(one, status);
    if (U_SUCCESS(status)) {
      out += detail::utf8_to_utf32(from_icu(mapped));
      return;
    }
  }
  out.push_back(c);
}

template <class Fn>
std::u32string map_each(const std::u32string& in, Fn fn) {
  std::u32string out;
  out.reserve(in.size());
  for (char32_t c : in)
    fn(c, out);
  return out;
}

// "\r\n", "\r", U+2028, U+2029 and U+0085 become "\n".
std::u32string fix_line_breaks(const std::u32string& in) {
  std::u32string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    const char32_t c = in[i];
    if (c == U'\r' && i + 1 < in.size() && in[i + 1] == U'\n')
      continue;
    out.push_back((c == U'\r' || c == 0x2028 || c == 0x2029 || c == 0x85) ? U'\n' : c);
  }
  return out;
}

const icu::Normalizer2& normalizer(bool nfkc) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* n =
      nfkc ? icu::Normalizer2::getNFKCInstance(status) : icu::Normalizer2::getNFCInstance(status);
  if (U_FAILURE(status) || n == nullptr)
    throw std::runtime_error(std::string("ICU normalizer unavailable: ") + u_errorName(status));
  return *n;
}

}  // namespace

bool is_python_whitespace(char32_t c) {
  return (c >= 0x1C && c <= 0x1F) ||
         u_hasBinaryProperty(static_cast<UChar32>(c), UCHAR_WHITE_SPACE);
}

std::string fix_text_characters(std::string_view utf8) {
  const std::u32string text = detail::utf8_to_utf32(utf8);
  const icu::Normalizer2& nfkc = normalizer(true);
  const icu::Normalizer2& nfc = normalizer(false);
  std::u32string out;
  out.reserve(text.size());
  // Line by line (each line keeps its '\n'); once a line holds '<', HTML
  // unescaping stays off for the rest of the text, as ftfy does.
  bool unescape = true;
  size_t begin = 0;
  while (begin < text.size()) {
    size_t end = text.find(U'\n', begin);
    end = end == std::u32string::npos ? text.size() : end + 1;
    std::u32string segment = text.substr(begin, end - begin);
    begin = end;
    if (segment.find(U'<') != std::u32string::npos)
      unescape = false;
    // The fixes repeat until the text stops changing.
    for (int round = 0; round < 16; ++round) {
      std::u32string fixed = unescape ? unescape_terminated_entities(segment) : segment;
      fixed = map_each(
          fixed, [](char32_t c, std::u32string& o) { o.push_back(detail::windows1252_c1(c)); });
      fixed = map_each(fixed, [](char32_t c, std::u32string& o) {
        const char32_t* lig = ligature_expansion(c);
        if (lig != nullptr) {
          o += lig;
        } else {
          o.push_back(c);
        }
      });
      fixed =
          map_each(fixed, [&](char32_t c, std::u32string& o) { append_width_fixed(o, c, nfkc); });
      fixed = map_each(fixed, [](char32_t c, std::u32string& o) {
        if (c == 0x2BC || (c >= 0x2018 && c <= 0x201B)) {
          o.push_back(U'\'');
        } else if (c >= 0x201C && c <= 0x201F) {
          o.push_back(U'"');
        } else {
          o.push_back(c);
        }
      });
      fixed = fix_line_breaks(fixed);
      fixed = remove_terminal_escapes(fixed);
      fixed = map_each(fixed, [](char32_t c, std::u32string& o) {
        if (!is_removed_control(c))
          o.push_back(c);
      });
      UErrorCode status = U_ZERO_ERROR;
      const icu::UnicodeString normalized =
          nfc.normalize(to_icu(detail::utf32_to_utf8(fixed)), status);
      if (U_FAILURE(status))
        throw std::runtime_error(std::string("ICU NFC normalisation failed: ") +
                                 u_errorName(status));
      fixed = detail::utf8_to_utf32(from_icu(normalized));
      if (fixed == segment)
        break;
      segment = std::move(fixed);
    }
    out += segment;
  }
  return detail::utf32_to_utf8(out);
}

std::string clean_prompt_text(std::string_view utf8) {
  std::string text = fix_text_characters(utf8);
  text = html_unescape(html_unescape(text));
  const std::u32string wide = detail::utf8_to_utf32(text);
  std::u32string collapsed;
  collapsed.reserve(wide.size());
  bool pending_space = false;
  for (char32_t c : wide) {
    if (is_python_whitespace(c)) {
      pending_space = !collapsed.empty();
      continue;
    }
    if (pending_space)
      collapsed.push_back(U' ');
    pending_space = false;
    collapsed.push_back(c);
  }
  icu::UnicodeString lowered = to_icu(detail::utf32_to_utf8(collapsed));
  lowered.toLower(icu::Locale::getRoot());
  return from_icu(lowered);
}

}  // namespace sdxl
