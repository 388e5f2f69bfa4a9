#include "evidence/classifier.hpp"

#include "evidence/module_file.hpp"

#include <cstdio>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace evidence {
namespace {

namespace fs = std::filesystem;
namespace F = torch::nn::functional;

constexpr int64_t kFeatures = 128;
constexpr int64_t kEvaluationBatch = 1000;

// `run` on consecutive batches of `images` in eval mode without gradients, results
// concatenated along dimension 0; the module's training mode is restored afterwards.
template <class Run>
torch::Tensor batched(Classifier& classifier, const torch::Tensor& images, Run run) {
  const bool was_training = classifier->is_training();
  classifier->eval();
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> parts;
  int64_t start = 0;
  do {  // at least once: no images give an empty result of the right shape
    parts.push_back(run(images.slice(0, start, start + kEvaluationBatch)));
    start += kEvaluationBatch;
  } while (start < images.size(0));
  classifier->train(was_training);
  return torch::cat(parts);
}

}  // namespace

ClassifierImpl::ClassifierImpl(int64_t classes) : classes_(classes) {
  if (classes < 1)
    throw std::invalid_argument("Classifier: classes must be positive, got " +
                                std::to_string(classes));
  conv1_ =
      register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 32, 3).padding(1)));
  conv2_ =
      register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(32, 64, 3).padding(1)));
  hidden_ = register_module("hidden", torch::nn::Linear(64 * 7 * 7, kFeatures));
  output_ = register_module("output", torch::nn::Linear(kFeatures, classes));
}

torch::Tensor ClassifierImpl::features(const torch::Tensor& images) {
  torch::Tensor x = F::max_pool2d(torch::relu(conv1_(images)), F::MaxPool2dFuncOptions(2));
  x = F::max_pool2d(torch::relu(conv2_(x)), F::MaxPool2dFuncOptions(2));
  return torch::relu(hidden_(x.flatten(1)));
}

torch::Tensor ClassifierImpl::forward(const torch::Tensor& images) {
  return output_(features(images));
}

Classifier train_classifier(const torch::Tensor& images, const torch::Tensor& labels,
                            int64_t classes, const ClassifierTraining& settings) {
  if (images.dim() != 4 || images.size(0) == 0 || labels.dim() != 1 ||
      labels.size(0) != images.size(0))
    throw std::invalid_argument(
        "train_classifier: expected images [N, 1, 28, 28] and labels [N] "
        "with N > 0, got " +
        c10::str(images.sizes()) + " and " + c10::str(labels.sizes()));
  if (settings.epochs < 1 || settings.batch < 1 || !(settings.lr > 0))
    throw std::invalid_argument("train_classifier: epochs, batch and lr must be positive");
  torch::manual_seed(settings.seed);
  Classifier classifier(classes);
  classifier->to(images.device());
  classifier->train();
  torch::optim::Adam optimizer(classifier->parameters(), torch::optim::AdamOptions(settings.lr));
  torch::Generator order = at::make_generator<at::CPUGeneratorImpl>(settings.seed);
  const torch::Tensor targets = labels.to(images.device(), torch::kInt64);
  const int64_t n = images.size(0);
  for (int64_t epoch = 1; epoch <= settings.epochs; ++epoch) {
    const torch::Tensor permutation =
        torch::randperm(n, order, torch::TensorOptions().dtype(torch::kInt64)).to(images.device());
    double loss_sum = 0;
    int64_t correct = 0;
    for (int64_t start = 0; start < n; start += settings.batch) {
      const torch::Tensor index = permutation.slice(0, start, start + settings.batch);
      const torch::Tensor batch_targets = targets.index_select(0, index);
      const torch::Tensor logits = classifier->forward(images.index_select(0, index));
      const torch::Tensor loss = F::cross_entropy(logits, batch_targets);
      optimizer.zero_grad();
      loss.backward();
      optimizer.step();
      loss_sum += loss.item<double>() * static_cast<double>(index.size(0));
      correct += logits.argmax(1).eq(batch_targets).sum().item<int64_t>();
    }
    if (settings.log) {
      char line[128];
      std::snprintf(line, sizeof line,
                    "classifier epoch %lld/%lld: loss %.4f, train accuracy %.2f %%",
                    static_cast<long long>(epoch), static_cast<long long>(settings.epochs),
                    loss_sum / static_cast<double>(n),
                    100.0 * static_cast<double>(correct) / static_cast<double>(n));
      settings.log(line);
    }
  }
  classifier->eval();
  return classifier;
}

double accuracy(Classifier& classifier, const torch::Tensor& images, const torch::Tensor& labels) {
  if (labels.dim() != 1 || labels.size(0) != images.size(0) || images.size(0) == 0)
    throw std::invalid_argument("accuracy: expected N > 0 images and N labels, got " +
                                c10::str(images.sizes()) + " and " + c10::str(labels.sizes()));
  const torch::Tensor predicted = predict(classifier, images);
  const int64_t correct =
      predicted.eq(labels.to(predicted.device(), torch::kInt64)).sum().item<int64_t>();
  return static_cast<double>(correct) / static_cast<double>(images.size(0));
}

torch::Tensor predict(Classifier& classifier, const torch::Tensor& images) {
  return batched(classifier, images,
                 [&](const torch::Tensor& batch) { return classifier->forward(batch).argmax(1); });
}

torch::Tensor features(Classifier& classifier, const torch::Tensor& images) {
  return batched(classifier, images, [&](const torch::Tensor& batch) {
    return classifier->features(batch).to(torch::kFloat32);
  });
}

void save_classifier(const Classifier& classifier, const fs::path& file) {
  save_module(*classifier, file,
              {{"format", "aclora-evidence-classifier"},
               {"classes", std::to_string(classifier->classes())}});
}

Classifier load_classifier(const fs::path& file, int64_t classes) {
  Classifier classifier(classes);
  load_module(*classifier, file, "a classifier of " + std::to_string(classes) + " classes");
  classifier->eval();
  return classifier;
}

}  // namespace evidence
