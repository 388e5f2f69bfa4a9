// Host-only test helpers: planted matrices with a known SVD (X = sum_k d_k u_k v_k^T with
// orthonormal directions, from the shared generator bench/common/planted.hpp), layouts and
// comparisons. No CUDA header needed.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "../../bench/common/planted.hpp"
#include "aclora/layer.hpp"

namespace aclora::cuda_test {

/// X = sum_k d_k u_k v_k^T (R x n, row-major doubles) with orthonormal u_k, v_k and
/// d_k = scale * 0.7^k for k < planted: exact SVD known.
struct Planted {
  std::int64_t rank = 0, length = 0;
  std::vector<double> d;                  // planted singular values
  std::vector<std::vector<double>> u, v;  // orthonormal directions
  std::vector<double> x;                  // R x n row-major

  /// The rank-K truncation X_K (row-major R x n).
  std::vector<double> truncated(std::size_t kept) const {
    std::vector<double> out(static_cast<std::size_t>(rank * length), 0.0);
    for (std::size_t k = 0; k < kept && k < d.size(); ++k)
      for (std::int64_t r = 0; r < rank; ++r)
        for (std::int64_t c = 0; c < length; ++c)
          out[r * length + c] += d[k] * u[k][r] * v[k][c];
    return out;
  }
  /// P = U_K U_K^T (R x R row-major).
  std::vector<double> projector(std::size_t kept) const {
    std::vector<double> p(static_cast<std::size_t>(rank * rank), 0.0);
    for (std::size_t k = 0; k < kept && k < u.size(); ++k)
      for (std::int64_t i = 0; i < rank; ++i)
        for (std::int64_t j = 0; j < rank; ++j)
          p[i * rank + j] += u[k][i] * u[k][j];
    return p;
  }
};

/// The planted matrix of the CUDA tests: min(rank, length) components with d_k = scale 0.7^k
/// and no noise, from the project's one planted-matrix generator (bench/common/planted.hpp).
inline Planted planted(std::int64_t rank, std::int64_t length, std::uint64_t seed,
                       double scale = 1.0) {
  const auto rows = static_cast<std::size_t>(rank);
  const auto cols = static_cast<std::size_t>(length);
  const std::size_t count = std::min(rows, cols);
  workload::PlantedMatrix m =
      workload::planted_matrix(rows, cols, workload::geometric_values(count, scale, 0.7), {}, seed);
  Planted p;
  p.rank = rank;
  p.length = length;
  p.d = m.singular_values;
  for (std::size_t k = 0; k < count; ++k) {
    p.u.emplace_back(m.left.begin() + static_cast<std::ptrdiff_t>(k * rows),
                     m.left.begin() + static_cast<std::ptrdiff_t>((k + 1) * rows));
    p.v.emplace_back(m.right.begin() + static_cast<std::ptrdiff_t>(k * cols),
                     m.right.begin() + static_cast<std::ptrdiff_t>((k + 1) * cols));
  }
  p.x = std::move(m.values);
  return p;
}

/// Memory layouts of the tests' matrices (strided: neither stride is 1).
enum class Layout { row_major, col_major, padded, strided };

inline const char* layout_name(Layout layout) {
  switch (layout) {
    case Layout::row_major:
      return "row_major";
    case Layout::col_major:
      return "col_major";
    case Layout::padded:
      return "padded";
    default:
      return "strided";
  }
}

/// Row-major matrix values of a planted rank-major X for a layer with the given axis:
/// X itself (rows axis) or X^T (cols axis).
inline std::vector<double> as_matrix(const std::vector<double>& x, std::int64_t rank,
                                     std::int64_t length, RankAxis axis) {
  if (axis == RankAxis::rows)
    return x;
  std::vector<double> t(x.size());
  for (std::int64_t r = 0; r < rank; ++r)
    for (std::int64_t c = 0; c < length; ++c)
      t[c * rank + r] = x[r * length + c];
  return t;
}

/// max |a - b| / max |b|.
inline double relative_error(const std::vector<double>& a, const std::vector<double>& b) {
  double diff = 0.0, norm = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(a[i] - b[i]));
    norm = std::max(norm, std::abs(b[i]));
  }
  return norm > 0.0 ? diff / norm : diff;
}

}  // namespace aclora::cuda_test
