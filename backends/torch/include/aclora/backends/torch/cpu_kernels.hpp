/// @file cpu_kernels.hpp
/// @brief CPU kernels over one column panel of a layer (R x w, row-major, in cache): Gram
/// products accumulated in float64, the projection U_K (U_K^T P), and the panel scans.
///
/// Why our own kernels: LibTorch calls whatever BLAS the system provides. Debian's libtorch
/// over the reference BLAS runs dgemm at about one GFLOP/s; over OpenBLAS its batched
/// matmul still takes twice the time of these kernels on one thread (the Gram kernel
/// computes only the lower triangle) and starts OpenBLAS's own threads inside ours. The
/// kernels use 16-byte vectors (two doubles or four floats: SSE2 on x86-64, NEON on
/// AArch64) and sum every entry in a fixed order, so results do not depend on threads,
/// batching or the BLAS installed.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__clang__)
#define ACLORA_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define ACLORA_UNROLL _Pragma("GCC unroll 8")
#else
#define ACLORA_UNROLL
#endif

namespace aclora::backends::libtorch::detail {

#if defined(__GNUC__) || defined(__clang__)
#define ACLORA_TORCH_VECTORS 1
template <class Real>
struct VectorOf;
template <>
struct VectorOf<double> {
  using type = double __attribute__((vector_size(16)));
};
template <>
struct VectorOf<float> {
  using type = float __attribute__((vector_size(16)));
};
/// 16 bytes of Real: two doubles or four floats.
template <class Real>
using Vector = typename VectorOf<Real>::type;
template <class Real>
inline constexpr int kLanes = static_cast<int>(16 / sizeof(Real));

template <class Real>
inline Vector<Real> load(const Real* p) {
  Vector<Real> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <class Real>
inline void store(Real* p, const Vector<Real>& v) {
  std::memcpy(p, &v, sizeof v);
}
template <class Real>
inline Vector<Real> broadcast(Real x) {
  Vector<Real> v;
  for (int i = 0; i < kLanes<Real>; ++i)
    v[i] = x;
  return v;
}
// Lanes summed left to right.
template <class Real>
inline Real lane_sum(const Vector<Real>& v) {
  Real sum = v[0];
  for (int i = 1; i < kLanes<Real>; ++i)
    sum += v[i];
  return sum;
}
#endif

// Adds the dot products of rows [a0, a0 + A) with rows [b0, b0 + B) of `panel` (width
// columns, row stride `stride`) to `gram` (row-major rank x rank, float64). Each product is
// summed in Real over the panel's columns, then added to the float64 entry.
template <class Real, int A, int B>
inline void gram_tile(const Real* panel, std::int64_t stride, std::int64_t width, std::int64_t a0,
                      std::int64_t b0, double* gram, std::int64_t rank) {
  const Real* row_a[A];
  const Real* row_b[B];
  ACLORA_UNROLL for (int i = 0; i < A; ++i) row_a[i] = panel + (a0 + i) * stride;
  ACLORA_UNROLL for (int k = 0; k < B; ++k) row_b[k] = panel + (b0 + k) * stride;
  Real sums[A][B];
  std::int64_t j = 0;
#if ACLORA_TORCH_VECTORS
  constexpr int lanes = kLanes<Real>;
  Vector<Real> acc[A][B];
  ACLORA_UNROLL for (int i = 0; i < A; ++i) {
    ACLORA_UNROLL for (int k = 0; k < B; ++k) acc[i][k] = broadcast<Real>(0);
  }
  for (; j + lanes <= width; j += lanes) {
    Vector<Real> va[A], vb[B];
    ACLORA_UNROLL for (int i = 0; i < A; ++i) va[i] = load(row_a[i] + j);
    ACLORA_UNROLL for (int k = 0; k < B; ++k) vb[k] = load(row_b[k] + j);
    ACLORA_UNROLL for (int i = 0; i < A; ++i) {
      ACLORA_UNROLL for (int k = 0; k < B; ++k) acc[i][k] += va[i] * vb[k];
    }
  }
  ACLORA_UNROLL for (int i = 0; i < A; ++i) {
    ACLORA_UNROLL for (int k = 0; k < B; ++k) sums[i][k] = lane_sum<Real>(acc[i][k]);
  }
#else
  for (int i = 0; i < A; ++i)
    for (int k = 0; k < B; ++k)
      sums[i][k] = 0;
#endif
  for (; j < width; ++j)
    for (int i = 0; i < A; ++i)
      for (int k = 0; k < B; ++k)
        sums[i][k] += row_a[i][j] * row_b[k][j];
  ACLORA_UNROLL for (int i = 0; i < A; ++i) {
    ACLORA_UNROLL for (int k = 0; k < B; ++k) gram[(a0 + i) * rank + b0 + k] +=
        static_cast<double>(sums[i][k]);
  }
}

/// gram += P P^T on the lower triangle (entries (a, b), b <= a) for the rank x width panel P
/// (row-major, row stride `stride`). Each entry's panel sum runs in Real (float: at most
/// `width` products, keep width <= float32_sum_limit(rank)) and is added in float64.
template <class Real>
void gram_lower(const Real* panel, std::int64_t stride, std::int64_t rank, std::int64_t width,
                double* gram) {
  const std::int64_t tiled = rank - rank % 4;
  for (std::int64_t a0 = 0; a0 < tiled; a0 += 4)
    for (std::int64_t b0 = 0; b0 < a0 + 4; b0 += 2)
      gram_tile<Real, 4, 2>(panel, stride, width, a0, b0, gram, rank);
  for (std::int64_t a = tiled; a < rank; ++a)
    for (std::int64_t b = 0; b <= a; ++b)
      gram_tile<Real, 1, 1>(panel, stride, width, a, b, gram, rank);
}

/// Copies the lower triangle of a row-major rank x rank matrix onto its upper triangle.
inline void mirror_lower(double* matrix, std::int64_t rank) {
  for (std::int64_t a = 0; a < rank; ++a)
    for (std::int64_t b = a + 1; b < rank; ++b)
      matrix[a * rank + b] = matrix[b * rank + a];
}

/// out[j] = sum_k weights[k * weight_step] * rows[k][j] for j < count, each entry summed
/// over k in increasing order (so vector and scalar paths give the same bits).
template <class Real>
void combine_rows(Real* out, const Real* weights, std::int64_t weight_step, const Real* const* rows,
                  std::int64_t terms, std::int64_t count) {
  std::int64_t j = 0;
#if ACLORA_TORCH_VECTORS
  constexpr int lanes = kLanes<Real>;
  // Four independent accumulators hide the add latency.
  for (; j + 4 * lanes <= count; j += 4 * lanes) {
    Vector<Real> acc[4];
    for (int v = 0; v < 4; ++v)
      acc[v] = broadcast<Real>(0);
    for (std::int64_t k = 0; k < terms; ++k) {
      const Vector<Real> weight = broadcast(weights[k * weight_step]);
      const Real* const row = rows[k] + j;
      for (int v = 0; v < 4; ++v)
        acc[v] += weight * load(row + v * lanes);
    }
    for (int v = 0; v < 4; ++v)
      store(out + j + v * lanes, acc[v]);
  }
  for (; j + lanes <= count; j += lanes) {
    Vector<Real> acc = broadcast<Real>(0);
    for (std::int64_t k = 0; k < terms; ++k)
      acc += broadcast(weights[k * weight_step]) * load(rows[k] + j);
    store(out + j, acc);
  }
#endif
  for (; j < count; ++j) {
    Real acc = 0;
    for (std::int64_t k = 0; k < terms; ++k)
      acc += weights[k * weight_step] * rows[k][j];
    out[j] = acc;
  }
}

/// P <- U (U^T P) in place for the rank x width panel P (row-major, row stride `stride`) and
/// the `kept` directions U given as columns (direction k at directions[k * rank ..]).
/// `coefficients` (kept x stride) and `rows` (max(rank, kept) pointers) are scratch. Sums
/// run over rank terms, then over kept terms, in Real.
template <class Real>
void project(Real* panel, std::int64_t stride, std::int64_t rank, std::int64_t width,
             const Real* directions, std::int64_t kept, Real* coefficients, const Real** rows) {
  if (kept == 0) {
    for (std::int64_t a = 0; a < rank; ++a)
      std::fill(panel + a * stride, panel + a * stride + width, Real(0));
    return;
  }
  for (std::int64_t a = 0; a < rank; ++a)
    rows[a] = panel + a * stride;
  for (std::int64_t k = 0; k < kept; ++k)  // c_k = sum_a U[a][k] P[a]
    combine_rows(coefficients + k * stride, directions + k * rank, 1, rows, rank, width);
  for (std::int64_t k = 0; k < kept; ++k)
    rows[k] = coefficients + k * stride;
  for (std::int64_t a = 0; a < rank; ++a)  // P[a] = sum_k U[a][k] c_k
    combine_rows(panel + a * stride, directions + a, rank, rows, kept, width);
}

/// The largest |entry| of the panel, and whether every entry is finite.
struct PanelScan {
  double largest = 0.0;  ///< max |entry| (meaningless when not finite)
  bool finite = true;    ///< no NaN, no infinity
};

/// Scans a rank x width float64 panel (row stride `stride`).
inline PanelScan scan_panel(const double* panel, std::int64_t stride, std::int64_t rank,
                            std::int64_t width) {
  double largest = 0.0;
  double check = 0.0;  // x * 0 is NaN exactly for infinite or NaN x
  for (std::int64_t a = 0; a < rank; ++a) {
    const double* row = panel + a * stride;
    std::int64_t j = 0;
#if ACLORA_TORCH_VECTORS
    Vector<double> top = broadcast(0.0), zeros = broadcast(0.0);
    for (; j + 2 <= width; j += 2) {
      const Vector<double> v = load(row + j);
      const Vector<double> magnitude = v < 0.0 ? -v : v;
      top = magnitude > top ? magnitude : top;
      zeros += v * 0.0;
    }
    largest = std::max({largest, top[0], top[1]});
    check += zeros[0] + zeros[1];
#endif
    for (; j < width; ++j) {
      largest = std::max(largest, std::abs(row[j]));
      check += row[j] * 0.0;
    }
  }
  return PanelScan{largest, check == 0.0};
}

/// Multiplies a rank x width float64 panel by `factor` (a power of two: exact).
inline void scale_panel(double* panel, std::int64_t stride, std::int64_t rank, std::int64_t width,
                        double factor) {
  for (std::int64_t a = 0; a < rank; ++a) {
    double* row = panel + a * stride;
    for (std::int64_t j = 0; j < width; ++j)
      row[j] *= factor;
  }
}

/// sums[a] += sum of row a of the panel (in a fixed order: four interleaved partial sums).
inline void add_row_sums(const double* panel, std::int64_t stride, std::int64_t rank,
                         std::int64_t width, double* sums) {
  for (std::int64_t a = 0; a < rank; ++a) {
    const double* row = panel + a * stride;
    double sum = 0.0;
    std::int64_t j = 0;
#if ACLORA_TORCH_VECTORS
    Vector<double> first = broadcast(0.0), second = broadcast(0.0);
    for (; j + 4 <= width; j += 4) {
      first += load(row + j);
      second += load(row + j + 2);
    }
    first += second;
    sum = first[0] + first[1];
#endif
    for (; j < width; ++j)
      sum += row[j];
    sums[a] += sum;
  }
}

}  // namespace aclora::backends::libtorch::detail

#undef ACLORA_UNROLL
