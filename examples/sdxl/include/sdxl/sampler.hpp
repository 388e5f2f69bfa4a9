/// @file sampler.hpp
/// @brief The Euler sampler with classifier-free guidance.
#pragma once

#include <torch/torch.h>

#include <functional>

#include "sdxl/scheduler.hpp"

namespace sdxl {

/// Predicts the noise in `model_input` (latents already divided by sqrt(sigma^2 + 1))
/// at timestep `timestep`.
using NoisePredictor =
    std::function<torch::Tensor(const torch::Tensor& model_input, float timestep)>;

/// Called after each step with (steps done, steps in all).
using StepCallback = std::function<void(int done, int total)>;

/// Euler sampling: x = noise * init_noise_sigma, then per step
/// x0 = x - sigma eps, x += (x - x0) / sigma * (sigma_next - sigma), all in fp32.
/// @param plan timesteps and sigmas (euler_plan)
/// @param noise unit-variance initial noise [B, 4, h, w]
/// @param predict the noise predictor (the UNet, possibly guided)
/// @param on_step progress callback, may be empty
/// @return the final latents (fp32)
torch::Tensor euler_sample(const EulerPlan& plan, const torch::Tensor& noise,
                           const NoisePredictor& predict, const StepCallback& on_step = {});

/// Classifier-free guidance around a conditional predictor that takes a batch of two
/// halves [unconditional, conditional]: eps = eps_u + guidance (eps_c - eps_u).
/// `predict_pair` receives the model input duplicated along the batch.
NoisePredictor guided(NoisePredictor predict_pair, double guidance);

}  // namespace sdxl
