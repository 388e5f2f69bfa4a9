// The Euler loop (epsilon, v and sample prediction), guidance and PNG output, checked with
// predictors whose answer is known.
#include <gtest/gtest.h>
#include <png.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <vector>

#include "sdxl/image.hpp"
#include "sdxl/sampler.hpp"

namespace {

// With eps = 0 every step keeps x: the result is the scaled initial noise.
TEST(EulerSample, ZeroNoisePredictionKeepsScaledNoise) {
  const auto plan = sdxl::euler_plan(sdxl::NoiseSchedule{}, 5);
  const torch::Tensor noise = torch::randn({1, 4, 3, 3});
  const auto result = sdxl::euler_sample(
      plan, noise, [](const torch::Tensor& x, float) { return torch::zeros_like(x); });
  EXPECT_TRUE(torch::allclose(result, noise * plan.init_noise_sigma));
}

// A predictor eps = c * model_input matches a scalar double-precision replay of the
// update x += eps (sigma_next - sigma), and it sees the plan's timesteps in order.
TEST(EulerSample, MatchesScalarReplayAndVisitsTimestepsInOrder) {
  const auto plan = sdxl::euler_plan(sdxl::NoiseSchedule{}, 4);
  const double c = 0.3;
  std::vector<float> seen;
  const torch::Tensor noise = torch::full({1, 1, 1, 1}, 0.7f);
  const auto result = sdxl::euler_sample(plan, noise, [&](const torch::Tensor& x, float t) {
    seen.push_back(t);
    return x * c;
  });
  double x = 0.7 * plan.init_noise_sigma;
  for (size_t i = 0; i < plan.timesteps.size(); ++i) {
    const double sigma = plan.sigmas[i];
    const double eps = c * x / std::sqrt(sigma * sigma + 1.0);
    x += eps * (plan.sigmas[i + 1] - sigma);
  }
  EXPECT_NEAR(result.item<float>(), x, 1e-5 * std::abs(x));
  EXPECT_EQ(seen, plan.timesteps);
}

// With a v-prediction plan, a model answering m = c * model_input (c = 0.05: c sigma < 1 for
// every sigma of the plan, so no step cancels) matches a scalar
// double-precision replay of diffusers' step: x0 = x / (sigma^2 + 1) - m sigma /
// sqrt(sigma^2 + 1), x += (x - x0) / sigma * (sigma_next - sigma). With a "sample" plan the
// output is x0 itself. fp32 against fp64 over 4 steps: within 1e-5 relative.
TEST(EulerSample, VPredictionAndSampleMatchScalarReplay) {
  for (const auto prediction :
       {sdxl::PredictionType::kVPrediction, sdxl::PredictionType::kSample}) {
    SCOPED_TRACE(static_cast<int>(prediction));
    sdxl::SchedulerConfig config;
    config.prediction = prediction;
    config.spacing = sdxl::TimestepSpacing::kTrailing;
    const auto plan = sdxl::euler_plan(config, 4);
    ASSERT_EQ(plan.prediction, prediction);
    const double c = 0.05;
    const torch::Tensor noise = torch::full({1, 1, 1, 1}, 0.7f);
    const auto result =
        sdxl::euler_sample(plan, noise, [&](const torch::Tensor& x, float) { return x * c; });
    double x = 0.7 * plan.init_noise_sigma;
    for (size_t i = 0; i < plan.timesteps.size(); ++i) {
      const double sigma = plan.sigmas[i];
      const double variance = sigma * sigma + 1.0;
      const double output = c * x / std::sqrt(variance);
      const double denoised = prediction == sdxl::PredictionType::kVPrediction
                                  ? x / variance - output * sigma / std::sqrt(variance)
                                  : output;
      x += (x - denoised) / sigma * (plan.sigmas[i + 1] - sigma);
    }
    EXPECT_NEAR(result.item<float>(), x, 1e-5 * std::abs(x));
  }
}

// Guidance g combines the halves as eps_u + g (eps_c - eps_u); g = 1 gives eps_c.
TEST(Guided, CombinesUnconditionalAndConditionalHalves) {
  auto pair = [](const torch::Tensor& x, float) {
    auto halves = x.chunk(2);
    return torch::cat({halves[0] * 1.0, halves[1] * 3.0});  // eps_u = x, eps_c = 3x
  };
  const torch::Tensor x = torch::ones({1, 1, 2, 2});
  EXPECT_TRUE(torch::allclose(sdxl::guided(pair, 5.0)(x, 1.0f), x * 11.0));
  EXPECT_TRUE(torch::allclose(sdxl::guided(pair, 1.0)(x, 1.0f), x * 3.0));
}

// [-1, 1] maps to 0..255 with rounding; a PNG written then read back has the same pixels,
// and a failed write leaves no file behind.
TEST(Png, WritesReadableImageAndNothingOnFailure) {
  const torch::Tensor image = torch::linspace(-1, 1, 3 * 4 * 5).view({3, 4, 5});
  const torch::Tensor rgb = sdxl::to_rgb8(image);
  ASSERT_EQ(rgb.sizes(), (std::vector<int64_t>{4, 5, 3}));
  EXPECT_EQ(rgb[0][0][0].item<int>(), 0);
  EXPECT_EQ(rgb[3][4][2].item<int>(), 255);

  const auto path = std::filesystem::temp_directory_path() / "aclora_sdxl_test.png";
  sdxl::write_png(path, rgb);
  png_image read{};
  read.version = PNG_IMAGE_VERSION;
  ASSERT_TRUE(png_image_begin_read_from_file(&read, path.c_str()));
  read.format = PNG_FORMAT_RGB;
  std::vector<std::uint8_t> pixels(PNG_IMAGE_SIZE(read));
  ASSERT_TRUE(png_image_finish_read(&read, nullptr, pixels.data(), 0, nullptr));
  EXPECT_EQ(read.width, 5u);
  EXPECT_EQ(read.height, 4u);
  EXPECT_EQ(0, std::memcmp(pixels.data(), rgb.data_ptr<std::uint8_t>(), pixels.size()));
  std::filesystem::remove(path);

  const auto missing = std::filesystem::temp_directory_path() / "no_such_dir_aclora" / "x.png";
  EXPECT_THROW(sdxl::write_png(missing, rgb), std::runtime_error);
  EXPECT_FALSE(std::filesystem::exists(missing));
}

}  // namespace
