// Test helpers: matrices with a planted spectrum (the shared generator) and the
// double-precision JacobiSVD reference truncation every Eigen-backend test compares against.
#pragma once

#include <Eigen/Dense>
#include <Eigen/SVD>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "../../bench/common/planted.hpp"
#include "aclora/noise.hpp"

namespace aclora_test {

/// A rows x cols matrix of independent N(0, 1) draws from stream `stream` (portable:
/// the project's own Philox generator, not <random>).
inline Eigen::MatrixXd gaussian_matrix(Eigen::Index rows, Eigen::Index cols, std::uint64_t stream) {
  const aclora::NoiseKey key{0x5eed, stream};
  Eigen::MatrixXd m(rows, cols);
  for (Eigen::Index i = 0; i < rows; ++i) {
    for (Eigen::Index j = 0; j < cols; ++j)
      m(i, j) = aclora::gaussian_at<double>(key, static_cast<std::uint64_t>(i * cols + j));
  }
  return m;
}

/// A rows x cols matrix U diag(values) V^T with random orthonormal U and V, plus
/// independent N(0, noise^2) entries: the project's one planted-matrix generator
/// (bench/common/planted.hpp), key 0x5eed, stream `stream`.
inline Eigen::MatrixXd planted_matrix(Eigen::Index rows, Eigen::Index cols,
                                      const std::vector<double>& values, double noise,
                                      std::uint64_t stream) {
  const aclora::workload::PlantedMatrix m = aclora::workload::planted_matrix(
      static_cast<std::size_t>(rows), static_cast<std::size_t>(cols), values, {.rms = noise},
      0x5eed, stream);
  using RowMajor = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  return Eigen::Map<const RowMajor>(m.values.data(), rows, cols);
}

/// The reference analysis of a matrix: full thin SVD in double.
struct Reference {
  Eigen::MatrixXd u;                ///< left singular vectors (rows x q)
  Eigen::VectorXd singular_values;  ///< decreasing
  Eigen::MatrixXd v;                ///< right singular vectors (cols x q)

  explicit Reference(const Eigen::MatrixXd& m) {
    Eigen::JacobiSVD<Eigen::MatrixXd> svd(m, Eigen::ComputeThinU | Eigen::ComputeThinV);
    u = svd.matrixU();
    singular_values = svd.singularValues();
    v = svd.matrixV();
  }

  /// The best rank-k approximation U_k diag(d_1..d_k) V_k^T.
  Eigen::MatrixXd truncated(Eigen::Index k) const {
    return u.leftCols(k) * singular_values.head(k).asDiagonal() * v.leftCols(k).transpose();
  }
};

/// Population standard deviation of the entries (mean subtracted, divided by the count).
inline double population_std(const Eigen::MatrixXd& m) {
  const double mean = m.mean();
  return std::sqrt((m.array() - mean).square().sum() / static_cast<double>(m.size()));
}

}  // namespace aclora_test
