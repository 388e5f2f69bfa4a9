/// @file network.hpp
/// @brief aclora::train::LoraNetwork: trainable LoRAs injected into LibTorch module trees.
///
/// @code
/// aclora::train::LoraNetwork network;
/// network.inject(*unet, aclora::train::Targets::sdxl_unet_linear(),
///                {.rank = 64, .alpha = 32, .naming = aclora::train::Naming::sdxl_unet()});
/// torch::optim::AdamW optimizer(network.parameters(), torch::optim::AdamWOptions(1e-4));
/// auto modules = network.restart_modules();   // for aclora::Restart<backends::TorchBackend>
/// @endcode
#pragma once

#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/torch.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "aclora/adapters/lora/sdxl_keys.hpp"
#include "aclora/adapters/train/adaptable.hpp"
#include "aclora/adapters/train/error.hpp"
#include "aclora/adapters/train/lora_adapter.hpp"
#include "aclora/adapters/train/targets.hpp"
#include "aclora/layer.hpp"

namespace aclora::train {

/// How a layer's qualified name becomes its LoRA module name (which also keys its noise).
struct Naming {
  lora::Component component = lora::Component::unet;  ///< the model, for file formats
  /// true: kohya's SDXL names (lora_unet_ + the LDM-tree path for the UNet, lora_te1_ /
  /// lora_te2_ + path for the text encoders); false: prefix + "_" + path with dots
  /// replaced by underscores (any other model).
  bool sdxl = false;
  std::string prefix = "lora_unet";  ///< used when !sdxl

  /// kohya names of the SDXL UNet (diffusers-tree layer paths, as aclora's SDXL model has).
  static Naming sdxl_unet() { return {lora::Component::unet, true, {}}; }
  /// kohya names of SDXL's first text encoder (CLIP ViT-L, lora_te1_).
  static Naming sdxl_text_encoder() { return {lora::Component::text_encoder, true, {}}; }
  /// kohya names of SDXL's second text encoder (OpenCLIP bigG, lora_te2_).
  static Naming sdxl_text_encoder_2() { return {lora::Component::text_encoder_2, true, {}}; }
  /// prefix + "_" + underscored path, e.g. "lora_unet" + "_" + "blocks_0_attn_to_q".
  static Naming plain(std::string prefix = "lora_unet",
                      lora::Component component = lora::Component::unet) {
    return {component, false, std::move(prefix)};
  }

