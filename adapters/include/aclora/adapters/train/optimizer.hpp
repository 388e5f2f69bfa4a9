/// @file optimizer.hpp
/// @brief What happens to the optimizer's state of the factors a RESTART rewrote, and the
/// per-tensor optimizer state as named tensors (for saving and restoring a run).
///
/// Decision (docs/trainer-guide.md): policy `reset` (default) gives every rewritten factor
/// the state of a fresh optimizer: AdamW / Adam moments zero and their per-tensor step
/// (the bias-correction counter) back at 0; SGD's momentum buffer dropped. The global step,
/// the epoch and the learning-rate schedule go on. Keeping the per-tensor step while zeroing
/// the moments would make the first update after a RESTART (1 - beta1) / sqrt(1 - beta2) =
/// 3.2 times a fresh Adam step (betas 0.9, 0.999), since the bias correction no longer undoes
/// the zero start. Policy `keep` leaves the state alone (the paper's practice): the moments
/// then still describe directions the RESTART may have replaced by noise.
#pragma once

#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/optimizer.h>
#include <torch/optim/sgd.h>
#include <torch/torch.h>

#include <map>
#include <memory>
#include <span>
#include <sstream>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <vector>

#include "aclora/adapters/train/network.hpp"

namespace aclora::train {

/// The optimizer state of rewritten factors after a RESTART.
enum class OptimizerPolicy {
  reset,  ///< fresh state for every rewritten factor (default)
  keep,   ///< state untouched
};

/// "reset" or "keep".
inline const char* policy_name(OptimizerPolicy policy) {
  return policy == OptimizerPolicy::reset ? "reset" : "keep";
}

namespace detail {

// The optimizer's key of a parameter's state: a string in LibTorch 1.x (the TensorImpl's
// address printed as by c10::guts::to_string), the address itself in LibTorch 2.x.
template <class StateMap>
typename StateMap::key_type state_key(const StateMap&, const torch::Tensor& parameter) {
  using Key = typename StateMap::key_type;
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream text;
    text << static_cast<void*>(parameter.unsafeGetTensorImpl());
    return text.str();
  } else {
    return static_cast<Key>(parameter.unsafeGetTensorImpl());
  }
}

enum class OptimizerKind { adamw, adam, sgd, other };

inline OptimizerKind kind_of(const torch::optim::Optimizer& optimizer) {
  if (dynamic_cast<const torch::optim::AdamW*>(&optimizer))
    return OptimizerKind::adamw;
  if (dynamic_cast<const torch::optim::Adam*>(&optimizer))
    return OptimizerKind::adam;
  if (dynamic_cast<const torch::optim::SGD*>(&optimizer))
    return OptimizerKind::sgd;
  return OptimizerKind::other;
}

template <class State>
void zero_adam_state(State& state) {
  state.step(0);
  if (state.exp_avg().defined())
    state.exp_avg().zero_();
  if (state.exp_avg_sq().defined())
    state.exp_avg_sq().zero_();
  if (state.max_exp_avg_sq().defined())
    state.max_exp_avg_sq().zero_();
}

}  // namespace detail

/// Throws unless `reset_optimizer_state` knows `optimizer` (LibTorch's AdamW, Adam, SGD).
/// @throws Error naming the optimizer's type for any other.
inline void check_resettable(const torch::optim::Optimizer& optimizer) {
  if (detail::kind_of(optimizer) == detail::OptimizerKind::other) {
    throw Error(std::string("optimizer policy 'reset' supports LibTorch's AdamW, Adam and SGD; "
                            "this optimizer is ") +
                typeid(optimizer).name() + " (use policy 'keep', or reset its state yourself)");
  }
}

/// Gives `tensors` the state a fresh optimizer would have: AdamW / Adam moments zeroed in
/// place and their step set to 0, SGD momentum buffers dropped. The next step then equals a
/// fresh optimizer's step on those tensors. Tensors without state are left alone.
/// @throws Error for an optimizer other than AdamW, Adam or SGD (nothing changed then).
inline void reset_optimizer_state(torch::optim::Optimizer& optimizer,
                                  std::span<const torch::Tensor> tensors) {
  check_resettable(optimizer);
  const detail::OptimizerKind kind = detail::kind_of(optimizer);
  torch::NoGradGuard no_grad;
  auto& states = optimizer.state();
  for (const torch::Tensor& tensor : tensors) {
    const auto found = states.find(detail::state_key(states, tensor));
    if (found == states.end())
      continue;
    if (kind == detail::OptimizerKind::adamw) {
      detail::zero_adam_state(static_cast<torch::optim::AdamWParamState&>(*found->second));
    } else if (kind == detail::OptimizerKind::adam) {
      detail::zero_adam_state(static_cast<torch::optim::AdamParamState&>(*found->second));
    } else {
      states.erase(found);
    }
  }
}

