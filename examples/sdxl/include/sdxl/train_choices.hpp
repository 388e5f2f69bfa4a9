/// @file train_choices.hpp
/// The trainer's choice options as enums, and their names: parsed once where the command
/// line is read, written by name into the LoRA metadata and the training state.
#pragma once

#include <aclora/adapters/train/export.hpp>
#include <aclora/adapters/train/lr_schedule.hpp>

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace sdxl {

/// Which UNet modules get LoRAs.
enum class UnetTargets {
  attn,         ///< attention projections (560 modules)
  linear,       ///< every linear layer of the transformer blocks (722, kohya's default)
  linear_conv,  ///< linear plus the 3x3 convolutions
};

/// Autocast for the forward pass (and the frozen weights' dtype on GPUs).
enum class MixedPrecision {
  no,    ///< fp32 throughout
  fp16,  ///< fp16 autocast with dynamic loss scaling (CUDA only)
  bf16,  ///< bf16 autocast
};

/// The number format of the exported LoRA factors.
enum class SavePrecision { fp32, fp16, bf16 };

/// Which loss the run reports per step and feeds to the RESTART (its L, so p = 1 - L^alpha).
enum class RestartLoss {
  weighted,    ///< the loss trained on (min-SNR weighted when --min-snr-gamma > 0)
  unweighted,  ///< the plain MSE against the prediction target (epsilon or v)
};

/// One value of a choice and its name.
template <class Choice>
struct ChoiceName {
  std::string_view name;  ///< as on the command line
  Choice value;           ///< the enum value
};

/// The names of the UNet target sets (`--targets`); each choice has one table, found by
/// overload on the enum type.
std::span<const ChoiceName<UnetTargets>> choice_names(UnetTargets);
/// The names of the mixed-precision modes (`--mixed-precision`).
std::span<const ChoiceName<MixedPrecision>> choice_names(MixedPrecision);
/// The names of the saved LoRA's dtypes (`--save-precision`).
std::span<const ChoiceName<SavePrecision>> choice_names(SavePrecision);
/// The names of the losses that can drive p (`--restart-loss`).
std::span<const ChoiceName<RestartLoss>> choice_names(RestartLoss);
/// The names of the LoRA file formats (`--format`).
std::span<const ChoiceName<aclora::train::ExportFormat>> choice_names(aclora::train::ExportFormat);
/// The names of the learning-rate schedules (`--lr-scheduler`).
std::span<const ChoiceName<aclora::train::LrScheduleKind>> choice_names(
    aclora::train::LrScheduleKind);

/// The name of a choice's value ("linear+conv", "bf16", "cosine", ...).
template <class Choice>
std::string name_of(Choice value) {
  for (const auto& entry : choice_names(Choice{}))
    if (entry.value == value)
      return std::string(entry.name);
  return "?";
}

/// Every name of a choice, in table order.
template <class Choice>
std::vector<std::string> names_of() {
  std::vector<std::string> out;
  for (const auto& entry : choice_names(Choice{}))
    out.emplace_back(entry.name);
  return out;
}

/// The value named `name`, or nothing for an unknown name.
template <class Choice>
std::optional<Choice> choice_named(std::string_view name) {
  for (const auto& entry : choice_names(Choice{}))
    if (entry.name == name)
      return entry.value;
  return std::nullopt;
}

}  // namespace sdxl
