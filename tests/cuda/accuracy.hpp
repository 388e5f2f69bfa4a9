// Reference results in float64 for the CUDA backend's tests, and the error bounds each
// precision setting promises, derived from the number formats and the sizes involved (no
// tuned constants). Plain C++: used by the emulated tests and by the device tests.
//
// Model of the arithmetic (see aclora/precision.hpp and the backend's kernels): the Gram
// matrix of the entries (scaled by a power of two, exactly) is summed per column chunk of W
// columns in the product precision, the chunks in float64; eigen-solves in float64; the
// projection Y = U_K (U_K^T X) in the arithmetic type (fp32: float sums over at most 64 terms,
// float64 over those), rounded once to the storage type.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "aclora/backend.hpp"
#include "aclora/noise.hpp"
#include "aclora/precision.hpp"
#include "aclora/spectrum.hpp"

namespace aclora::cuda_test {

/// Unit roundoff of float64, float32 and of TF32 inputs (10 explicit bits; truncation, the
/// worst a tensor core may do, gives twice round-to-nearest's 2^-11).
inline constexpr double u64 = 0x1p-53, u32 = 0x1p-24, u_tf32 = 0x1p-10;

/// The unit roundoff of a storage type's entries (0 for fp64 storage read in fp64).
inline double storage_roundoff(int storage_bytes, bool bfloat) {
  return storage_bytes == 8 ? u64 : storage_bytes == 4 ? u32 : bfloat ? 0x1p-8 : 0x1p-11;
}

/// Relative error bound c of every Gram product sum, |dG| <= c |X| |X|^T entrywise, for W
/// products per chunk (the chunk sums in float64 add about (n / W) u64, below the rest).
inline double gram_relative_bound(Precision precision, std::int64_t width, std::int64_t length,
                                  bool fp64_storage) {
  const double products = static_cast<double>(std::min(width, length));
  const double chunks = std::ceil(static_cast<double>(length) / static_cast<double>(width));
  switch (precision) {
    case Precision::fp64:
      return (products + chunks + 2) * u64;
    case Precision::tf32:
      return (products + 1) * u32 + 2 * u_tf32 + chunks * u64;
    default:  // fp32: fp64 entries are first rounded to float
      return (products + 1) * u32 + (fp64_storage ? 2 * u32 : 0.0) + chunks * u64;
  }
}

/// Unit roundoff of the projection's arithmetic.
inline double projection_roundoff(Precision precision) {
  return precision == Precision::fp64 ? u64 : u32;
}

/// Bound on the error of every coefficient and output sum of the projection, relative to the
/// 2-norm of the column it projects: the float32 sums run over at most 64 terms.
inline double projection_relative_bound(Precision precision, std::int64_t rank, std::int64_t kept) {
  const double u = projection_roundoff(precision);
  const double terms =
      precision == Precision::fp64 ? static_cast<double>(rank) : std::min<double>(rank, 64);
  // Input and basis rounding (2u), the sums of U^T x and of U C (terms u each), over sqrt(K)
  // coefficients.
  return 2.0 * (terms + 4) * u * std::sqrt(static_cast<double>(std::max<std::int64_t>(kept, 1)));
}

/// The float64 reference of one R x n rank-major matrix (row-major doubles): eigenvalues of
/// X X^T (descending) and the matching unit eigenvectors (eigenvector k at vectors[k]).
struct ReferenceSpectrum {
  std::vector<double> eigenvalues;
  std::vector<std::vector<double>> vectors;
  double frobenius_squared = 0.0;

