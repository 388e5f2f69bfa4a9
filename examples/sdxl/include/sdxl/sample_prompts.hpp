/// @file sample_prompts.hpp
/// sd-scripts' sample prompt files: one prompt per line, options after " --" on the line:
/// --n negative prompt, --w width, --h height, --d seed, --s steps, --l guidance scale;
/// empty lines and lines starting with # are skipped.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace sdxl {

/// One sample request of a prompt file (unset values take the run's defaults).
struct SamplePrompt {
  std::string prompt;                   ///< the text before the first " --"
  std::optional<std::string> negative;  ///< --n
  std::optional<int64_t> width;         ///< --w (pixels)
  std::optional<int64_t> height;        ///< --h (pixels)
  std::optional<uint64_t> seed;         ///< --d
  std::optional<int> steps;             ///< --s (clamped to [1, 1000] as sd-scripts does)
  std::optional<double> guidance;       ///< --l
  int line = 0;                         ///< 1-based line in the file
};

/// Parses one line (see the file comment). Options this sampler cannot honour (--ss other
/// than euler, --cn, ...) and malformed values are errors naming the option.
/// @throws std::invalid_argument with the message (the caller adds file and line).
SamplePrompt parse_sample_prompt(const std::string& line);

/// Reads a prompt file. @throws std::runtime_error naming the file and the line.
std::vector<SamplePrompt> read_sample_prompts(const std::filesystem::path& path);

}  // namespace sdxl
