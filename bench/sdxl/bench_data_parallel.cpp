// Data-parallel LoRA training steps of an SDXL-layout UNet, one process per device under
// torchrun (or one process alone): each process runs the step of aclora-sdxl train on its own
// batch (LoRA on every Transformer2D linear, epsilon loss, backward, gradient sum over the
// processes, overlapped with the backward, clipping, AdamW), then one RESTART with the factor
// check that follows it in a multi-process run. Rank 0 prints one JSON line: seconds per step
// (median), the part of it spent in the gradient sum after the backward (communication not
// hidden by the overlap, and waiting for the slowest process), samples per second over all
// processes, the buckets the backward started, the RESTART's and the check's seconds (and,
// for comparison, a broadcast of all factors from rank 0), peak device memory.
//
//   [torchrun --no-python --nproc-per-node N] bench_data_parallel
//       (--model DIR | --config DIR | --config sdxl) [--device cpu|cuda] [--dtype fp32|bf16]
//       [--batch 1] [--size 1024] [--rank 64] [--steps 10] [--warmup 2]
//       [--gradient-checkpointing 0|1]
//
// --config builds random weights from a diffusers folder's unet/config.json ("sdxl": the
// SDXL base UNet); --model loads a checkpoint. The batch is per process.
#include <torch/torch.h>

#include <aclora/adapters/train/distributed/factors.hpp>
#include <aclora/adapters/train/distributed/gradients.hpp>
#include <aclora/adapters/train/hook.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef ACLORA_HAVE_CUDA_ALLOCATOR_STATS
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include "sdxl/autocast.hpp"
#include "sdxl/checkpoint.hpp"
#include "sdxl/scheduler.hpp"
#include "sdxl/training_step.hpp"

namespace {

namespace distributed = aclora::train::distributed;

struct Options {
  std::string model;
  std::string config;
  std::string device = "cpu";
  std::string dtype = "fp32";
  int64_t batch = 1;
  int64_t size = 1024;
  int64_t rank = 64;
  int steps = 10;
  int warmup = 2;
  bool gradient_checkpointing = true;
};

Options parse(int argc, char** argv) {
  Options options;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--model")
      options.model = value;
    else if (flag == "--config")
      options.config = value;
    else if (flag == "--device")
      options.device = value;
    else if (flag == "--dtype")
      options.dtype = value;
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
    else if (flag == "--gradient-checkpointing")
      options.gradient_checkpointing = value != "0";
    else
      throw std::invalid_argument("unknown option " + flag);
  }
  if (options.model.empty() == options.config.empty())
    throw std::invalid_argument("give --model DIR or --config DIR|sdxl");
  if (options.dtype != "fp32" && options.dtype != "bf16")
    throw std::invalid_argument("--dtype must be fp32 or bf16");
  return options;
}

void synchronize(const torch::Device& device) {
  if (device.is_cuda())
    torch::cuda::synchronize();
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

}  // namespace

int main(int argc, char** argv) try {
  const Options options = parse(argc, argv);
  const std::optional<distributed::Launch> launch = distributed::Launch::from_environment();
  const torch::Device device =
      options.device == "cuda"
          ? torch::Device(torch::kCUDA,
                          static_cast<c10::DeviceIndex>(launch ? launch->local_rank : 0))
          : torch::Device(options.device);
  if (device.is_cuda())
    torch::cuda::synchronize(device.index());  // creates the context on this process's GPU
  std::optional<distributed::ProcessGroup> group;
  if (launch)
    group.emplace(*launch, device, std::chrono::minutes(10));
  const int world_size = launch ? launch->world_size : 1;
  const bool half = options.dtype == "bf16";
  const torch::Dtype dtype = half ? torch::kBFloat16 : torch::kFloat32;

  torch::manual_seed(0);  // the same weights and factors in every process
  sdxl::UNet unet{nullptr};
  if (!options.model.empty()) {
    sdxl::LoadOptions load;
    load.dtype = dtype;
    load.device = device;
    unet = sdxl::load_sdxl(options.model, load).unet;
  } else {
    const sdxl::UNetConfig config =
        options.config == "sdxl"
            ? sdxl::UNetConfig::sdxl_base()
            : sdxl::UNetConfig::from_json_file(std::filesystem::path(options.config) / "unet" /
                                               "config.json");
    unet = sdxl::UNet(config, sdxl::BuildOptions{dtype, device, /*initialize=*/true});
  }
  aclora::train::LoraNetwork network;
  aclora::train::InjectOptions inject;
  inject.rank = options.rank;
  inject.naming = aclora::train::Naming::sdxl_unet();
  network.inject(*unet, aclora::train::Targets::sdxl_unet_linear(), inject);
  unet->train();
  unet->set_gradient_checkpointing(options.gradient_checkpointing);
  std::vector<torch::Tensor> parameters = network.parameters();
  torch::optim::AdamW optimizer(parameters, torch::optim::AdamWOptions(1e-4).weight_decay(1e-2));
  std::optional<distributed::GradientSum> gradient_sum;
  if (group)
    gradient_sum.emplace(parameters, *group);

  const sdxl::UNetConfig& config = unet->config();
  const int64_t latent = options.size / 8;
  const auto on = torch::TensorOptions().dtype(dtype).device(device);
  torch::manual_seed(1 + (launch ? launch->rank : 0));  // each process its own batch
  const sdxl::TrainBatch batch{
      torch::randn({options.batch, 4, latent, latent}, on.dtype(torch::kFloat32)),
      torch::randn({options.batch, 77, config.cross_attention_dim}, on),
      torch::randn({options.batch, config.pooled_dim()}, on),
      torch::tensor({static_cast<float>(options.size), static_cast<float>(options.size), 0.0f, 0.0f,
                     static_cast<float>(options.size), static_cast<float>(options.size)})
          .repeat({options.batch, 1})
          .to(on)};
  const torch::Tensor abar =
      sdxl::alphas_cumprod_on(sdxl::NoiseSchedule{}.alphas_cumprod(), device);
  const sdxl::LossOptions loss_options;

  std::vector<double> step_seconds, sum_seconds;
  for (int i = 0; i < options.warmup + options.steps; ++i) {
    synchronize(device);
    const auto start = std::chrono::steady_clock::now();
    optimizer.zero_grad();
    const sdxl::StepDraws draws = sdxl::draw_step(batch, loss_options);
    torch::Tensor loss;
    {
      std::optional<sdxl::AutocastScope> autocast;
      if (half)
        autocast.emplace(sdxl::AutocastState::on(device.is_cuda(), dtype));
      loss = sdxl::diffusion_loss(unet, batch, draws, abar, loss_options);
    }
    if (gradient_sum)
      gradient_sum->overlap_next_backward(i);  // bucket sums start during the backward
    (loss / static_cast<double>(world_size)).backward();
    double summing = 0.0;
    if (gradient_sum) {
      const double loss_value = loss.item<double>();  // waits for the backward
      const auto sum_start = std::chrono::steady_clock::now();
      gradient_sum->sum({loss_value}, i);
      synchronize(device);
      summing = seconds_since(sum_start);
    }
    torch::nn::utils::clip_grad_norm_(parameters, 1.0);
    optimizer.step();
    network.refresh();
    synchronize(device);
    if (i >= options.warmup) {
      step_seconds.push_back(seconds_since(start));
      sum_seconds.push_back(summing);
    }
  }
#ifdef ACLORA_HAVE_CUDA_ALLOCATOR_STATS
  double peak_gib = -1.0;
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    const auto aggregate = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    peak_gib = static_cast<double>(stats.allocated_bytes[aggregate].peak) / (1 << 30);
  }
