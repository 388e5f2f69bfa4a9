// The noise schedule and Euler plans, computed as diffusers 0.42's EulerDiscreteScheduler
// does (torch fp32 tensors, numpy float64 for the timestep grid and the interpolation).
#include "sdxl/scheduler.hpp"

#include <aclora/adapters/json.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numbers>
#include <sstream>
#include <stdexcept>
#include <string>

namespace sdxl {
namespace {

// torch.linspace(start, end, n) in fp32: the step in fp32, each value evaluated from the
// nearer end.
std::vector<float> linspace_f32(double start, double end, int n) {
  const auto first = static_cast<float>(start);
  const auto last = static_cast<float>(end);
  const float step = n > 1 ? (last - first) / static_cast<float>(n - 1) : 0.0f;
  std::vector<float> values(n);
  for (int i = 0; i < n; ++i) {
    values[i] = i < n / 2 ? first + step * static_cast<float>(i)
                          : last - step * static_cast<float>(n - 1 - i);
  }
  return values;
}

// torch.cumprod on the CPU: fp64 accumulation, fp32 results.
std::vector<float> cumulative_product(const std::vector<float>& values) {
  std::vector<float> result(values.size());
  double product = 1.0;
  for (std::size_t i = 0; i < values.size(); ++i) {
    product *= static_cast<double>(values[i]);
    result[i] = static_cast<float>(product);
  }
  return result;
}

std::vector<float> one_minus(const std::vector<float>& values) {
  std::vector<float> result(values.size());
  std::transform(values.begin(), values.end(), result.begin(), [](float v) { return 1.0f - v; });
  return result;
}

// rescale_zero_terminal_snr of diffusers, in fp32.
std::vector<float> rescaled_to_zero_terminal_snr(const std::vector<float>& betas) {
  std::vector<float> roots = cumulative_product(one_minus(betas));
  for (float& value : roots)
    value = std::sqrt(value);
  const float first = roots.front();
  const float last = roots.back();
  const float scale = first / (first - last);
  std::vector<float> alphas_bar(roots.size());
  for (std::size_t i = 0; i < roots.size(); ++i) {
    const float shifted = (roots[i] - last) * scale;
    alphas_bar[i] = shifted * shifted;
  }
  std::vector<float> alphas(roots.size());
  alphas[0] = alphas_bar[0];
  for (std::size_t i = 1; i < roots.size(); ++i)
    alphas[i] = alphas_bar[i] / alphas_bar[i - 1];
  return one_minus(alphas);
}

// np.interp(x, arange(n), table) at one point, in float64.
double interpolate(const std::vector<float>& table, double x) {
  const auto last = static_cast<double>(table.size() - 1);
  if (x <= 0.0)
    return table.front();
  if (x >= last)
    return table.back();
  const auto j = static_cast<std::size_t>(std::floor(x));
  if (static_cast<double>(j) == x)
    return table[j];
  const double slope = static_cast<double>(table[j + 1]) - static_cast<double>(table[j]);
  return slope * (x - static_cast<double>(j)) + static_cast<double>(table[j]);
}

// Timesteps of a run (float32, decreasing), as set_timesteps computes them.
std::vector<float> timesteps_of(const SchedulerConfig& config, int steps) {
  const int train = config.schedule.train_steps;
  std::vector<float> timesteps;
  switch (config.spacing) {
    case TimestepSpacing::kLeading: {
      const int ratio = train / steps;
      for (int i = steps - 1; i >= 0; --i)
        timesteps.push_back(static_cast<float>(i * ratio) +
                            static_cast<float>(config.steps_offset));
      break;
    }
    case TimestepSpacing::kTrailing: {
      // np.arange(T, 0, -T / n): ceil(T / ratio) values start + i * delta, delta taken as
      // (start + step) - start like numpy's fill; then rounded half to even, minus 1.
      const double step = -static_cast<double>(train) / static_cast<double>(steps);
      const auto count = static_cast<long>(std::ceil((0.0 - train) / step));
      const auto start = static_cast<double>(train);
      const double delta = (start + step) - start;
      for (long i = 0; i < count; ++i) {
        const double value = i == 0 ? start : (i == 1 ? start + step : start + i * delta);
        timesteps.push_back(static_cast<float>(std::nearbyint(value)) - 1.0f);
      }
      break;
    }
    case TimestepSpacing::kLinspace: {
      // np.linspace(0, T - 1, n) in float64 (the last value exact), cast to float32, reversed.
      const double stop = train - 1;
      std::vector<double> values(steps);
      for (int i = 0; i < steps; ++i)
        values[i] = steps > 1 ? i * (stop / (steps - 1)) : 0.0;
      if (steps > 1)
        values.back() = stop;
      for (int i = steps - 1; i >= 0; --i)
        timesteps.push_back(static_cast<float>(values[i]));
      break;
    }
  }
  return timesteps;
}

const char* prediction_name(PredictionType type) {
  switch (type) {
    case PredictionType::kEpsilon:
      return "epsilon";
    case PredictionType::kVPrediction:
      return "v_prediction";
    case PredictionType::kSample:
      return "sample";
  }
  return "?";
}

const char* spacing_name(TimestepSpacing spacing) {
  switch (spacing) {
    case TimestepSpacing::kLeading:
      return "leading";
    case TimestepSpacing::kTrailing:
      return "trailing";
    case TimestepSpacing::kLinspace:
      return "linspace";
  }
  return "?";
}

const char* beta_name(const NoiseSchedule& schedule) {
  if (!schedule.trained_betas.empty())
    return "trained";
  switch (schedule.beta_schedule) {
    case BetaSchedule::kScaledLinear:
      return "scaled_linear";
    case BetaSchedule::kLinear:
      return "linear";
    case BetaSchedule::kSquaredCosCapV2:
      return "squaredcos_cap_v2";
  }
  return "?";
}

// ------------------------------------------------------------ reading scheduler_config.json

class ConfigReader {
 public:
  ConfigReader(const aclora::json::Value& root, std::string file)
      : root_(root), file_(std::move(file)) {}