  /// The module name of the layer at `path`. @throws Error when an SDXL UNet path has no
  /// kohya (LDM-tree) name.
  std::string name_of(const std::string& path) const {
    if (sdxl) {
      const auto name = lora::kohya_name(component, path);
      if (!name)
        throw Error("layer '" + path + "' has no kohya SDXL name (not an SDXL UNet path)");
      return *name;
    }
    std::string name = prefix + "_" + path;
    for (std::size_t i = prefix.size() + 1; i < name.size(); ++i)
      if (name[i] == '.')
        name[i] = '_';
    return name;
  }
};

/// The LoRA settings of one injection.
struct InjectOptions {
  std::int64_t rank = 16;      ///< R of linear and 1x1-conv LoRAs (the maximum rank)
  double alpha = 0.0;          ///< kohya alpha; 0 means alpha = rank (scale 1)
  std::int64_t conv_rank = 0;  ///< R of LoRAs on larger kernels (LyCORIS "conv rank"); 0: rank
  double conv_alpha = 0.0;     ///< their alpha; 0 means alpha = conv rank
  double dropout = 0.0;        ///< dropout on each LoRA's input in training mode, [0, 1)
  FactorOptions factors;       ///< factor dtype, device, trainable
  Naming naming;               ///< module names
  /// Sets requires_grad = false on every parameter of the tree that is not a factor of an
  /// adapter (the base model's; LoRAs injected before keep training). The target layers'
  /// weights and biases always are frozen.
  bool freeze_model = true;
};

/// One injected LoRA module.
struct LoraModuleEntry {
  std::string name;  ///< module name (kohya), unique in the network
  lora::Component component = lora::Component::unet;  ///< the model it adapts
  std::string path;                                   ///< the layer's qualified name in its tree
  std::size_t rule = 0;                               ///< the Targets rule that selected it
  std::shared_ptr<LoraAdapter> adapter;               ///< the factors
  /// The host, when the layer has adapter slots.
  std::shared_ptr<AdaptableLayer> host;
  /// A stock torch::nn::Linear / Conv2d layer, reparametrised: its `weight` member is set
  /// to base + delta by refresh() (its registered parameter stays the frozen base).
  std::shared_ptr<torch::nn::Module> stock;
  torch::Tensor base_weight;  ///< the stock layer's frozen weight (stock layers only)
};

/// A layer a target rule selected.
struct SelectedLayer {
  std::string path;                           ///< qualified name in the tree
  std::size_t rule = 0;                       ///< index of the rule that selected it
  LayerGeometry geometry;                     ///< kind, widths, window
  std::shared_ptr<torch::nn::Module> module;  ///< the layer
  torch::Tensor weight;                       ///< its weight
  bool adaptable = false;  ///< has adapter slots (else a stock torch::nn::Linear / Conv2d)
};

namespace detail {

inline LayerGeometry stock_conv_geometry(const torch::nn::Conv2dImpl& conv,
                                         const std::string& path) {
  const auto& o = conv.options;
  if (o.groups() != 1)
    throw Error("layer '" + path + "': grouped convolutions cannot carry a LoRA");
  // Unqualified: LibTorch 1.13 uses c10::variant, 2.x std::variant (found by ADL).
  const auto* padding = get_if<torch::ExpandingArray<2>>(&o.padding());
  if (!padding)
    throw Error("layer '" + path + "': 'same' / 'valid' padding is not supported for LoRA");
  if (!holds_alternative<torch::enumtype::kZeros>(o.padding_mode()))
    throw Error("layer '" + path + "': only zero padding is supported for LoRA");
  LayerGeometry geometry;
  geometry.kind = LayerKind::conv2d;
  geometry.in_features = o.in_channels();
  geometry.out_features = o.out_channels();
  geometry.kernel_h = (*o.kernel_size())[0];
  geometry.kernel_w = (*o.kernel_size())[1];
  geometry.stride_h = (*o.stride())[0];
  geometry.stride_w = (*o.stride())[1];
  geometry.padding_h = (**padding)[0];
  geometry.padding_w = (**padding)[1];
  geometry.dilation_h = (*o.dilation())[0];
  geometry.dilation_w = (*o.dilation())[1];
  return geometry;
}

}  // namespace detail

/// The layers of `root` that `targets` selects, in named_modules() order: layers with
/// adapter slots and stock torch::nn::Linear / Conv2d. Works on any device, meta included
/// (to list or count targets without memory).
/// @throws Error when a rule selects no layer or a layer is selected by two rules.
inline std::vector<SelectedLayer> select_layers(torch::nn::Module& root, const Targets& targets) {
  std::vector<SelectedLayer> selected;
  std::vector<std::size_t> counts(targets.rules.size(), 0);
  for (const auto& item : root.named_modules("", /*include_self=*/false)) {
    SelectedLayer layer{item.key(), 0, {}, item.value(), {}, false};
    if (auto adaptable = std::dynamic_pointer_cast<AdaptableLayer>(item.value())) {
      layer.geometry = adaptable->geometry();
      layer.weight = adaptable->base_weight();
      layer.adaptable = true;
    } else if (auto linear = std::dynamic_pointer_cast<torch::nn::LinearImpl>(item.value())) {
      layer.geometry = LayerGeometry{LayerKind::linear, linear->options.in_features(),
                                     linear->options.out_features()};
      layer.weight = linear->weight;
    } else if (auto conv = std::dynamic_pointer_cast<torch::nn::Conv2dImpl>(item.value())) {
      layer.geometry = detail::stock_conv_geometry(*conv, item.key());
      layer.weight = conv->weight;
    } else {
      continue;
    }
    std::optional<std::size_t> chosen;
    for (std::size_t r = 0; r < targets.rules.size(); ++r) {
      if (!rule_matches(targets.rules[r], layer.path, layer.geometry))
        continue;
      ++counts[r];
      if (chosen) {
        throw Error("layer '" + layer.path + "' is selected by two target rules: '" +
                    targets.rules[*chosen].pattern + "' and '" + targets.rules[r].pattern + "'");
      }
      chosen = r;
    }
    if (!chosen)
      continue;
    layer.rule = *chosen;
    selected.push_back(std::move(layer));
  }
  for (std::size_t r = 0; r < targets.rules.size(); ++r) {
    if (counts[r] == 0) {
      throw Error("target rule '" + targets.rules[r].pattern +
                  "' selects no Linear or Conv2d layer of the kinds it accepts");
    }
  }
  return selected;
}

/// The LoRAs of a model (one or several module trees). Owns nothing of the trees; the
/// adapters stay attached until remove().
class LoraNetwork {
 public:
  LoraNetwork() = default;
  LoraNetwork(const LoraNetwork&) = delete;
  LoraNetwork& operator=(const LoraNetwork&) = delete;
  LoraNetwork(LoraNetwork&&) = default;             ///< moves the modules
  LoraNetwork& operator=(LoraNetwork&&) = default;  ///< moves the modules
  ~LoraNetwork() = default;

