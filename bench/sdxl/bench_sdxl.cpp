// SDXL whole-model timings with random weights: one UNet forward; per LoRA rank one training
// step as aclora-sdxl train runs it (fp32 LoRA factors on every Transformer2D linear, the base
// in --dtype, autocast to it, gradient checkpointing, AdamW step) and one AC-LoRA RESTART of
// those factors (its share of an epoch of --epoch-steps steps); and a full sampling run (text
// encoders, Euler steps with guidance, VAE decode). Prints a table and writes JSON.
//
//   bench_sdxl --out results.json [--device cuda] [--dtype bf16] [--size 1024]
//              [--steps 30] [--ranks 64,128] [--epoch-steps 1000]
//              [--config DIR (diffusers folder: small models)]
//              --tokenizer bpe_simple_vocab_16e6.txt.gz|DIR
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

// Set by CMake when LibTorch was built with CUDA (the allocator's peak statistics).
#ifdef ACLORA_HAVE_CUDA_ALLOCATOR_STATS
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <aclora/adapters/train/hook.hpp>
#include <aclora/adapters/train/network.hpp>
#include <sstream>

#include "sdxl/autocast.hpp"
#include "sdxl/lora.hpp"
#include "sdxl/pipeline.hpp"

namespace {

struct Options {
  std::string out = "bench_sdxl.json";
  std::string device = "cpu";
  std::string dtype = "fp32";
  int64_t size = 1024;
  int steps = 30;
  std::vector<int64_t> ranks{64};
  int64_t epoch_steps = 1000;
  std::optional<std::string> config;
  std::string tokenizer;
};

Options parse(int argc, char** argv) {
  Options options;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--out")
      options.out = value;
    else if (flag == "--device")
      options.device = value;
    else if (flag == "--dtype")
      options.dtype = value;
    else if (flag == "--size")
      options.size = std::stoll(value);
    else if (flag == "--steps")
      options.steps = std::stoi(value);
    else if (flag == "--rank" || flag == "--ranks") {
      options.ranks.clear();
      std::stringstream list(value);
      for (std::string item; std::getline(list, item, ',');)
        options.ranks.push_back(std::stoll(item));
    } else if (flag == "--epoch-steps")
      options.epoch_steps = std::stoll(value);
    else if (flag == "--config")
      options.config = value;
    else if (flag == "--tokenizer")
      options.tokenizer = value;
    else
      throw std::invalid_argument("unknown option " + flag);
  }
  if (options.tokenizer.empty())
    throw std::invalid_argument("--tokenizer is required");
  return options;
}

struct Measurement {
  double seconds = 0.0;
  double peak_gib = -1.0;  // -1: not measured (CPU)
};

void synchronize(const torch::Device& device) {
  if (device.is_cuda())
    torch::cuda::synchronize();
}

// Runs `work` once to warm up, then `repeats` times; returns the median time and the
// peak device memory of the timed runs.
Measurement measure(const torch::Device& device, int repeats, const std::function<void()>& work) {
  work();
  synchronize(device);
#ifdef ACLORA_HAVE_CUDA_ALLOCATOR_STATS
  if (device.is_cuda())
    c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
#endif
  std::vector<double> times;
  for (int i = 0; i < repeats; ++i) {
    const auto start = std::chrono::steady_clock::now();
    work();
    synchronize(device);
    times.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  Measurement result{times[times.size() / 2]};
#ifdef ACLORA_HAVE_CUDA_ALLOCATOR_STATS
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    const auto aggregate = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    result.peak_gib = static_cast<double>(stats.allocated_bytes[aggregate].peak) / (1 << 30);
  }
#endif
  return result;
}

}  // namespace