  /// d_k = sqrt(lambda_k) for k < q.
  double singular(std::size_t k) const { return std::sqrt(std::max(eigenvalues[k], 0.0)); }
};

// Cyclic Jacobi on a symmetric column-major n x n matrix: eigenvalues ascending into w,
// eigenvectors as columns over a.
inline void reference_syev(int n, double* a, double* w) {
  std::vector<double> m(a, a + n * n), v(static_cast<std::size_t>(n) * n, 0.0);
  for (int i = 0; i < n; ++i)
    v[i + i * n] = 1.0;
  for (int sweep = 0; sweep < 60; ++sweep) {
    double off = 0.0, diagonal = 0.0;
    for (int p = 0; p < n; ++p) {
      diagonal += m[p + p * n] * m[p + p * n];
      for (int q = p + 1; q < n; ++q)
        off += m[p + q * n] * m[p + q * n];
    }
    if (!(off > 1e-32 * diagonal))
      break;
    for (int p = 0; p < n; ++p)
      for (int q = p + 1; q < n; ++q) {
        const double apq = m[p + q * n];
        if (apq == 0.0)
          continue;
        const double theta = (m[q + q * n] - m[p + p * n]) / (2 * apq);
        const double t = (theta >= 0 ? 1 : -1) / (std::abs(theta) + std::sqrt(theta * theta + 1));
        const double c = 1 / std::sqrt(t * t + 1), s = t * c;
        for (int k = 0; k < n; ++k) {  // columns p, q
          const double mkp = m[k + p * n], mkq = m[k + q * n];
          m[k + p * n] = c * mkp - s * mkq;
          m[k + q * n] = s * mkp + c * mkq;
        }
        for (int k = 0; k < n; ++k) {  // rows p, q
          const double mpk = m[p + k * n], mqk = m[q + k * n];
          m[p + k * n] = c * mpk - s * mqk;
          m[q + k * n] = s * mpk + c * mqk;
        }
        for (int k = 0; k < n; ++k) {
          const double vkp = v[k + p * n], vkq = v[k + q * n];
          v[k + p * n] = c * vkp - s * vkq;
          v[k + q * n] = s * vkp + c * vkq;
        }
      }
  }
  std::vector<int> order(n);
  for (int i = 0; i < n; ++i)
    order[i] = i;
  std::sort(order.begin(), order.end(), [&](int x, int y) { return m[x + x * n] < m[y + y * n]; });
  for (int j = 0; j < n; ++j) {
    w[j] = m[order[j] + order[j] * n];
    for (int i = 0; i < n; ++i)
      a[i + j * n] = v[i + order[j] * n];
  }
}

/// The reference spectrum of x (R x n, row-major doubles: the stored values).
inline ReferenceSpectrum reference_spectrum(const std::vector<double>& x, std::int64_t rank,
                                            std::int64_t length) {
  const auto r = static_cast<int>(rank);
  std::vector<double> gram(static_cast<std::size_t>(r) * r, 0.0), w(static_cast<std::size_t>(r));
  ReferenceSpectrum out;
  for (int i = 0; i < r; ++i)
    for (int j = 0; j < r; ++j) {
      double sum = 0.0;
      for (std::int64_t c = 0; c < length; ++c)
        sum += x[i * length + c] * x[j * length + c];
      gram[i + j * r] = sum;
    }
  for (int i = 0; i < r; ++i)
    out.frobenius_squared += gram[i + i * r];
  reference_syev(r, gram.data(), w.data());
  for (int k = r - 1; k >= 0; --k) {
    out.eigenvalues.push_back(w[k]);
    out.vectors.emplace_back(gram.begin() + k * r, gram.begin() + (k + 1) * r);
  }
  return out;
}

/// Bound on |d_k - d_k(reference)|: Weyl's inequality for the eigenvalues (|d lambda| <= E =
/// c ||X||_F^2 with c from gram_relative_bound, as || |X| |X|^T ||_F <= ||X||_F^2), turned into
/// singular values (|d d| <= E / d_k and <= sqrt(E)), plus the float64 eigen-solve.
inline double singular_value_bound(const ReferenceSpectrum& reference, std::size_t k,
                                   double gram_bound) {
  const double e = (gram_bound + 64 * u64) * reference.frobenius_squared;
  const double d = reference.singular(k);
  return std::min(std::sqrt(e), d > 0.0 ? e / d : std::sqrt(e));
}

/// Bound on the angle (sin theta) between the reference's and the computed span of the
/// first K directions (Davis-Kahan, with E as in singular_value_bound); 1 when the gap at K
/// is not wider than the perturbation.
inline double subspace_bound(const ReferenceSpectrum& reference, std::size_t kept,
                             double gram_bound) {
  if (kept == 0 || kept >= reference.eigenvalues.size())
    return 0.0;
  const double e = (gram_bound + 64 * u64) * reference.frobenius_squared;
  const double gap = reference.eigenvalues[kept - 1] - reference.eigenvalues[kept] - e;
  return gap > 0.0 ? std::min(1.0, e / gap) : 1.0;
}

/// Y = P_K V with P_K the reference projector on the first K directions (R x n row-major).
inline std::vector<double> reference_projection(const ReferenceSpectrum& reference,
                                                std::size_t kept, const std::vector<double>& v,
                                                std::int64_t rank, std::int64_t length) {
  std::vector<double> y(v.size(), 0.0);
  for (std::size_t k = 0; k < kept; ++k) {
    const std::vector<double>& u = reference.vectors[k];
    for (std::int64_t c = 0; c < length; ++c) {
      double coefficient = 0.0;
      for (std::int64_t i = 0; i < rank; ++i)
        coefficient += u[i] * v[i * length + c];
      for (std::int64_t i = 0; i < rank; ++i)
        y[i * length + c] += u[i] * coefficient;
    }
  }
  return y;
}

/// Column 2-norms of an R x n row-major matrix.
inline std::vector<double> column_norms(const std::vector<double>& v, std::int64_t rank,
                                        std::int64_t length) {
  std::vector<double> norms(static_cast<std::size_t>(length), 0.0);
  for (std::int64_t i = 0; i < rank; ++i)
    for (std::int64_t c = 0; c < length; ++c)
      norms[c] += v[i * length + c] * v[i * length + c];
  for (double& n : norms)
    n = std::sqrt(n);
  return norms;
}

/// The largest error of a layer's analysis relative to its bound (at most 1 passes) against
/// `reference`, the float64 reference_spectrum of its stored values x (rank-major R x n): every
/// singular value within singular_value_bound for the Gram error `gram_bound`, and the entry sum
/// within float64 summation of the |x|. Infinite when the spectrum is not finite, failed, or holds
/// other than min(R, n) values.
inline double worst_spectrum_error(const LayerSpectrum& spectrum, const std::vector<double>& x,
                                   const ReferenceSpectrum& reference, std::int64_t rank,
                                   std::int64_t length, double gram_bound) {
  const std::size_t q = static_cast<std::size_t>(std::min(rank, length));
  if (!spectrum.finite || !spectrum.failure.empty() || spectrum.singular_values.size() != q)
    return std::numeric_limits<double>::infinity();
  double worst = 0.0;
  for (std::size_t k = 0; k < q; ++k)
    worst = std::max(worst, std::abs(spectrum.singular_values[k] - reference.singular(k)) /
                                singular_value_bound(reference, k, gram_bound));
  double entry_sum = 0.0, magnitude = 0.0;
  for (double e : x) {
    entry_sum += e;
    magnitude += std::abs(e);
  }
  const double sum_bound = 2.0 * static_cast<double>(x.size()) * u64 * magnitude + 0x1p-1074;
  return std::max(worst, std::abs(spectrum.entry_sum - entry_sum) / sum_bound);
}

/// The float64 reference of one layer's write under `plan` and its error model.
struct ExpectedWrite {
  std::vector<double> noise;         ///< sigma Z, rank-major R x n (zeros for policy none)
  std::vector<double> values;        ///< P_K V + sigma Z, V = X or X - sigma Z (discarded)
  std::vector<double> column_norms;  ///< ||v_col||_2 per column of V
  double relative = 0.0;             ///< sin theta of the kept span + projection_relative_bound
};

/// The reference write of a layer with stored values x (rank-major R x n, the stored matrix
/// being R x n for RankAxis::rows, n x R for cols): Z(i, j) is the core's draw i * cols + j of
/// plan.key in the arithmetic type of `precision`, K = min(plan.kept, R, n).
inline ExpectedWrite expected_write(const std::vector<double>& x, RankAxis axis, std::int64_t rank,
                                    std::int64_t length, const LayerPlan& plan, Precision precision,
                                    double gram_bound) {
  ExpectedWrite out;
  out.noise.assign(x.size(), 0.0);
  std::vector<double> v = x;
  if (plan.noise != NoisePolicy::none) {
    const std::int64_t cols = axis == RankAxis::rows ? length : rank;
    for (std::int64_t r = 0; r < rank; ++r)
      for (std::int64_t col = 0; col < length; ++col) {
        const std::int64_t row_in_matrix = axis == RankAxis::rows ? r : col;
        const std::int64_t col_in_matrix = axis == RankAxis::rows ? col : r;
        const auto index = static_cast<std::uint64_t>(row_in_matrix * cols + col_in_matrix);
        const double z = precision == Precision::fp64
                             ? gaussian_at<double>(plan.key, index)
                             : static_cast<double>(gaussian_at<float>(plan.key, index));
        const std::size_t e = static_cast<std::size_t>(r * length + col);
        out.noise[e] = plan.sigma * z;
        if (plan.noise == NoisePolicy::discarded)
          v[e] -= out.noise[e];
      }
  }
  const ReferenceSpectrum reference = reference_spectrum(x, rank, length);
  const std::size_t kept =
      std::min<std::size_t>(plan.kept, static_cast<std::size_t>(std::min(rank, length)));
  out.values = reference_projection(reference, kept, v, rank, length);
  for (std::size_t e = 0; e < out.values.size(); ++e)
    out.values[e] += out.noise[e];
  out.column_norms = column_norms(v, rank, length);
  out.relative = subspace_bound(reference, kept, gram_bound) +
                 projection_relative_bound(precision, rank, static_cast<std::int64_t>(kept));
  return out;
}

/// The largest |written - expected| relative to its bound (at most 1 passes): per entry
/// relative ||v_col|| + u_store |y| + (2 u_real + transform_slack) (|y| + |z|) + underflow,
/// i.e. the kept span and the arithmetic, one rounding to the storage type (unit roundoff
/// u_store), the noise add, a noise transform within transform_slack of the host's, and the
/// storage type's rounding of tiny results.
inline double worst_write_error(const ExpectedWrite& expected, const std::vector<double>& written,
                                std::int64_t length, Precision precision, double u_store,
                                double transform_slack, double underflow) {
  if (written.size() != expected.values.size())
    return std::numeric_limits<double>::infinity();
  const double u_real = projection_roundoff(precision);
  double worst = 0.0;
  for (std::size_t e = 0; e < written.size(); ++e) {
    const double y = expected.values[e], z = expected.noise[e];
    const double bound =
        expected.relative * expected.column_norms[e % static_cast<std::size_t>(length)] +
        u_store * std::abs(y) + (2 * u_real + transform_slack) * (std::abs(y) + std::abs(z)) +
        underflow;
    worst = std::max(worst, std::abs(written[e] - y) / bound);
  }
  return worst;
}

}  // namespace aclora::cuda_test