  /// Adds a LoRA to every layer of `root` that `targets` selects. Layers with adapter slots
  /// (AdaptableLayer) get the adapter in a slot; stock torch::nn::Linear / Conv2d layers are
  /// reparametrised (call refresh() before each forward; dropout is not available there).
  /// All checks happen first; on any error nothing changes.
  /// @throws Error when a rule selects no layer, a layer is selected by two rules, a layer
  /// already carries a LoRA, two modules get one name, or an option is invalid.
  /// @return the number of modules added.
  std::size_t inject(torch::nn::Module& root, const Targets& targets,
                     const InjectOptions& options) {
    validate(options);
    std::vector<LoraModuleEntry> added;
    std::set<std::string> names;
    for (const auto& entry : entries_)
      names.insert(entry.name);
    for (const SelectedLayer& layer : select_layers(root, targets)) {
      if (owns(layer.module) || has_adapter(layer.module)) {
        throw Error(
            "layer '" + layer.path +
            "' already carries an adapter (injected before, or a LoRA applied at run time)");
      }
      if (!layer.weight.defined() || layer.weight.device().is_meta())
        throw Error("layer '" + layer.path + "' has no weight data (meta device?)");
      LoraModuleEntry entry;
      entry.name = options.naming.name_of(layer.path);
      entry.component = options.naming.component;
      entry.path = layer.path;
      entry.rule = layer.rule;
      if (!names.insert(entry.name).second)
        throw Error("two layers get the module name '" + entry.name + "'");
      if (!layer.adaptable && options.dropout > 0.0) {
        throw Error("layer '" + layer.path +
                    "' is a stock LibTorch layer (reparametrised): LoRA dropout needs a layer "
                    "with adapter slots (aclora::train::AdaptableLayer)");
      }
      const bool spatial = layer.geometry.spatial();
      const bool conv_rank = spatial && options.conv_rank > 0;
      const std::int64_t rank = conv_rank ? options.conv_rank : options.rank;
      const double given_alpha = conv_rank ? options.conv_alpha : options.alpha;
      const double alpha = given_alpha > 0.0 ? given_alpha : static_cast<double>(rank);
      const torch::Device device = options.factors.device.value_or(layer.weight.device());
      try {
        entry.adapter = std::make_shared<LoraAdapter>(layer.geometry, rank, alpha, options.dropout,
                                                      options.factors, device);
      } catch (const std::invalid_argument& error) {
        throw Error("layer '" + layer.path + "': " + error.what());
      }
      if (layer.adaptable) {
        entry.host = std::dynamic_pointer_cast<AdaptableLayer>(layer.module);
      } else {
        entry.stock = layer.module;
        entry.base_weight = layer.weight;
      }
      added.push_back(std::move(entry));
    }

    // Nothing can fail below: attach.
    if (options.freeze_model)
      freeze_base(root);
    for (auto& entry : added) {
      freeze(entry);
      if (entry.host)
        entry.host->add_adapter(entry.adapter);
      else
        stock_children_.push_back(entry.adapter);
      entries_.push_back(std::move(entry));
    }
    if (!added.empty())
      refresh();
    return added.size();
  }

  /// The injected modules, in injection order (within a tree: named_modules() order).
  const std::vector<LoraModuleEntry>& modules() const { return entries_; }
  /// The number of modules.
  std::size_t size() const { return entries_.size(); }
  /// The module named `name`, or nullptr.
  const LoraModuleEntry* find(const std::string& name) const {
    for (const auto& entry : entries_)
      if (entry.name == name)
        return &entry;
    return nullptr;
  }

  /// Every factor, down then up per module: the optimizer's parameter list.
  std::vector<torch::Tensor> parameters() const {
    std::vector<torch::Tensor> out;
    out.reserve(2 * entries_.size());
    for (const auto& entry : entries_) {
      out.push_back(entry.adapter->down);
      out.push_back(entry.adapter->up);
    }
    return out;
  }

  /// The modules as RESTART sees them: down (R x in kh kw, rank axis rows) and up (out x R,
  /// rank axis cols), views of the parameters, named as the network names them.
  std::vector<Module<torch::Tensor>> restart_modules() const {
    std::vector<Module<torch::Tensor>> out;
    out.reserve(entries_.size());
    for (const auto& entry : entries_) {
      out.push_back(Module<torch::Tensor>::lora(entry.name, entry.adapter->down_matrix(),
                                                entry.adapter->up_matrix()));
    }
    return out;
  }

