// Whole-model RESTART of the SDXL UNet LoRA with aclora's Torch backend, against what a
// PyTorch trainer runs instead: torch::linalg_svd per matrix, and linalg_svd on stacks of
// same-shape matrices. Prints seconds per RESTART, effective GB/s (one read + one write of
// every factor), its share of the measured copy bandwidth, and the speed-up over each peer.
//
// Usage: bench_restart_torch [--ranks=16,64,128] [--attention_only] [--devices=cpu,cuda]
//        [--threads=2] [--repeats=2] [--per_matrix_stride=S] [--peers=per_matrix,stacked]
//        [--precision=automatic|fp64|fp32|tf32] [--route=kernels|tensor_ops]
//        [--json_out=PATH]
// --per_matrix_stride=S times the per-matrix peer on every S-th module only and scales the
// time by (all parameters / timed parameters); the default is 1 (all) up to r = 64 on
// the CPU and 4 above. The output says when a peer time is scaled. --peers=none skips the
// peers. --precision sets TorchBackend::Options::precision; --route=tensor_ops sends CPU tensors
// through the batched tensor route that other devices take (Options::cpu_kernels = false).
// The aclora time is the median of the repeats, each peer's the best.
#include <torch/cuda.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "aclora/aclora.hpp"
#include "aclora/backends/torch.hpp"
#include "planted_lora.hpp"
#include "sdxl_shapes.hpp"

namespace {

using Module = aclora::Module<at::Tensor>;
constexpr double kThreshold = 0.9;  // energy threshold p of every RESTART here

struct Settings {
  std::vector<std::int64_t> ranks{16, 64, 128};
  bool attention_only = false;
  std::vector<std::string> devices{"cpu", "cuda"};
  int threads = 2;
  int repeats = 2;
  std::int64_t per_matrix_stride = 0;  // 0: automatic
  bool per_matrix_peer = true;
  bool stacked_peer = true;
  aclora::Precision precision = aclora::Precision::automatic;
  bool cpu_kernels = true;
  std::string json_out;
};

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> parts;
  std::stringstream stream(text);
  for (std::string part; std::getline(stream, part, ',');)
    if (!part.empty())
      parts.push_back(part);
  return parts;
}

Settings parse(int argc, char** argv) {
  Settings s;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const std::string& name) -> const char* {
      return arg.rfind(name + "=", 0) == 0 ? argv[i] + name.size() + 1 : nullptr;
    };
    if (const char* v = value("--ranks")) {
      s.ranks.clear();
      for (const auto& r : split(v))
        s.ranks.push_back(std::stoll(r));
    } else if (arg == "--attention_only") {
      s.attention_only = true;
    } else if (const char* v = value("--devices")) {
      s.devices = split(v);
    } else if (const char* v = value("--threads")) {
      s.threads = std::stoi(v);
    } else if (const char* v = value("--repeats")) {
      s.repeats = std::max(1, std::stoi(v));
    } else if (const char* v = value("--per_matrix_stride")) {
      s.per_matrix_stride = std::max<std::int64_t>(1, std::stoll(v));
    } else if (const char* v = value("--peers")) {
      const auto peers = split(v);
      auto has = [&](const char* name) {
        return std::find(peers.begin(), peers.end(), name) != peers.end();
      };
      s.per_matrix_peer = has("per_matrix");
      s.stacked_peer = has("stacked");
    } else if (const char* v = value("--precision")) {
      const std::string name = v;
      s.precision = name == "fp64"   ? aclora::Precision::fp64
                    : name == "fp32" ? aclora::Precision::fp32
                    : name == "tf32" ? aclora::Precision::tf32
                                     : aclora::Precision::automatic;
      if (name != aclora::precision_name(s.precision)) {
        std::fprintf(stderr, "unknown precision %s (automatic, fp64, fp32, tf32)\n", v);
        std::exit(2);
      }
    } else if (const char* v = value("--route")) {
      const std::string name = v;
      if (name != "kernels" && name != "tensor_ops") {
        std::fprintf(stderr, "unknown route %s (kernels, tensor_ops)\n", v);
        std::exit(2);
      }
      s.cpu_kernels = name == "kernels";
    } else if (const char* v = value("--json_out")) {
      s.json_out = v;
    } else {
      std::fprintf(stderr, "unknown argument %s (see the comment at the top of the source)\n",
                   arg.c_str());
      std::exit(2);
    }
  }
  return s;
}

void synchronize(const at::Device& device) {
  if (device.is_cuda())
    ::torch::cuda::synchronize();
}

