/// @file open.hpp
/// @brief open_lora: detect a LoRA file's layout and read it as modules.
#pragma once

#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "aclora/adapters/json/parse.hpp"
#include "aclora/adapters/lora/detect.hpp"
#include "aclora/adapters/lora/diffusers.hpp"
#include "aclora/adapters/lora/kohya.hpp"
#include "aclora/adapters/lora/model.hpp"
#include "aclora/adapters/lora/peft.hpp"
#include "aclora/adapters/safetensors/error.hpp"
#include "aclora/adapters/safetensors/reader.hpp"

namespace aclora::lora {

namespace detail {

inline std::optional<json::Value> read_adapter_config(const std::filesystem::path& file) {
  const std::filesystem::path config = file.parent_path() / "adapter_config.json";
  std::error_code ignored;
  if (!std::filesystem::is_regular_file(config, ignored))
    return std::nullopt;
  std::ifstream in(config, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in && !in.eof())
    throw Error(config.string() + ": cannot read");
  try {
    return json::parse(text.str());
  } catch (const json::Error& error) {
    throw Error(config.string() + ": not valid JSON: " + error.what());
  }
}

inline Component text_encoder_of_folder(const std::filesystem::path& file) {
  return file.parent_path().filename() == "text_encoder_2" ? Component::text_encoder_2
                                                           : Component::text_encoder;
}

// Reads the modules of `reader` (already detected as `format`) into `file`.
inline void read_layout(const safetensors::Reader& reader, Format format,
                        const std::filesystem::path& path, LoraFile& file) {
  switch (format) {
    case Format::kohya:
    case Format::lycoris:
      read_kohya(reader, file);
      break;
    case Format::peft:
      read_peft(reader, read_adapter_config(path), text_encoder_of_folder(path), file);
      break;
    case Format::diffusers:
      read_diffusers(reader, file);
      break;
  }
}

}  // namespace detail

/// Detects and reads an image of a safetensors file held in memory (kohya, diffusers,
/// LyCORIS or PEFT without its config). `label` names it in errors.
/// @throws Error for an invalid safetensors image or an unknown layout.
inline LoraFile read_lora_bytes(std::vector<std::byte> bytes, const std::string& label) {
  LoraFile file;
  file.path = label;
  try {
    file.readers.push_back(safetensors::Reader::from_bytes(std::move(bytes), label));
  } catch (const safetensors::Error& error) {
    throw Error(error.what());
  }
  const Detection detection = detect_format(file.readers[0].names());
  if (!detection.format) {
    throw Error(label +
                ": unknown LoRA format: no tensor name follows the kohya, PEFT, "
                "diffusers or LyCORIS layout");
  }
  file.format = *detection.format;
  file.metadata = file.readers[0].metadata();
  detail::read_layout(file.readers[0], file.format, {}, file);
  return file;
}

/// Opens a LoRA: a .safetensors file of any supported layout (PEFT: adapter_config.json
/// beside it is read), a PEFT adapter folder (adapter_model.safetensors inside), or a folder
/// of PEFT component folders (unet/, text_encoder/, text_encoder_2/).
/// @throws Error "PATH: problem" for a missing or unreadable file, an invalid
/// safetensors file, an unknown layout, unpaired factors or bad shapes.
inline LoraFile open_lora(const std::filesystem::path& path) {
  LoraFile file;
  file.path = path;
  std::error_code status_error;
  const auto status = std::filesystem::status(path, status_error);
  if (!std::filesystem::exists(status))
    throw Error(path.string() + ": no such file or directory");
  if (std::filesystem::is_directory(status)) {
    std::vector<std::filesystem::path> adapters;
    if (std::filesystem::is_regular_file(path / "adapter_model.safetensors")) {
      adapters.push_back(path / "adapter_model.safetensors");
    } else {
      for (const char* component : {"unet", "text_encoder", "text_encoder_2"}) {
        const auto candidate = path / component / "adapter_model.safetensors";
        if (std::filesystem::is_regular_file(candidate))
          adapters.push_back(candidate);
      }
    }
    if (adapters.empty()) {
      throw Error(path.string() +
                  ": folder holds no adapter_model.safetensors (nor unet/, text_encoder/, "
                  "text_encoder_2/ adapter folders)");
    }
    file.format = Format::peft;
    for (const auto& adapter : adapters) {
      try {
        file.readers.push_back(safetensors::Reader::open(adapter));
      } catch (const safetensors::Error& error) {
        throw Error(error.what());
      }
      const Detection detection = detect_format(file.readers.back().names());
      if (detection.format != Format::peft)
        throw Error(adapter.string() + ": not a PEFT adapter (no base_model.model.*.lora_A keys)");
      if (file.readers.size() == 1)
        file.metadata = file.readers.back().metadata();
      detail::read_layout(file.readers.back(), Format::peft, adapter, file);
    }
    return file;
  }
  try {
    file.readers.push_back(safetensors::Reader::open(path));
  } catch (const safetensors::Error& error) {
    throw Error(error.what());
  }
  const Detection detection = detect_format(file.readers[0].names());
  if (!detection.format) {
    throw Error(path.string() +
                ": unknown LoRA format: no tensor name follows the kohya, PEFT, "
                "diffusers or LyCORIS layout");
  }
  file.format = *detection.format;
  file.metadata = file.readers[0].metadata();
  detail::read_layout(file.readers[0], file.format, path, file);
  return file;
}

}  // namespace aclora::lora
