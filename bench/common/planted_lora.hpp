/// @file planted_lora.hpp
/// @brief Synthetic LoRA factors with a planted spectrum, for benchmarks and examples:
/// every factor is U diag(d) V^T (k planted components with a known share of the
/// energy) plus isotropic Gaussian noise, fp32, row-major, reproducible from a seed.
/// Built with the one planted-matrix generator (planted.hpp). Plain C++ (no Eigen, no
/// LibTorch), so every backend's benchmark can use it.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "planted.hpp"
#include "sdxl_shapes.hpp"

namespace aclora::workload {

/// How the factors of one family are planted.
struct PlantedSpectrum {
  std::size_t planted_rank = 8;  ///< k: components carrying the signal (<= min(rows, cols))
  double signal_share = 0.9;     ///< s: share of each factor's energy in those k components
  double decay = 0.8;            ///< d_{i+1} / d_i among the planted singular values (1: flat)
  double entry_rms = 0.01;       ///< root-mean-square entry of each factor (sets the scale)
  /// When true the noise is projected off the planted directions on both sides, so the
  /// first k singular values are exactly the planted ones and hold exactly the share s
  /// (as long as they exceed the largest noise one). Costs two more passes per factor.
  bool exact = false;
};

/// A dense fp32 matrix, row-major: entry (i, j) at values[i * cols + j].
struct PlantedFactor {
  std::size_t rows = 0;
  std::size_t cols = 0;
  std::vector<float> values;
};

/// One LoRA module: down R x in (rank axis rows) and up out x R (rank axis cols).
struct PlantedModule {
  std::string name;   ///< "<family group>.<index in family>", unique
  std::string group;  ///< the family's group
  PlantedSpectrum spectrum;
  PlantedFactor down;
  PlantedFactor up;
};

namespace detail {

// One factor: planted components plus noise, scaled per `spectrum` (planted.hpp does the work).
inline PlantedFactor planted_factor(std::size_t rows, std::size_t cols,
                                    const PlantedSpectrum& spectrum, std::uint64_t seed,
                                    std::uint64_t stream) {
  const std::size_t k = spectrum.planted_rank;
  if (k > std::min(rows, cols))
    throw std::invalid_argument("planted_lora: planted rank exceeds min(rows, cols)");
  if (!(spectrum.signal_share >= 0.0 && spectrum.signal_share <= 1.0))
    throw std::invalid_argument("planted_lora: signal_share must lie in [0, 1]");
  const double entries = static_cast<double>(rows * cols);
  const double energy = spectrum.entry_rms * spectrum.entry_rms * entries;
  // Planted singular values d_i = c * decay^i with sum d_i^2 = s * energy.
  std::vector<double> d = geometric_values(k, 1.0, spectrum.decay);
  double weights = 0.0;
  for (double value : d)
    weights += value * value;
  for (double& value : d)
    value *= std::sqrt(spectrum.signal_share * energy / weights);
  const PlantedNoise noise{std::sqrt((1.0 - spectrum.signal_share) * energy / entries), true,
                           spectrum.exact};
  const PlantedMatrix planted = planted_matrix(rows, cols, std::move(d), noise, seed, stream);
  return PlantedFactor{rows, cols,
                       std::vector<float>(planted.values.begin(), planted.values.end())};
}

}  // namespace detail

/// Builds every module of `families` at allocated rank `rank`: `count` modules per family,
/// each with a down (rank x in) and an up (out x rank) factor planted per
/// `spectrum_of(family)`. Deterministic for a given seed, whatever `threads` (0: all
/// hardware threads). @throws std::invalid_argument for an impossible spectrum.
inline std::vector<PlantedModule> planted_lora(
    const std::vector<LinearFamily>& families, std::size_t rank,
    const std::function<PlantedSpectrum(const LinearFamily&)>& spectrum_of, std::uint64_t seed,
    unsigned threads = 0) {
  std::vector<PlantedModule> modules;
  std::vector<const LinearFamily*> family_of;
  for (const auto& family : families) {
    const PlantedSpectrum spectrum = spectrum_of(family);
    for (std::size_t i = 0; i < family.count; ++i) {
      modules.push_back({family.group + "." + std::to_string(i), family.group, spectrum, {}, {}});
      family_of.push_back(&family);
    }
  }
  // Task 2m builds module m's down factor, task 2m + 1 its up factor.
  std::atomic<std::size_t> next{0};
  auto work = [&] {
    for (std::size_t task = next++; task < 2 * modules.size(); task = next++) {
      PlantedModule& module = modules[task / 2];
      const LinearFamily& family = *family_of[task / 2];
      if (task % 2 == 0) {
        module.down = detail::planted_factor(rank, family.in_features, module.spectrum, seed, task);
      } else {
        module.up = detail::planted_factor(family.out_features, rank, module.spectrum, seed, task);
      }
    }
  };
  if (threads == 0)
    threads = std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < threads; ++t)
    pool.emplace_back(work);
  work();
  for (auto& thread : pool)
    thread.join();
  return modules;
}

/// Number of fp32 entries over all factors of `modules`.
inline std::size_t entry_count(const std::vector<PlantedModule>& modules) {
  std::size_t total = 0;
  for (const auto& module : modules)
    total += module.down.values.size() + module.up.values.size();
  return total;
}

}  // namespace aclora::workload
