// One whole-model RESTART of the SDXL UNet LoRA (all 722 Transformer2D linears, as in
// performance.md) with the Eigen backend, against the per-matrix Eigen BDCSVD a user
// would write, measured in the same run, plus the machine's stream-copy bandwidth.
//
// Effective bandwidth = bytes / seconds with bytes = 2 * 4 * (entries of all factors):
// one read and one write of every fp32 factor, the least any RESTART must move.
// The stream copy counts its bytes the same way (read + write of the copied buffer).
//
// Peer and direct-SVD rows run on a fixed subset (every 8th module, all families
// represented) and are scaled to the whole model by the ratio of entries. The Gram route
// runs at the CPU default (fp64) and at fp32 (float32 products, aclora/precision.hpp).
#include <benchmark/benchmark.h>

#include <Eigen/SVD>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "aclora/backends/eigen.hpp"
#include "planted_lora.hpp"
#include "sdxl_shapes.hpp"

namespace {

using Backend = aclora::backends::EigenBackend;
using Driver = aclora::Restart<Backend>;
using ViewModule = Driver::module_type;
using aclora::backends::eigen::Method;
using aclora::workload::PlantedModule;

constexpr unsigned kThreads = 2;
constexpr double kThreshold = 0.9;      // p of every RESTART here
constexpr std::size_t kSubsetStep = 8;  // peer / direct SVD: every 8th module
constexpr std::uint64_t kSeed = 2024;

// The SDXL workload at one rank: factors with 8 planted components (decay 0.8, 90% of
// the energy) plus noise, built once per rank.
struct Workload {
  std::vector<PlantedModule> modules;
  std::size_t entries = 0;         // fp32 entries of all factors
  std::size_t subset_entries = 0;  // of the modules in the subset
  std::size_t subset_modules = 0;

  explicit Workload(std::size_t rank) {
    const auto families = aclora::workload::sdxl_unet_linears(false);
    modules = aclora::workload::planted_lora(
        families, rank,
        [&](const aclora::workload::LinearFamily&) {
          return aclora::workload::PlantedSpectrum{std::min<std::size_t>(8, rank / 2), 0.9, 0.8,
                                                   0.01, false};
        },
        kSeed, kThreads);
    entries = aclora::workload::entry_count(modules);
    for (std::size_t m = 0; m < modules.size(); m += kSubsetStep) {
      subset_entries += modules[m].down.values.size() + modules[m].up.values.size();
      ++subset_modules;
    }
  }

  // Views of every module (step 1) or of the subset (step kSubsetStep).
  std::vector<ViewModule> views(std::size_t step) {
    std::vector<ViewModule> list;
    for (std::size_t m = 0; m < modules.size(); m += step) {
      auto& module = modules[m];
      list.push_back(ViewModule::lora(
          module.name,
          aclora::backends::eigen::MatrixView(module.down.values.data(),
                                              static_cast<std::ptrdiff_t>(module.down.rows),
                                              static_cast<std::ptrdiff_t>(module.down.cols),
                                              static_cast<std::ptrdiff_t>(module.down.cols), 1),
          aclora::backends::eigen::MatrixView(module.up.values.data(),
                                              static_cast<std::ptrdiff_t>(module.up.rows),
                                              static_cast<std::ptrdiff_t>(module.up.cols),
                                              static_cast<std::ptrdiff_t>(module.up.cols), 1)));
    }
    return list;
  }
};

Workload& workload(std::size_t rank) {
  static std::map<std::size_t, std::unique_ptr<Workload>> cache;
  auto& slot = cache[rank];
  if (!slot) {
    cache.clear();  // one workload in memory at a time (680 MB at r = 64)
    auto& fresh = cache[rank];
    fresh = std::make_unique<Workload>(rank);
    return *fresh;
  }
  return *slot;
}

// Results for the summary: seconds per whole-model RESTART by (row, rank).
std::map<std::pair<std::string, std::size_t>, double> g_model_seconds;
double g_stream_gbps = 0.0;

double bytes_moved(const Workload& w) {
  return 2.0 * sizeof(float) * static_cast<double>(w.entries);
}

void report(benchmark::State& state, const std::string& row, std::size_t rank, const Workload& w,
            double model_seconds) {
  g_model_seconds[{row, rank}] = model_seconds;
  const double gbps = bytes_moved(w) / model_seconds / 1e9;
  state.counters["s_per_model"] = model_seconds;
  state.counters["matrices_per_s"] = 2.0 * static_cast<double>(w.modules.size()) / model_seconds;
  state.counters["GB_per_s"] = gbps;
  if (g_stream_gbps > 0.0)
    state.counters["of_stream"] = gbps / g_stream_gbps;
}

// Median of the per-iteration times (robust on a shared machine).
double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// Stream copy: kThreads threads each copy their share of a 512 MB buffer.
void BM_StreamCopy(benchmark::State& state) {
  const std::size_t count = std::size_t{128} << 20;  // floats: 512 MB
  std::vector<float> source(count, 1.0f), target(count, 0.0f);
  std::vector<double> times;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < kThreads; ++t) {
      pool.emplace_back([&, t] {
        const std::size_t begin = count * t / kThreads, end = count * (t + 1) / kThreads;
        std::memcpy(target.data() + begin, source.data() + begin, (end - begin) * sizeof(float));
      });
    }
    for (auto& thread : pool)
      thread.join();
    times.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    benchmark::DoNotOptimize(target.data());
  }
  g_stream_gbps = 2.0 * sizeof(float) * count / median(times) / 1e9;
  state.counters["GB_per_s"] = g_stream_gbps;
}

