// AC-LoRA inside a LibTorch optimizer loop at SDXL size: 722 LoRA modules (every
// Transformer2D linear of the SDXL UNet, bench/common) at R = 64, trained by AdamW.
// Measures, on one device, in one process:
//   - one AdamW step over all factors (the LoRA part of a training step; the UNet's own
//     forward and backward come on top, so an epoch is longer and the share smaller still),
//   - one RESTART through aclora::train::RestartHook (Torch backend + policy reset),
//   - the RESTART's share of an epoch of --epoch_steps steps of that cost,
//   - policy reset alone, and a training-state save and load (seconds, MB on disk).
//
// Usage: bench_training_torch [--rank=64] [--device=cpu|cuda] [--steps=3] [--epoch_steps=1000]
//        [--state_dir=PATH] [--json_out=PATH]
#include <torch/cuda.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "aclora/adapters/train/hook.hpp"
#include "aclora/adapters/train/state.hpp"
#include "planted_lora.hpp"
#include "sdxl_shapes.hpp"

namespace {

struct Settings {
  std::int64_t rank = 64;
  std::string device = "cpu";
  int steps = 3;
  std::int64_t epoch_steps = 1000;
  std::string state_dir;
  std::string json_out;
};

Settings parse(int argc, char** argv) {
  Settings s;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const auto value = [&](const std::string& name) -> const char* {
      return arg.rfind(name + "=", 0) == 0 ? argv[i] + name.size() + 1 : nullptr;
    };
    if (const char* v = value("--rank"))
      s.rank = std::stoll(v);
    else if (const char* v = value("--device"))
      s.device = v;
    else if (const char* v = value("--steps"))
      s.steps = std::stoi(v);
    else if (const char* v = value("--epoch_steps"))
      s.epoch_steps = std::stoll(v);
    else if (const char* v = value("--state_dir"))
      s.state_dir = v;
    else if (const char* v = value("--json_out"))
      s.json_out = v;
    else
      throw std::invalid_argument("unknown argument " + arg + " (see the file's header)");
  }
  if (s.rank < 1 || s.steps < 1 || s.epoch_steps < 1)
    throw std::invalid_argument("--rank, --steps and --epoch_steps must be >= 1");
  return s;
}

// A layer with the geometry of an SDXL linear but no weight data to speak of: the benchmark
// needs the LoRAs, not the 2.6 G parameters of the UNet.
class ShapeOnlyLinear : public aclora::train::AdaptableLayer {
 public:
  ShapeOnlyLinear(std::int64_t in, std::int64_t out, const torch::Device& device)
      : geometry_{aclora::train::LayerKind::linear, in, out},
        weight_(torch::zeros({1}, torch::TensorOptions().device(device))) {}
  aclora::train::LayerGeometry geometry() const override { return geometry_; }
  const torch::Tensor& base_weight() const override { return weight_; }

 private:
  aclora::train::LayerGeometry geometry_;
  torch::Tensor weight_;
};

void synchronize(const torch::Device& device) {
  if (device.is_cuda())
    torch::cuda::synchronize();
}

template <class F>
double seconds(const torch::Device& device, F&& work) {
  synchronize(device);
  const auto start = std::chrono::steady_clock::now();
  work();
  synchronize(device);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::uintmax_t folder_bytes(const std::filesystem::path& folder) {
  std::uintmax_t total = 0;
  for (const auto& item : std::filesystem::recursive_directory_iterator(folder))
    if (item.is_regular_file())
      total += item.file_size();
  return total;
}

}  // namespace

