// 01_restart_eigen: one AC-LoRA RESTART of a synthetic SDXL UNet LoRA on the CPU.
//
// Every LoRA factor is built with a KNOWN structure: k planted components (k depends on
// the module's family) holding exactly s = 80% of the factor's energy, plus isotropic
// Gaussian noise holding the other 20%, projected off the planted directions so the
// first k singular values are exactly the planted ones.
//
// The strict rule keeps the components whose cumulative energy stays strictly below
// p * T (restart-contract.md). After the k planted components the cumulative share is
// exactly s; the next component is the largest noise one. So the rule keeps exactly k
// when s < p <= s + (share of the largest noise component). With noise spread over
// (R - k) x (n - k) dimensions the largest noise component holds about
// (1/sqrt(R - k) + 1/sqrt(n - k))^2 of the noise energy: at R = 32 at least 3.7% of it,
// i.e. 0.0074 of T, so p must lie in (0.8, 0.807].
//
// The defaults pick that p from the schedule (paper eq. 5-6): epoch e = 90 of N = 100
// gives alpha = 1 + 90/99 = 1.90909; mean loss L = 0.428 gives
// p = 1 - 0.428^1.90909 = 1 - 0.19787 = 0.80213.
//
// The program prints, per family, the planted rank, the K chosen (min and max over the
// family), the kept energy, the noise sigma and the window of p that would keep exactly
// the planted rank; it exits with status 1 when any module's K differs from its planted
// rank (or the RESTART fails), 2 on bad arguments.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <limits>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "aclora/backends/eigen.hpp"
#include "aclora_cli.hpp"
#include "planted_lora.hpp"
#include "sdxl_shapes.hpp"

namespace {

using Backend = aclora::backends::EigenBackend;
using Driver = aclora::Restart<Backend>;
using ViewModule = Driver::module_type;
using aclora::workload::LinearFamily;

constexpr double kSignalShare = 0.8;  // s
constexpr double kPlantedDecay = 0.95;
constexpr double kEntryRms = 0.01;

struct Settings {
  std::size_t rank = 32;
  bool attention_only = false;
  double loss = 0.428;
  int epoch = 90;
  int epochs = 100;
  int interval = 10;
  std::uint64_t seed = 1;
  unsigned threads = 2;
};

// Planted rank per family: 640-level attn1 4, attn2 6, ff 8; 1280-level 2..12.
std::size_t planted_rank(const LinearFamily& family) {
  static const std::map<std::string, std::size_t> ranks{
      {"640.attn1.qkvo", 4},      {"640.attn2.q_out", 6},  {"640.attn2.k_v", 6},
      {"640.ff.net.0.proj", 8},   {"640.ff.net.2", 8},     {"640.proj_in_out", 3},
      {"1280.attn1.qkvo", 2},     {"1280.attn2.q_out", 4}, {"1280.attn2.k_v", 6},
      {"1280.ff.net.0.proj", 10}, {"1280.ff.net.2", 12},   {"1280.proj_in_out", 5}};
  return ranks.at(family.group);
}

// The command line; bad arguments exit with status 2 after one line on stderr.
Settings parse(int argc, char** argv) {
  namespace cli = aclora::cli;
  Settings s;
  CLI::App app;
  cli::configure(app, "01_restart_eigen");
  app.description(
      "One AC-LoRA RESTART of a synthetic SDXL UNet LoRA with planted ranks, on the CPU with the "
      "Eigen backend. Exit status: 0 every module kept its planted rank, 1 one did not (or the "
      "RESTART failed), 2 bad command line.");
  cli::add_whole(app, "--rank", s.rank, "allocated LoRA rank, 24..96 (default 32)", 24, 96, "R");
  app.add_flag("--attention-only", s.attention_only,
               "only the 560 attention linears (default: all 722 linears)");
  cli::add_real(app, "--loss", s.loss,
                "mean training loss since the last restart, > 0 (default 0.428)", false, "L");
  cli::add_whole(app, "--epoch", s.epoch, "0-based epoch after which the restart runs (default 90)",
                 0, std::numeric_limits<int>::max(), "e");
  cli::add_whole(app, "--epochs", s.epochs, "total epochs of the schedule (default 100)", 1,
                 std::numeric_limits<int>::max(), "N");
  cli::add_whole(app, "--interval", s.interval, "restart interval, for the 'due' note (default 10)",
                 1, std::numeric_limits<int>::max(), "E");
  cli::add_whole(app, "--seed", s.seed,
                 "seed of the synthetic factors and of the noise, 0 to 2^64-1 (default 1)", 0,
                 std::numeric_limits<std::uint64_t>::max(), "S");
  cli::add_whole(app, "--threads", s.threads, "worker threads, 0 = all cores (default 2)", 0,
                 std::numeric_limits<unsigned>::max(), "T");
  app.footer(
      "--rank: planted ranks up to 12 need room for noise below them, and above 96 the largest "
      "noise component is too small for p.");
  if (const auto status =
          cli::parse(app, std::vector<std::string>(argv + 1, argv + argc), std::cout, std::cerr))
    std::exit(*status);
  const auto refuse = [](const std::string& message) {
    std::exit(cli::report_usage_error(std::cerr, "01_restart_eigen", message));
  };
  if (!(s.loss > 0.0))
    refuse("--loss must be > 0");
  if (s.epoch >= s.epochs)
    refuse("--epoch must lie in [0, --epochs)");
  return s;
}

// Cumulative energy share of the first k singular values.
double cumulative_share(const std::vector<double>& values, std::size_t k) {
  double total = 0.0, head = 0.0;
  for (std::size_t i = 0; i < values.size(); ++i) {
    total += values[i] * values[i];
    if (i < k)
      head += values[i] * values[i];
  }
  return total > 0.0 ? head / total : 1.0;
}

// What the table shows for one family.
struct GroupSummary {
  std::string group;
  std::size_t modules = 0;
  std::size_t planted = 0;
  std::size_t k_min = SIZE_MAX, k_max = 0;
  double kept_min = 1.0, kept_max = 0.0;
  double sigma_down = 0.0, sigma_up = 0.0;     // means over the family
  double window_low = 0.0, window_high = 1.0;  // p in (low, high] keeps the planted rank
};

}  // namespace

