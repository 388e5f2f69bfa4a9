// The Euler sampler's plan and the training schedule: SDXL base's reference numbers
// (sdxl.md), every scheduler_config.json of tests/fixtures/sdxl/schedulers against diffusers'
// EulerDiscreteScheduler (make_scheduler_fixtures.py), where the config comes from, and the
// refusal of settings the sampler cannot follow.
#include <gtest/gtest.h>

#include <aclora/adapters/safetensors.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>

#include "sdxl/scheduler.hpp"

namespace {

namespace fs = std::filesystem;

fs::path fixtures() {
  return fs::path(ACLORA_FIXTURES_DIR) / "sdxl";
}

// A tensor of scheduler_reference.safetensors as floats.
std::vector<float> reference(const std::string& name) {
  static const auto file =
      aclora::safetensors::Reader::open(fixtures() / "scheduler_reference.safetensors");
  return file.to_f32(name);
}

// The largest |a - b| / |b| over the elements (|b| = 0: |a|).
double max_relative_error(const std::vector<float>& actual, const std::vector<float>& expected) {
  EXPECT_EQ(actual.size(), expected.size());
  double worst = 0.0;
  for (std::size_t i = 0; i < std::min(actual.size(), expected.size()); ++i) {
    const double scale = std::abs(expected[i]) > 0.0f ? std::abs(expected[i]) : 1.0;
    worst = std::max(worst, std::abs(double(actual[i]) - double(expected[i])) / scale);
  }
  return worst;
}

// A fresh temporary folder per test, removed at the end.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() /
            ("aclora_sched_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }
  fs::path write(const std::string& name, const std::string& content) const {
    fs::create_directories((path_ / name).parent_path());
    std::ofstream(path_ / name, std::ios::binary) << content;
    return path_ / name;
  }

 private:
  fs::path path_;
};

// The message of the SchedulerConfigError that reading `content` throws.
std::string config_error(const TempDir& dir, const std::string& content) {
  const fs::path file = dir.write("scheduler_config.json", content);
  try {
    sdxl::read_scheduler_config(file);
  } catch (const sdxl::SchedulerConfigError& error) {
    return error.what();
  }
  ADD_FAILURE() << "accepted: " << content;
  return {};
}

}  // namespace

// abar_0 and abar_999 of the scaled-linear schedule.
TEST(NoiseSchedule, AlphasCumprodEndpointsMatchReference) {
  const auto alphas = sdxl::NoiseSchedule{}.alphas_cumprod();
  ASSERT_EQ(alphas.size(), 1000u);
  EXPECT_NEAR(alphas.front(), 0.99915, 1e-6);
  EXPECT_NEAR(alphas.back(), 0.0046601, 1e-7);
}

// 50 leading steps: 981, 961, ..., 1; first sigma 13.1204, initial scale 13.1585, final 0.
TEST(EulerPlan, FiftyStepsMatchReference) {
  const auto plan = sdxl::euler_plan(sdxl::NoiseSchedule{}, 50);
  ASSERT_EQ(plan.timesteps.size(), 50u);
  ASSERT_EQ(plan.sigmas.size(), 51u);
  for (int i = 0; i < 50; ++i)
    EXPECT_EQ(plan.timesteps[i], static_cast<float>((49 - i) * 20 + 1));
  EXPECT_NEAR(plan.sigmas.front(), 13.1204, 1e-4);
  EXPECT_NEAR(plan.init_noise_sigma, 13.1585, 1e-4);
  EXPECT_EQ(plan.sigmas.back(), 0.0f);
  for (int i = 0; i + 1 < 51; ++i)
    EXPECT_GT(plan.sigmas[i], plan.sigmas[i + 1]);
}

