#include "sdxl/sampler.hpp"

#include <cmath>
#include <utility>

namespace sdxl {

torch::Tensor euler_sample(const EulerPlan& plan, const torch::Tensor& noise,
                           const NoisePredictor& predict, const StepCallback& on_step) {
  torch::NoGradGuard no_grad;
  torch::Tensor latents = noise.to(torch::kFloat32) * plan.init_noise_sigma;
  const int steps = static_cast<int>(plan.timesteps.size());
  for (int i = 0; i < steps; ++i) {
    // Coefficients in fp32, as diffusers computes them from its fp32 sigma table.
    const float sigma = plan.sigmas[i];
    const float sigma_next = plan.sigmas[i + 1];
    const float variance = sigma * sigma + 1.0f;
    const torch::Tensor model_input = latents / std::sqrt(variance);
    const torch::Tensor output = predict(model_input, plan.timesteps[i]).to(torch::kFloat32);
    torch::Tensor denoised;
    switch (plan.prediction) {
      case PredictionType::kEpsilon:
        denoised = latents - sigma * output;
        break;
      case PredictionType::kVPrediction:
        denoised = output * (-sigma / std::sqrt(variance)) + latents / variance;
        break;
      case PredictionType::kSample:
        denoised = output;
        break;
    }
    latents = latents + (latents - denoised) / sigma * (sigma_next - sigma);
    if (on_step)
      on_step(i + 1, steps);
  }
  return latents;
}

NoisePredictor guided(NoisePredictor predict_pair, double guidance) {
  return [predict_pair = std::move(predict_pair), guidance](const torch::Tensor& model_input,
                                                            float timestep) {
    const torch::Tensor pair = predict_pair(torch::cat({model_input, model_input}), timestep);
    const auto halves = pair.chunk(2);
    return halves[0] + guidance * (halves[1] - halves[0]);
  };
}

}  // namespace sdxl
