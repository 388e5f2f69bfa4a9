/// @file product.hpp
/// @brief Product analysis: the exact SVD of a LoRA update dW = B A computed from its
/// factors without forming dW, and the refactoring of (B, A) to any rank K.
///
/// Method (all small matrices are R x R, in double):
///   G_B = B^T B = Q_B L_B Q_B^T,  G_A = A A^T = Q_A L_A Q_A^T  (symmetric eigen-decompositions);
///   B = U_B L_B^(1/2) Q_B^T and A = Q_A L_A^(1/2) V_A^T with orthonormal U_B, V_A, so
///   dW = U_B C V_A^T with the core C = L_B^(1/2) Q_B^T Q_A L_A^(1/2);
///   C = X S Y^T (SVD) gives dW = (U_B X) S (V_A Y)^T: S are the singular values of dW.
/// Refactoring to K: B' = B M_B, A' = M_A A with
///   M_B = Q_B L_B^(+1/2) X_K S_K^(1/2)   (R x K),   M_A = S_K^(1/2) Y_K^T L_A^(+1/2) Q_A^T  (K x
///   R)
/// (L^(+1/2): pseudo-inverse square root, so B = 0 or a rank-deficient factor is fine). Then
/// B' A' is the best rank-K approximation of B A, and B' A' = B A when K >= rank(B A).
/// The result is invariant to B -> B T, A -> T^-1 A, which per-factor analysis is not.
///
/// The algorithm is written once here; a backend supplies the dense primitives
/// (ProductPrimitives): the Gram matrix of a factor along its rank axis, a symmetric
/// eigen-decomposition, the SVD of a small square matrix, a small product, and the
/// transformation of a factor by a small matrix.
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "aclora/error.hpp"
#include "aclora/layer.hpp"
#include "aclora/selection.hpp"

namespace aclora {

/// A small dense double matrix, column-major (entry (i, j) at data[i + j * rows]).
struct SmallMatrix {
  std::size_t rows = 0;      ///< number of rows
  std::size_t cols = 0;      ///< number of columns
  std::vector<double> data;  ///< rows * cols entries, column-major

