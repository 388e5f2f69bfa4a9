/// @file export.hpp
/// @brief Writing a trained network as a LoRA file at each module's chosen rank K (or at R).
///
/// At K < R a module's update dW = (alpha / R) up @ down is refactored to rank K by the
/// product analysis (aclora/product.hpp): up' down' is the best rank-K approximation of
/// up @ down, and alpha' = alpha K / R keeps the scale, so the file holds what was learned
/// and no more. The file formats are those of aclora-lora (kohya, diffusers, PEFT).
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <cstddef>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "aclora/adapters/json/dump.hpp"
#include "aclora/adapters/lora/output.hpp"
#include "aclora/adapters/lora/writer.hpp"
#include "aclora/adapters/train/network.hpp"
#include "aclora/backends/torch/product.hpp"
#include "aclora/product.hpp"

namespace aclora::train {

/// The LoRA file layouts a network can be written in.
enum class ExportFormat {
  kohya,      ///< one .safetensors with lora_down / lora_up / alpha (sd-scripts, A1111, ComfyUI)
  diffusers,  ///< one .safetensors with lora_A / lora_B (diffusers' pipelines)
  peft,       ///< a folder per component with adapter_model.safetensors + adapter_config.json
};

/// How a network is written.
struct ExportOptions {
  ExportFormat format = ExportFormat::kohya;           ///< file layout
  safetensors::Dtype dtype = safetensors::Dtype::F32;  ///< F32, F16 or BF16 factors
  std::map<std::string, std::string> metadata;         ///< ss_* / modelspec.* entries (kohya only)
  std::string title = "aclora";                        ///< modelspec.title (kohya only)
  bool sdxl = true;  ///< kohya metadata for an SDXL LoRA (base model version, architecture)
  /// kohya only: one alpha for all modules, the difference folded into lora_up before the
  /// one rounding to `dtype` (diffusers mis-scales files whose alpha varies per module).
  bool uniform_alpha = true;
};

/// The product analysis of one module's update up @ down (exact, in float64; modifies
/// nothing): its singular values and what module_at_rank() refactors from.
/// @throws Error naming the module when a factor holds NaN or Inf.
inline ProductDecomposition module_product(const LoraModuleEntry& entry) {
  ::torch::NoGradGuard no_grad;
  backends::libtorch::ProductPrimitives primitives;
  const LoraAdapter& adapter = *entry.adapter;
  const Layer<::torch::Tensor> down{adapter.down_matrix().detach(), RankAxis::rows};
  const Layer<::torch::Tensor> up{adapter.up_matrix().detach(), RankAxis::cols};
  ProductDecomposition decomposition =
      product_analyze(primitives, down, up, static_cast<std::size_t>(adapter.rank()));
  if (!decomposition.spectrum.finite)
    throw Error("module '" + entry.name + "' holds NaN or Inf");
  return decomposition;
}

/// One module refactored to rank `kept` (1 <= K <= R) by the product analysis: up' down' is
/// the best rank-K approximation of up @ down (its leading K singular components), the
/// factors float32 row-major (up' out x K, down' K x in kh kw). The scale alpha / R is not
/// applied. @throws Error naming the module for K outside [1, R] or a factor holding NaN
/// or Inf.
inline ProductFactors module_at_rank(const LoraModuleEntry& entry, std::size_t kept) {
  const auto rank = static_cast<std::size_t>(entry.adapter->rank());
  if (kept < 1 || kept > rank) {
    throw Error("module '" + entry.name + "': rank " + std::to_string(kept) + " outside [1, " +
                std::to_string(rank) + "]");
  }
  const ProductDecomposition decomposition = module_product(entry);
  ::torch::NoGradGuard no_grad;
  backends::libtorch::ProductPrimitives primitives;
  const LoraAdapter& adapter = *entry.adapter;
  const Layer<::torch::Tensor> down{adapter.down_matrix().detach(), RankAxis::rows};
  const Layer<::torch::Tensor> up{adapter.up_matrix().detach(), RankAxis::cols};
  return product_refactor(primitives, decomposition, down, up, kept);
}

/// The network's modules as file modules at `ranks` (K per module, network order; K = R
/// writes the factors as they are). Factors are computed in float64 and stored as float32
/// here; write_lora() rounds them to the export dtype once.
/// @throws Error when `ranks` does not hold one K in [1, R] per module, or a factor is not
/// finite (naming the module).
inline std::vector<lora::OutputModule> modules_at_ranks(const LoraNetwork& network,
                                                        std::span<const std::size_t> ranks) {
  if (ranks.size() != network.size()) {
    throw Error("export: " + std::to_string(ranks.size()) + " ranks for " +
                std::to_string(network.size()) + " modules");
  }
  ::torch::NoGradGuard no_grad;
  std::vector<lora::OutputModule> out;
  out.reserve(network.size());
  for (std::size_t i = 0; i < network.size(); ++i) {
    const LoraModuleEntry& entry = network.modules()[i];
    const LoraAdapter& adapter = *entry.adapter;
    const auto rank = static_cast<std::size_t>(adapter.rank());
    const std::size_t kept = ranks[i];
    if (kept < 1 || kept > rank) {
      throw Error("export: module '" + entry.name + "': rank " + std::to_string(kept) +
                  " outside [1, " + std::to_string(rank) + "]");
    }
    const ::torch::Tensor down = adapter.down_matrix().detach();
    const ::torch::Tensor up = adapter.up_matrix().detach();
    if (!::torch::isfinite(down).all().item<bool>() || !::torch::isfinite(up).all().item<bool>())
      throw Error("export: module '" + entry.name + "' holds NaN or Inf");

    std::vector<std::int64_t> down_shape(adapter.down.sizes().begin(), adapter.down.sizes().end());
    std::vector<std::int64_t> up_shape(adapter.up.sizes().begin(), adapter.up.sizes().end());
    down_shape[0] = static_cast<std::int64_t>(kept);
    up_shape[1] = static_cast<std::int64_t>(kept);
    std::vector<float> down_values;
    std::vector<float> up_values;
    if (kept == rank) {
      const auto to_floats = [](const ::torch::Tensor& t) {
        const ::torch::Tensor host = t.to(::torch::kFloat32).to(::torch::kCPU).contiguous();
        return std::vector<float>(host.data_ptr<float>(), host.data_ptr<float>() + host.numel());
      };
      down_values = to_floats(down);
      up_values = to_floats(up);
    } else {
      ProductFactors factors = module_at_rank(entry, kept);
      down_values = std::move(factors.down);
      up_values = std::move(factors.up);
    }
    lora::OutputModule module;
    module.name = entry.name;
    module.component = entry.component;
    module.path = entry.path;
    module.kind = adapter.geometry().kind == LayerKind::linear ? lora::ModuleKind::linear
                                                               : lora::ModuleKind::conv;
    module.down = lora::encode_tensor(down_values, safetensors::Dtype::F32, down_shape);
    module.up = lora::encode_tensor(up_values, safetensors::Dtype::F32, up_shape);
    module.rank = kept;
    module.alpha = adapter.alpha() * static_cast<double>(kept) / static_cast<double>(rank);
    out.push_back(std::move(module));
  }
  return out;
}

namespace detail {

inline lora::OutputTensor converted(const lora::OutputTensor& tensor, safetensors::Dtype dtype) {
  if (tensor.dtype == dtype)
    return tensor;
  const safetensors::TensorView view{"", tensor.dtype, tensor.shape,
                                     std::span<const std::byte>(tensor.bytes)};
  const std::vector<float> values = safetensors::convert_to<float>(view);
  return lora::encode_tensor(values, dtype, tensor.shape);
}

// up' = up * alpha / rank and alpha' = rank (scale 1), in float32.
inline void fold_scale(lora::OutputModule& module) {
  const double scale = module.scale();
  if (scale == 1.0)
    return;
  const safetensors::TensorView view{"", module.up.dtype, module.up.shape,
                                     std::span<const std::byte>(module.up.bytes)};
  std::vector<float> values = safetensors::convert_to<float>(view);
  for (float& value : values)
    value = static_cast<float>(value * scale);
  module.up = lora::encode_tensor(values, module.up.dtype, module.up.shape);
  module.alpha = static_cast<double>(module.rank);
}

}  // namespace detail

/// Writes the network at `ranks` (see modules_at_ranks) to `path` (a file; a folder for
/// PEFT), atomically: nothing is left at `path` when it fails. kohya files carry
/// ss_network_dim / ss_network_alpha ("Dynamic" when they vary, as sd-scripts writes them),
/// modelspec.*, the given metadata, and "aclora_module_ranks": a JSON object of K per module.
/// @throws Error for bad ranks or dtype, non-finite factors, or a failed write.
inline void write_lora(const LoraNetwork& network, std::span<const std::size_t> ranks,
                       const ExportOptions& options, const std::filesystem::path& path) {
  using safetensors::Dtype;
  if (options.dtype != Dtype::F32 && options.dtype != Dtype::F16 && options.dtype != Dtype::BF16)
    throw Error("export: dtype must be F32, F16 or BF16");
  std::vector<lora::OutputModule> modules = modules_at_ranks(network, ranks);
  if (options.format == ExportFormat::kohya && options.uniform_alpha)
    lora::make_alpha_uniform(modules);
  if (options.format == ExportFormat::diffusers) {
    for (auto& module : modules)
      detail::fold_scale(module);  // before the one rounding below
  }
  for (auto& module : modules) {
    module.down = detail::converted(module.down, options.dtype);
    module.up = detail::converted(module.up, options.dtype);
    module.alpha_tensor = lora::encode_tensor(std::vector<float>{static_cast<float>(module.alpha)},
                                              options.dtype, {});
  }
  try {
    switch (options.format) {
      case ExportFormat::kohya: {
        std::map<std::string, std::string> metadata =
            lora::kohya_metadata(options.metadata, modules, options.title, options.sdxl);
        json::Value ranks_json = json::Object{};
        for (std::size_t i = 0; i < modules.size(); ++i)
          ranks_json[modules[i].name] = json::Value(modules[i].rank);
        metadata["aclora_module_ranks"] = json::dump(ranks_json);
        lora::write_kohya(modules, metadata, path);
        break;
      }
      case ExportFormat::diffusers:
        lora::write_diffusers(modules, path);
        break;
      case ExportFormat::peft:
        lora::write_peft(modules, path);
        break;
    }
  } catch (const lora::Error& error) {
    throw Error(std::string("export: ") + error.what());
  }
}

/// The network at its allocated ranks R (the factors as trained).
inline std::vector<std::size_t> full_ranks(const LoraNetwork& network) {
  std::vector<std::size_t> ranks;
  for (const auto& entry : network.modules())
    ranks.push_back(static_cast<std::size_t>(entry.adapter->rank()));
  return ranks;
}

}  // namespace aclora::train
