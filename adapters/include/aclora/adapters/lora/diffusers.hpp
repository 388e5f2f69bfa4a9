/// @file diffusers.hpp
/// @brief Reading diffusers LoRA files: unet. / text_encoder. / text_encoder_2. keys with
/// lora_A / lora_B, lora.down / lora.up or lora_linear_layer.down / .up factors.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "aclora/adapters/json/parse.hpp"
#include "aclora/adapters/lora/detect.hpp"
#include "aclora/adapters/lora/model.hpp"
#include "aclora/adapters/lora/module_builder.hpp"
#include "aclora/adapters/lora/peft_config.hpp"
#include "aclora/adapters/lora/sdxl_keys.hpp"

namespace aclora::lora {

/// The per-component LoRA configs in diffusers' "lora_adapter_metadata" (flattened
/// "unet.lora_alpha" keys, or nested {"unet": {...}}); empty configs when absent or unreadable
/// (noted in `notes`).
inline std::map<Component, PeftScaleConfig> diffusers_scale_configs(
    const std::map<std::string, std::string>& metadata, const std::string& where,
    std::vector<std::string>& notes) {
  std::map<Component, PeftScaleConfig> configs;
  const auto found = metadata.find("lora_adapter_metadata");
  if (found == metadata.end())
    return configs;
  json::Value root;
  try {
    root = json::parse(found->second);
  } catch (const json::Error& error) {
    notes.push_back(where + ": lora_adapter_metadata is not valid JSON (" + error.what() +
                    "); alpha = r assumed");
    return configs;
  }
  if (!root.is_object())
    return configs;
  for (Component component :
       {Component::unet, Component::text_encoder, Component::text_encoder_2}) {
    const std::string prefix = std::string(component_name(component)) + ".";
    json::Value nested;
    if (const auto* inner = root.find(component_name(component)); inner && inner->is_object())
      nested = *inner;
    for (const auto& [key, value] : root.as_object()) {
      if (key.rfind(prefix, 0) == 0 && key.find('.', prefix.size()) == std::string::npos)
        nested[key.substr(prefix.size())] = value;
    }
    if (nested.is_object())
      configs[component] = PeftScaleConfig::from_json(nested);
  }
  return configs;
}

/// Adds the modules of a diffusers file to `file`.
/// @throws Error for an unpaired factor, bad shapes or a bad alpha.
inline void read_diffusers(const safetensors::Reader& reader, LoraFile& file) {
  const auto configs = diffusers_scale_configs(reader.metadata(), reader.label(), file.notes);
  struct Group {
    Component component = Component::unet;
    std::string path;
    const safetensors::TensorView* down = nullptr;
    const safetensors::TensorView* up = nullptr;
    const safetensors::TensorView* alpha = nullptr;
  };
  std::map<std::string, Group> groups;  // keyed by "COMPONENT.PATH"
  std::vector<std::string> order;
  for (const auto& tensor : reader.tensors()) {
    const std::string_view key = tensor.name;
    std::optional<Component> component;
    std::size_t head = 0;
    for (Component c : {Component::text_encoder_2, Component::text_encoder, Component::unet}) {
      const std::string prefix = std::string(component_name(c)) + ".";
      if (detail::starts_with(key, prefix)) {
        component = c;
        head = prefix.size();
        break;
      }
    }
    std::optional<bool> is_down;
    std::size_t tail = 0;
    for (const auto& [suffix, down] : detail::kDiffusersFactors) {
      if (detail::ends_with(key, suffix)) {
        is_down = down;
        tail = suffix.size();
        break;
      }
    }
    bool is_alpha = false;
    if (!is_down && detail::ends_with(key, ".alpha")) {
      is_alpha = true;
      tail = 6;
    }
    if (!component || (!is_down && !is_alpha) || key.size() <= head + tail) {
      file.unknown_keys.push_back(tensor.name);
      continue;
    }
    const std::string path(key.substr(head, key.size() - head - tail));
    const std::string id = std::string(component_name(*component)) + "." + path;
    auto [it, inserted] = groups.try_emplace(id);
    if (inserted)
      order.push_back(id);
    it->second.component = *component;
    it->second.path = path;
    if (is_alpha)
      it->second.alpha = &tensor;
    else
      (*is_down ? it->second.down : it->second.up) = &tensor;
  }
  for (const std::string& id : order) {
    const Group& group = groups[id];
    if (!group.down || !group.up) {
      if (!group.down && !group.up) {
        file.unknown_keys.push_back(group.alpha->name);
        continue;
      }
      throw Error(
          reader.label() + ": module '" + id + "' has " +
          (group.down ? "a down factor but no up factor" : "an up factor but no down factor"));
    }
    const auto name = kohya_name(group.component, group.path);
    if (!name) {
      for (const auto* view : {group.down, group.up, group.alpha})
        if (view)
          file.unknown_keys.push_back(view->name);
      continue;
    }
    std::optional<double> alpha;
    if (group.alpha) {
      alpha = read_alpha(*group.alpha, reader.label());
    } else if (const auto config = configs.find(group.component); config != configs.end()) {
      const auto rank = group.down->shape.empty() ? 1 : group.down->shape[0];
      alpha =
          config->second.effective_alpha(group.path, static_cast<std::size_t>(rank > 0 ? rank : 1));
    }
    file.modules.push_back(
        make_module(reader.label(), *name, group.component, group.path, id, *group.down, *group.up,
                    group.alpha ? std::optional(*group.alpha) : std::nullopt, alpha));
  }
}

}  // namespace aclora::lora