  // The value of `key`, or null when absent or JSON null (the class default then applies).
  const aclora::json::Value* find(const char* key) const {
    const aclora::json::Value* value = root_.find(key);
    return value == nullptr || value->is_null() ? nullptr : value;
  }

  [[noreturn]] void fail(const char* key, const aclora::json::Value& value,
                         const std::string& what) const {
    throw SchedulerConfigError(file_ + ": " + key + " " + aclora::json::dump(value) + " " + what);
  }

  std::string text(const char* key, const std::string& fallback) const {
    const aclora::json::Value* value = find(key);
    if (value == nullptr)
      return fallback;
    if (!value->is_string())
      fail(key, *value, "must be a string");
    return value->as_string();
  }

  bool flag(const char* key, bool fallback) const {
    const aclora::json::Value* value = find(key);
    if (value == nullptr)
      return fallback;
    if (!value->is_bool())
      fail(key, *value, "must be true or false");
    return value->as_bool();
  }

  double number(const char* key, double fallback) const {
    const aclora::json::Value* value = find(key);
    if (value == nullptr)
      return fallback;
    if (!value->is_number() || !std::isfinite(value->as_double()))
      fail(key, *value, "must be a finite number");
    return value->as_double();
  }

  // A beta in [0, 1).
  double beta(const char* key, double fallback) const {
    const double value = number(key, fallback);
    if (!(value >= 0.0 && value < 1.0))
      fail(key, *find(key), "must lie in [0, 1)");
    return value;
  }

  std::int64_t integer(const char* key, std::int64_t fallback, std::int64_t min,
                       std::int64_t max) const {
    const aclora::json::Value* value = find(key);
    if (value == nullptr)
      return fallback;
    if (!value->is_integer())
      fail(key, *value, "must be an integer");
    if (value->as_int() < min || value->as_int() > max)
      fail(key, *value, "must lie in [" + std::to_string(min) + ", " + std::to_string(max) + "]");
    return value->as_int();
  }

