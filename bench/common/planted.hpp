/// @file planted.hpp
/// @brief The one generator of matrices with a planted spectrum, for tests and benchmarks:
/// X = U diag(d) V^T + G with orthonormal U (rows x k) and V (cols x k) and Gaussian G,
/// reproducible from (seed, stream) on every platform (the core's Philox generator and
/// float Box-Muller, no <random>). Plain C++ (no Eigen, no LibTorch, no CUDA), so every
/// backend's tests and benchmarks can include it: tests/conformance, tests/eigen and
/// tests/cuda include it as "../../bench/common/planted.hpp".
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <utility>
#include <vector>

#include "aclora/noise.hpp"

namespace aclora::workload {

/// The noise part G of a planted matrix.
struct PlantedNoise {
  double rms = 0.0;  ///< root-mean-square entry of G (0: no noise, the SVD is exactly known)
  /// Scale G so that its energy is exactly rms^2 rows cols (not only in expectation).
  bool exact_energy = false;
  /// Project G off the planted directions on both sides (G <- (I - U U^T) G (I - V V^T)):
  /// then d are exactly singular values of X, with singular vectors U and V.
  bool off_planted = false;
};

/// A rows x cols matrix X = U diag(d) V^T + G, row-major, in double.
struct PlantedMatrix {
  std::size_t rows = 0;                 ///< number of rows
  std::size_t cols = 0;                 ///< number of columns
  std::vector<double> singular_values;  ///< d, as planted
  std::vector<double> left;             ///< u_k at left[k * rows], orthonormal
  std::vector<double> right;            ///< v_k at right[k * cols], orthonormal
  std::vector<double> values;           ///< entry (i, j) at values[i * cols + j]

  /// Entry (i, j).
  double at(std::size_t i, std::size_t j) const { return values[i * cols + j]; }
  /// The planted part truncated to its first `kept` components, U_K diag(d_K) V_K^T.
  std::vector<double> planted_part(std::size_t kept) const {
    std::vector<double> out(rows * cols, 0.0);
    for (std::size_t k = 0; k < std::min(kept, singular_values.size()); ++k)
      for (std::size_t i = 0; i < rows; ++i) {
        const double weight = singular_values[k] * left[k * rows + i];
        for (std::size_t j = 0; j < cols; ++j)
          out[i * cols + j] += weight * right[k * cols + j];
      }
    return out;
  }
};

namespace detail {

// `count` standard normal draws from one Philox stream (the core's float transform).
inline std::vector<double> gaussian_draws(std::size_t count, const NoiseKey& key) {
  const std::size_t blocks = (count + 3) / 4;
  std::vector<std::uint32_t> words(4 * blocks);
  std::vector<float> draws(4 * blocks);
  gaussian_floats(key, 0, blocks, words.data(), draws.data());
  return std::vector<double>(draws.begin(), draws.begin() + static_cast<std::ptrdiff_t>(count));
}

// `count` orthonormal vectors of length `length` (Gram-Schmidt, twice, on Gaussian
// vectors), stored one after the other.
inline std::vector<double> orthonormal_vectors(std::size_t length, std::size_t count,
                                               const NoiseKey& key) {
  std::vector<double> basis = gaussian_draws(length * count, key);
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

// m <- (I - U U^T) m (I - V V^T) for the row-major rows x cols m.
inline void project_off(std::vector<double>& m, std::size_t rows, std::size_t cols,
                        const std::vector<double>& u, const std::vector<double>& v,
                        std::size_t count) {
  for (std::size_t r = 0; r < rows; ++r) {
    double* row = m.data() + r * cols;
    for (std::size_t c = 0; c < count; ++c) {
      const double* vc = v.data() + c * cols;
      double dot = 0.0;
      for (std::size_t j = 0; j < cols; ++j)
        dot += vc[j] * row[j];
      for (std::size_t j = 0; j < cols; ++j)
        row[j] -= dot * vc[j];
    }
  }
  std::vector<double> projection(cols);
  for (std::size_t c = 0; c < count; ++c) {
    const double* uc = u.data() + c * rows;
    std::fill(projection.begin(), projection.end(), 0.0);  // u_c^T m
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t j = 0; j < cols; ++j)
        projection[j] += uc[r] * m[r * cols + j];
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t j = 0; j < cols; ++j)
        m[r * cols + j] -= uc[r] * projection[j];
  }
}

}  // namespace detail

/// A rows x cols matrix with the planted singular values `singular_values` (at most
/// min(rows, cols) of them) plus the noise `noise`, from Philox stream `stream` of key
/// `seed`. @throws std::invalid_argument when more values than min(rows, cols) are planted.
inline PlantedMatrix planted_matrix(std::size_t rows, std::size_t cols,
                                    std::vector<double> singular_values, PlantedNoise noise,
                                    std::uint64_t seed, std::uint64_t stream = 0) {
  const std::size_t k = singular_values.size();
  if (k > std::min(rows, cols))
    throw std::invalid_argument("planted_matrix: more planted values than min(rows, cols)");
  const auto key = [&](std::uint64_t part) { return NoiseKey{seed, mix64(stream * 4 + part)}; };
  PlantedMatrix m{rows,
                  cols,
                  std::move(singular_values),
                  detail::orthonormal_vectors(rows, k, key(1)),
                  detail::orthonormal_vectors(cols, k, key(2)),
                  {}};
  if (noise.rms > 0.0) {
    m.values = detail::gaussian_draws(rows * cols, key(0));
    if (noise.off_planted && k > 0)
      detail::project_off(m.values, rows, cols, m.left, m.right, k);
    double scale = noise.rms;
    if (noise.exact_energy) {
      double energy = 0.0;
      for (double x : m.values)
        energy += x * x;
      scale = energy > 0.0 ? noise.rms * std::sqrt(static_cast<double>(rows * cols) / energy) : 0.0;
    }
    for (double& x : m.values)
      x *= scale;
  } else {
    m.values.assign(rows * cols, 0.0);
  }
  for (std::size_t c = 0; c < k; ++c) {
    for (std::size_t i = 0; i < rows; ++i) {
      const double weight = m.singular_values[c] * m.left[c * rows + i];
      double* row = m.values.data() + i * cols;
      const double* vc = m.right.data() + c * cols;
      for (std::size_t j = 0; j < cols; ++j)
        row[j] += weight * vc[j];
    }
  }
  return m;
}

/// Singular values first * ratio^i for i < count (a geometric decay).
inline std::vector<double> geometric_values(std::size_t count, double first, double ratio) {
  std::vector<double> values(count);
  for (std::size_t i = 0; i < count; ++i)
    values[i] = first * std::pow(ratio, static_cast<double>(i));
  return values;
}

}  // namespace aclora::workload
