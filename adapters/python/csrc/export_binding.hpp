/// @file export_binding.hpp
/// @brief LoRA factors at a module rank K (the product analysis of aclora/product.hpp over
/// the Torch primitives) and the kohya / diffusers file writers, for Python.
///
/// The steps are those of aclora::train::modules_at_ranks and write_lora (export.hpp), over
/// factors given as tensors instead of a LoraNetwork.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/torch.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "aclora/adapters/json/dump.hpp"
#include "aclora/adapters/lora/output.hpp"
#include "aclora/adapters/lora/sdxl_keys.hpp"
#include "aclora/adapters/lora/writer.hpp"
#include "aclora/adapters/train/export.hpp"
#include "aclora/backends/torch/product.hpp"
#include "aclora/product.hpp"
#include "lora_views.hpp"

namespace aclora::python {

namespace py = pybind11;

/// The component named `name`: "unet", "text_encoder" or "text_encoder_2".
/// @throws Error for any other name.
inline lora::Component component_of(const std::string& name) {
  for (lora::Component component :
       {lora::Component::unet, lora::Component::text_encoder, lora::Component::text_encoder_2}) {
    if (lora::component_name(component) == name)
      return component;
  }
  throw Error("component must be 'unet', 'text_encoder' or 'text_encoder_2', got '" + name + "'");
}

/// One module at its kept rank: down' (K x n) and up' (out x K), row-major float32.
struct KeptFactors {
  std::size_t rank = 0;          ///< K
  std::vector<float> down;       ///< K x n
  std::vector<float> up;         ///< out x K
  std::vector<double> spectrum;  ///< singular values of up @ down (empty when K = R)
};

/// The module (down R x n, up out x R, as matrices) refactored to rank `kept` by the product
/// analysis: up' down' is the best rank-K approximation of up @ down; at K = R the factors
/// as they are. Nothing is written to the factors.
/// @throws Error (at `where`) for K outside [1, R] or factors holding NaN or Inf.
inline KeptFactors kept_factors(const at::Tensor& down, const at::Tensor& up, std::size_t kept,
                                const ErrorLocation& where) {
  ::torch::NoGradGuard no_grad;
  const auto rank = static_cast<std::size_t>(down.size(0));
  if (static_cast<std::size_t>(up.size(1)) != rank) {
    throw Error(where, "down has R = " + std::to_string(rank) + " rows but up has " +
                           std::to_string(up.size(1)) + " columns");
  }
  if (kept < 1 || kept > rank) {
    throw Error(where,
                "rank " + std::to_string(kept) + " outside [1, " + std::to_string(rank) + "]");
  }
  if (!at::isfinite(down).all().item<bool>() || !at::isfinite(up).all().item<bool>())
    throw Error(where, "factors hold NaN or Inf");
  KeptFactors result;
  result.rank = kept;
  if (kept == rank) {
    const auto to_floats = [](const at::Tensor& t) {
      const at::Tensor host = t.detach().to(at::kFloat).to(at::kCPU).contiguous();
      return std::vector<float>(host.data_ptr<float>(), host.data_ptr<float>() + host.numel());
    };
    result.down = to_floats(down);
    result.up = to_floats(up);
    return result;
  }
  backends::libtorch::ProductPrimitives primitives;
  const Layer<at::Tensor> down_layer{down.detach(), RankAxis::rows};
  const Layer<at::Tensor> up_layer{up.detach(), RankAxis::cols};
  const ProductDecomposition decomposition =
      product_analyze(primitives, down_layer, up_layer, rank);
  ProductFactors factors = product_refactor(primitives, decomposition, down_layer, up_layer, kept);
  result.down = std::move(factors.down);
  result.up = std::move(factors.up);
  result.spectrum = decomposition.spectrum.singular_values;
  return result;
}

/// A float32 CPU tensor holding `values` with the given sizes.
inline at::Tensor float_tensor(const std::vector<float>& values, std::vector<std::int64_t> sizes) {
  at::Tensor out = at::empty(sizes, at::kFloat);
  std::copy(values.begin(), values.end(), out.data_ptr<float>());
  return out;
}

/// Python: (down', up') of one module at rank K, float32 CPU tensors shaped like the factors
/// with R replaced by K ([K, in(, kh, kw)] and [out, K(, 1, 1)]).
inline py::tuple factors_at_rank(const std::string& name, const at::Tensor& down,
                                 const at::Tensor& up, std::size_t kept) {
  KeptFactors factors;
  {
    py::gil_scoped_release release;
    const ErrorLocation where{name, 0, std::nullopt};
    factors = kept_factors(down_matrix(down, ErrorLocation{name, 0, 0}),
                           up_matrix(up, ErrorLocation{name, 0, 1}), kept, where);
  }
  std::vector<std::int64_t> down_sizes(down.sizes().begin(), down.sizes().end());
  std::vector<std::int64_t> up_sizes(up.sizes().begin(), up.sizes().end());
  down_sizes[0] = static_cast<std::int64_t>(kept);
  up_sizes[1] = static_cast<std::int64_t>(kept);
  return py::make_tuple(float_tensor(factors.down, down_sizes), float_tensor(factors.up, up_sizes));
}

/// Python: the singular values of dW = up @ down (R of them, decreasing), from the factors.
inline std::vector<double> update_singular_values(const std::string& name, const at::Tensor& down,
                                                  const at::Tensor& up) {
  py::gil_scoped_release release;
  ::torch::NoGradGuard no_grad;
  const at::Tensor down_view = down_matrix(down, ErrorLocation{name, 0, 0}).detach();
  const at::Tensor up_view = up_matrix(up, ErrorLocation{name, 0, 1}).detach();
  if (up_view.size(1) != down_view.size(0))
    throw Error(ErrorLocation{name, 0, std::nullopt}, "down and up disagree on R");
  backends::libtorch::ProductPrimitives primitives;
  const ProductDecomposition decomposition = product_analyze(
      primitives, Layer<at::Tensor>{down_view, RankAxis::rows},
      Layer<at::Tensor>{up_view, RankAxis::cols}, static_cast<std::size_t>(down_view.size(0)));
  if (!decomposition.spectrum.finite)
    throw Error(ErrorLocation{name, 0, std::nullopt}, "factors hold NaN or Inf");
  return decomposition.spectrum.singular_values;
}

/// One module to write: name (kohya), component, diffusers-tree path, down, up, alpha, K.
using ExportEntry =
    std::tuple<std::string, std::string, std::string, at::Tensor, at::Tensor, double, std::size_t>;

/// The safetensors dtype named "F32", "F16" or "BF16". @throws Error for any other.
inline safetensors::Dtype export_dtype(const std::string& name) {
  if (name == "F32")
    return safetensors::Dtype::F32;
  if (name == "F16")
    return safetensors::Dtype::F16;
  if (name == "BF16")
    return safetensors::Dtype::BF16;
  throw Error("dtype must be 'F32', 'F16' or 'BF16', got '" + name + "'");
}

/// Python: writes `entries` at their ranks K as a kohya or diffusers LoRA file (atomically),
/// as aclora::train::write_lora does for a LoraNetwork: alpha' = alpha K / R keeps each
/// module's scale; kohya files get one alpha (uniform_alpha), ss_* / modelspec.* metadata and
/// aclora_module_ranks; diffusers files have the scale folded into lora_B.
inline void write_lora(const std::string& format, const std::vector<ExportEntry>& entries,
                       const std::string& path, const std::string& dtype_name,
                       const std::map<std::string, std::string>& metadata, const std::string& title,
                       bool sdxl, bool uniform_alpha) {
  if (format != "kohya" && format != "diffusers")
    throw Error("format must be 'kohya' or 'diffusers', got '" + format + "'");
  const safetensors::Dtype dtype = export_dtype(dtype_name);
  std::vector<lora::OutputModule> modules;
  modules.reserve(entries.size());
  for (const auto& entry : entries)
    static_cast<void>(component_of(std::get<1>(entry)));  // every check before any work
  py::gil_scoped_release release;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const auto& [name, component, module_path, down, up, alpha, kept] = entries[i];
    const ErrorLocation where{name, i, std::nullopt};
    if (!(alpha > 0.0) || !std::isfinite(alpha))
      throw Error(where, "alpha must be finite and > 0");
    const at::Tensor down_view = down_matrix(down, ErrorLocation{name, i, 0});
    const at::Tensor up_view = up_matrix(up, ErrorLocation{name, i, 1});
    KeptFactors factors = kept_factors(down_view, up_view, kept, where);
    const auto rank = static_cast<double>(down.size(0));
    std::vector<std::int64_t> down_shape(down.sizes().begin(), down.sizes().end());
    std::vector<std::int64_t> up_shape(up.sizes().begin(), up.sizes().end());
    down_shape[0] = static_cast<std::int64_t>(kept);
    up_shape[1] = static_cast<std::int64_t>(kept);
    lora::OutputModule module;
    module.name = name;
    module.component = component_of(component);
    module.path = module_path;
    module.kind = down.dim() > 2 ? lora::ModuleKind::conv : lora::ModuleKind::linear;
    module.down = lora::encode_tensor(factors.down, safetensors::Dtype::F32, down_shape);
    module.up = lora::encode_tensor(factors.up, safetensors::Dtype::F32, up_shape);
    module.rank = kept;
    module.alpha = alpha * static_cast<double>(kept) / rank;
    modules.push_back(std::move(module));
  }
  if (format == "kohya" && uniform_alpha)
    lora::make_alpha_uniform(modules);
  if (format == "diffusers") {
    for (auto& module : modules)
      train::detail::fold_scale(module);  // before the one rounding below
  }
  for (auto& module : modules) {
    module.down = train::detail::converted(module.down, dtype);
    module.up = train::detail::converted(module.up, dtype);
    module.alpha_tensor =
        lora::encode_tensor(std::vector<float>{static_cast<float>(module.alpha)}, dtype, {});
  }
  if (format == "kohya") {
    std::map<std::string, std::string> kohya = lora::kohya_metadata(metadata, modules, title, sdxl);
    json::Value ranks = json::Object{};
    for (const auto& module : modules)
      ranks[module.name] = json::Value(module.rank);
    kohya["aclora_module_ranks"] = json::dump(ranks);
    lora::write_kohya(modules, kohya, path);
  } else {
    lora::write_diffusers(modules, path);
  }
}

/// Python: the kohya module name of a diffusers-tree path, or None (a UNet path without an
/// LDM-tree equivalent).
inline std::optional<std::string> kohya_name(const std::string& component,
                                             const std::string& path) {
  return lora::kohya_name(component_of(component), path);
}

}  // namespace aclora::python
