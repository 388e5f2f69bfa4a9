#include "sdxl/sample_prompts.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <fstream>

namespace sdxl {
namespace {

std::string trimmed(const std::string& text) {
  const auto not_space = [](unsigned char c) { return !std::isspace(c); };
  const auto first = std::find_if(text.begin(), text.end(), not_space);
  const auto last = std::find_if(text.rbegin(), text.rend(), not_space).base();
  return first < last ? std::string(first, last) : std::string();
}

template <class T>
T number(const std::string& value, const std::string& option) {
  T out{};
  const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), out);
  if (error != std::errc() || end != value.data() + value.size())
    throw std::invalid_argument("--" + option + ": '" + value + "' is not a valid number");
  return out;
}

}  // namespace

SamplePrompt parse_sample_prompt(const std::string& line) {
  SamplePrompt sample;
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (true) {
    const std::size_t found = line.find(" --", start);
    parts.push_back(
        line.substr(start, found == std::string::npos ? std::string::npos : found - start));
    if (found == std::string::npos)
      break;
    start = found + 3;
  }
  sample.prompt = trimmed(parts[0]);
  for (std::size_t i = 1; i < parts.size(); ++i) {
    const std::string part = trimmed(parts[i]);
    const std::size_t space = part.find(' ');
    std::string option = part.substr(0, space);
    std::transform(option.begin(), option.end(), option.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    const std::string value = space == std::string::npos ? "" : trimmed(part.substr(space + 1));
    if (value.empty())
      throw std::invalid_argument("--" + option + " needs a value");
    if (option == "n") {
      sample.negative = value;
    } else if (option == "w") {
      sample.width = number<int64_t>(value, option);
    } else if (option == "h") {
      sample.height = number<int64_t>(value, option);
    } else if (option == "d") {
      sample.seed = number<uint64_t>(value, option);
    } else if (option == "s") {
      sample.steps = std::clamp(number<int>(value, option), 1, 1000);
    } else if (option == "l") {
      sample.guidance = number<double>(value, option);
    } else if (option == "ss") {
      std::string sampler = value;
      std::transform(sampler.begin(), sampler.end(), sampler.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      if (sampler != "euler")
        throw std::invalid_argument("--ss " + value + ": aclora-sdxl samples with euler only");
    } else {
      throw std::invalid_argument("--" + option +
                                  " is not supported (--n, --w, --h, --d, --s, --l, --ss euler)");
    }
  }
  if (sample.prompt.empty())
    throw std::invalid_argument("the prompt is empty");
  return sample;
}

std::vector<SamplePrompt> read_sample_prompts(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in)
    throw std::runtime_error(path.string() + ": cannot read the sample prompt file");
  std::vector<SamplePrompt> prompts;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    const std::string text = trimmed(line);
    if (text.empty() || text[0] == '#')
      continue;
    try {
      SamplePrompt prompt = parse_sample_prompt(text);
      prompt.line = number;
      prompts.push_back(std::move(prompt));
    } catch (const std::invalid_argument& error) {
      throw std::runtime_error(path.string() + ":" + std::to_string(number) + ": " + error.what());
    }
  }
  if (prompts.empty())
    throw std::runtime_error(path.string() + ": no prompts");
  return prompts;
}

}  // namespace sdxl