  // One of `names` (mapped to values), else an error listing what is supported.
  template <class T>
  T choice(const char* key, const std::string& fallback,
           const std::vector<std::pair<std::string, T>>& names) const {
    const std::string name = text(key, fallback);
    std::string supported;
    for (const auto& [candidate, value] : names) {
      if (candidate == name)
        return value;
      supported += (supported.empty() ? "" : ", ") + candidate;
    }
    fail(key, aclora::json::Value(name), "is not supported (supported: " + supported + ")");
  }

 private:
  const aclora::json::Value& root_;
  std::string file_;
};

}  // namespace

std::vector<float> NoiseSchedule::alphas_cumprod() const {
  if (train_steps < 2)
    throw std::invalid_argument("the noise schedule needs at least 2 training steps");
  std::vector<float> betas;
  if (!trained_betas.empty()) {
    if (trained_betas.size() != static_cast<std::size_t>(train_steps))
      throw std::invalid_argument("trained_betas holds " + std::to_string(trained_betas.size()) +
                                  " values for " + std::to_string(train_steps) + " steps");
    for (double beta : trained_betas)
      betas.push_back(static_cast<float>(beta));
  } else if (beta_schedule == BetaSchedule::kLinear) {
    betas = linspace_f32(beta_start, beta_end, train_steps);
  } else if (beta_schedule == BetaSchedule::kScaledLinear) {
    betas = linspace_f32(std::sqrt(beta_start), std::sqrt(beta_end), train_steps);
    for (float& beta : betas)
      beta = beta * beta;
  } else {
    // betas_for_alpha_bar (cosine) in float64, stored as fp32.
    const auto alpha_bar = [](double t) {
      const double c = std::cos((t + 0.008) / 1.008 * std::numbers::pi / 2.0);
      return c * c;
    };
    for (int i = 0; i < train_steps; ++i) {
      const double t1 = static_cast<double>(i) / train_steps;
      const double t2 = static_cast<double>(i + 1) / train_steps;
      betas.push_back(static_cast<float>(std::min(1.0 - alpha_bar(t2) / alpha_bar(t1), 0.999)));
    }
  }
  if (rescale_zero_terminal_snr)
    betas = rescaled_to_zero_terminal_snr(betas);
  std::vector<float> result = cumulative_product(one_minus(betas));
  if (rescale_zero_terminal_snr)
    result.back() = std::ldexp(1.0f, -24);
  return result;
}

std::vector<float> NoiseSchedule::sigmas() const {
  std::vector<float> result = alphas_cumprod();
  for (float& value : result)
    value = std::sqrt((1.0f - value) / value);
  return result;
}

std::string SchedulerConfig::describe() const {
  std::string text =
      std::string(prediction_name(prediction)) + ", " + spacing_name(spacing) + " spacing";
  if (spacing == TimestepSpacing::kLeading)
    text += " (offset " + std::to_string(steps_offset) + ")";
  text += std::string(", ") + beta_name(schedule) + " betas";
  if (schedule.rescale_zero_terminal_snr)
    text += ", zero terminal SNR";
  if (final_sigma == FinalSigma::kSigmaMin)
    text += ", final sigma sigma_min";
  return text;
}

SchedulerConfig read_scheduler_config(const std::filesystem::path& json_file) {
  const std::string file = json_file.string();
  std::ifstream in(json_file, std::ios::binary);
  if (!in)
    throw SchedulerConfigError(file + ": scheduler config not found or unreadable");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  aclora::json::Value root;
  try {
    root = aclora::json::parse(buffer.str());
  } catch (const aclora::json::Error& error) {
    throw SchedulerConfigError(file + ": not valid JSON (" + error.what() + ")");
  }
  if (!root.is_object())
    throw SchedulerConfigError(file + ": must hold a JSON object");
  const ConfigReader read(root, file);

  // Absent keys: EulerDiscreteScheduler's defaults.
  SchedulerConfig config;
  NoiseSchedule& schedule = config.schedule;
  schedule.train_steps = static_cast<int>(read.integer("num_train_timesteps", 1000, 2, 100000));
  schedule.beta_start = read.beta("beta_start", 0.0001);
  schedule.beta_end = read.beta("beta_end", 0.02);
  schedule.beta_schedule =
      read.choice<BetaSchedule>("beta_schedule", "linear",
                                {{"scaled_linear", BetaSchedule::kScaledLinear},
                                 {"linear", BetaSchedule::kLinear},
                                 {"squaredcos_cap_v2", BetaSchedule::kSquaredCosCapV2}});
  if (const aclora::json::Value* betas = read.find("trained_betas")) {
    if (!betas->is_array() ||
        betas->as_array().size() != static_cast<std::size_t>(schedule.train_steps))
      read.fail("trained_betas", aclora::json::Value("..."),
                "must be an array of num_train_timesteps (" + std::to_string(schedule.train_steps) +
                    ") numbers");
    for (const auto& beta : betas->as_array()) {
      if (!beta.is_number() || !(beta.as_double() >= 0.0 && beta.as_double() < 1.0))
        read.fail("trained_betas", beta, "is not a beta in [0, 1)");
      schedule.trained_betas.push_back(beta.as_double());
    }
  }
  schedule.rescale_zero_terminal_snr = read.flag("rescale_betas_zero_snr", false);

  config.prediction = read.choice<PredictionType>("prediction_type", "epsilon",
                                                  {{"epsilon", PredictionType::kEpsilon},
                                                   {"v_prediction", PredictionType::kVPrediction},
                                                   {"sample", PredictionType::kSample}});
  config.spacing = read.choice<TimestepSpacing>("timestep_spacing", "linspace",
                                                {{"leading", TimestepSpacing::kLeading},
                                                 {"trailing", TimestepSpacing::kTrailing},
                                                 {"linspace", TimestepSpacing::kLinspace}});
  config.steps_offset = static_cast<int>(read.integer("steps_offset", 0, 0, 100000));
  config.final_sigma =
      read.choice<FinalSigma>("final_sigmas_type", "zero",
                              {{"zero", FinalSigma::kZero}, {"sigma_min", FinalSigma::kSigmaMin}});
  read.choice<int>("interpolation_type", "linear", {{"linear", 0}});
  read.choice<int>("timestep_type", "discrete", {{"discrete", 0}});
  for (const char* key : {"use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"}) {
    if (read.flag(key, false))
      read.fail(key, aclora::json::Value(true),
                "is not supported (the sampler uses the "
                "schedule's own sigmas)");
  }
  config.source = file;
  if (const aclora::json::Value* name = read.find("_class_name"); name && name->is_string())
    config.source += " (" + name->as_string() + ")";
  return config;
}

SchedulerConfig scheduler_of(const std::filesystem::path& model,
                             const std::optional<std::filesystem::path>& config_folder) {
  namespace fs = std::filesystem;
  std::optional<fs::path> folder;
  if (fs::is_directory(model))
    folder = model;
  else if (config_folder)
    folder = *config_folder;
  if (folder) {
    const fs::path file = *folder / "scheduler" / "scheduler_config.json";
    if (fs::exists(file))
      return read_scheduler_config(file);
  }
  return SchedulerConfig{};
}

EulerPlan euler_plan(const SchedulerConfig& config, int steps) {
  const NoiseSchedule& schedule = config.schedule;
  if (steps < 1 || steps > schedule.train_steps) {
    throw std::invalid_argument("steps must be in [1, " + std::to_string(schedule.train_steps) +
                                "], got " + std::to_string(steps));
  }
  const std::vector<float> table = schedule.sigmas();
  EulerPlan plan;
  plan.prediction = config.prediction;
  plan.timesteps = timesteps_of(config, steps);
  for (float t : plan.timesteps)
    plan.sigmas.push_back(static_cast<float>(interpolate(table, t)));
  plan.sigmas.push_back(config.final_sigma == FinalSigma::kZero ? 0.0f : table.front());
  const float largest = *std::max_element(plan.sigmas.begin(), plan.sigmas.end());
  plan.init_noise_sigma =
      config.spacing == TimestepSpacing::kLeading ? std::sqrt(largest * largest + 1.0f) : largest;
  return plan;
}

EulerPlan euler_plan(const NoiseSchedule& schedule, int steps) {
  SchedulerConfig config;
  config.schedule = schedule;
  return euler_plan(config, steps);
}

}  // namespace sdxl