// The Eigen backend over the whole model (or the subset, scaled), 2 threads, with the
// given precision of the Gram route (automatic: fp64 on a CPU).
void BM_RestartEigen(benchmark::State& state, Method method, std::size_t step,
                     aclora::Precision precision) {
  const auto rank = static_cast<std::size_t>(state.range(0));
  Workload& w = workload(rank);
  const std::vector<ViewModule> modules = w.views(step);
  Driver driver({.noise = aclora::NoisePolicy::whole, .min_rank = 1, .seed = kSeed},
                Backend({.method = method, .threads = kThreads, .precision = precision}));
  std::vector<double> times;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    auto result = driver.at_threshold(modules, kThreshold);
    times.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    benchmark::DoNotOptimize(result);
  }
  const double scale =
      step == 1 ? 1.0 : static_cast<double>(w.entries) / static_cast<double>(w.subset_entries);
  const char* row = method == Method::direct_svd           ? "aclora Eigen, direct SVD"
                    : precision == aclora::Precision::fp32 ? "aclora Eigen, Gram fp32"
                                                           : "aclora Eigen, Gram";
  report(state, row, rank, w, median(times) * scale);
}

// The peer: for each module, BDCSVD (thin U and V, double) of each factor, the same
// strict rule and union for K, M_K = U_K S_K V_K^T, sigma = std of M - M_K, and
// M_K + sigma * N(0, 1) from std::normal_distribution written back. Modules are shared
// among kThreads threads, like the backend's layers.
void peer_restart_module(PlantedModule& module, std::size_t rank, std::uint64_t seed) {
  using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  aclora::workload::PlantedFactor* factors[2] = {&module.down, &module.up};
  Eigen::MatrixXd matrices[2];
  Eigen::BDCSVD<Eigen::MatrixXd> svds[2];
  std::size_t kept = 1;
  for (int f = 0; f < 2; ++f) {
    auto* factor = factors[f];
    matrices[f] =
        Eigen::Map<RowMajor>(factor->values.data(), factor->rows, factor->cols).cast<double>();
    svds[f].compute(matrices[f], Eigen::ComputeThinU | Eigen::ComputeThinV);
    const auto& values = svds[f].singularValues();
    kept = std::max(kept, aclora::signal_count(
                              std::span<const double>(values.data(), values.size()), kThreshold));
  }
  kept = std::min(kept, rank);
  std::mt19937_64 engine(seed);
  for (int f = 0; f < 2; ++f) {
    const auto& svd = svds[f];
    const auto k = static_cast<Eigen::Index>(kept);
    Eigen::MatrixXd truncated = svd.matrixU().leftCols(k) *
                                svd.singularValues().head(k).asDiagonal() *
                                svd.matrixV().leftCols(k).transpose();
    const Eigen::ArrayXXd residual = (matrices[f] - truncated).array();
    const double sigma = std::sqrt((residual - residual.mean()).square().mean());
    std::normal_distribution<double> normal(0.0, sigma);
    for (Eigen::Index i = 0; i < truncated.rows(); ++i) {
      for (Eigen::Index j = 0; j < truncated.cols(); ++j)
        truncated(i, j) += normal(engine);
    }
    auto* factor = factors[f];
    Eigen::Map<RowMajor>(factor->values.data(), factor->rows, factor->cols) =
        truncated.cast<float>();
  }
}