#else
  const double peak_gib = -1.0;
#endif

  // One RESTART (as after an epoch), then the check that every process holds the same factors.
  aclora::train::HookOptions hook_options;
  hook_options.schedule = {100, 10};
  aclora::train::RestartHook hook(network, &optimizer, hook_options);
  synchronize(device);
  const double restart_seconds = hook.end_epoch(0, 0.1)->seconds;
  double check_seconds = 0.0, broadcast_seconds = 0.0;
  bool identical = true;
  if (group) {
    const auto start = std::chrono::steady_clock::now();
    identical = distributed::agree_on_factors(network, *group, "after the benchmark's RESTART");
    synchronize(device);
    check_seconds = seconds_since(start);
    // The alternative design: the RESTART on rank 0 only, its factors broadcast to all.
    std::vector<torch::Tensor> factors;
    for (const torch::Tensor& factor : parameters)
      factors.push_back(factor.detach());
    const auto broadcast_start = std::chrono::steady_clock::now();
    group->broadcast(factors, 0, "the benchmark's factor broadcast");
    synchronize(device);
    broadcast_seconds = seconds_since(broadcast_start);
  }

  if (!launch || launch->writes_files()) {
    const double step = median(step_seconds);
    int64_t lora_parameters = 0;
    for (const torch::Tensor& factor : parameters)
      lora_parameters += factor.numel();
    std::printf(
        "{\"program\":\"bench_data_parallel\",\"device\":\"%s\",\"dtype\":\"%s\","
        "\"processes\":%d,\"batch_per_process\":%lld,\"size\":%lld,\"rank\":%lld,"
        "\"modules\":%zu,\"lora_parameters\":%lld,\"threads\":%d,"
        "\"median_seconds_per_step\":%.5f,\"median_gradient_sum_seconds\":%.5f,"
        "\"gradient_sum_share\":%.4f,\"samples_per_second\":%.3f,\"restart_seconds\":%.4f,"
        "\"factor_check_seconds\":%.4f,\"factor_broadcast_seconds\":%.4f,"
        "\"factors_identical\":%s,\"buckets\":%zu,"
        "\"buckets_started_in_backward\":%zu,\"peak_gib\":%.2f}\n",
        device.is_cuda() ? "cuda" : "cpu", options.dtype.c_str(), world_size,
        static_cast<long long>(options.batch), static_cast<long long>(options.size),
        static_cast<long long>(options.rank), network.size(),
        static_cast<long long>(lora_parameters), at::get_num_threads(), step, median(sum_seconds),
        median(sum_seconds) / step, static_cast<double>(world_size * options.batch) / step,
        restart_seconds, check_seconds, broadcast_seconds, identical ? "true" : "false",
        gradient_sum ? gradient_sum->bucket_count() : std::size_t{0},
        gradient_sum ? gradient_sum->overlapped_buckets() : std::size_t{0}, peak_gib);
  }
  return 0;
} catch (const std::exception& error) {
  std::string message = error.what();
  if (const auto newline = message.find('\n'); newline != std::string::npos)
    message.resize(newline);
  std::fprintf(stderr, "bench_data_parallel: %s\n", message.c_str());
  return 1;
}
