// libFuzzer target for aclora::json: parse must either throw json::Error or
// return a value that dump() writes (compact and indented) as text that
// parses back to an equal value. Also exercises printable() on raw input.
//
// Build and run: tests/fuzz/run_fuzz.sh json <seconds>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "aclora/adapters/json.hpp"

namespace json = aclora::json;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const std::string shown = json::printable(text, 64);
  if (shown.size() > 64 + 3 + 3) {  // the cut may overshoot by one character (<= 4 bytes)
    std::abort();
  }
  json::Value value;
  try {
    value = json::parse(text);
  } catch (const json::Error&) {
    return 0;
  }
  // Strings in an accepted document are UTF-8 and numbers finite, so dump
  // must succeed, and what it writes must read back the same.
  for (const int indent : {-1, 2}) {
    const std::string out = json::dump(value, indent);
    if (!(json::parse(out) == value)) {
      std::abort();
    }
  }
  return 0;
}
