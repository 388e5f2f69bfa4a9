// The whole sampling pipeline against the reference 2-step run of the tiny model
// (diffusers StableDiffusionXLPipeline: "a photo of a cat", 64x64, guidance 5, zero
// negative conditioning), with and without a LoRA, with v-prediction scheduler configs
// (diffusers runs recorded by make_scheduler_fixtures.py), seeded noise, and the scheduler
// against its tables.
#include <gtest/gtest.h>

#include <aclora/adapters/lora/open.hpp>

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <string>

#include "reference_fixtures.hpp"
#include "sdxl/lora.hpp"
#include "sdxl/pipeline.hpp"

namespace {

using sdxl_test::reference_tensor;
using sdxl_test::relative_error;
using sdxl_test::sdxl_fixtures;

// Final latents of the 2-step reference runs agree within this relative error (the fixture
// README measured 1e-5 between thread counts; other CPUs sum in other orders).
constexpr double kSampleTolerance = 1e-3;

// A tensor of scheduler_reference.safetensors (make_scheduler_fixtures.py).
torch::Tensor scheduler_reference(const std::string& name) {
  static const auto file =
      aclora::safetensors::Reader::open(sdxl_fixtures() / "scheduler_reference.safetensors");
  std::vector<float> values = file.to_f32(name);
  return torch::tensor(values).reshape(file.tensor(name).shape);
}

// The tiny diffusers folder with another scheduler config: every part a link to tiny-sdxl,
// scheduler/ a link to tests/fixtures/sdxl/schedulers/<name>. Removed at the end.
class FolderWithScheduler {
 public:
  explicit FolderWithScheduler(const std::string& name)
      : path_(std::filesystem::temp_directory_path() /
              ("aclora_sched_model_" + name + "_" + std::to_string(::getpid()))) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
    for (const auto& entry : std::filesystem::directory_iterator(sdxl_fixtures() / "tiny-sdxl"))
      if (entry.path().filename() != "scheduler")
        std::filesystem::create_symlink(entry.path(), path_ / entry.path().filename());
    std::filesystem::create_directory_symlink(sdxl_fixtures() / "schedulers" / name,
                                              path_ / "scheduler");
  }
  ~FolderWithScheduler() { std::filesystem::remove_all(path_); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

sdxl::SampleOptions reference_request() {
  sdxl::SampleOptions request;
  request.prompt = "a photo of a cat";
  request.steps = 2;
  request.guidance = 5.0;
  request.height = request.width = 64;
  return request;
}

// Timesteps and sigmas for 2, 30 and 50 steps equal the reference scheduler's.
TEST(Pipeline, EulerPlansMatchReferenceScheduler) {
  for (int steps : {2, 30, 50}) {
    const auto plan = sdxl::euler_plan(sdxl::NoiseSchedule{}, steps);
    const std::string prefix = "scheduler." + std::to_string(steps);
    EXPECT_TRUE(
        torch::equal(torch::tensor(plan.timesteps), reference_tensor(prefix + ".timesteps")))
        << steps;
    EXPECT_LT(relative_error(torch::tensor(plan.sigmas), reference_tensor(prefix + ".sigmas")),
              1e-6)
        << steps;
  }
  EXPECT_LT(relative_error(torch::tensor(sdxl::NoiseSchedule{}.alphas_cumprod()),
                           reference_tensor("scheduler.alphas_cumprod")),
            1e-6);
}

// The 2-step guided run from the reference initial noise: final latents within 1e-3
// relative, decoded image within 1e-3.
TEST(Pipeline, TwoStepGuidedSampleMatchesReference) {
  auto pipeline = sdxl::SdxlPipeline::load(sdxl_fixtures() / "tiny-sdxl", {});
  const auto latents =
      pipeline.sample_latents(reference_request(), reference_tensor("sample.initial_noise"));
  const double latent_error = relative_error(latents, reference_tensor("sample.final_latents"));
  RecordProperty("final_latents_relative_error", std::to_string(latent_error));
  EXPECT_LT(latent_error, kSampleTolerance);
  const double image_error =
      relative_error(pipeline.decode(latents), reference_tensor("sample.decoded"));
  RecordProperty("decoded_relative_error", std::to_string(image_error));
  EXPECT_LT(image_error, 1e-3);
}

// The same run with the diffusers-format LoRA merged at scale 1 (UNet and both text
// encoders) matches the reference LoRA run, and differs from the run without it by more than
// 100 times that match tolerance.
TEST(Pipeline, TwoStepSampleWithLoraMatchesReference) {
  auto pipeline = sdxl::SdxlPipeline::load(sdxl_fixtures() / "tiny-sdxl", {});
  const auto lora =
      aclora::lora::open_lora(sdxl_fixtures().parent_path() / "lora" / "diffusers.safetensors");
  const auto& models = pipeline.models();
  const auto applied = sdxl::apply_lora(
      lora, {models.unet, models.text_encoder, models.text_encoder_2}, 1.0, sdxl::LoraMode::merge);
  EXPECT_EQ(applied.applied, lora.modules.size());
  EXPECT_TRUE(applied.unmatched.empty());
  const auto latents =
      pipeline.sample_latents(reference_request(), reference_tensor("sample.initial_noise"));
  const double error = relative_error(latents, reference_tensor("sample_lora.final_latents"));
  RecordProperty("lora_final_latents_relative_error", std::to_string(error));
  EXPECT_LT(error, kSampleTolerance);
  // The LoRA must move the result far beyond the match tolerance: the two references differ
  // by 0.33 (relative to the largest latent), so 100 times the tolerance is a real change.
  EXPECT_GT(relative_error(latents, reference_tensor("sample.final_latents")),
            100 * kSampleTolerance);
}

// A folder whose scheduler config asks for v-prediction is sampled with it: the guided
// 2-step run matches diffusers' run of the same folder (EulerDiscreteScheduler, v_prediction,
// leading spacing), and differs from the epsilon run by far more than the tolerance.
TEST(Pipeline, VPredictionFolderMatchesDiffusers) {
  const FolderWithScheduler folder("vpred_leading");
  auto pipeline = sdxl::SdxlPipeline::load(folder.path(), {});
  ASSERT_EQ(pipeline.scheduler().prediction, sdxl::PredictionType::kVPrediction);
  const auto latents =
      pipeline.sample_latents(reference_request(), reference_tensor("sample.initial_noise"));
  const double error =
      relative_error(latents, scheduler_reference("vpred_leading.sample.final_latents"));
  RecordProperty("vpred_final_latents_relative_error", std::to_string(error));
  EXPECT_LT(error, kSampleTolerance);
  EXPECT_GT(relative_error(latents, reference_tensor("sample.final_latents")),
            100 * kSampleTolerance);
}

// v-prediction with trailing spacing and zero terminal SNR (the first sigma is 4096): the
// guided 3-step run matches diffusers'. The first step subtracts numbers near 4096 |noise| to
// leave about 3.5 |noise|, which amplifies fp32 rounding differences of the UNet by about
// 4096 / 3.5; the tolerance is the 2-step one.
TEST(Pipeline, ZeroTerminalSnrVPredictionMatchesDiffusers) {
  sdxl::PipelineOptions options;
  options.scheduler = sdxl::read_scheduler_config(sdxl_fixtures() / "schedulers" /
                                                  "vpred_trailing_zsnr" / "scheduler_config.json");
  auto pipeline = sdxl::SdxlPipeline::load(sdxl_fixtures() / "tiny-sdxl", options);
  auto request = reference_request();
  request.steps = 3;
  const auto latents = pipeline.sample_latents(request, reference_tensor("sample.initial_noise"));
  const double error =
      relative_error(latents, scheduler_reference("vpred_trailing_zsnr.sample.final_latents"));
  RecordProperty("zsnr_final_latents_relative_error", std::to_string(error));
  EXPECT_LT(error, kSampleTolerance);
}

// Seeds past 2^53 and up to 2^64 - 1 give torch's CPU noise for that seed
// (torch.Generator().manual_seed(seed), recorded): no seed goes through a double. The same
// generator state gives the same uniforms; the Box-Muller transform's log / cos kernels
// round differently by instruction set (AVX-512 recorded; default and AVX2 here), by a few
// fp32 ulps of values below 5: 1e-5 absolute. The seed one below, 2^53, gives other noise.
TEST(Pipeline, LargeSeedsGiveTorchNoise) {
  auto pipeline = sdxl::SdxlPipeline::load(sdxl_fixtures() / "tiny-sdxl", {});
  auto request = reference_request();
  request.height = request.width = 16;  // latents 8 x 8 (the tiny VAE halves the size)
  const auto difference = [&](std::uint64_t seed, const std::string& reference) {
    request.seed = seed;
    return (pipeline.initial_noise(request) - scheduler_reference(reference))
        .abs()
        .max()
        .item<double>();
  };
  for (const std::uint64_t seed : {9007199254740993ull, 18446744073709551615ull})
    EXPECT_LT(difference(seed, "noise." + std::to_string(seed)), 1e-5) << seed;
  EXPECT_GT(difference(9007199254740992ull, "noise.9007199254740993"), 0.5);
}

// Run-time adapters give the same result as merging the LoRA into the weights.
TEST(Pipeline, RuntimeLoraEqualsMergedLora) {
  const auto lora =
      aclora::lora::open_lora(sdxl_fixtures().parent_path() / "lora" / "kohya.safetensors");
  auto merged = sdxl::SdxlPipeline::load(sdxl_fixtures() / "tiny-sdxl", {});
  auto runtime = sdxl::SdxlPipeline::load(sdxl_fixtures() / "tiny-sdxl", {});
  for (auto* pipeline : {&merged, &runtime}) {
    const auto& models = pipeline->models();
    sdxl::apply_lora(lora, {models.unet, models.text_encoder, models.text_encoder_2}, 0.8,
                     pipeline == &merged ? sdxl::LoraMode::merge : sdxl::LoraMode::runtime);
  }
  const auto noise = reference_tensor("sample.initial_noise");
  const auto a = merged.sample_latents(reference_request(), noise);
  const auto b = runtime.sample_latents(reference_request(), noise);
  EXPECT_LT(relative_error(b, a), 1e-4);
}

// Same seed, same noise; another seed, other noise; sizes must fit the VAE's factor.
TEST(Pipeline, SeededInitialNoise) {
  auto pipeline = sdxl::SdxlPipeline::load(sdxl_fixtures() / "tiny-sdxl", {});
  auto request = reference_request();
  request.seed = 3;
  const auto first = pipeline.initial_noise(request);
  EXPECT_TRUE(torch::equal(first, pipeline.initial_noise(request)));
  request.seed = 4;
  EXPECT_FALSE(torch::equal(first, pipeline.initial_noise(request)));
  request.width = 63;
  EXPECT_THROW(pipeline.initial_noise(request), std::invalid_argument);
}

}  // namespace
