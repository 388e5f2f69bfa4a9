/// @file scheduler.hpp
/// @brief The noise schedule and the Euler sampler's timesteps and sigmas, as diffusers'
/// EulerDiscreteScheduler computes them, configured from a model folder's
/// scheduler/scheduler_config.json or SDXL base's defaults.
#pragma once

#include <cstddef>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace sdxl {

/// How the betas of the training schedule are spaced.
enum class BetaSchedule {
  kScaledLinear,     ///< beta_t = linspace(sqrt(beta_start), sqrt(beta_end), T)^2 (SDXL)
  kLinear,           ///< beta_t = linspace(beta_start, beta_end, T)
  kSquaredCosCapV2,  ///< the cosine schedule of improved DDPM, betas capped at 0.999
};

/// Training noise schedule (SDXL base: scaled-linear betas from 0.00085 to 0.012 over 1000
/// steps).
struct NoiseSchedule {
  int train_steps = 1000;       ///< T, the number of training timesteps
  double beta_start = 0.00085;  ///< beta_0 (not used by kSquaredCosCapV2)
  double beta_end = 0.012;      ///< beta_{T-1} (not used by kSquaredCosCapV2)
  BetaSchedule beta_schedule = BetaSchedule::kScaledLinear;  ///< spacing of the betas
  /// Explicit betas (diffusers' trained_betas): T values that replace the three above.
  std::vector<double> trained_betas;
  /// Rescale the betas to zero terminal SNR (arXiv 2305.08891, Algorithm 1); the last
  /// abar is then set to 2^-24 so that the largest sigma stays finite (about 4096).
  bool rescale_zero_terminal_snr = false;

  /// abar_t = prod_{s <= t} (1 - beta_s) for t = 0 .. T - 1: betas in fp32, the running
  /// product accumulated in fp64 and stored in fp32, as torch computes it on the CPU.
  std::vector<float> alphas_cumprod() const;
  /// sigma_t = sqrt((1 - abar_t) / abar_t) for t = 0 .. T - 1 (fp32).
  std::vector<float> sigmas() const;
};

/// What the model predicts.
enum class PredictionType {
  kEpsilon,      ///< the noise
  kVPrediction,  ///< v = alpha_t eps - sigma_t x0 (in the scaled input's terms)
  kSample,       ///< the denoised sample x0
};

/// How the sampling timesteps are spread over [0, T) (arXiv 2305.08891, Table 2).
enum class TimestepSpacing {
  kLeading,   ///< (n-1 .. 0) * (T / n) + steps_offset, integer ratio (SDXL base)
  kTrailing,  ///< round(T, T - T/n, ...) - 1, starting at T - 1
  kLinspace,  ///< linspace(0, T - 1, n) reversed (fractional timesteps)
};

/// The last sigma of a run.
enum class FinalSigma {
  kZero,      ///< 0: the run ends on the denoised sample
  kSigmaMin,  ///< the training schedule's smallest sigma
};

/// The sampler settings of a model: diffusers' EulerDiscreteScheduler configuration.
/// The defaults are SDXL base's scheduler_config.json.
struct SchedulerConfig {
  NoiseSchedule schedule;                                ///< training noise schedule
  PredictionType prediction = PredictionType::kEpsilon;  ///< what the UNet predicts
  TimestepSpacing spacing = TimestepSpacing::kLeading;   ///< timestep spacing
  int steps_offset = 1;                                  ///< added to leading timesteps
  FinalSigma final_sigma = FinalSigma::kZero;            ///< last sigma of a run
  std::string source = "SDXL base defaults";             ///< where it came from

  /// One line for people: "epsilon, leading spacing (offset 1), scaled_linear betas".
  std::string describe() const;
};

/// Thrown for a scheduler_config.json that cannot be read or asks for something the
/// sampler cannot do; the message names the file, the key and its value.
class SchedulerConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Reads a diffusers scheduler_config.json. Keys of EulerDiscreteScheduler that are absent
/// take that class's defaults (as diffusers' from_config does); keys of other scheduler
/// classes are ignored (the sampler is Euler whatever the class). Supported:
/// num_train_timesteps, beta_start, beta_end, beta_schedule (scaled_linear, linear,
/// squaredcos_cap_v2), trained_betas, prediction_type (epsilon, v_prediction, sample),
/// timestep_spacing (leading, trailing, linspace), steps_offset, rescale_betas_zero_snr,
/// final_sigmas_type (zero, sigma_min), interpolation_type linear, timestep_type discrete,
/// use_karras_sigmas / use_exponential_sigmas / use_beta_sigmas false.
/// @throws SchedulerConfigError naming the file, key and value for anything else, a value
///         of the wrong type, or a file that is missing or not JSON.
SchedulerConfig read_scheduler_config(const std::filesystem::path& json_file);

/// The scheduler of a model: `model`/scheduler/scheduler_config.json for a diffusers folder,
/// else `config_folder`/scheduler/scheduler_config.json when given and present, else SDXL
/// base's (what a single-file checkpoint of SDXL base uses).
/// @throws SchedulerConfigError as read_scheduler_config.
SchedulerConfig scheduler_of(const std::filesystem::path& model,
                             const std::optional<std::filesystem::path>& config_folder);

/// The sampling plan of an Euler run with n steps.
struct EulerPlan {
  std::vector<float> timesteps;   ///< the UNet's timestep per step, decreasing
  std::vector<float> sigmas;      ///< one more than timesteps; the last is 0 (or sigma_min)
  float init_noise_sigma = 1.0f;  ///< scale of the unit initial noise (diffusers' value)
  PredictionType prediction = PredictionType::kEpsilon;  ///< what the model output means
};

/// Timesteps and sigmas of `steps` Euler steps as diffusers' EulerDiscreteScheduler
/// set_timesteps gives them (also where diffusers is odd: trailing spacing gives n + 1
/// timesteps for some n, e.g. 61, the last of them -1; init_noise_sigma is
/// sqrt(sigma_max^2 + 1) for leading spacing and sigma_max otherwise).
/// @throws std::invalid_argument when steps is not in [1, train_steps].
EulerPlan euler_plan(const SchedulerConfig& config, int steps);

/// SDXL base's plan ("leading" spacing, offset 1, epsilon) over `schedule`.
/// @throws std::invalid_argument when steps is not in [1, train_steps].
EulerPlan euler_plan(const NoiseSchedule& schedule, int steps);

}  // namespace sdxl
