/// @file product.hpp
/// @brief The Eigen implementation of the product-analysis primitives (aclora/product.hpp).
#pragma once

#include <Eigen/Core>
#include <Eigen/Eigenvalues>
#include <Eigen/SVD>
#include <algorithm>
#include <cstddef>
#include <span>

#include "aclora/backends/eigen/matrix.hpp"
#include "aclora/layer.hpp"
#include "aclora/product.hpp"

namespace aclora::backends::eigen {

/// Product-analysis primitives over MatrixView factors: Gram matrices accumulated in
/// double over column panels, Eigen's SelfAdjointEigenSolver and JacobiSVD for the
/// R x R work, and a float-output transform of each factor.
class ProductPrimitives {
 public:
  using matrix_type = MatrixView;  ///< view of one factor

  /// A primitives object; `panel_width` columns of the R x n view are converted per step.
  explicit ProductPrimitives(::Eigen::Index panel_width = 256) : panel_width_(panel_width) {}

  /// out = M M^T (R x R) of the factor seen along its rank axis; false on NaN or Inf.
  bool gram(const Layer<matrix_type>& layer, SmallMatrix& out) const {
    bool finite = true;
    visit_rank_major(layer, [&](auto&& rank_major) {
      const ::Eigen::Index rank = rank_major.rows();
      const ::Eigen::Index length = rank_major.cols();
      ::Eigen::MatrixXd gram = ::Eigen::MatrixXd::Zero(rank, rank);
      ::Eigen::MatrixXd panel;
      for (::Eigen::Index first = 0; first < length; first += panel_width_) {
        const ::Eigen::Index width = std::min(panel_width_, length - first);
        panel = rank_major.middleCols(first, width).template cast<double>();
        if (!panel.allFinite()) {
          finite = false;
          return;
        }
        gram.noalias() += panel * panel.transpose();
      }
      out = SmallMatrix::zeros(static_cast<std::size_t>(rank), static_cast<std::size_t>(rank));
      ::Eigen::Map<::Eigen::MatrixXd>(out.data.data(), rank, rank) = gram;
    });
    return finite;
  }

  /// Symmetric eigen-decomposition with decreasing eigenvalues.
  SymmetricEigen eigen(const SmallMatrix& matrix) const {
    const auto size = static_cast<::Eigen::Index>(matrix.rows);
    ::Eigen::Map<const ::Eigen::MatrixXd> map(matrix.data.data(), size, size);
    ::Eigen::SelfAdjointEigenSolver<::Eigen::MatrixXd> solver(map, ::Eigen::ComputeEigenvectors);
    SymmetricEigen result;
    result.values.resize(matrix.rows);
    result.vectors = SmallMatrix::zeros(matrix.rows, matrix.rows);
    ::Eigen::Map<::Eigen::MatrixXd> vectors(result.vectors.data.data(), size, size);
    for (::Eigen::Index i = 0; i < size; ++i) {  // the solver sorts increasingly
      result.values[static_cast<std::size_t>(i)] = solver.eigenvalues()(size - 1 - i);
      vectors.col(i) = solver.eigenvectors().col(size - 1 - i);
    }
    return result;
  }

  /// Full SVD of a square matrix (JacobiSVD: the matrix is small and accuracy matters).
  SmallSvd svd(const SmallMatrix& matrix) const {
    const auto size = static_cast<::Eigen::Index>(matrix.rows);
    ::Eigen::Map<const ::Eigen::MatrixXd> map(matrix.data.data(), size, size);
    ::Eigen::JacobiSVD<::Eigen::MatrixXd> solver(map,
                                                 ::Eigen::ComputeFullU | ::Eigen::ComputeFullV);
    SmallSvd result;
    result.u = SmallMatrix::zeros(matrix.rows, matrix.rows);
    result.v = SmallMatrix::zeros(matrix.rows, matrix.rows);
    ::Eigen::Map<::Eigen::MatrixXd>(result.u.data.data(), size, size) = solver.matrixU();
    ::Eigen::Map<::Eigen::MatrixXd>(result.v.data.data(), size, size) = solver.matrixV();
    result.s.assign(solver.singularValues().data(),
                    solver.singularValues().data() + solver.singularValues().size());
    return result;
  }

  /// The product a b.
  SmallMatrix multiply(const SmallMatrix& a, const SmallMatrix& b) const {
    SmallMatrix result = SmallMatrix::zeros(a.rows, b.cols);
    ::Eigen::Map<const ::Eigen::MatrixXd> left(a.data.data(), static_cast<::Eigen::Index>(a.rows),
                                               static_cast<::Eigen::Index>(a.cols));
    ::Eigen::Map<const ::Eigen::MatrixXd> right(b.data.data(), static_cast<::Eigen::Index>(b.rows),
                                                static_cast<::Eigen::Index>(b.cols));
    ::Eigen::Map<::Eigen::MatrixXd>(result.data.data(), static_cast<::Eigen::Index>(a.rows),
                                    static_cast<::Eigen::Index>(b.cols))
        .noalias() = left * right;
    return result;
  }

  /// Length of the factor's other (non-rank) axis.
  static std::size_t length(const Layer<matrix_type>& layer) {
    return static_cast<std::size_t>(layer.axis == RankAxis::rows ? layer.matrix.cols()
                                                                 : layer.matrix.rows());
  }

  /// Up (n x R): out = B m (n x K); down (R x n): out = m^T A (K x n); row-major float.
  void transform(const Layer<matrix_type>& layer, const SmallMatrix& map,
                 std::span<float> out) const {
    const auto rank = static_cast<::Eigen::Index>(map.rows);
    const auto kept = static_cast<::Eigen::Index>(map.cols);
    ::Eigen::Map<const ::Eigen::MatrixXd> small(map.data.data(), rank, kept);
    using RowMajorF = ::Eigen::Matrix<float, ::Eigen::Dynamic, ::Eigen::Dynamic, ::Eigen::RowMajor>;
    const auto n = static_cast<::Eigen::Index>(length(layer));
    layer.matrix.visit([&](auto factor) {
      if (layer.axis == RankAxis::cols) {
        ::Eigen::Map<RowMajorF> target(out.data(), n, kept);
        target = (factor.template cast<double>() * small).template cast<float>();
      } else {
        ::Eigen::Map<RowMajorF> target(out.data(), kept, n);
        target = (small.transpose() * factor.template cast<double>()).template cast<float>();
      }
    });
  }

 private:
  ::Eigen::Index panel_width_;
};

}  // namespace aclora::backends::eigen
