#include "sdxl/lora.hpp"

#include <aclora/adapters/safetensors/convert.hpp>
#include <aclora/adapters/train/lora_adapter.hpp>

#include <torch/torch.h>

#include <map>
#include <memory>
#include <utility>

namespace sdxl {
namespace {

using aclora::lora::Component;

// The factor in fp32, copied out of the mapped file.
torch::Tensor factor_tensor(const aclora::safetensors::TensorView& view) {
  std::vector<float> values = aclora::safetensors::convert_to<float>(view);
  return torch::from_blob(values.data(), {static_cast<int64_t>(values.size())}, torch::kFloat32)
      .clone()
      .view(view.shape);
}

torch::nn::Module* component_module(const LoraTargets& targets, Component component) {
  switch (component) {
    case Component::unet:
      return targets.unet ? targets.unet.ptr().get() : nullptr;
    case Component::text_encoder:
      return targets.text_encoder ? targets.text_encoder.ptr().get() : nullptr;
    case Component::text_encoder_2:
      return targets.text_encoder_2 ? targets.text_encoder_2.ptr().get() : nullptr;
  }
  return nullptr;
}

// One module resolved to its layer, with the factors in fp32, checked but not yet applied.
struct PlannedUpdate {
  std::shared_ptr<aclora::train::AdaptableLayer> layer;
  torch::Tensor down;  // [r, in * kh * kw]
  torch::Tensor up;    // [out, r]
  double alpha = 0.0;
  double multiplier = 1.0;
};

}  // namespace

LoraApplication apply_lora(const aclora::lora::LoraFile& file, const LoraTargets& targets,
                           double multiplier, LoraMode mode) {
  LoraApplication result;
  for (const auto& module : file.lycoris)
    result.unsupported.push_back(module.name);
  for (const auto& key : file.unknown_keys)
    result.unsupported.push_back(key);

  std::map<Component, std::map<std::string, std::shared_ptr<torch::nn::Module>>> layers;
  for (Component component :
       {Component::unet, Component::text_encoder, Component::text_encoder_2}) {
    if (torch::nn::Module* root = component_module(targets, component)) {
      for (const auto& item : root->named_modules())
        layers[component][item.key()] = item.value();
    }
  }

  std::vector<PlannedUpdate> plan;
  for (const auto& module : file.modules) {
    const auto found = layers[module.component].find(module.path);
    if (found == layers[module.component].end()) {
      result.unmatched.push_back(module.name);
      continue;
    }
    PlannedUpdate update;
    update.layer = std::dynamic_pointer_cast<aclora::train::AdaptableLayer>(found->second);
    if (!update.layer) {
      result.unmatched.push_back(module.name);
      continue;
    }
    const auto rank = static_cast<int64_t>(module.rank);
    update.down = factor_tensor(module.down).reshape({rank, -1});
    update.up = factor_tensor(module.up).reshape({-1, rank});
    update.alpha = module.alpha;
    update.multiplier = multiplier;
    const torch::Tensor& weight = update.layer->base_weight();
    const int64_t out = weight.size(0);
    const int64_t in = weight.numel() / out;
    if (update.up.size(0) != out || update.down.size(1) != in) {
      throw aclora::lora::Error(file.path.string() + ": module " + module.name + ": factors give " +
                                std::to_string(update.up.size(0)) + " x " +
                                std::to_string(update.down.size(1)) + " but the layer " +
                                module.path + " is " + std::to_string(out) + " x " +
                                std::to_string(in));
    }
    if (!torch::isfinite(update.down).all().item<bool>() ||
        !torch::isfinite(update.up).all().item<bool>()) {
      throw aclora::lora::Error(file.path.string() + ": module " + module.name +
                                ": factors hold NaN or Inf");
    }
    plan.push_back(std::move(update));
  }

  torch::NoGradGuard no_grad;
  for (auto& update : plan) {
    const torch::Tensor& weight = update.layer->base_weight();
    if (mode == LoraMode::runtime) {
      const auto options = weight.options();
      auto adapter = std::make_shared<aclora::train::LoraAdapter>(
          update.layer->geometry(), update.down.to(options), update.up.to(options), update.alpha);
      adapter->set_multiplier(update.multiplier);
      update.layer->add_adapter(std::move(adapter));
    } else {
      const double scale =
          update.multiplier * update.alpha / static_cast<double>(update.down.size(0));
      const torch::Tensor delta = torch::matmul(update.up, update.down) * scale;
      torch::Tensor target = weight;
      target.add_(delta.view(weight.sizes()).to(weight.options()));
    }
    ++result.applied;
  }
  return result;
}

}  // namespace sdxl