  /// True when some module sits on a stock LibTorch layer (then refresh() must run before
  /// each forward).
  bool has_reparametrised_layers() const { return !stock_children_.empty(); }

  /// Recomputes the weight of every reparametrised stock layer: weight = base + delta, with
  /// autograd reaching the factors. Call before each forward (a no-op without stock layers).
  void refresh() {
    for (auto& entry : entries_) {
      if (!entry.stock)
        continue;
      const torch::Tensor delta = reparametrised_delta(entry);
      torch::Tensor weight = entry.base_weight + delta.to(entry.base_weight.scalar_type());
      if (auto linear = std::dynamic_pointer_cast<torch::nn::LinearImpl>(entry.stock))
        linear->weight = weight;
      else if (auto conv = std::dynamic_pointer_cast<torch::nn::Conv2dImpl>(entry.stock))
        conv->weight = weight;
    }
  }

  /// Detaches every LoRA from its layer (stock layers get their base weight back) and
  /// empties the network.
  void remove() {
    for (auto& entry : entries_) {
      if (entry.host) {
        entry.host->remove_adapter(entry.adapter);
      } else if (auto linear = std::dynamic_pointer_cast<torch::nn::LinearImpl>(entry.stock)) {
        linear->weight = entry.base_weight;
      } else if (auto conv = std::dynamic_pointer_cast<torch::nn::Conv2dImpl>(entry.stock)) {
        conv->weight = entry.base_weight;
      }
    }
    entries_.clear();
    stock_children_.clear();
  }

  /// Training or evaluation mode of every adapter (dropout acts in training mode only).
  void train(bool on = true) {
    for (auto& entry : entries_)
      entry.adapter->train(on);
  }

 private:
  static void validate(const InjectOptions& options) {
    if (options.rank < 1)
      throw Error("LoRA rank must be >= 1, got " + std::to_string(options.rank));
    if (options.conv_rank < 0)
      throw Error("conv rank must be >= 0 (0: the rank), got " + std::to_string(options.conv_rank));
    if (!std::isfinite(options.alpha) || options.alpha < 0.0 ||
        !std::isfinite(options.conv_alpha) || options.conv_alpha < 0.0)
      throw Error("LoRA alpha must be finite and >= 0 (0: alpha = rank)");
    if (!(options.dropout >= 0.0 && options.dropout < 1.0))
      throw Error("LoRA dropout must lie in [0, 1), got " + std::to_string(options.dropout));
    const auto dtype = options.factors.dtype;
    if (dtype != torch::kFloat32 && dtype != torch::kFloat64 && dtype != torch::kBFloat16 &&
        dtype != torch::kFloat16)
      throw Error("LoRA factor dtype must be float32, float64, bfloat16 or float16");
  }

  static torch::Tensor reparametrised_delta(const LoraModuleEntry& entry) {
    const LoraAdapter& adapter = *entry.adapter;
    const torch::Tensor product = torch::matmul(adapter.up_matrix(), adapter.down_matrix());
    return (product * adapter.scale()).view(entry.base_weight.sizes());
  }

  // requires_grad = false on every parameter of the tree but the adapters' (the LoRAs of
  // an earlier injection into the same tree keep training).
  static void freeze_base(torch::nn::Module& root) {
    std::set<const void*> adapter_parameters;
    for (const auto& module : root.modules(/*include_self=*/true)) {
      if (std::dynamic_pointer_cast<LayerAdapter>(module)) {
        for (const auto& parameter : module->parameters())
          adapter_parameters.insert(parameter.unsafeGetTensorImpl());
      }
    }
    for (auto& parameter : root.parameters()) {
      if (!adapter_parameters.count(parameter.unsafeGetTensorImpl()))
        parameter.set_requires_grad(false);
    }
  }

  static void freeze(const LoraModuleEntry& entry) {
    const auto& layer = entry.host ? static_cast<torch::nn::Module&>(*entry.host) : *entry.stock;
    for (const auto& parameter : layer.named_parameters(/*recurse=*/false)) {
      torch::Tensor tensor = parameter.value();
      tensor.set_requires_grad(false);
    }
  }

  bool owns(const std::shared_ptr<torch::nn::Module>& module) const {
    for (const auto& entry : entries_)
      if (entry.host == module || entry.stock == module)
        return true;
    return false;
  }

  static bool has_adapter(const std::shared_ptr<torch::nn::Module>& module) {
    auto layer = std::dynamic_pointer_cast<AdaptableLayer>(module);
    return layer && layer->adapter_count() > 0;
  }

  std::vector<LoraModuleEntry> entries_;
  std::vector<std::shared_ptr<LoraAdapter>> stock_children_;
};

}  // namespace aclora::train