template <class F>
double seconds(const at::Device& device, F&& f) {
  synchronize(device);
  const auto start = std::chrono::steady_clock::now();
  f();
  synchronize(device);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// The LoRA factors of the workload (bench/common/planted_lora.hpp: 8 planted components
// holding 90 % of each factor's energy, decay 0.8, plus Gaussian noise; fixed seed).
std::vector<Module> make_model(const std::vector<aclora::workload::LinearFamily>& families,
                               std::int64_t rank, const at::Device& device, unsigned threads) {
  const auto planted = aclora::workload::planted_lora(
      families, static_cast<std::size_t>(rank),
      [](const aclora::workload::LinearFamily&) { return aclora::workload::PlantedSpectrum{}; },
      20240601, threads);
  auto tensor = [&](const aclora::workload::PlantedFactor& factor) {
    return at::from_blob(
               const_cast<float*>(factor.values.data()),
               {static_cast<std::int64_t>(factor.rows), static_cast<std::int64_t>(factor.cols)},
               at::kFloat)
        .to(device, /*non_blocking=*/false, /*copy=*/true);
  };
  std::vector<Module> model;
  for (const auto& module : planted)
    model.push_back(Module::lora(module.name, tensor(module.down), tensor(module.up)));
  return model;
}

std::int64_t parameter_count(const std::vector<Module>& model) {
  std::int64_t total = 0;
  for (const auto& module : model)
    for (const auto& layer : module.layers)
      total += layer.matrix.numel();
  return total;
}

// Signal count of a singular-value vector (host), as the core's rule.
std::size_t count_of(const at::Tensor& singular_values_host) {
  std::vector<double> values(singular_values_host.numel());
  const at::Tensor d = singular_values_host.to(at::kDouble).contiguous();
  std::copy(d.data_ptr<double>(), d.data_ptr<double>() + d.numel(), values.begin());
  return aclora::signal_count(values, kThreshold);
}

// Peer 1: what a Python trainer does per module: linalg_svd of each factor, K from the
// energies (host), truncation, residual std, Gaussian noise, copy_ back.
void per_matrix_svd(const std::vector<Module>& model, std::int64_t stride) {
  ::torch::NoGradGuard no_grad;
  for (std::size_t m = 0; m < model.size(); m += static_cast<std::size_t>(stride)) {
    const Module& module = model[m];
    std::vector<std::tuple<at::Tensor, at::Tensor, at::Tensor>> svds;
    std::size_t kept = 1;
    for (const auto& layer : module.layers) {
      const at::Tensor matrix = aclora::backends::libtorch::rank_major(layer.matrix, layer.axis);
      svds.push_back(at::linalg_svd(matrix, false));
      kept = std::max(kept, count_of(std::get<1>(svds.back()).cpu()));
    }
    for (std::size_t l = 0; l < module.layers.size(); ++l) {
      const auto& [u, s, vh] = svds[l];
      const auto k = std::min<std::int64_t>(static_cast<std::int64_t>(kept), s.size(0));
      const at::Tensor truncated =
          at::matmul(u.narrow(1, 0, k) * s.narrow(0, 0, k), vh.narrow(0, 0, k));
      const at::Tensor matrix =
          aclora::backends::libtorch::rank_major(module.layers[l].matrix, module.layers[l].axis);
      const at::Tensor sigma = (matrix - truncated).std(false);
      matrix.copy_(truncated + at::randn_like(truncated) * sigma);
    }
  }
}

// Peer 2: linalg_svd on stacks of same-shape factors (one call per shape group), K per
// module on the host, then batched truncation, residual std and noise per group.
void stacked_svd(const std::vector<Module>& model) {
  ::torch::NoGradGuard no_grad;
  using aclora::backends::libtorch::GroupKey;
  std::map<GroupKey, std::vector<std::pair<std::size_t, std::size_t>>> groups;
  for (std::size_t m = 0; m < model.size(); ++m)
    for (std::size_t l = 0; l < model[m].layers.size(); ++l)
      groups[GroupKey::of(model[m].layers[l].matrix, model[m].layers[l].axis)].push_back({m, l});
  struct Decomposed {
    at::Tensor stacked, u, s, vh;
  };
  std::map<GroupKey, Decomposed> decomposed;
  std::vector<std::vector<std::size_t>> counts(model.size());
  for (auto& [key, members] : groups) {
    std::vector<at::Tensor> matrices;
    for (auto [m, l] : members)
      matrices.push_back(aclora::backends::libtorch::rank_major(model[m].layers[l].matrix,
                                                                model[m].layers[l].axis));
    Decomposed d;
    d.stacked = at::stack(matrices);
    std::tie(d.u, d.s, d.vh) = at::linalg_svd(d.stacked, false);
    const at::Tensor host = d.s.cpu();
    for (std::size_t g = 0; g < members.size(); ++g)
      counts[members[g].first].push_back(count_of(host[static_cast<std::int64_t>(g)]));
    decomposed[key] = std::move(d);
  }
  for (auto& [key, members] : groups) {
    const Decomposed& d = decomposed[key];
    std::vector<float> kept(members.size());
    for (std::size_t g = 0; g < members.size(); ++g) {
      const auto& c = counts[members[g].first];
      kept[g] = static_cast<float>(std::max<std::size_t>(1, *std::max_element(c.begin(), c.end())));
    }
    const at::Tensor limit =
        at::from_blob(kept.data(), {static_cast<std::int64_t>(kept.size()), 1}, at::kFloat)
            .to(d.s.device(), d.s.scalar_type());
    const at::Tensor mask = at::arange(d.s.size(1), d.s.options()).unsqueeze(0).lt(limit);
    const at::Tensor truncated = at::matmul(d.u * (d.s * mask).unsqueeze(1), d.vh);
    const at::Tensor sigma = (d.stacked - truncated).flatten(1).std(1, false).view({-1, 1, 1});
    const at::Tensor result = truncated + at::randn_like(truncated) * sigma;
    for (std::size_t g = 0; g < members.size(); ++g) {
      const auto [m, l] = members[g];
      aclora::backends::libtorch::rank_major(model[m].layers[l].matrix, model[m].layers[l].axis)
          .copy_(result[static_cast<std::int64_t>(g)]);
    }
  }
}

// Copy bandwidth (bytes read + written per second) of a 256 MiB tensor, best of 5.
double copy_bandwidth(const at::Device& device) {
  const at::Tensor source = at::ones({64 << 20}, at::TensorOptions().device(device));
  at::Tensor target = at::empty_like(source);
  double best = 1e30;
  for (int i = 0; i < 5; ++i)
    best = std::min(best, seconds(device, [&] { target.copy_(source); }));
  return 2.0 * static_cast<double>(source.nbytes()) / best;
}

struct Row {
  std::string device;
  std::int64_t rank = 0;
  std::int64_t modules = 0;
  std::int64_t parameters = 0;
  double aclora = 0, per_matrix = 0, stacked = 0, bandwidth = 0;
  std::int64_t per_matrix_stride = 1;
  double gbps() const { return 2.0 * 4.0 * static_cast<double>(parameters) / aclora / 1e9; }
};

}  // namespace