int main(int argc, char** argv) try {
  const Options options = parse(argc, argv);
  const torch::Device device(options.device == "cuda" ? torch::kCUDA : torch::kCPU);
  const torch::Dtype dtype = options.dtype == "bf16"   ? torch::kBFloat16
                             : options.dtype == "fp16" ? torch::kFloat16
                                                       : torch::kFloat32;
  torch::manual_seed(0);
  const sdxl::BuildOptions build{dtype, device, /*initialize=*/true};

  sdxl::UNetConfig unet_config = sdxl::UNetConfig::sdxl_base();
  sdxl::VaeConfig vae_config = sdxl::VaeConfig::sdxl_base();
  sdxl::ClipTextConfig clip_l = sdxl::ClipTextConfig::sdxl_clip_l();
  sdxl::ClipTextConfig clip_g = sdxl::ClipTextConfig::sdxl_clip_bigg();
  if (options.config) {
    const std::filesystem::path folder = *options.config;
    unet_config = sdxl::UNetConfig::from_json_file(folder / "unet" / "config.json");
    vae_config = sdxl::VaeConfig::from_json_file(folder / "vae" / "config.json");
    clip_l = sdxl::ClipTextConfig::from_json_file(folder / "text_encoder" / "config.json");
    clip_g = sdxl::ClipTextConfig::from_json_file(folder / "text_encoder_2" / "config.json");
  }
  sdxl::SdxlModels models;
  models.unet = sdxl::UNet(unet_config, build);
  models.vae = sdxl::AutoencoderKL(vae_config, build);
  models.text_encoder = sdxl::ClipTextModel(clip_l, build);
  models.text_encoder_2 = sdxl::ClipTextModel(clip_g, build);
  const int64_t factor = int64_t{1} << (vae_config.block_out_channels.size() - 1);
  const int64_t latent = options.size / factor;
  const auto tensor_options = torch::TensorOptions().dtype(dtype).device(device);

  // 1. UNet forward.
  const torch::Tensor sample =
      torch::randn({1, unet_config.in_channels, latent, latent}, tensor_options);
  const torch::Tensor timestep = torch::full({1}, 500.0, tensor_options);
  const torch::Tensor context =
      torch::randn({1, 77, unet_config.cross_attention_dim}, tensor_options);
  const sdxl::AddedConditions added{
      torch::randn({1, unet_config.pooled_dim()}, tensor_options),
      sdxl::sdxl_time_ids(options.size, options.size, 0, 0, options.size, options.size)
          .unsqueeze(0)
          .to(tensor_options)};
  models.unet->eval();
  const Measurement forward = measure(device, 3, [&] {
    torch::NoGradGuard no_grad;
    models.unet->forward(sample, timestep, context, added);
  });

  // 2. Per rank: a training step as aclora-sdxl train runs it, and one RESTART.
  struct RankResult {
    int64_t rank = 0;
    Measurement step;
    double restart_seconds = 0.0;
    double restart_share = 0.0;
  };
  std::vector<RankResult> rank_results;
  int64_t lora_modules = 0;
  const bool half = dtype != torch::kFloat32;
  for (const int64_t rank : options.ranks) {
    aclora::train::LoraNetwork network;
    aclora::train::InjectOptions inject;
    inject.rank = rank;
    inject.naming = aclora::train::Naming::sdxl_unet();
    network.inject(*models.unet, aclora::train::Targets::sdxl_unet_linear(), inject);
    lora_modules = static_cast<int64_t>(network.size());
    std::vector<torch::Tensor> lora_parameters = network.parameters();
    torch::optim::AdamW optimizer(lora_parameters,
                                  torch::optim::AdamWOptions(1e-4).weight_decay(1e-2));
    models.unet->train();
    models.unet->set_gradient_checkpointing(true);
    const torch::Tensor target = torch::randn_like(sample);
    RankResult result{rank};
    result.step = measure(device, 3, [&] {
      optimizer.zero_grad();
      torch::Tensor prediction;
      {
        std::optional<sdxl::AutocastScope> autocast;
        if (half)
          autocast.emplace(sdxl::AutocastState::on(device.is_cuda(), dtype));
        prediction = models.unet->forward(sample, timestep, context, added);
      }
      torch::mse_loss(prediction.to(torch::kFloat32), target.to(torch::kFloat32)).backward();
      torch::nn::utils::clip_grad_norm_(lora_parameters, 1.0);
      optimizer.step();
    });
    aclora::train::HookOptions hook_options;
    hook_options.schedule = {100, 10};
    aclora::train::RestartHook hook(network, &optimizer, hook_options);
    synchronize(device);
    result.restart_seconds = hook.end_epoch(0, 0.1)->seconds;
    result.restart_share =
        result.restart_seconds / (result.step.seconds * static_cast<double>(options.epoch_steps));
    rank_results.push_back(result);
    models.unet->set_gradient_checkpointing(false);
    models.unet->eval();
    network.remove();
  }

  // 3. Sampling: prompt encoding, Euler steps with guidance 5, VAE decode.
  sdxl::PipelineOptions pipeline_options;
  pipeline_options.tokenizer = options.tokenizer;
  std::shared_ptr<const sdxl::ClipTokenizer> tokenizer_1, tokenizer_2;
  if (std::filesystem::is_directory(options.tokenizer)) {
    tokenizer_1 = std::make_shared<const sdxl::ClipTokenizer>(sdxl::ClipTokenizer::from_folder(
        std::filesystem::path(options.tokenizer) / "tokenizer", sdxl::PadToken::kEndOfText));
    tokenizer_2 = std::make_shared<const sdxl::ClipTokenizer>(sdxl::ClipTokenizer::from_folder(
        std::filesystem::path(options.tokenizer) / "tokenizer_2", sdxl::PadToken::kExclamation));
  } else {
    tokenizer_1 = std::make_shared<const sdxl::ClipTokenizer>(
        sdxl::ClipTokenizer::from_bpe_gz(options.tokenizer, sdxl::PadToken::kEndOfText));
    tokenizer_2 = std::make_shared<const sdxl::ClipTokenizer>(
        sdxl::ClipTokenizer::from_bpe_gz(options.tokenizer, sdxl::PadToken::kExclamation));
  }
  sdxl::SdxlPipeline pipeline(models, tokenizer_1, tokenizer_2);
  sdxl::SampleOptions request;
  request.prompt = "a watercolor painting of a lighthouse at dawn";
  request.steps = options.steps;
  request.height = request.width = options.size;
  const Measurement sampling = measure(device, 1, [&] {
    const torch::Tensor latents = pipeline.sample_latents(request, pipeline.initial_noise(request));
    pipeline.decode(latents);
  });

  const auto parameters = sdxl::count_parameters(*models.unet);
  std::printf("SDXL %s %s, %lldx%lld, UNet %lld parameters, LoRA on %lld linears\n",
              options.device.c_str(), options.dtype.c_str(), static_cast<long long>(options.size),
              static_cast<long long>(options.size), static_cast<long long>(parameters),
              static_cast<long long>(lora_modules));
  std::printf("%-40s %10s %12s\n", "measurement", "seconds", "peak GiB");
  std::vector<std::pair<std::string, Measurement>> rows = {{"unet_forward", forward}};
  for (const RankResult& result : rank_results)
    rows.push_back({"train_step_rank" + std::to_string(result.rank), result.step});
  rows.push_back({"sample_" + std::to_string(options.steps) + "_steps_cfg5_with_decode", sampling});
  std::ofstream json(options.out);
  json << "{\n  \"device\": \"" << options.device << "\", \"dtype\": \"" << options.dtype
       << "\", \"size\": " << options.size << ", \"lora_modules\": " << lora_modules
       << ", \"unet_parameters\": " << parameters << ", \"epoch_steps\": " << options.epoch_steps;
  for (const auto& [name, value] : rows) {
    std::printf("%-40s %10.3f %12.2f\n", name.c_str(), value.seconds, value.peak_gib);
    json << ",\n  \"" << name << "\": {\"seconds\": " << value.seconds
         << ", \"peak_gib\": " << value.peak_gib << "}";
  }
  for (const RankResult& result : rank_results) {
    std::printf("restart rank %-27lld %10.3f   (%.4f %% of an epoch of %lld steps)\n",
                static_cast<long long>(result.rank), result.restart_seconds,
                100.0 * result.restart_share, static_cast<long long>(options.epoch_steps));
    json << ",\n  \"restart_rank" << result.rank << "\": {\"seconds\": " << result.restart_seconds
         << ", \"share_of_epoch\": " << result.restart_share << "}";
  }
  json << "\n}\n";
  return json ? 0 : 1;
} catch (const std::exception& error) {
  std::string message = error.what();
  if (const auto newline = message.find('\n'); newline != std::string::npos)
    message.resize(newline);
  std::fprintf(stderr, "bench_sdxl: %s\n", message.c_str());
  return 1;
}
