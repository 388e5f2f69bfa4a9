/// @file model.hpp
/// @brief A LoRA file presented as aclora modules: LoraFile, LoraModule, LycorisModule.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "aclora/adapters/lora/sdxl_keys.hpp"
#include "aclora/adapters/safetensors/reader.hpp"
#include "aclora/adapters/safetensors/tensor_view.hpp"

namespace aclora::lora {

/// Any LoRA-level failure (unknown format, unpaired factors, bad shapes, NaN, I/O). The
/// message names the file and the problem in one line.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The key layout of a file.
enum class Format {
  kohya,      ///< lora_unet_... .lora_down.weight / .lora_up.weight / .alpha
  peft,       ///< base_model.model.PATH.lora_A.weight / .lora_B.weight (+ adapter_config.json)
  diffusers,  ///< unet. / text_encoder. / text_encoder_2. + lora_A/B, lora.down/up,
              ///< lora_linear_layer
  lycoris,    ///< kohya prefixes with LoKr (lokr_w1...) or LoHa (hada_w1_a...) tensors
};

/// "kohya", "peft", "diffusers" or "lycoris".
inline std::string_view format_name(Format format) {
  switch (format) {
    case Format::kohya:
      return "kohya";
    case Format::peft:
      return "peft";
    case Format::diffusers:
      return "diffusers";
    case Format::lycoris:
      return "lycoris";
  }
  return "?";
}

/// Linear (2-D factors) or convolution (4-D factors, down [r, in, kh, kw], up [out, r, 1, 1]).
enum class ModuleKind { linear, conv };

/// One LoRA module: dW = (alpha / rank) * up @ down, with the factors still in the file.
struct LoraModule {
  std::string name;  ///< canonical kohya name, e.g. lora_unet_input_blocks_4_1_..._to_q
  Component component = Component::unet;  ///< the model it adapts
  std::string path;                       ///< dotted diffusers-tree path inside the component
  std::string source;  ///< key prefix in the file (what precedes .lora_down.weight etc.)
  ModuleKind kind = ModuleKind::linear;                 ///< linear or conv
  safetensors::TensorView down;                         ///< [rank, in] or [rank, in, kh, kw]
  safetensors::TensorView up;                           ///< [out, rank] or [out, rank, 1, 1]
  std::optional<safetensors::TensorView> alpha_tensor;  ///< the stored alpha, when any
  double alpha = 0.0;            ///< effective alpha (= rank when the file stores none)
  std::size_t rank = 0;          ///< r: down's first dimension
  std::size_t in_features = 0;   ///< columns of down viewed as a matrix (in * kh * kw)
  std::size_t out_features = 0;  ///< rows of up

  /// The factor applied to up @ down: alpha / rank.
  double scale() const { return alpha / static_cast<double>(rank); }
  /// Parameters stored in the two factors.
  std::size_t parameters() const { return rank * (in_features + out_features); }
};

/// A LyCORIS module (read and inspect only): LoKr or LoHa tensors under a kohya name.
struct LycorisModule {
  std::string name;                              ///< kohya name
  std::string algorithm;                         ///< "lokr" or "loha"
  std::vector<safetensors::TensorView> tensors;  ///< every tensor of the module but alpha
  std::optional<double> alpha;                   ///< stored alpha, when any
  std::size_t dimension = 0;   ///< the inner rank (hada_w1_b rows, lokr_w?_a columns; 0 = full)
  std::size_t parameters = 0;  ///< elements over all its tensors
};

/// A LoRA file (or a PEFT adapter folder) read as modules. Views into the mapped file(s):
/// the LoraFile owns the readers, so the modules stay valid as long as it lives.
struct LoraFile {
  std::filesystem::path path;                   ///< as given to open_lora
  Format format = Format::kohya;                ///< the detected key layout
  std::vector<safetensors::Reader> readers;     ///< one per file (PEFT folders: one per component)
  std::map<std::string, std::string> metadata;  ///< safetensors metadata of the (first) file
  std::vector<LoraModule> modules;              ///< in file order
  std::vector<LycorisModule> lycoris;           ///< LoKr / LoHa modules
  std::vector<std::string> unknown_keys;  ///< tensors no rule recognised (never dropped silently)
  std::vector<std::string> notes;         ///< assumptions made while reading (alpha defaults...)

  /// Total parameters of all LoRA factors and LyCORIS tensors.
  std::size_t parameters() const {
    std::size_t total = 0;
    for (const auto& module : modules)
      total += module.parameters();
    for (const auto& module : lycoris)
      total += module.parameters;
    return total;
  }

  /// Bytes of all tensors in the file(s).
  std::size_t tensor_bytes() const {
    std::size_t total = 0;
    for (const auto& reader : readers)
      for (const auto& tensor : reader.tensors())
        total += tensor.bytes.size();
    return total;
  }
};

}  // namespace aclora::lora
