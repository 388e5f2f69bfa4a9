// The whole sampling pipeline against the reference 2-step run of the tiny model
// (diffusers StableDiffusionXLPipeline: "a photo of a cat", 64x64, guidance 5, zero
// negative conditioning), with and without a LoRA, and the scheduler against its tables.
#include <gtest/gtest.h>

#include <aclora/adapters/lora/open.hpp>

#include "reference_fixtures.hpp"
#include "sdxl/lora.hpp"
#include "sdxl/pipeline.hpp"

namespace {

using sdxl_test::reference_tensor;
using sdxl_test::relative_error;
using sdxl_test::sdxl_fixtures;

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
  EXPECT_LT(latent_error, 1e-3);
  const double image_error =
      relative_error(pipeline.decode(latents), reference_tensor("sample.decoded"));
  RecordProperty("decoded_relative_error", std::to_string(image_error));
  EXPECT_LT(image_error, 1e-3);
}

// The same run with the diffusers-format LoRA merged at scale 1 (UNet and both text
// encoders) matches the reference LoRA run, and differs from the run without it.
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
  EXPECT_LT(error, 1e-3);
  EXPECT_GT(relative_error(latents, reference_tensor("sample.final_latents")), 1e-3);
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
