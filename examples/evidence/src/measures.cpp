#include "evidence/measures.hpp"

#include <sdxl/training_step.hpp>

#include <stdexcept>
#include <string>

namespace evidence {
namespace {

constexpr int64_t kBatch = 100;

void check_counts(const torch::Tensor& images, const torch::Tensor& other, const char* what) {
  if (images.size(0) == 0 || images.size(0) != other.size(0))
    throw std::invalid_argument(std::string(what) + ": " + std::to_string(images.size(0)) +
                                " images and " + std::to_string(other.size(0)) +
                                " labels (need the same positive count)");
}

}  // namespace

double grid_loss(BaseModel& model, const torch::Tensor& images, const torch::Tensor& labels) {
  check_counts(images, labels, "grid_loss");
  const bool was_training = model->is_training();
  model->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor abar = sdxl::alphas_cumprod_on(base_schedule().alphas_cumprod(), torch::kCPU);
  torch::Generator generator = at::detail::createCPUGenerator(kHeldOutNoiseSeed);
  const int64_t count = images.size(0);
  double sum = 0.0;
  for (int level = 0; level < kHeldOutLevels; ++level) {
    const int64_t timestep = 50 + 100 * level;
    for (int64_t start = 0; start < count; start += kBatch) {
      const torch::Tensor part = images.slice(0, start, start + kBatch);
      const int64_t n = part.size(0);
      const sdxl::TrainBatch batch = model->batch(part, labels.slice(0, start, start + kBatch));
      const sdxl::StepDraws draws{torch::randn(batch.latents.sizes(), generator),
                                  torch::full({n}, timestep, torch::kInt64)};
      sum += sdxl::diffusion_loss(model->unet, batch, draws, abar, {}).item<double>() *
             static_cast<double>(n);
    }
  }
  model->train(was_training);
  return sum / static_cast<double>(count * kHeldOutLevels);
}

JudgeScores judge_samples(Classifier& judge, const torch::Tensor& images,
                          const torch::Tensor& wanted) {
  check_counts(images, wanted, "judge_samples");
  const torch::Tensor verdict = predict(judge, images);
  JudgeScores scores;
  scores.content_accuracy =
      (verdict.remainder(10) == wanted.remainder(10)).to(torch::kFloat64).mean().item<double>();
  scores.style_accuracy =
      ((verdict >= 10) == (wanted >= 10)).to(torch::kFloat64).mean().item<double>();
  return scores;
}

}  // namespace evidence
