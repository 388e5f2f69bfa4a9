#include "sdxl/train_choices.hpp"

namespace sdxl {
namespace {

using aclora::train::ExportFormat;
using aclora::train::LrScheduleKind;

constexpr ChoiceName<UnetTargets> kUnetTargets[] = {{"attn", UnetTargets::attn},
                                                    {"linear", UnetTargets::linear},
                                                    {"linear+conv", UnetTargets::linear_conv}};
constexpr ChoiceName<MixedPrecision> kMixedPrecisions[] = {
    {"no", MixedPrecision::no}, {"fp16", MixedPrecision::fp16}, {"bf16", MixedPrecision::bf16}};
constexpr ChoiceName<SavePrecision> kSavePrecisions[] = {
    {"fp32", SavePrecision::fp32}, {"fp16", SavePrecision::fp16}, {"bf16", SavePrecision::bf16}};
constexpr ChoiceName<RestartLoss> kRestartLosses[] = {{"weighted", RestartLoss::weighted},
                                                      {"unweighted", RestartLoss::unweighted}};
constexpr ChoiceName<ExportFormat> kFormats[] = {{"kohya", ExportFormat::kohya},
                                                 {"diffusers", ExportFormat::diffusers},
                                                 {"peft", ExportFormat::peft}};
constexpr ChoiceName<LrScheduleKind> kLrSchedules[] = {
    {"constant", LrScheduleKind::constant},
    {"constant_with_warmup", LrScheduleKind::constant_with_warmup},
    {"linear", LrScheduleKind::linear},
    {"cosine", LrScheduleKind::cosine}};

}  // namespace

std::span<const ChoiceName<UnetTargets>> choice_names(UnetTargets) {
  return kUnetTargets;
}
std::span<const ChoiceName<MixedPrecision>> choice_names(MixedPrecision) {
  return kMixedPrecisions;
}
std::span<const ChoiceName<SavePrecision>> choice_names(SavePrecision) {
  return kSavePrecisions;
}
std::span<const ChoiceName<RestartLoss>> choice_names(RestartLoss) {
  return kRestartLosses;
}
std::span<const ChoiceName<ExportFormat>> choice_names(ExportFormat) {
  return kFormats;
}
std::span<const ChoiceName<LrScheduleKind>> choice_names(LrScheduleKind) {
  return kLrSchedules;
}

}  // namespace sdxl
