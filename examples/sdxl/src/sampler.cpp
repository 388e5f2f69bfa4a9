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
    const double sigma = plan.sigmas[i];
    const double sigma_next = plan.sigmas[i + 1];
    const torch::Tensor model_input = latents / std::sqrt(sigma * sigma + 1.0);
    const torch::Tensor eps = predict(model_input, plan.timesteps[i]).to(torch::kFloat32);
    const torch::Tensor denoised = latents - sigma * eps;
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
