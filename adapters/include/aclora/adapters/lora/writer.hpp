/// @file writer.hpp
/// @brief Writing LoRA modules as kohya, diffusers or PEFT files (atomic: temp + rename).
#pragma once

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "aclora/adapters/json/dump.hpp"
#include "aclora/adapters/json/value.hpp"
#include "aclora/adapters/lora/model.hpp"
#include "aclora/adapters/lora/output.hpp"
#include "aclora/adapters/safetensors/convert.hpp"
#include "aclora/adapters/safetensors/error.hpp"
#include "aclora/adapters/safetensors/writer.hpp"

namespace aclora::lora {

namespace detail {

inline std::string number_text(double value) {
  if (value == std::floor(value) && std::fabs(value) < 1e15)
    return std::to_string(static_cast<long long>(value));
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.9g", value);
  return buffer;
}

inline json::Value number_value(double value) {
  if (value == std::floor(value) && std::fabs(value) < 1e15)
    return json::Value(static_cast<std::int64_t>(value));
  return json::Value(value);
}

inline std::string utc_now_iso() {
  const std::time_t now = std::time(nullptr);
  std::tm parts{};
  ::gmtime_r(&now, &parts);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%S", &parts);
  return buffer;
}

inline void add_tensor(safetensors::Writer& writer, std::string name, const OutputTensor& tensor) {
  writer.add(std::move(name), tensor.dtype, tensor.shape, tensor.bytes);
}

// Runs a safetensors write, turning its errors into lora::Error.
template <class F>
void guarded(F&& write) {
  try {
    write();
  } catch (const safetensors::Error& error) {
    throw Error(error.what());
  }
}

// The up factor with the module's scale folded in (alpha / r = 1 afterwards), same dtype.
inline OutputTensor folded_up(const OutputModule& module) {
  const double scale = module.scale();
  if (scale == 1.0)
    return module.up;
  safetensors::TensorView view{"", module.up.dtype, module.up.shape,
                               std::span<const std::byte>(module.up.bytes)};
  std::vector<float> values = safetensors::convert_to<float>(view);
  for (float& value : values)
    value = static_cast<float>(value * scale);
  return encode_tensor(values, module.up.dtype, module.up.shape);
}

// The most common value (ties: the smallest).
template <class T>
T most_common(const std::vector<T>& values) {
  std::map<T, std::size_t> counts;
  for (const T& value : values)
    ++counts[value];
  T best{};
  std::size_t best_count = 0;
  for (const auto& [value, count] : counts) {
    if (count > best_count) {
      best = value;
      best_count = count;
    }
  }
  return best;
}

// The module's name in PEFT target_modules / rank_pattern / alpha_pattern. PEFT matches
// these as dotted suffixes, so text-encoder paths drop a leading "text_model.": the pattern
// then fits CLIPTextModel with (transformers 4) and without (transformers 5) that level.
inline std::string target_pattern(const OutputModule& module) {
  if (module.component != Component::unet && module.path.rfind("text_model.", 0) == 0)
    return module.path.substr(11);
  return module.path;
}

// The module path inside a PEFT adapter: CLIP ViT-L (text_encoder) is a CLIPTextModel, which
// has no text_model level since transformers 5 (CLIPTextModelWithProjection keeps it).
inline std::string peft_path(const OutputModule& module) {
  if (module.component == Component::text_encoder && module.path.rfind("text_model.", 0) == 0)
    return module.path.substr(11);
  return module.path;
}

// A PEFT LoraConfig for `modules` (one component): r / lora_alpha the most common values,
// per-module exceptions in rank_pattern / alpha_pattern. `unit_scale`: alpha = r everywhere.
inline json::Value peft_config_json(const std::vector<const OutputModule*>& modules,
                                    bool unit_scale) {
  std::vector<std::size_t> ranks;
  std::vector<double> alphas;
  for (const auto* module : modules) {
    ranks.push_back(module->rank);
    alphas.push_back(unit_scale ? static_cast<double>(module->rank) : module->alpha);
  }
  const std::size_t rank = most_common(ranks);
  const double alpha = most_common(alphas);
  json::Value rank_pattern = json::Object{};
  json::Value alpha_pattern = json::Object{};
  json::Value targets = json::Array{};
  for (std::size_t i = 0; i < modules.size(); ++i) {
    const std::string pattern = target_pattern(*modules[i]);
    targets.push_back(pattern);
    if (ranks[i] != rank)
      rank_pattern[pattern] = json::Value(ranks[i]);
    if (alphas[i] != alpha)
      alpha_pattern[pattern] = number_value(alphas[i]);
  }
  json::Value config = json::Object{};
  config["peft_type"] = "LORA";
  config["r"] = json::Value(rank);
  config["lora_alpha"] = number_value(alpha);
  config["rank_pattern"] = std::move(rank_pattern);
  config["alpha_pattern"] = std::move(alpha_pattern);
  config["target_modules"] = std::move(targets);
  config["lora_dropout"] = 0.0;
  config["bias"] = "none";
  config["fan_in_fan_out"] = false;
  config["init_lora_weights"] = true;
  config["use_rslora"] = false;
  config["use_dora"] = false;
  return config;
}

}  // namespace detail

/// kohya metadata for `modules`: the source's ss_* and modelspec.* entries kept, then
/// ss_network_module / ss_network_dim / ss_network_alpha ("Dynamic" when they vary) set, and
/// the SAI model-spec fields filled when missing. `sdxl`: the file targets SDXL.
inline std::map<std::string, std::string> kohya_metadata(
    const std::map<std::string, std::string>& source, const std::vector<OutputModule>& modules,
    const std::string& title, bool sdxl) {
  std::map<std::string, std::string> out;
  for (const auto& [key, value] : source) {
    if (key.rfind("ss_", 0) == 0 || key.rfind("modelspec.", 0) == 0)
      out[key] = value;
  }
  std::set<std::size_t> ranks;
  std::set<double> alphas;
  for (const auto& module : modules) {
    ranks.insert(module.rank);
    alphas.insert(module.alpha);
  }
  out["ss_network_module"] = "networks.lora";
  out["ss_network_dim"] = ranks.size() == 1 ? std::to_string(*ranks.begin()) : "Dynamic";
  out["ss_network_alpha"] = alphas.size() == 1 ? detail::number_text(*alphas.begin()) : "Dynamic";
  if (sdxl) {
    out.try_emplace("ss_base_model_version", "sdxl_base_v1-0");
    out.try_emplace("modelspec.architecture", "stable-diffusion-xl-v1-base/lora");
    out.try_emplace("modelspec.resolution", "1024x1024");
  }
  out.try_emplace("modelspec.sai_model_spec", "1.0.1");
  out.try_emplace("modelspec.implementation", "https://github.com/Stability-AI/generative-models");
  out["modelspec.title"] = title;
  out["modelspec.date"] = detail::utc_now_iso();
  return out;
}

/// Writes a kohya file: NAME.lora_down.weight, .lora_up.weight, .alpha per module (the
/// module's alpha tensor when it has one, else a scalar of the up factor's dtype when that
/// holds the alpha exactly, else an F32 scalar).
/// @throws Error when the file cannot be written (nothing is left at `path` then).
inline void write_kohya(const std::vector<OutputModule>& modules,
                        const std::map<std::string, std::string>& metadata,
                        const std::filesystem::path& path) {
  detail::guarded([&] {
    safetensors::Writer writer;
    for (const auto& [key, value] : metadata)
      writer.set_metadata(key, value);
    for (const auto& module : modules) {
      detail::add_tensor(writer, module.name + ".lora_down.weight", module.down);
      detail::add_tensor(writer, module.name + ".lora_up.weight", module.up);
      if (module.alpha_tensor) {
        detail::add_tensor(writer, module.name + ".alpha", *module.alpha_tensor);
      } else {
        const bool held = stored_value(module.alpha, module.up.dtype) == module.alpha;
        detail::add_tensor(writer, module.name + ".alpha",
                           encode_tensor(std::vector<float>{static_cast<float>(module.alpha)},
                                         held ? module.up.dtype : safetensors::Dtype::F32, {}));
      }
    }
    writer.write(path);
  });
}

/// Writes a diffusers file: COMPONENT.PATH.lora_A.weight / .lora_B.weight with each
/// module's scale folded into lora_B (so alpha = r holds), and lora_adapter_metadata stating
/// r = lora_alpha per module (diffusers otherwise assumes one alpha for all ranks).
/// `metadata`: further safetensors metadata entries (format and lora_adapter_metadata win).
/// @throws Error when the file cannot be written (nothing is left at `path` then).
inline void write_diffusers(const std::vector<OutputModule>& modules,
                            const std::filesystem::path& path,
                            const std::map<std::string, std::string>& metadata = {}) {
  detail::guarded([&] {
    safetensors::Writer writer;
    for (const auto& [key, value] : metadata)
      writer.set_metadata(key, value);
    std::map<Component, std::vector<const OutputModule*>> by_component;
    for (const auto& module : modules) {
      const std::string key = std::string(component_name(module.component)) + "." + module.path;
      detail::add_tensor(writer, key + ".lora_A.weight", module.down);
      detail::add_tensor(writer, key + ".lora_B.weight", detail::folded_up(module));
      by_component[module.component].push_back(&module);
    }
    json::Value adapter_metadata = json::Object{};
    for (const auto& [component, members] : by_component) {
      const json::Value config = detail::peft_config_json(members, true);
      for (const auto& [key, value] : config.as_object())
        adapter_metadata[std::string(component_name(component)) + "." + key] = value;
    }
    writer.set_metadata("format", "pt");
    writer.set_metadata("lora_adapter_metadata", json::dump(adapter_metadata));
    writer.write(path);
  });
}

/// Writes PEFT adapters into the folder `directory`: one sub-folder per component (unet,
/// text_encoder, text_encoder_2), each with adapter_model.safetensors
/// (base_model.model.PATH.lora_A / lora_B, bytes as given; text_encoder paths without the
/// text_model level, as transformers 5's CLIPTextModel names them) and adapter_config.json (ranks
/// and alphas per module in rank_pattern / alpha_pattern). Built in a temporary folder and
/// renamed into place. `metadata`: safetensors metadata entries of every
/// adapter_model.safetensors (besides "format": "pt").
/// @throws Error when it cannot be written (nothing is left at `directory` then).
inline void write_peft(const std::vector<OutputModule>& modules,
                       const std::filesystem::path& directory,
                       const std::map<std::string, std::string>& metadata = {}) {
  namespace fs = std::filesystem;
  const fs::path target = directory.has_filename() ? directory : directory.parent_path();
  const fs::path parent = target.has_parent_path() ? target.parent_path() : fs::path(".");
  const fs::path temporary =
      parent / ("." + target.filename().string() + ".tmp-" + std::to_string(::getpid()));
  std::error_code error;
  fs::remove_all(temporary, error);
  if (!fs::create_directory(temporary, error)) {
    throw Error(target.string() + ": cannot create a folder in '" + parent.string() +
                "': " + (error ? error.message() : std::string("exists")));
  }
  try {
    std::map<Component, std::vector<const OutputModule*>> by_component;
    for (const auto& module : modules)
      by_component[module.component].push_back(&module);
    for (const auto& entry : by_component) {
      const auto& members = entry.second;  // (clang 14 cannot capture structured bindings)
      const fs::path folder = temporary / component_name(entry.first);
      fs::create_directory(folder);
      detail::guarded([&] {
        safetensors::Writer writer;
        for (const auto& [key, value] : metadata)
          writer.set_metadata(key, value);
        writer.set_metadata("format", "pt");
        for (const auto* module : members) {
          const std::string key = "base_model.model." + detail::peft_path(*module);
          detail::add_tensor(writer, key + ".lora_A.weight", module->down);
          detail::add_tensor(writer, key + ".lora_B.weight", module->up);
        }
        writer.write(folder / "adapter_model.safetensors");
      });
      std::ofstream config(folder / "adapter_config.json", std::ios::binary);
      config << json::dump(detail::peft_config_json(members, false), 2) << "\n";
      config.close();
      if (!config)
        throw Error(target.string() + ": cannot write adapter_config.json");
    }
    if (fs::exists(target)) {
      const fs::path old =
          parent / ("." + target.filename().string() + ".old-" + std::to_string(::getpid()));
      fs::rename(target, old);
      fs::rename(temporary, target);
      fs::remove_all(old, error);
    } else {
      fs::rename(temporary, target);
    }
  } catch (const fs::filesystem_error& failure) {
    fs::remove_all(temporary, error);
    throw Error(target.string() + ": " + failure.what());
  } catch (...) {
    fs::remove_all(temporary, error);
    throw;
  }
}

}  // namespace aclora::lora