int main(int argc, char** argv) try {
  const Settings settings = parse(argc, argv);
  const torch::Device device(settings.device == "cuda" ? torch::kCUDA : torch::kCPU);
  if (device.is_cuda() && !torch::cuda::is_available()) {
    std::printf("bench_training_torch: no CUDA device, nothing measured\n");
    return 0;
  }
  torch::NoGradGuard setup_no_grad;

  // 722 layers in a module tree, LoRAs injected as a trainer injects them.
  const auto families = aclora::workload::sdxl_unet_linears(false);
  torch::nn::Module root;
  for (const auto& family : families) {
    for (std::size_t i = 0; i < family.count; ++i) {
      std::string name = family.group + "_" + std::to_string(i);
      for (char& c : name)
        if (c == '.')
          c = '_';
      root.register_module(name, std::make_shared<ShapeOnlyLinear>(
                                     static_cast<std::int64_t>(family.in_features),
                                     static_cast<std::int64_t>(family.out_features), device));
    }
  }
  aclora::train::LoraNetwork network;
  aclora::train::InjectOptions inject;
  inject.rank = settings.rank;
  inject.naming = aclora::train::Naming::plain("lora_unet");
  network.inject(root, aclora::train::Targets::patterns({"*"}), inject);

  // Planted factors (8 components with 90 % of the energy, plus noise), as bench_restart_torch.
  const auto planted = aclora::workload::planted_lora(
      families, static_cast<std::size_t>(settings.rank),
      [](const aclora::workload::LinearFamily&) { return aclora::workload::PlantedSpectrum{}; },
      20240601);
  std::int64_t parameters = 0;
  for (std::size_t m = 0; m < network.size(); ++m) {
    auto& adapter = *network.modules()[m].adapter;
    const auto copy = [&](torch::Tensor& target, const aclora::workload::PlantedFactor& source) {
      target.copy_(torch::from_blob(const_cast<float*>(source.values.data()), target.sizes(),
                                    torch::kFloat32));
      parameters += target.numel();
    };
    copy(adapter.down, planted[m].down);
    copy(adapter.up, planted[m].up);
  }
  std::vector<torch::Tensor> factors = network.parameters();
  for (auto& factor : factors)
    factor.mutable_grad() = torch::randn_like(factor) * 1e-3;

  torch::optim::AdamW optimizer(factors, torch::optim::AdamWOptions(1e-4).weight_decay(1e-2));
  const double first_step = seconds(device, [&] { optimizer.step(); });  // allocates the moments
  double step_seconds = 0.0;
  for (int i = 0; i < settings.steps; ++i)
    step_seconds += seconds(device, [&] { optimizer.step(); });
  step_seconds /= settings.steps;

  aclora::train::HookOptions hook_options;
  hook_options.schedule = {100, 10};
  hook_options.restart.seed = 1;
  aclora::train::RestartHook hook(network, &optimizer, hook_options);
  double restart_seconds = 0.0;
  std::size_t kept = 0;
  seconds(device, [&] {
    const auto outcome = hook.end_epoch(0, 0.1);  // p = 0.9
    restart_seconds = outcome->seconds;
    kept = outcome->report.total_module_rank();
  });
  optimizer.step();  // moments exist again
  const double reset_seconds =
      seconds(device, [&] { aclora::train::reset_optimizer_state(optimizer, factors); });

  namespace fs = std::filesystem;
  const fs::path state_root = settings.state_dir.empty()
                                  ? fs::temp_directory_path() / "aclora_bench_training_state"
                                  : fs::path(settings.state_dir);
  fs::remove_all(state_root);
  fs::create_directories(state_root);
  const fs::path folder = state_root / "state";
  aclora::train::RunPosition position;
  const aclora::json::Value options = aclora::json::Object{};
  const double save_seconds = seconds(
      device, [&] { aclora::train::save_state(folder, network, optimizer, position, options); });
  const double state_mb = static_cast<double>(folder_bytes(folder)) / 1e6;
  const double load_seconds =
      seconds(device, [&] { aclora::train::load_state(folder, network, optimizer, options); });
  fs::remove_all(state_root);

  const double epoch_seconds = step_seconds * static_cast<double>(settings.epoch_steps);
  const double share = restart_seconds / epoch_seconds;
  std::printf(
      "AC-LoRA training loop, %s, SDXL UNet LoRA: %zu modules, R = %lld, %.1f M parameters\n",
      settings.device.c_str(), network.size(), static_cast<long long>(settings.rank),
      static_cast<double>(parameters) / 1e6);
  std::printf("  AdamW step over the factors      %10.4f s  (first step %.4f s)\n", step_seconds,
              first_step);
  std::printf("  RESTART + policy reset           %10.4f s  (p = 0.9, total rank %zu of %zu)\n",
              restart_seconds, kept, network.size() * static_cast<std::size_t>(settings.rank));
  std::printf("  share of an epoch of %lld steps  %10.4f %%  (steps of LoRA cost only)\n",
              static_cast<long long>(settings.epoch_steps), 100.0 * share);
  std::printf("  policy reset alone               %10.4f s\n", reset_seconds);
  std::printf("  state save                       %10.4f s  (%.1f MB)\n", save_seconds, state_mb);
  std::printf("  state load                       %10.4f s\n", load_seconds);
  if (!settings.json_out.empty()) {
    std::ofstream json(settings.json_out);
    json << "{\"device\": \"" << settings.device << "\", \"rank\": " << settings.rank
         << ", \"modules\": " << network.size() << ", \"parameters\": " << parameters
         << ", \"adamw_step_s\": " << step_seconds << ", \"restart_s\": " << restart_seconds
         << ", \"epoch_steps\": " << settings.epoch_steps << ", \"restart_share\": " << share
         << ", \"reset_s\": " << reset_seconds << ", \"state_save_s\": " << save_seconds
         << ", \"state_mb\": " << state_mb << ", \"state_load_s\": " << load_seconds << "}\n";
  }
  return 0;
} catch (const std::exception& error) {
  std::fprintf(stderr, "bench_training_torch: %s\n", error.what());
  return 1;
}