int main(int argc, char** argv) {
  const Settings settings = parse(argc, argv);
  const auto families = aclora::workload::sdxl_unet_linears(settings.attention_only);

  const auto build_start = std::chrono::steady_clock::now();
  auto planted = aclora::workload::planted_lora(
      families, settings.rank,
      [](const LinearFamily& family) {
        return aclora::workload::PlantedSpectrum{planted_rank(family), kSignalShare, kPlantedDecay,
                                                 kEntryRms, true};
      },
      settings.seed, settings.threads);
  const double build_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - build_start).count();

  std::vector<ViewModule> modules;
  for (auto& module : planted) {
    auto view = [](aclora::workload::PlantedFactor& f) {
      return aclora::backends::eigen::MatrixView(
          f.values.data(), static_cast<std::ptrdiff_t>(f.rows), static_cast<std::ptrdiff_t>(f.cols),
          static_cast<std::ptrdiff_t>(f.cols), 1);
    };
    modules.push_back(ViewModule::lora(module.name, view(module.down), view(module.up)));
  }

  const aclora::Schedule schedule{settings.epochs, settings.interval};
  Driver driver(
      {.noise = aclora::NoisePolicy::whole, .min_rank = 1, .seed = settings.seed},
      Backend({.method = aclora::backends::eigen::Method::gram, .threads = settings.threads}));
  aclora::RestartReport report;
  const auto restart_start = std::chrono::steady_clock::now();
  try {
    report = driver(modules, schedule, settings.epoch, settings.loss);
  } catch (const aclora::Error& error) {
    return aclora::cli::report_failure(std::cerr, "01_restart_eigen",
                                       std::string("RESTART failed: ") + error.what());
  }
  const double restart_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - restart_start).count();

  // Per-family summary, in workload order.
  std::vector<GroupSummary> groups;
  std::vector<std::string> mismatches;
  for (std::size_t m = 0; m < report.modules.size(); ++m) {
    const auto& module = report.modules[m];
    if (groups.empty() || groups.back().group != planted[m].group)
      groups.push_back({.group = planted[m].group, .planted = planted[m].spectrum.planted_rank});
    GroupSummary& g = groups.back();
    ++g.modules;
    g.k_min = std::min(g.k_min, module.module_rank);
    g.k_max = std::max(g.k_max, module.module_rank);
    for (std::size_t l = 0; l < module.layers.size(); ++l) {
      const auto& layer = module.layers[l];
      g.kept_min = std::min(g.kept_min, layer.kept_energy_fraction);
      g.kept_max = std::max(g.kept_max, layer.kept_energy_fraction);
      (l == 0 ? g.sigma_down : g.sigma_up) += layer.sigma;
      g.window_low = std::max(g.window_low, cumulative_share(layer.singular_values, g.planted));
      g.window_high =
          std::min(g.window_high, cumulative_share(layer.singular_values, g.planted + 1));
    }
    if (module.module_rank != g.planted) {
      mismatches.push_back(module.name + ": K = " + std::to_string(module.module_rank) +
                           ", planted " + std::to_string(g.planted));
    }
  }

  const double alpha = schedule.alpha(settings.epoch);
  std::printf("AC-LoRA RESTART with the Eigen backend on a synthetic SDXL UNet LoRA\n");
  std::printf("  %zu modules (%s), allocated rank R = %zu: %zu fp32 factors, %.1f M parameters\n",
              planted.size(), settings.attention_only ? "attention linears" : "all linears",
              settings.rank, 2 * planted.size(),
              static_cast<double>(aclora::workload::entry_count(planted)) / 1e6);
  std::printf(
      "  each factor: k planted components holding s = %.0f%% of its energy + isotropic noise "
      "(%.0f%%), seed %llu\n\n",
      100.0 * kSignalShare, 100.0 * (1.0 - kSignalShare),
      static_cast<unsigned long long>(settings.seed));
  std::printf("Threshold (paper eq. 5-6): epoch e = %d of N = %d -> alpha = 1 + e/(N-1) = %.5f\n",
              settings.epoch, settings.epochs, alpha);
  std::printf("  mean loss L = %g -> p = 1 - L^alpha = 1 - %.5f = %.5f%s\n", settings.loss,
              std::pow(settings.loss, alpha), report.threshold,
              schedule.due(settings.epoch) ? "" : "   (note: this epoch is not a due restart)");
  std::printf(
      "  strict rule: keep the components with cumulative energy < p*T. The planted ones end\n"
      "  at exactly s = %.4f of T; the next (largest noise) component crosses p, so K = k\n"
      "  whenever p lies in the window (s, s + its share] shown per family.\n\n",
      kSignalShare);

  std::printf("%-20s %7s %9s %9s %15s %19s  %s\n", "family", "modules", "planted k", "chosen K",
              "kept energy", "sigma down / up", "window of p");
  for (const auto& g : groups) {
    char chosen[32], kept[32], sigma[48];
    if (g.k_min == g.k_max)
      std::snprintf(chosen, sizeof chosen, "%zu", g.k_min);
    else
      std::snprintf(chosen, sizeof chosen, "%zu..%zu", g.k_min, g.k_max);
    if (std::abs(g.kept_max - g.kept_min) < 5e-5)
      std::snprintf(kept, sizeof kept, "%.2f%%", 100.0 * g.kept_min);
    else
      std::snprintf(kept, sizeof kept, "%.2f..%.2f%%", 100.0 * g.kept_min, 100.0 * g.kept_max);
    std::snprintf(sigma, sizeof sigma, "%.5f / %.5f", g.sigma_down / g.modules,
                  g.sigma_up / g.modules);
    const bool inside = report.threshold > g.window_low && report.threshold <= g.window_high;
    std::printf("%-20s %7zu %9zu %9s %15s %19s  (%.4f, %.4f]%s\n", g.group.c_str(), g.modules,
                g.planted, chosen, kept, sigma, g.window_low, g.window_high,
                inside ? "" : "  <- p outside");
  }
  std::printf(
      "\nTotal kept rank %zu of %zu allocated. Built the factors in %.2f s; RESTART took "
      "%.3f s on %u thread(s)%s.\n",
      report.total_module_rank(), settings.rank * planted.size(), build_seconds, restart_seconds,
      settings.threads,
#ifdef NDEBUG
      ""
#else
      " (unoptimised build: use Release for meaningful times)"
#endif
  );
  if (!mismatches.empty()) {
    std::printf("FAILED: %zu module(s) kept a rank other than the planted one, e.g.\n",
                mismatches.size());
    for (std::size_t i = 0; i < std::min<std::size_t>(5, mismatches.size()); ++i)
      std::printf("  %s\n", mismatches[i].c_str());
    return 1;
  }
  std::printf("OK: every module kept exactly its planted rank.\n");
  return 0;
}