int main(int argc, char** argv) {
  const Settings settings = parse(argc, argv);
  at::set_num_threads(settings.threads);
  const auto families = aclora::workload::sdxl_unet_linears(settings.attention_only);
  std::vector<Row> rows;
  std::printf(
      "SDXL UNet LoRA, %s, fp32 factors, p = %.2f, %d torch threads, %d repeats (aclora: "
      "median [min, max]; peers: best), precision %s, CPU route %s\n",
      settings.attention_only ? "attention only" : "all Transformer2D linears", kThreshold,
      settings.threads, settings.repeats, aclora::precision_name(settings.precision),
      settings.cpu_kernels ? "kernels" : "tensor_ops");
  for (const std::string& name : settings.devices) {
    if (name == "cuda" && !::torch::cuda::is_available()) {
      std::printf("cuda: no device, skipped\n");
      continue;
    }
    const at::Device device = name == "cuda" ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
    const double bandwidth = copy_bandwidth(device);
    std::printf("%s: measured copy bandwidth %.1f GB/s%s\n", name.c_str(), bandwidth / 1e9,
                device.is_cuda() ? " (H200 nominal 4800 GB/s)" : "");
    for (std::int64_t rank : settings.ranks) {
      std::vector<Module> model =
          make_model(families, rank, device, static_cast<unsigned>(settings.threads));
      std::vector<at::Tensor> pristine;
      for (const auto& module : model)
        for (const auto& layer : module.layers)
          pristine.push_back(layer.matrix.clone());
      auto restore = [&] {
        std::size_t i = 0;
        for (auto& module : model)
          for (auto& layer : module.layers)
            layer.matrix.copy_(pristine[i++]);
        synchronize(device);
      };
      Row row{name, rank, static_cast<std::int64_t>(model.size()), parameter_count(model)};
      row.bandwidth = bandwidth;
      row.per_matrix_stride = settings.per_matrix_stride > 0   ? settings.per_matrix_stride
                              : (device.is_cpu() && rank > 64) ? 4
                                                               : 1;
      aclora::backends::TorchBackend::Options backend_options;
      backend_options.precision = settings.precision;
      backend_options.cpu_kernels = settings.cpu_kernels;
      aclora::Restart<aclora::backends::TorchBackend> restart(
          {.seed = 1}, aclora::backends::TorchBackend(backend_options));
      std::vector<double> times;
      double best_pm = 0.0, best_stacked = 0.0;
      for (int r = 0; r < settings.repeats; ++r) {
        restore();
        times.push_back(seconds(device, [&] { restart.at_threshold(model, kThreshold); }));
        if (settings.per_matrix_peer) {
          restore();
          const double t = seconds(device, [&] { per_matrix_svd(model, row.per_matrix_stride); });
          best_pm = r == 0 ? t : std::min(best_pm, t);
        }
        if (settings.stacked_peer) {
          restore();
          const double t = seconds(device, [&] { stacked_svd(model); });
          best_stacked = r == 0 ? t : std::min(best_stacked, t);
        }
      }
      std::int64_t timed = 0;
      for (std::size_t m = 0; m < model.size();
           m += static_cast<std::size_t>(row.per_matrix_stride))
        for (const auto& layer : model[m].layers)
          timed += layer.matrix.numel();
      std::sort(times.begin(), times.end());
      row.aclora = times[times.size() / 2];
      row.per_matrix = best_pm * static_cast<double>(row.parameters) / static_cast<double>(timed);
      row.stacked = best_stacked;
      rows.push_back(row);
      std::printf(
          "%s r=%-4lld %lld modules, %.1f M params | aclora %.3f s [%.3f, %.3f] (%.2f "
          "GB/s, %.1f%% of copy bw)",
          name.c_str(), static_cast<long long>(rank), static_cast<long long>(row.modules),
          row.parameters / 1e6, row.aclora, times.front(), times.back(), row.gbps(),
          100.0 * row.gbps() * 1e9 / bandwidth);
      if (settings.per_matrix_peer) {
        std::printf(
            " | per-matrix svd %.3f s%s (x%.2f)", row.per_matrix,
            row.per_matrix_stride > 1
                ? (" [every " + std::to_string(row.per_matrix_stride) + "th module, scaled]")
                      .c_str()
                : "",
            row.per_matrix / row.aclora);
      }
      if (settings.stacked_peer)
        std::printf(" | stacked svd %.3f s (x%.2f)", row.stacked, row.stacked / row.aclora);
      std::printf("\n");
      std::fflush(stdout);
    }
  }
  if (!settings.json_out.empty()) {
    const std::string temporary = settings.json_out + ".tmp";
    {
      std::ofstream out(temporary);
      out << "{\"workload\": \"" << (settings.attention_only ? "attention_only" : "all_linears")
          << "\", \"threshold\": " << kThreshold << ", \"threads\": " << settings.threads
          << ", \"precision\": \"" << aclora::precision_name(settings.precision)
          << "\", \"cpu_route\": \"" << (settings.cpu_kernels ? "kernels" : "tensor_ops") << "\""
          << ", \"results\": [";
      for (std::size_t i = 0; i < rows.size(); ++i) {
        const Row& r = rows[i];
        out << (i ? ", " : "") << "{\"device\": \"" << r.device << "\", \"rank\": " << r.rank
            << ", \"modules\": " << r.modules << ", \"parameters\": " << r.parameters
            << ", \"aclora_seconds\": " << r.aclora << ", \"aclora_gbps\": " << r.gbps()
            << ", \"copy_bandwidth_gbps\": " << r.bandwidth / 1e9
            << ", \"per_matrix_stride\": " << r.per_matrix_stride;
        auto peer = [&](const char* name, bool measured, double value) {
          out << ", \"" << name << "\": ";
          if (measured)
            out << value;
          else
            out << "null";
        };
        peer("per_matrix_svd_seconds", settings.per_matrix_peer, r.per_matrix);
        peer("stacked_svd_seconds", settings.stacked_peer, r.stacked);
        peer("speedup_vs_per_matrix", settings.per_matrix_peer, r.per_matrix / r.aclora);
        peer("speedup_vs_stacked", settings.stacked_peer, r.stacked / r.aclora);
        out << "}";
      }
      out << "]}\n";
    }
    if (std::rename(temporary.c_str(), settings.json_out.c_str()) != 0) {
      std::fprintf(stderr, "cannot write %s\n", settings.json_out.c_str());
      return 1;
    }
  }
  return 0;
}
