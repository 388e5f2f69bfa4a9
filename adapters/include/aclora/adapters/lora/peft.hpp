/// @file peft.hpp
/// @brief Reading PEFT adapters: base_model.model.PATH.lora_A.weight / .lora_B.weight.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "aclora/adapters/lora/detect.hpp"
#include "aclora/adapters/lora/model.hpp"
#include "aclora/adapters/lora/module_builder.hpp"
#include "aclora/adapters/lora/peft_config.hpp"
#include "aclora/adapters/lora/sdxl_keys.hpp"

namespace aclora::lora {

/// The component a PEFT module path belongs to: UNet paths start with down_blocks,
/// up_blocks, mid_block, conv_*, time_embedding or add_embedding; anything else is a text
/// encoder, `text_encoder` by default.
inline Component peft_component(std::string_view path, Component text_encoder) {
  for (std::string_view head : {"down_blocks.", "up_blocks.", "mid_block.", "conv_in", "conv_out",
                                "time_embedding.", "add_embedding."}) {
    if (path.substr(0, head.size()) == head)
      return Component::unet;
  }
  return text_encoder;
}

/// Adds the modules of one PEFT adapter file to `file`. `config`: its adapter_config.json
/// (nullopt: alpha = r, noted in file.notes). `text_encoder`: the component of non-UNet paths.
/// @throws Error for an unpaired factor or bad shapes.
inline void read_peft(const safetensors::Reader& reader, const std::optional<json::Value>& config,
                      Component text_encoder, LoraFile& file) {
  static constexpr std::string_view kPrefix = "base_model.model.";
  const PeftScaleConfig scale = config ? PeftScaleConfig::from_json(*config) : PeftScaleConfig{};
  if (!config)
    file.notes.push_back(reader.label() + ": no adapter_config.json beside it; alpha = r assumed");
  struct Pair {
    const safetensors::TensorView* down = nullptr;
    const safetensors::TensorView* up = nullptr;
  };
  std::map<std::string, Pair> pairs;
  std::vector<std::string> order;
  for (const auto& tensor : reader.tensors()) {
    const std::string_view key = tensor.name;
    const bool is_a = detail::ends_with(key, ".lora_A.weight");
    const bool is_b = detail::ends_with(key, ".lora_B.weight");
    if (!detail::starts_with(key, kPrefix) || !(is_a || is_b)) {
      file.unknown_keys.push_back(tensor.name);
      continue;
    }
    const std::string path(key.substr(kPrefix.size(), key.size() - kPrefix.size() - 14));
    auto [it, inserted] = pairs.try_emplace(path);
    if (inserted)
      order.push_back(path);
    (is_a ? it->second.down : it->second.up) = &tensor;
  }
  for (const std::string& path : order) {
    const Pair& pair = pairs[path];
    if (!pair.down || !pair.up) {
      throw Error(reader.label() + ": module '" + path + "' has " +
                  (pair.down ? "lora_A but no lora_B" : "lora_B but no lora_A"));
    }
    const Component component = peft_component(path, text_encoder);
    const auto name = kohya_name(component, path);
    if (!name) {
      file.unknown_keys.push_back(pair.down->name);
      file.unknown_keys.push_back(pair.up->name);
      continue;
    }
    const auto rank = pair.down->shape.empty() ? 0 : pair.down->shape[0];
    const double alpha = scale.effective_alpha(path, static_cast<std::size_t>(rank > 0 ? rank : 1));
    file.modules.push_back(make_module(reader.label(), *name, component, path,
                                       std::string(kPrefix) + path, *pair.down, *pair.up,
                                       std::nullopt, alpha));
  }
}

}  // namespace aclora::lora
