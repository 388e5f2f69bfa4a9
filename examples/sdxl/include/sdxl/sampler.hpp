/// @file sampler.hpp
/// @brief The Euler sampler with classifier-free guidance.
#pragma once

#include <torch/torch.h>

#include <functional>

#include "sdxl/scheduler.hpp"

namespace sdxl {

/// The model's output for `model_input` (latents already divided by sqrt(sigma^2 + 1)) at
/// timestep `timestep`: the noise, v or the sample, as EulerPlan::prediction says.
using NoisePredictor =
    std::function<torch::Tensor(const torch::Tensor& model_input, float timestep)>;

/// Called after each step with (steps done, steps in all).
using StepCallback = std::function<void(int done, int total)>;

/// Euler sampling: x = noise * init_noise_sigma, then per step the denoised sample x0 from
/// the model output m (epsilon: x0 = x - sigma m; v_prediction: x0 = x / (sigma^2 + 1) -
/// m sigma / sqrt(sigma^2 + 1); sample: x0 = m) and x += (x - x0) / sigma * (sigma_next -
/// sigma), all in fp32 as diffusers' EulerDiscreteScheduler steps.
/// @param plan timesteps, sigmas and prediction type (euler_plan)
/// @param noise unit-variance initial noise [B, 4, h, w]
/// @param predict the model (the UNet, possibly guided)
/// @param on_step progress callback, may be empty
/// @return the final latents (fp32)
torch::Tensor euler_sample(const EulerPlan& plan, const torch::Tensor& noise,
                           const NoisePredictor& predict, const StepCallback& on_step = {});

/// Classifier-free guidance around a conditional predictor that takes a batch of two
/// halves [unconditional, conditional]: m = m_u + guidance (m_c - m_u) (any prediction type).
/// `predict_pair` receives the model input duplicated along the batch.
NoisePredictor guided(NoisePredictor predict_pair, double guidance);

}  // namespace sdxl