// Step counts outside [1, 1000] are rejected with a message naming the range.
TEST(EulerPlan, RejectsStepCountsOutsideTheSchedule) {
  EXPECT_THROW(sdxl::euler_plan(sdxl::NoiseSchedule{}, 0), std::invalid_argument);
  EXPECT_THROW(sdxl::euler_plan(sdxl::NoiseSchedule{}, 1001), std::invalid_argument);
  EXPECT_EQ(sdxl::euler_plan(sdxl::NoiseSchedule{}, 1000).timesteps.front(), 1000.0f);
}

// Every reference config (epsilon / v_prediction / sample; leading / trailing / linspace;
// scaled_linear / linear / squaredcos_cap_v2 betas; zero terminal SNR; final sigma_min; an
// empty file taking every default) gives diffusers' alphas_cumprod, and for 1 to 61 steps its
// timesteps exactly (61 trailing steps: 62 timesteps ending at -1, as diffusers gives them),
// its sigmas and its init_noise_sigma. Both sides compute in fp32 from the same operations
// (timestep grid and interpolation in fp64, abar's product accumulated in fp64 as torch does
// on the CPU: the cosine betas, which need no linspace, agree bit for bit). torch's fp32
// linspace evaluates SIMD chunks as base + j * step, so its betas differ from the scalar
// formula by an ulp here and there, depending on the vector width of the recording machine:
// abar and the sigmas agree within a few fp32 roundings (measured 3.3e-7): 1e-6.
TEST(SchedulerConfig, EveryReferenceConfigMatchesDiffusers) {
  for (const char* name :
       {"sdxl_base", "vpred_leading", "vpred_trailing_zsnr", "linear_linspace_sigma_min",
        "cosine_trailing_sample", "euler_defaults"}) {
    SCOPED_TRACE(name);
    const auto config =
        sdxl::read_scheduler_config(fixtures() / "schedulers" / name / "scheduler_config.json");
    const std::string prefix = std::string(name) + ".";
    EXPECT_LT(
        max_relative_error(config.schedule.alphas_cumprod(), reference(prefix + "alphas_cumprod")),
        1e-6);
    for (int steps : {1, 2, 3, 7, 30, 48, 50, 61}) {
      SCOPED_TRACE(steps);
      const auto plan = sdxl::euler_plan(config, steps);
      const std::string at = prefix + std::to_string(steps) + ".";
      EXPECT_EQ(plan.timesteps, reference(at + "timesteps"));
      EXPECT_LT(max_relative_error(plan.sigmas, reference(at + "sigmas")), 1e-6);
      EXPECT_LT(max_relative_error({plan.init_noise_sigma}, reference(at + "init_noise_sigma")),
                1e-6);
    }
  }
}

// What the configs say is what is read: prediction, spacing, betas, offsets, defaults.
TEST(SchedulerConfig, ReadsTheSettings) {
  const auto read = [](const char* name) {
    return sdxl::read_scheduler_config(fixtures() / "schedulers" / name / "scheduler_config.json");
  };
  const auto vpred = read("vpred_trailing_zsnr");
  EXPECT_EQ(vpred.prediction, sdxl::PredictionType::kVPrediction);
  EXPECT_EQ(vpred.spacing, sdxl::TimestepSpacing::kTrailing);
  EXPECT_TRUE(vpred.schedule.rescale_zero_terminal_snr);
  EXPECT_EQ(sdxl::euler_plan(vpred, 4).prediction, sdxl::PredictionType::kVPrediction);
  EXPECT_NE(vpred.source.find("EulerDiscreteScheduler"), std::string::npos);
  EXPECT_EQ(vpred.describe(),
            "v_prediction, trailing spacing, scaled_linear betas, zero terminal SNR");
  const auto defaults = read("euler_defaults");  // EulerDiscreteScheduler's own defaults
  EXPECT_EQ(defaults.spacing, sdxl::TimestepSpacing::kLinspace);
  EXPECT_EQ(defaults.schedule.beta_schedule, sdxl::BetaSchedule::kLinear);
  EXPECT_EQ(defaults.steps_offset, 0);
  EXPECT_EQ(defaults.schedule.beta_end, 0.02);
  const auto base = read("sdxl_base");  // equals the built-in SDXL base schedule
  EXPECT_EQ(sdxl::euler_plan(base, 30).sigmas,
            sdxl::euler_plan(sdxl::SchedulerConfig{}, 30).sigmas);
  EXPECT_EQ(base.describe(), sdxl::SchedulerConfig{}.describe());
}

