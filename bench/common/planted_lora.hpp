/// @file planted_lora.hpp
/// @brief Synthetic LoRA factors with a planted spectrum, for benchmarks and examples:
/// every factor is U diag(d) V^T (k planted components with a known share of the
/// energy) plus isotropic Gaussian noise, fp32, row-major, reproducible from a seed.
/// Plain C++ (no Eigen, no LibTorch), so every backend's benchmark can use it.
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

#include "aclora/noise.hpp"
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

// Standard normal draws for `out` from one Philox stream (four per block).
inline void fill_gaussian(std::vector<float>& out, const NoiseKey& key) {
  float block[4];
  const std::size_t whole = out.size() / 4 * 4;
  for (std::size_t i = 0; i < whole; i += 4) {
    gaussian_block<float>(key, i / 4, block);
    std::copy(block, block + 4, out.begin() + static_cast<std::ptrdiff_t>(i));
  }
  if (whole < out.size()) {
    gaussian_block<float>(key, whole / 4, block);
    std::copy(block, block + (out.size() - whole),
              out.begin() + static_cast<std::ptrdiff_t>(whole));
  }
}

// `count` orthonormal vectors of length `length` (Gram-Schmidt, twice, on Gaussian
// vectors), stored one after the other.
inline std::vector<double> orthonormal_vectors(std::size_t length, std::size_t count,
                                               const NoiseKey& key) {
  std::vector<float> draws(length * count);
  fill_gaussian(draws, key);
  std::vector<double> basis(draws.begin(), draws.end());
  for (std::size_t c = 0; c < count; ++c) {
    double* v = basis.data() + c * length;
    for (int pass = 0; pass < 2; ++pass) {
      for (std::size_t previous = 0; previous < c; ++previous) {
        const double* u = basis.data() + previous * length;
        double dot = 0.0;
        for (std::size_t i = 0; i < length; ++i)
          dot += u[i] * v[i];
        for (std::size_t i = 0; i < length; ++i)
          v[i] -= dot * u[i];
      }
    }
    double norm = 0.0;
    for (std::size_t i = 0; i < length; ++i)
      norm += v[i] * v[i];
    norm = std::sqrt(norm);
    for (std::size_t i = 0; i < length; ++i)
      v[i] /= norm;
  }
  return basis;
}

// Removes from the row-major rows x cols matrix m its components along the right
// vectors v (m <- m (I - V V^T)) and then along the left vectors u (m <- (I - U U^T) m).
inline void project_off(std::vector<float>& m, std::size_t rows, std::size_t cols,
                        const std::vector<double>& u, const std::vector<double>& v,
                        std::size_t count) {
  std::vector<double> coefficient(count);
  for (std::size_t r = 0; r < rows; ++r) {
    float* row = m.data() + r * cols;
    for (std::size_t c = 0; c < count; ++c) {
      const double* vc = v.data() + c * cols;
      double dot = 0.0;
      for (std::size_t j = 0; j < cols; ++j)
        dot += vc[j] * row[j];
      coefficient[c] = dot;
    }
    for (std::size_t c = 0; c < count; ++c) {
      const double* vc = v.data() + c * cols;
      for (std::size_t j = 0; j < cols; ++j)
        row[j] = static_cast<float>(row[j] - coefficient[c] * vc[j]);
    }
  }
  std::vector<double> projection(count * cols, 0.0);  // U^T m
  for (std::size_t r = 0; r < rows; ++r) {
    const float* row = m.data() + r * cols;
    for (std::size_t c = 0; c < count; ++c) {
      const double weight = u[c * rows + r];
      double* out = projection.data() + c * cols;
      for (std::size_t j = 0; j < cols; ++j)
        out[j] += weight * row[j];
    }
  }
  for (std::size_t r = 0; r < rows; ++r) {
    float* row = m.data() + r * cols;
    for (std::size_t c = 0; c < count; ++c) {
      const double weight = u[c * rows + r];
      const double* p = projection.data() + c * cols;
      for (std::size_t j = 0; j < cols; ++j)
        row[j] = static_cast<float>(row[j] - weight * p[j]);
    }
  }
}

// One factor: planted components plus noise, scaled per `spectrum`.
inline PlantedFactor planted_factor(std::size_t rows, std::size_t cols,
                                    const PlantedSpectrum& spectrum, std::uint64_t seed,
                                    std::uint64_t stream) {
  const std::size_t k = spectrum.planted_rank;
  if (k > std::min(rows, cols))
    throw std::invalid_argument("planted_lora: planted rank exceeds min(rows, cols)");
  if (!(spectrum.signal_share >= 0.0 && spectrum.signal_share <= 1.0))
    throw std::invalid_argument("planted_lora: signal_share must lie in [0, 1]");
  PlantedFactor factor{rows, cols, std::vector<float>(rows * cols)};
  const auto key = [&](std::uint64_t part) { return NoiseKey{seed, mix64(stream * 4 + part)}; };
  fill_gaussian(factor.values, key(0));
  const std::vector<double> u = orthonormal_vectors(rows, k, key(1));
  const std::vector<double> v = orthonormal_vectors(cols, k, key(2));
  if (spectrum.exact && k > 0)
    project_off(factor.values, rows, cols, u, v, k);

  const double energy = spectrum.entry_rms * spectrum.entry_rms * static_cast<double>(rows * cols);
  double noise_energy = 0.0;
  for (float x : factor.values)
    noise_energy += static_cast<double>(x) * x;
  const double noise_scale =
      noise_energy > 0.0 ? std::sqrt((1.0 - spectrum.signal_share) * energy / noise_energy) : 0.0;
  // Planted singular values d_i = c * decay^i with sum d_i^2 = s * energy.
  std::vector<double> d(k);
  double weights = 0.0;
  for (std::size_t i = 0; i < k; ++i) {
    d[i] = std::pow(spectrum.decay, static_cast<double>(i));
    weights += d[i] * d[i];
  }
  for (double& value : d)
    value *= std::sqrt(spectrum.signal_share * energy / weights);

  std::vector<double> row(cols);
  for (std::size_t r = 0; r < rows; ++r) {
    float* out = factor.values.data() + r * cols;
    for (std::size_t j = 0; j < cols; ++j)
      row[j] = noise_scale * out[j];
    for (std::size_t c = 0; c < k; ++c) {
      const double weight = d[c] * u[c * rows + r];
      const double* vc = v.data() + c * cols;
      for (std::size_t j = 0; j < cols; ++j)
        row[j] += weight * vc[j];
    }
    for (std::size_t j = 0; j < cols; ++j)
      out[j] = static_cast<float>(row[j]);
  }
  return factor;
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