/// The per-tensor optimizer state of named parameters as named tensors: for AdamW / Adam
/// "<name>.step" (int64 scalar), ".exp_avg", ".exp_avg_sq" (and ".max_exp_avg_sq" with
/// amsgrad); for SGD ".momentum_buffer". Tensors are detached, on the CPU (copies for other
/// devices, the optimizer's own storage for CPU ones: read them before the next step).
/// @throws Error for an optimizer other than AdamW, Adam or SGD.
inline std::map<std::string, torch::Tensor> optimizer_state_tensors(
    torch::optim::Optimizer& optimizer,
    const std::vector<std::pair<std::string, torch::Tensor>>& parameters) {
  check_resettable(optimizer);
  const detail::OptimizerKind kind = detail::kind_of(optimizer);
  std::map<std::string, torch::Tensor> out;
  auto& states = optimizer.state();
  const auto copy = [](const torch::Tensor& t) { return t.detach().to(torch::kCPU); };
  for (const auto& [name, tensor] : parameters) {
    const auto found = states.find(detail::state_key(states, tensor));
    if (found == states.end())
      continue;
    const auto add_adam = [&](auto& state) {
      out[name + ".step"] = torch::tensor(static_cast<std::int64_t>(state.step()), torch::kInt64);
      out[name + ".exp_avg"] = copy(state.exp_avg());
      out[name + ".exp_avg_sq"] = copy(state.exp_avg_sq());
      if (state.max_exp_avg_sq().defined())
        out[name + ".max_exp_avg_sq"] = copy(state.max_exp_avg_sq());
    };
    if (kind == detail::OptimizerKind::adamw) {
      add_adam(static_cast<torch::optim::AdamWParamState&>(*found->second));
    } else if (kind == detail::OptimizerKind::adam) {
      add_adam(static_cast<torch::optim::AdamParamState&>(*found->second));
    } else {
      auto& state = static_cast<torch::optim::SGDParamState&>(*found->second);
      if (state.momentum_buffer().defined())
        out[name + ".momentum_buffer"] = copy(state.momentum_buffer());
    }
  }
  return out;
}

/// Replaces the optimizer state of the named parameters by `saved` (as written by
/// optimizer_state_tensors): parameters without saved entries get no state (fresh).
/// Every saved tensor is checked against its parameter's shape before anything changes.
/// @throws Error naming the entry for a missing, misshapen or unknown tensor.
inline void restore_optimizer_state(
    torch::optim::Optimizer& optimizer,
    const std::vector<std::pair<std::string, torch::Tensor>>& parameters,
    const std::map<std::string, torch::Tensor>& saved) {
  check_resettable(optimizer);
  const detail::OptimizerKind kind = detail::kind_of(optimizer);
  const bool adam = kind != detail::OptimizerKind::sgd;
  std::map<std::string, const torch::Tensor*> by_name;
  for (const auto& [name, tensor] : parameters)
    by_name[name] = &tensor;
  std::size_t used = 0;
  const auto entry = [&](const std::string& key, const torch::Tensor& like) -> torch::Tensor {
    const auto found = saved.find(key);
    if (found == saved.end())
      return {};
    if (found->second.sizes() != like.sizes())
      throw Error("optimizer state '" + key + "' has the wrong shape");
    ++used;
    return found->second.to(like.options()).clone();
  };
  // Build every new state first, install afterwards.
  std::vector<std::pair<const torch::Tensor*, std::unique_ptr<torch::optim::OptimizerParamState>>>
      built;
  for (const auto& [name, tensor] : parameters) {
    if (adam) {
      const auto step = saved.find(name + ".step");
      if (step == saved.end())
        continue;
      ++used;
      const auto fill = [&](auto state) {
        state->step(step->second.item<std::int64_t>());
        state->exp_avg(entry(name + ".exp_avg", tensor));
        state->exp_avg_sq(entry(name + ".exp_avg_sq", tensor));
        torch::Tensor max = entry(name + ".max_exp_avg_sq", tensor);
        if (max.defined())
          state->max_exp_avg_sq(max);
        if (!state->exp_avg().defined() || !state->exp_avg_sq().defined())
          throw Error("optimizer state of '" + name + "' is incomplete");
        built.emplace_back(&tensor, std::move(state));
      };
      if (kind == detail::OptimizerKind::adamw)
        fill(std::make_unique<torch::optim::AdamWParamState>());
      else
        fill(std::make_unique<torch::optim::AdamParamState>());
    } else {
      torch::Tensor buffer = entry(name + ".momentum_buffer", tensor);
      if (!buffer.defined())
        continue;
      auto state = std::make_unique<torch::optim::SGDParamState>();
      state->momentum_buffer(buffer);
      built.emplace_back(&tensor, std::move(state));
    }
  }
  if (used != saved.size())
    throw Error("optimizer state holds entries for parameters this network does not have");
  auto& states = optimizer.state();
  for (const auto& [name, tensor] : parameters)
    states.erase(detail::state_key(states, tensor));
  for (auto& [tensor, state] : built)
    states[detail::state_key(states, *tensor)] = std::move(state);
}

}  // namespace aclora::train