// A diffusers folder's scheduler/scheduler_config.json is used; a single file uses the one
// of its --config folder when there is one, else SDXL base's, as does a folder without one.
TEST(SchedulerConfig, ComesFromTheModelOrConfigFolder) {
  TempDir dir;
  const fs::path vpred = fixtures() / "schedulers" / "vpred_leading" / "scheduler_config.json";
  fs::create_directories(dir.path() / "model" / "scheduler");
  fs::copy_file(vpred, dir.path() / "model" / "scheduler" / "scheduler_config.json");
  fs::create_directories(dir.path() / "bare");
  const fs::path single = dir.write("model.safetensors", "");
  EXPECT_EQ(sdxl::scheduler_of(dir.path() / "model", std::nullopt).prediction,
            sdxl::PredictionType::kVPrediction);
  EXPECT_EQ(sdxl::scheduler_of(single, dir.path() / "model").prediction,
            sdxl::PredictionType::kVPrediction);
  EXPECT_EQ(sdxl::scheduler_of(single, std::nullopt).source, "SDXL base defaults");
  EXPECT_EQ(sdxl::scheduler_of(single, dir.path() / "bare").source, "SDXL base defaults");
  EXPECT_EQ(sdxl::scheduler_of(dir.path() / "bare", std::nullopt).source, "SDXL base defaults");
}

// Settings the sampler cannot follow, values of the wrong type and broken files are refused
// with a message naming the file, the key and the value.
TEST(SchedulerConfig, RefusesWhatTheSamplerCannotDo) {
  TempDir dir;
  const std::pair<const char*, const char*> cases[] = {
      {R"({"prediction_type": "flow"})", R"(prediction_type "flow" is not supported)"},
      {R"({"timestep_spacing": "karras"})", R"(timestep_spacing "karras" is not supported)"},
      {R"({"beta_schedule": "sigmoid"})", R"(beta_schedule "sigmoid" is not supported)"},
      {R"({"use_karras_sigmas": true})", "use_karras_sigmas true is not supported"},
      {R"({"use_exponential_sigmas": true})", "use_exponential_sigmas true is not supported"},
      {R"({"use_beta_sigmas": true})", "use_beta_sigmas true is not supported"},
      {R"({"interpolation_type": "log_linear"})", R"(interpolation_type "log_linear")"},
      {R"({"timestep_type": "continuous"})", R"(timestep_type "continuous")"},
      {R"({"final_sigmas_type": "sigma_max"})", R"(final_sigmas_type "sigma_max")"},
      {R"({"steps_offset": "1"})", R"(steps_offset "1" must be an integer)"},
      {R"({"steps_offset": -1})", "steps_offset -1 must lie in"},
      {R"({"num_train_timesteps": 1})", "num_train_timesteps 1 must lie in"},
      {R"({"beta_end": 1.5})", "beta_end 1.5 must lie in [0, 1)"},
      {R"({"rescale_betas_zero_snr": "yes"})", "rescale_betas_zero_snr \"yes\" must be true"},
      {R"({"trained_betas": [0.1, 0.2]})", "trained_betas"},
      {"{not json", "not valid JSON"},
      {"[1, 2]", "must hold a JSON object"}};
  for (const auto& [content, expected] : cases) {
    SCOPED_TRACE(content);
    const std::string message = config_error(dir, content);
    EXPECT_NE(message.find(expected), std::string::npos) << message;
    EXPECT_EQ(message.rfind((dir.path() / "scheduler_config.json").string(), 0), 0u) << message;
  }
  EXPECT_THROW(sdxl::read_scheduler_config(dir.path() / "absent.json"), sdxl::SchedulerConfigError);
}
