// One LoRA training step of an SDXL-layout UNet as aclora-sdxl train runs it (fp32, LoRA on
// every Transformer2D linear, epsilon loss at uniform timesteps, backward, gradient clipping
// at 1, AdamW), timed over --steps steps after --warmup; prints seconds per step (median and
// mean) and the process's peak resident memory. bench_train_step_diffusers.py runs the same
// step with diffusers + PEFT for comparison (same LibTorch when both use Debian's).
//
//   bench_train_step --model DIR [--batch 4] [--size 64] [--rank 4] [--steps 20] [--warmup 3]
#include <sys/resource.h>
#include <torch/torch.h>

#include <aclora/adapters/train/network.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "sdxl/checkpoint.hpp"
#include "sdxl/scheduler.hpp"
#include "sdxl/training_step.hpp"

namespace {

struct Options {
  std::string model;
  int64_t batch = 4;
  int64_t size = 64;
  int64_t rank = 4;
  int steps = 20;
  int warmup = 3;
};

Options parse(int argc, char** argv) {
  Options options;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--model")
      options.model = value;
    else if (flag == "--batch")
      options.batch = std::stoll(value);
    else if (flag == "--size")
      options.size = std::stoll(value);
    else if (flag == "--rank")
      options.rank = std::stoll(value);
    else if (flag == "--steps")
      options.steps = std::stoi(value);
    else if (flag == "--warmup")
      options.warmup = std::stoi(value);
    else
      throw std::invalid_argument("unknown option " + flag);
  }
  if (options.model.empty())
    throw std::invalid_argument("--model DIR is required");
  return options;
}

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // kB on Linux
}

}  // namespace

int main(int argc, char** argv) try {
  const Options options = parse(argc, argv);
  torch::manual_seed(0);
  sdxl::SdxlModels models = sdxl::load_sdxl(options.model);
  models.vae = sdxl::AutoencoderKL(nullptr);  // the step needs only the UNet
  models.text_encoder = sdxl::ClipTextModel(nullptr);
  models.text_encoder_2 = sdxl::ClipTextModel(nullptr);
  aclora::train::LoraNetwork network;
  aclora::train::InjectOptions inject;
  inject.rank = options.rank;
  inject.alpha = static_cast<double>(options.rank);
  inject.naming = aclora::train::Naming::sdxl_unet();
  network.inject(*models.unet, aclora::train::Targets::sdxl_unet_linear(), inject);
  models.unet->train();
  std::vector<torch::Tensor> parameters = network.parameters();
  torch::optim::AdamW optimizer(parameters, torch::optim::AdamWOptions(1e-4).weight_decay(1e-2));

  const int64_t latent = options.size / 8;
  const sdxl::UNetConfig& config = models.unet->config();
  const sdxl::TrainBatch batch{
      torch::randn({options.batch, 4, latent, latent}),
      torch::randn({options.batch, 77, config.cross_attention_dim}),
      torch::randn({options.batch, config.pooled_dim()}),
      torch::tensor({static_cast<float>(options.size), static_cast<float>(options.size), 0.0f, 0.0f,
                     static_cast<float>(options.size), static_cast<float>(options.size)})
          .repeat({options.batch, 1})};
  const torch::Tensor abar =
      sdxl::alphas_cumprod_on(sdxl::NoiseSchedule{}.alphas_cumprod(), torch::kCPU);
  const sdxl::LossOptions loss_options;
  std::vector<double> seconds;
  for (int i = 0; i < options.warmup + options.steps; ++i) {
    const auto start = std::chrono::steady_clock::now();
    optimizer.zero_grad();
    const sdxl::StepDraws draws = sdxl::draw_step(batch, loss_options);
    const torch::Tensor loss = sdxl::diffusion_loss(models.unet, batch, draws, abar, loss_options);
    loss.backward();
    torch::nn::utils::clip_grad_norm_(parameters, 1.0);
    optimizer.step();
    network.refresh();
    if (i >= options.warmup)
      seconds.push_back(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::vector<double> sorted = seconds;
  std::sort(sorted.begin(), sorted.end());
  double mean = 0.0;
  for (const double s : seconds)
    mean += s / static_cast<double>(seconds.size());
  std::printf(
      "{\"program\":\"aclora\",\"modules\":%zu,\"batch\":%lld,\"size\":%lld,\"rank\":%lld,"
      "\"threads\":%d,\"median_seconds_per_step\":%.5f,\"mean_seconds_per_step\":%.5f,"
      "\"peak_rss_mb\":%.1f}\n",
      network.size(), static_cast<long long>(options.batch), static_cast<long long>(options.size),
      static_cast<long long>(options.rank), at::get_num_threads(), sorted[sorted.size() / 2], mean,
      peak_rss_mb());
  return 0;
} catch (const std::exception& error) {
  std::fprintf(stderr, "bench_train_step: %s\n", error.what());
  return 1;
}