void BM_PeerBdcsvd(benchmark::State& state) {
  const auto rank = static_cast<std::size_t>(state.range(0));
  Workload& w = workload(rank);
  std::vector<double> times;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    std::atomic<std::size_t> next{0};
    auto work = [&] {
      for (std::size_t s = next++; s < w.subset_modules; s = next++)
        peer_restart_module(w.modules[s * kSubsetStep], rank, kSeed + s);
    };
    std::vector<std::thread> pool;
    for (unsigned t = 1; t < kThreads; ++t)
      pool.emplace_back(work);
    work();
    for (auto& thread : pool)
      thread.join();
    times.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  report(state, "peer: BDCSVD per matrix", rank, w,
         median(times) * static_cast<double>(w.entries) / static_cast<double>(w.subset_entries));
}

void print_summary() {
  std::printf(
      "\nSDXL UNet LoRA, all 722 Transformer2D linears (1444 fp32 factors), p = %.2f, %u "
      "threads.\nbytes = 2 x 4 x entries (one read + one write of every factor); stream copy: "
      "%.1f GB/s.\nPeer and direct-SVD rows: every %zu-th module timed, scaled by entries.\n\n",
      kThreshold, kThreads, g_stream_gbps, kSubsetStep);
  std::printf("%-28s %5s %12s %12s %9s %10s %9s\n", "row", "rank", "s / model", "matrices/s",
              "GB/s", "of stream", "vs peer");
  for (const auto& [key, seconds] : g_model_seconds) {
    const auto& [row, rank] = key;
    const double entries = 2659840.0 * static_cast<double>(rank);
    const double gbps = 2.0 * sizeof(float) * entries / seconds / 1e9;
    const auto peer = g_model_seconds.find({"peer: BDCSVD per matrix", rank});
    char versus[32] = "-";
    if (peer != g_model_seconds.end())
      std::snprintf(versus, sizeof versus, "%.1fx", peer->second / seconds);
    std::printf("%-28s %5zu %12.3f %12.0f %9.2f %9.1f%% %9s\n", row.c_str(), rank, seconds,
                1444.0 / seconds, gbps, g_stream_gbps > 0 ? 100.0 * gbps / g_stream_gbps : 0.0,
                versus);
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  benchmark::RegisterBenchmark("stream_copy", BM_StreamCopy)
      ->Iterations(5)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
  for (int rank : {16, 64}) {
    benchmark::RegisterBenchmark("restart/eigen_gram", BM_RestartEigen, Method::gram, 1,
                                 aclora::Precision::automatic)
        ->Arg(rank)
        ->ArgName("r")
        ->Iterations(3)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark("restart/eigen_gram_fp32", BM_RestartEigen, Method::gram, 1,
                                 aclora::Precision::fp32)
        ->Arg(rank)
        ->ArgName("r")
        ->Iterations(3)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark("restart/eigen_direct_svd_subset", BM_RestartEigen,
                                 Method::direct_svd, kSubsetStep, aclora::Precision::fp64)
        ->Arg(rank)
        ->ArgName("r")
        ->Iterations(1)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark("peer/bdcsvd_per_matrix_subset", BM_PeerBdcsvd)
        ->Arg(rank)
        ->ArgName("r")
        ->Iterations(1)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
  benchmark::RunSpecifiedBenchmarks();
  print_summary();
  benchmark::Shutdown();
  return 0;
}
