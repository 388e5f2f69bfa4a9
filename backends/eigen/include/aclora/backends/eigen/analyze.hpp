/// @file analyze.hpp
/// @brief Component analysis of one layer, seen along its rank axis (R x n): the
/// Gram route (fast path, fp64 or fp32 products) and the direct BDCSVD route (for comparison).
///
/// Both routes work on the layer scaled by a power of two 2^-e with 2^e > max |entry|
/// (exact, chosen panel by panel in one pass), so finite entries of any size neither
/// overflow nor underflow the Gram products; singular values and sums are scaled back.
#pragma once

#include <Eigen/Core>
#include <Eigen/Eigenvalues>
#include <Eigen/SVD>
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstddef>

#include "aclora/precision.hpp"
#include "aclora/spectrum.hpp"

namespace aclora::backends::eigen {

/// How singular values and rank-axis directions are computed.
enum class Method {
  gram,        ///< Gram matrix M M^T (R x R) + symmetric eigen-solver, arithmetic per Precision
  direct_svd,  ///< BDCSVD of M in double (slower; for comparison and checks)
};

/// Leading directions along the rank axis, as columns (R x q, decreasing singular value).
using Basis = ::Eigen::MatrixXd;

/// What the analysis of one layer keeps for its write.
struct LayerBasis {
  Basis basis;       ///< rank-axis directions, R x q
  int exponent = 0;  ///< the layer was analysed as M 2^-exponent (max |entry| < 2^exponent)
};

namespace detail {

// No scale chosen yet (all entries seen so far are zero).
inline constexpr int no_exponent = INT_MIN;

// The exponent e with 2^(e-1) <= largest < 2^e, for finite largest > 0, kept within
// [-1021, 1023] so that 2^e and 2^-e are both representable (subnormal-only matrices are
// scaled by 2^1021, which is still exact).
inline int exponent_above(double largest) {
  return std::clamp(std::ilogb(largest) + 1, -1021, 1023);
}

// Fills the component sums from the basis and the rank-axis row sums s = M 1 (given in
// units of 2^exponent): the i-th component d_i u_i v_i^T sums to (1^T u_i)(u_i^T s).
inline void fill_component_sums(const Basis& basis, const ::Eigen::VectorXd& scaled_row_sums,
                                int exponent, LayerSpectrum& spectrum) {
  spectrum.entry_sum = std::ldexp(scaled_row_sums.sum(), exponent);
  spectrum.component_sums.resize(static_cast<std::size_t>(basis.cols()));
  for (::Eigen::Index i = 0; i < basis.cols(); ++i) {
    spectrum.component_sums[static_cast<std::size_t>(i)] =
        std::ldexp(basis.col(i).sum() * basis.col(i).dot(scaled_row_sums), exponent);
  }
}

}  // namespace detail

/// Gram-route analysis of `rank_major` (R x n, any Eigen expression with middleCols): reads it
/// once in panels of `panel_width` columns, scales each panel by the running power of two,
/// and sums the panels' Gram products: with `precision` fp64 in double; with fp32 or tf32 as
/// float32 products, each panel's (at most float32_sum_limit(R) columns) partial Gram summed
/// in double. Sets spectrum.finite = false (and stops) on a NaN or infinite entry, and
/// spectrum.failure when the eigen-solver fails. Returns the basis and the scale.
template <class RankMajor>
LayerBasis analyze_gram(const RankMajor& rank_major, ::Eigen::Index panel_width,
                        Precision precision, LayerSpectrum& spectrum) {
  const ::Eigen::Index rank = rank_major.rows();
  const ::Eigen::Index length = rank_major.cols();
  const bool single = precision == Precision::fp32 || precision == Precision::tf32;
  if (single) {
    panel_width = std::min<::Eigen::Index>(
        panel_width,
        static_cast<::Eigen::Index>(float32_sum_limit(static_cast<std::size_t>(rank))));
  }
  ::Eigen::MatrixXd gram = ::Eigen::MatrixXd::Zero(rank, rank);
  ::Eigen::VectorXd row_sums = ::Eigen::VectorXd::Zero(rank);
  ::Eigen::MatrixXd panel;
  ::Eigen::MatrixXf panel_single;
  ::Eigen::MatrixXf gram_single;
  int exponent = detail::no_exponent;
  for (::Eigen::Index first = 0; first < length; first += panel_width) {
    const ::Eigen::Index width = std::min(panel_width, length - first);
    panel = rank_major.middleCols(first, width).template cast<double>();
    if (!panel.allFinite()) {
      spectrum.finite = false;
      return {};
    }
    const double largest = panel.cwiseAbs().maxCoeff();
    if (largest > 0.0) {
      const int above = detail::exponent_above(largest);
      if (exponent == detail::no_exponent) {
        exponent = above;
      } else if (above > exponent) {  // rescale what was summed so far (exact powers of two)
        gram *= std::ldexp(1.0, 2 * (exponent - above));
        row_sums *= std::ldexp(1.0, exponent - above);
        exponent = above;
      }
    }
    if (exponent == detail::no_exponent)
      continue;  // an all-zero panel adds nothing
    panel *= std::ldexp(1.0, -exponent);
    if (single) {
      panel_single = panel.cast<float>();
      gram_single.setZero(rank, rank);
      gram_single.selfadjointView<::Eigen::Lower>().rankUpdate(panel_single);
      gram.triangularView<::Eigen::Lower>() += gram_single.cast<double>();
    } else {
      gram.selfadjointView<::Eigen::Lower>().rankUpdate(panel);
    }
    row_sums += panel.rowwise().sum();
  }
  if (exponent == detail::no_exponent)
    exponent = 0;
  ::Eigen::SelfAdjointEigenSolver<::Eigen::MatrixXd> solver(gram, ::Eigen::ComputeEigenvectors);
  if (solver.info() != ::Eigen::Success) {
    spectrum.failure = "the symmetric eigen-solver did not converge on the layer's Gram matrix";
    return {};
  }
  const ::Eigen::Index q = std::min(rank, length);
  LayerBasis result{Basis(rank, q), exponent};
  spectrum.singular_values.resize(static_cast<std::size_t>(q));
  for (::Eigen::Index i = 0; i < q; ++i) {  // the solver sorts eigenvalues increasingly
    const ::Eigen::Index source = rank - 1 - i;
    result.basis.col(i) = solver.eigenvectors().col(source);
    spectrum.singular_values[static_cast<std::size_t>(i)] =
        std::ldexp(std::sqrt(std::max(solver.eigenvalues()(source), 0.0)), exponent);
  }
  detail::fill_component_sums(result.basis, row_sums, exponent, spectrum);
  mark_out_of_range(spectrum);
  return result;
}

/// Direct-route analysis: BDCSVD of `rank_major` (R x n) converted to double and scaled by
/// a power of two below its largest entry.
template <class RankMajor>
LayerBasis analyze_direct_svd(const RankMajor& rank_major, LayerSpectrum& spectrum) {
  ::Eigen::MatrixXd matrix = rank_major.template cast<double>();
  if (!matrix.allFinite()) {
    spectrum.finite = false;
    return {};
  }
  const double largest = matrix.size() > 0 ? matrix.cwiseAbs().maxCoeff() : 0.0;
  const int exponent = largest > 0.0 ? detail::exponent_above(largest) : 0;
  matrix *= std::ldexp(1.0, -exponent);
  ::Eigen::BDCSVD<::Eigen::MatrixXd> svd(matrix, ::Eigen::ComputeThinU);
  if (svd.info() != ::Eigen::Success) {
    spectrum.failure = "the SVD did not converge";
    return {};
  }
  const auto& values = svd.singularValues();
  spectrum.singular_values.resize(static_cast<std::size_t>(values.size()));
  for (::Eigen::Index i = 0; i < values.size(); ++i)
    spectrum.singular_values[static_cast<std::size_t>(i)] = std::ldexp(values(i), exponent);
  LayerBasis result{svd.matrixU(), exponent};
  detail::fill_component_sums(result.basis, matrix.rowwise().sum(), exponent, spectrum);
  mark_out_of_range(spectrum);
  return result;
}

}  // namespace aclora::backends::eigen
