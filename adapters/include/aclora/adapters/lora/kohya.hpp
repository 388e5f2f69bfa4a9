/// @file kohya.hpp
/// @brief Reading kohya (sd-scripts) files, including LyCORIS LoKr / LoHa modules.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "aclora/adapters/lora/detect.hpp"
#include "aclora/adapters/lora/model.hpp"
#include "aclora/adapters/lora/module_builder.hpp"
#include "aclora/adapters/lora/sdxl_keys.hpp"

namespace aclora::lora {

/// Adds the kohya and LyCORIS modules of `reader` to `file`; keys of other layouts and
/// unmappable names go to file.unknown_keys.
/// @throws Error for a module with lora_down but no lora_up (or the reverse), bad shapes or a
/// bad alpha.
inline void read_kohya(const safetensors::Reader& reader, LoraFile& file) {
  struct Parts {
    std::map<std::string, const safetensors::TensorView*> tensors;  // suffix -> tensor
    std::size_t order = 0;
  };
  std::map<std::string, Parts> groups;
  std::vector<std::string> order;
  for (const auto& tensor : reader.tensors()) {
    const std::size_t dot = tensor.name.find('.');
    if (!detail::has_kohya_prefix(tensor.name) || dot == std::string::npos) {
      file.unknown_keys.push_back(tensor.name);
      continue;
    }
    const std::string module = tensor.name.substr(0, dot);
    auto [it, inserted] = groups.try_emplace(module);
    if (inserted)
      order.push_back(module);
    it->second.tensors[tensor.name.substr(dot + 1)] = &tensor;
  }
  const std::string& where = reader.label();
  for (const std::string& source : order) {
    auto& parts = groups[source].tensors;
    const auto take = [&](const std::string& suffix) -> const safetensors::TensorView* {
      const auto found = parts.find(suffix);
      if (found == parts.end())
        return nullptr;
      const auto* view = found->second;
      parts.erase(found);
      return view;
    };
    const auto* alpha_view = take("alpha");
    std::optional<double> alpha;
    if (alpha_view)
      alpha = read_alpha(*alpha_view, where);
    const auto* down = take("lora_down.weight");
    const auto* up = take("lora_up.weight");
    const auto target = parse_kohya_name(source);
    if (down || up) {
      if (!down || !up) {
        throw Error(where + ": module '" + source + "' has " +
                    (down ? "lora_down but no lora_up" : "lora_up but no lora_down"));
      }
      if (!target) {
        file.unknown_keys.push_back(down->name);
        file.unknown_keys.push_back(up->name);
        if (alpha_view)
          file.unknown_keys.push_back(alpha_view->name);
      } else {
        const std::string name = kohya_name(target->component, target->path).value_or(source);
        file.modules.push_back(
            make_module(where, name, target->component, target->path, source, *down, *up,
                        alpha_view ? std::optional(*alpha_view) : std::nullopt, alpha));
      }
    }
    // LyCORIS tensors of the same module.
    LycorisModule lycoris;
    for (auto it = parts.begin(); it != parts.end();) {
      if (detail::is_lycoris_suffix(it->first)) {
        lycoris.algorithm = it->first.rfind("hada_", 0) == 0 ? "loha" : "lokr";
        lycoris.tensors.push_back(*it->second);
        lycoris.parameters += static_cast<std::size_t>(it->second->numel());
        it = parts.erase(it);
      } else {
        ++it;
      }
    }
    if (!lycoris.tensors.empty()) {
      lycoris.name = source;
      lycoris.alpha = alpha;
      for (const auto& tensor : lycoris.tensors) {
        const std::string suffix = tensor.name.substr(tensor.name.find('.') + 1);
        if ((suffix == "hada_w1_b.weight" || suffix == "hada_w1_b") && !tensor.shape.empty())
          lycoris.dimension = static_cast<std::size_t>(tensor.shape[0]);
        if ((suffix == "lokr_w2_a.weight" || suffix == "lokr_w2_a" || suffix == "lokr_w1_a" ||
             suffix == "lokr_w1_a.weight") &&
            tensor.shape.size() >= 2)
          lycoris.dimension = static_cast<std::size_t>(tensor.shape[1]);
      }
      file.lycoris.push_back(std::move(lycoris));
    } else if (!down && alpha_view) {
      file.unknown_keys.push_back(alpha_view->name);  // an alpha without factors
    }
    for (const auto& [suffix, view] : parts)
      file.unknown_keys.push_back(view->name);
  }
}

}  // namespace aclora::lora
