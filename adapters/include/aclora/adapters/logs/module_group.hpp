#pragma once
/// @file
/// @brief Which block a LoRA module belongs to, for labelling groups of rows in pictures.

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace aclora::logs {

/// Maps a module name to the name of its group (rows of one group share a label).
using ModuleGrouping = std::function<std::string(std::string_view)>;

namespace detail {

inline std::vector<std::string_view> split_name(std::string_view name) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  for (std::size_t i = 0; i <= name.size(); ++i) {
    if (i == name.size() || name[i] == '_' || name[i] == '.') {
      parts.push_back(name.substr(start, i - start));
      start = i + 1;
    }
  }
  return parts;
}

inline bool is_number(std::string_view part) {
  if (part.empty()) {
    return false;
  }
  for (const char c : part) {
    if (c < '0' || c > '9') {
      return false;
    }
  }
  return true;
}

}  // namespace detail

/// The default grouping, for kohya, diffusers and PEFT names (parts split at '_' and '.'):
/// - UNet blocks: "lora_unet_input_blocks_4_1_..." -> "input_blocks_4",
///   "..._output_blocks_3_1_..." -> "output_blocks_3", "..._middle_block_1_..." ->
///   "middle_block"; likewise down_blocks_N, up_blocks_N and mid_block.
/// - Text encoder layers: "lora_te1_text_model_encoder_layers_0_..." -> "te1 layer 0"
///   (te2 for "lora_te2_" or "text_encoder_2", te1 for "text_encoder", "layer N" alone
///   when no encoder is named).
/// - Anything else: the name without its last two parts
///   ("blocks.3.attn.qkv" -> "blocks.3"); names of one or two parts are their own group.
inline std::string default_module_group(std::string_view name) {
  const std::vector<std::string_view> parts = detail::split_name(name);
  const std::size_t count = parts.size();
  std::string encoder;
  for (std::size_t i = 0; i < count; ++i) {
    if (parts[i] == "te" || parts[i] == "te1" || parts[i] == "te2") {
      encoder = std::string(parts[i]);
      break;
    }
    if (i + 1 < count && parts[i] == "text" && parts[i + 1] == "encoder") {
      encoder = (i + 2 < count && parts[i + 2] == "2") ? "te2" : "te1";
      break;
    }
  }
  for (std::size_t i = 0; i + 1 < count; ++i) {
    if (parts[i] == "layers" && detail::is_number(parts[i + 1])) {
      return (encoder.empty() ? std::string() : encoder + " ") + "layer " +
             std::string(parts[i + 1]);
    }
  }
  for (std::size_t i = 0; i + 1 < count; ++i) {
    const std::string_view first = parts[i];
    const std::string_view second = parts[i + 1];
    if (second == "blocks" && i + 2 < count && detail::is_number(parts[i + 2]) &&
        (first == "input" || first == "output" || first == "down" || first == "up")) {
      return std::string(first) + "_blocks_" + std::string(parts[i + 2]);
    }
    if (second == "block" && (first == "middle" || first == "mid")) {
      return std::string(first) + "_block";
    }
  }
  if (count <= 2) {
    return std::string(name);
  }
  // Cut before the separator that starts the second-to-last part.
  std::size_t cut = name.size();
  for (int separators = 0; separators < 2; ++separators) {
    cut = name.find_last_of("_.", cut - 1);
  }
  return std::string(name.substr(0, cut));
}

}  // namespace aclora::logs