  /// A rows x cols matrix of zeros.
  static SmallMatrix zeros(std::size_t rows, std::size_t cols) {
    return SmallMatrix{rows, cols, std::vector<double>(rows * cols, 0.0)};
  }
  /// Entry (i, j).
  double& operator()(std::size_t i, std::size_t j) { return data[i + j * rows]; }
  /// Entry (i, j).
  double operator()(std::size_t i, std::size_t j) const { return data[i + j * rows]; }
};

/// A symmetric eigen-decomposition: values in DECREASING order, vectors as columns.
struct SymmetricEigen {
  std::vector<double> values;  ///< eigenvalues, decreasing
  SmallMatrix vectors;         ///< eigenvectors as columns, in the order of values
};

/// A full SVD of a square matrix: M = U diag(s) V^T, s decreasing.
struct SmallSvd {
  SmallMatrix u;          ///< left singular vectors (columns)
  std::vector<double> s;  ///< singular values, decreasing
  SmallMatrix v;          ///< right singular vectors (columns)
};

/// Dense primitives the product analysis needs from a backend P:
/// - `P::matrix_type`: the backend's view of one factor;
/// - `p.gram(layer, out)`: out = M M^T for the layer seen along its rank axis (R x n), in
///   double; returns false (out unspecified) when the factor holds a NaN or an infinity;
/// - `p.eigen(g)`: symmetric eigen-decomposition (values decreasing);
/// - `p.svd(c)`: full SVD of a square matrix (s decreasing);
/// - `p.multiply(a, b)`: the product a b;
/// - `p.length(layer)`: n, the length of the factor's other axis;
/// - `p.transform(layer, m, out)`: for an up factor (rank axis cols, n x R): out = B m
///   (n x K); for a down factor (rank axis rows, R x n): out = m^T A (K x n); m is R x K and
///   out is row-major float with n * K entries.
template <class P>
concept ProductPrimitives = requires(P& p, const Layer<typename P::matrix_type>& layer,
                                     SmallMatrix& out, const SmallMatrix& small,
                                     std::span<float> dense) {
  { p.gram(layer, out) } -> std::same_as<bool>;
  { p.eigen(small) } -> std::same_as<SymmetricEigen>;
  { p.svd(small) } -> std::same_as<SmallSvd>;
  { p.multiply(small, small) } -> std::same_as<SmallMatrix>;
  { p.length(layer) } -> std::convertible_to<std::size_t>;
  { p.transform(layer, small, dense) } -> std::same_as<void>;
};

/// The exact component analysis of dW = B A.
struct ProductSpectrum {
  std::vector<double> singular_values;  ///< of dW, decreasing; R of them (zeros past rank(dW))
  bool finite = true;                   ///< false when a factor holds NaN or Inf
};

/// What product_analyze keeps for refactoring.
struct ProductDecomposition {
  ProductSpectrum spectrum;         ///< singular values of dW
  std::vector<double> up_values;    ///< eigenvalues of G_B, decreasing
  SmallMatrix up_vectors;           ///< Q_B
  std::vector<double> down_values;  ///< eigenvalues of G_A, decreasing
  SmallMatrix down_vectors;         ///< Q_A
  SmallSvd core;                    ///< SVD of C
};

/// A refactored module: up' (out x K) and down' (K x in), row-major float.
struct ProductFactors {
  std::size_t rank = 0;     ///< K
  std::size_t rows = 0;     ///< out: rows of up'
  std::size_t columns = 0;  ///< in: columns of down'
  std::vector<float> up;    ///< up' = B M_B, rows x rank, row-major
  std::vector<float> down;  ///< down' = M_A A, rank x columns, row-major
};

namespace detail {

// L^(1/2) for eigenvalues of a Gram matrix (negative round-off clamped to 0).
inline double root_of(double eigenvalue) {
  return eigenvalue > 0.0 ? std::sqrt(eigenvalue) : 0.0;
}

// L^(+1/2): 1 / sqrt(l) for eigenvalues above the round-off floor of the decomposition, else 0.
inline double inverse_root_of(double eigenvalue, double largest, std::size_t size) {
  const double floor = largest * 64.0 * static_cast<double>(size) * 2.220446049250313e-16;
  return eigenvalue > floor && eigenvalue > 0.0 ? 1.0 / std::sqrt(eigenvalue) : 0.0;
}

}  // namespace detail

/// Analyses one module: `down` is A (rank axis rows, R x in), `up` is B (rank axis cols,
/// out x R). Modifies nothing.
/// @throws Error when the rank axes differ or a factor is empty.
template <ProductPrimitives P>
ProductDecomposition product_analyze(P& primitives, const Layer<typename P::matrix_type>& down,
                                     const Layer<typename P::matrix_type>& up, std::size_t rank) {
  if (rank == 0)
    throw Error("product analysis: rank 0 module");
  ProductDecomposition result;
  SmallMatrix gram_up;
  SmallMatrix gram_down;
  if (!primitives.gram(up, gram_up) || !primitives.gram(down, gram_down)) {
    result.spectrum.finite = false;
    return result;
  }
  if (gram_up.rows != rank || gram_down.rows != rank) {
    throw Error("product analysis: factors disagree on the rank (" + std::to_string(gram_up.rows) +
                " vs " + std::to_string(gram_down.rows) + ")");
  }
  SymmetricEigen up_eigen = primitives.eigen(gram_up);
  SymmetricEigen down_eigen = primitives.eigen(gram_down);

  // C = L_B^(1/2) Q_B^T Q_A L_A^(1/2)
  SmallMatrix up_transposed = SmallMatrix::zeros(rank, rank);
  for (std::size_t i = 0; i < rank; ++i) {
    const double root = detail::root_of(up_eigen.values[i]);
    for (std::size_t j = 0; j < rank; ++j)
      up_transposed(i, j) = root * up_eigen.vectors(j, i);
  }
  SmallMatrix down_scaled = down_eigen.vectors;
  for (std::size_t j = 0; j < rank; ++j) {
    const double root = detail::root_of(down_eigen.values[j]);
    for (std::size_t i = 0; i < rank; ++i)
      down_scaled(i, j) *= root;
  }
  const SmallMatrix core = primitives.multiply(up_transposed, down_scaled);
  result.core = primitives.svd(core);
  result.spectrum.singular_values = result.core.s;
  result.up_values = std::move(up_eigen.values);
  result.up_vectors = std::move(up_eigen.vectors);
  result.down_values = std::move(down_eigen.values);
  result.down_vectors = std::move(down_eigen.vectors);
  return result;
}

/// Refactors the module to rank K (1 <= K <= R): B' A' = the rank-K truncation of B A.
/// @throws Error for K outside [1, R] or a decomposition of non-finite factors.
template <ProductPrimitives P>
ProductFactors product_refactor(P& primitives, const ProductDecomposition& decomposition,
                                const Layer<typename P::matrix_type>& down,
                                const Layer<typename P::matrix_type>& up, std::size_t kept) {
  const std::size_t rank = decomposition.core.s.size();
  if (!decomposition.spectrum.finite)
    throw Error("product refactor: the factors hold NaN or Inf");
  if (kept < 1 || kept > rank) {
    throw Error("product refactor: rank " + std::to_string(kept) + " outside [1, " +
                std::to_string(rank) + "]");
  }
  const double largest_up = decomposition.up_values.empty() ? 0.0 : decomposition.up_values[0];
  const double largest_down =
      decomposition.down_values.empty() ? 0.0 : decomposition.down_values[0];
  // W_B = L_B^(+1/2) X_K S_K^(1/2) and W_A = L_A^(+1/2) Y_K S_K^(1/2) (both R x K).
  SmallMatrix up_weights = SmallMatrix::zeros(rank, kept);
  SmallMatrix down_weights = SmallMatrix::zeros(rank, kept);
  for (std::size_t k = 0; k < kept; ++k) {
    const double root_s = detail::root_of(decomposition.core.s[k]);
    for (std::size_t i = 0; i < rank; ++i) {
      up_weights(i, k) = detail::inverse_root_of(decomposition.up_values[i], largest_up, rank) *
                         decomposition.core.u(i, k) * root_s;
      down_weights(i, k) =
          detail::inverse_root_of(decomposition.down_values[i], largest_down, rank) *
          decomposition.core.v(i, k) * root_s;
    }
  }
  const SmallMatrix up_map = primitives.multiply(decomposition.up_vectors, up_weights);
  const SmallMatrix down_map = primitives.multiply(decomposition.down_vectors, down_weights);

  ProductFactors result;
  result.rank = kept;
  result.rows = primitives.length(up);
  result.columns = primitives.length(down);
  result.up.assign(result.rows * kept, 0.0f);
  result.down.assign(result.columns * kept, 0.0f);
  primitives.transform(up, up_map, result.up);
  primitives.transform(down, down_map, result.down);
  return result;
}

/// Smallest K whose cumulative energy (sum of s_i^2) reaches `fraction` of the total;
/// at least 1, at most the number of values. 1 when the total is 0.
inline std::size_t rank_for_energy(std::span<const double> singular_values, double fraction) {
  double total = 0.0;
  for (double s : singular_values)
    total += s * s;
  if (!(total > 0.0) || singular_values.empty())
    return singular_values.empty() ? 0 : 1;
  const double bound = fraction * total;
  double cumulative = 0.0;
  for (std::size_t i = 0; i < singular_values.size(); ++i) {
    cumulative += singular_values[i] * singular_values[i];
    if (cumulative >= bound * (1.0 - 1e-12))
      return i + 1;
  }
  return singular_values.size();
}

/// Numerical rank of dW: components above a relative tolerance of the largest value.
inline std::size_t numerical_rank(std::span<const double> singular_values,
                                  double relative_tolerance = 1e-6) {
  if (singular_values.empty() || !(singular_values[0] > 0.0))
    return 0;
  std::size_t count = 0;
  for (double s : singular_values)
    if (s > relative_tolerance * singular_values[0])
      ++count;
  return count;
}

}  // namespace aclora
