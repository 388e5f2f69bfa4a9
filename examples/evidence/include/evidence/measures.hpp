/// @file measures.hpp
/// The experiment's measures of a model (defined once, here): the denoising loss on a fixed
/// grid (on held-out images, and on the training images) and the judge's verdict on
/// generated images. The Frechet distance is in frechet.hpp.
#pragma once

#include <torch/torch.h>

#include "evidence/base_model.hpp"
#include "evidence/classifier.hpp"

namespace evidence {

/// Noise levels of the grid loss: timesteps 50, 150, ..., 950 of base_schedule().
inline constexpr int kHeldOutLevels = 10;
/// Seed of the grid loss's noise (the same for every arm, seed and task).
inline constexpr uint64_t kHeldOutNoiseSeed = 20261130;

/// The mean epsilon MSE of `model` on `images` (float [N, 1, 28, 28] in [-1, 1]) with their
/// `labels`, each image noised at every level of kHeldOutLevels with noise from a generator
/// seeded by kHeldOutNoiseSeed: a fixed grid, so arms are compared on the same draws.
/// No gradient, eval mode (the model's mode is restored).
/// @throws std::invalid_argument for no images or mismatched counts.
double grid_loss(BaseModel& model, const torch::Tensor& images, const torch::Tensor& labels);

/// The judge's verdict on generated images.
struct JudgeScores {
  double content_accuracy = 0.0;  ///< share judged the wanted garment (plain or styled)
  double style_accuracy = 0.0;    ///< share judged in the wanted style (plain or outline)
};

/// Judges `images` against `wanted` judge classes (int64, in 0..kJudgeClasses-1): the
/// garment is the class modulo 10, the style is outline when the class is 10 or more.
/// @throws std::invalid_argument for no images or mismatched counts.
JudgeScores judge_samples(Classifier& judge, const torch::Tensor& images,
                          const torch::Tensor& wanted);

}  // namespace evidence
