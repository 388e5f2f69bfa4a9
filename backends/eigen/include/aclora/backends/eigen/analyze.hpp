/// @file analyze.hpp
/// @brief Component analysis of one layer, seen along its rank axis (R x n): the
/// Gram route (fast path) and the direct BDCSVD route (for comparison).
#pragma once

#include <Eigen/Core>
#include <Eigen/Eigenvalues>
#include <Eigen/SVD>
#include <algorithm>
#include <cmath>

#include "aclora/spectrum.hpp"

namespace aclora::backends::eigen {

/// How singular values and rank-axis directions are computed.
enum class Method {
  gram,        ///< Gram matrix M M^T (R x R, double accumulation) + symmetric eigen-solver
  direct_svd,  ///< BDCSVD of M in double (slower; for comparison and checks)
};

/// Leading directions along the rank axis, as columns (R x q, decreasing singular value).
using Basis = ::Eigen::MatrixXd;

namespace detail {

// Fills the component sums from the basis and the rank-axis row sums s = M 1:
// the i-th component d_i u_i v_i^T sums to (1^T u_i)(u_i^T s).
inline void fill_component_sums(const Basis& basis, const ::Eigen::VectorXd& row_sums,
                                LayerSpectrum& spectrum) {
  spectrum.entry_sum = row_sums.sum();
  spectrum.component_sums.resize(basis.cols());
  for (::Eigen::Index i = 0; i < basis.cols(); ++i) {
    spectrum.component_sums[i] = basis.col(i).sum() * basis.col(i).dot(row_sums);
  }
}

}  // namespace detail

/// Gram-route analysis of `rank_major` (R x n, any Eigen expression with middleCols):
/// reads it once in panels of `panel_width` columns. Returns the basis; sets
/// spectrum.finite = false (and stops) on a NaN or infinite entry.
template <class RankMajor>
Basis analyze_gram(const RankMajor& rank_major, ::Eigen::Index panel_width,
                   LayerSpectrum& spectrum) {
  const ::Eigen::Index rank = rank_major.rows();
  const ::Eigen::Index length = rank_major.cols();
  ::Eigen::MatrixXd gram = ::Eigen::MatrixXd::Zero(rank, rank);
  ::Eigen::VectorXd row_sums = ::Eigen::VectorXd::Zero(rank);
  ::Eigen::MatrixXd panel;
  for (::Eigen::Index first = 0; first < length; first += panel_width) {
    const ::Eigen::Index width = std::min(panel_width, length - first);
    panel = rank_major.middleCols(first, width).template cast<double>();
    if (!panel.allFinite()) {
      spectrum.finite = false;
      return {};
    }
    gram.selfadjointView<::Eigen::Lower>().rankUpdate(panel);
    row_sums += panel.rowwise().sum();
  }
  ::Eigen::SelfAdjointEigenSolver<::Eigen::MatrixXd> solver(gram, ::Eigen::ComputeEigenvectors);
  const ::Eigen::Index q = std::min(rank, length);
  Basis basis(rank, q);
  spectrum.singular_values.resize(q);
  for (::Eigen::Index i = 0; i < q; ++i) {  // the solver sorts eigenvalues increasingly
    const ::Eigen::Index source = rank - 1 - i;
    basis.col(i) = solver.eigenvectors().col(source);
    spectrum.singular_values[i] = std::sqrt(std::max(solver.eigenvalues()(source), 0.0));
  }
  detail::fill_component_sums(basis, row_sums, spectrum);
  return basis;
}

/// Direct-route analysis: BDCSVD of `rank_major` (R x n) converted to double.
template <class RankMajor>
Basis analyze_direct_svd(const RankMajor& rank_major, LayerSpectrum& spectrum) {
  const ::Eigen::MatrixXd matrix = rank_major.template cast<double>();
  if (!matrix.allFinite()) {
    spectrum.finite = false;
    return {};
  }
  ::Eigen::BDCSVD<::Eigen::MatrixXd> svd(matrix, ::Eigen::ComputeThinU);
  const auto& values = svd.singularValues();
  spectrum.singular_values.assign(values.data(), values.data() + values.size());
  Basis basis = svd.matrixU();
  detail::fill_component_sums(basis, matrix.rowwise().sum(), spectrum);
  return basis;
}

}  // namespace aclora::backends::eigen
