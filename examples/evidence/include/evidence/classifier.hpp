/// @file classifier.hpp
/// A small CNN classifier of 28 x 28 grey images: the judge of the experiment (accuracy of
/// generated images) and the feature extractor of its Frechet distance (frechet.hpp).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

namespace evidence {

/// Classes of the experiment's judge: label c in 0..9 is garment c plain, 10 + c garment c in
/// the outline style (apply_style).
inline constexpr int64_t kJudgeClasses = 20;

/// conv 1->32 (3x3, pad 1), ReLU, max-pool 2; conv 32->64 (3x3, pad 1), ReLU, max-pool 2;
/// flatten; linear 3136->128, ReLU (the features); linear 128->classes (the logits).
/// About 420k parameters. Input: float [N, 1, 28, 28] in [-1, 1].
class ClassifierImpl : public torch::nn::Module {
 public:
  /// A freshly initialised network (LibTorch's default initialisation, from the global
  /// generator) with `classes` outputs.
  explicit ClassifierImpl(int64_t classes);

  /// The 128 features of each image, [N, 128] (after the ReLU).
  torch::Tensor features(const torch::Tensor& images);
  /// The logits, [N, classes].
  torch::Tensor forward(const torch::Tensor& images);

  /// The number of classes.
  int64_t classes() const { return classes_; }

 private:
  int64_t classes_;
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr};
  torch::nn::Linear hidden_{nullptr}, output_{nullptr};
};
/// Module holder (shared pointer) of ClassifierImpl.
TORCH_MODULE(Classifier);

/// How train_classifier trains.
struct ClassifierTraining {
  int64_t epochs = 2;   ///< passes over the data
  int64_t batch = 128;  ///< images per step (the last batch of an epoch may be smaller)
  double lr = 1e-3;     ///< Adam's learning rate
  uint64_t seed = 0;    ///< seeds the initialisation and the shuffling
  /// Called with one line per epoch (mean loss, training accuracy) when set.
  std::function<void(const std::string&)> log;
};

/// A classifier trained with Adam on the cross-entropy of `labels` (int64 [N], in
/// 0..classes-1) given `images` (float [N, 1, 28, 28] in [-1, 1]), on the images' device.
/// Deterministic given settings.seed: torch::manual_seed(seed) before the initialisation
/// (which changes the global generator), each epoch's order from a generator seeded by seed.
/// @throws std::invalid_argument for mismatched shapes, an empty set, or bad settings.
Classifier train_classifier(const torch::Tensor& images, const torch::Tensor& labels,
                            int64_t classes, const ClassifierTraining& settings = {});

/// The fraction of `images` whose predicted class equals `labels` (eval mode, no gradient,
/// batches of 1000).
double accuracy(Classifier& classifier, const torch::Tensor& images, const torch::Tensor& labels);

/// The predicted class of each image, int64 [N] (batches of 1000, no gradient).
torch::Tensor predict(Classifier& classifier, const torch::Tensor& images);

/// The features of each image, float32 [N, 128] (batches of 1000, no gradient).
torch::Tensor features(Classifier& classifier, const torch::Tensor& images);

/// Writes the parameters to `file` as a safetensors file (F32, keys as named_parameters
/// names, e.g. "conv1.weight"), atomically.
/// @throws std::runtime_error naming the file when it cannot be written.
void save_classifier(const Classifier& classifier, const std::filesystem::path& file);

/// A classifier of `classes` outputs with the parameters of `file` (on the CPU).
/// @throws std::runtime_error "<file>: <problem>" for an unreadable file, a missing or
/// unexpected key, or a tensor of another shape or dtype (naming the key).
Classifier load_classifier(const std::filesystem::path& file, int64_t classes);

}  // namespace evidence
