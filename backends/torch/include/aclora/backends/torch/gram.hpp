/// @file gram.hpp
/// @brief CPU kernels: Gram matrices X X^T and projections D (D^T X) + Z of row-major
/// float64 matrices.
///
/// Why our own kernel: LibTorch calls whatever BLAS the system provides, and some
/// installations (Debian's libtorch over the reference BLAS) run dgemm at about one
/// GFLOP/s. This register-blocked kernel computes only the lower triangle (half the
/// multiply-adds of a general product) with two-wide double vectors (SSE2 on x86-64,
/// NEON on AArch64), over column blocks that stay in cache, accumulating in float64.
/// The projection runs over column blocks likewise. Each entry is summed in a fixed
/// order, so results do not depend on threads or batching.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#if defined(__clang__)
#define ACLORA_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define ACLORA_UNROLL _Pragma("GCC unroll 8")
#else
#define ACLORA_UNROLL
#endif

namespace aclora::backends::torch::detail {

#if defined(__GNUC__) || defined(__clang__)
using Double2 = double __attribute__((vector_size(16)));
inline Double2 load2(const double* p) {
  Double2 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
#endif

// Adds columns [j0, j1) of rows [a0, a0 + A) x rows [b0, b0 + B) of X X^T to `gram`
// (row-major rank x rank; only entries (a, b) of the tile are touched).
template <int A, int B>
inline void gram_tile(const double* x, std::int64_t rank, std::int64_t length, std::int64_t a0,
                      std::int64_t b0, std::int64_t j0, std::int64_t j1, double* gram) {
  const double* row_a[A];
  const double* row_b[B];
  ACLORA_UNROLL for (int i = 0; i < A; ++i) row_a[i] = x + (a0 + i) * length;
  ACLORA_UNROLL for (int k = 0; k < B; ++k) row_b[k] = x + (b0 + k) * length;
  double sums[A][B];
  std::int64_t j = j0;
#if defined(__GNUC__) || defined(__clang__)
  Double2 acc[A][B];
  ACLORA_UNROLL for (int i = 0; i < A; ++i) {
    ACLORA_UNROLL for (int k = 0; k < B; ++k) acc[i][k] = Double2{0.0, 0.0};
  }
  for (; j + 2 <= j1; j += 2) {
    Double2 va[A], vb[B];
    ACLORA_UNROLL for (int i = 0; i < A; ++i) va[i] = load2(row_a[i] + j);
    ACLORA_UNROLL for (int k = 0; k < B; ++k) vb[k] = load2(row_b[k] + j);
    ACLORA_UNROLL for (int i = 0; i < A; ++i) {
      ACLORA_UNROLL for (int k = 0; k < B; ++k) acc[i][k] += va[i] * vb[k];
    }
  }
  ACLORA_UNROLL for (int i = 0; i < A; ++i) {
    ACLORA_UNROLL for (int k = 0; k < B; ++k) sums[i][k] = acc[i][k][0] + acc[i][k][1];
  }
#else
  for (int i = 0; i < A; ++i)
    for (int k = 0; k < B; ++k)
      sums[i][k] = 0.0;
#endif
  for (; j < j1; ++j)
    for (int i = 0; i < A; ++i)
      for (int k = 0; k < B; ++k)
        sums[i][k] += row_a[i][j] * row_b[k][j];
  ACLORA_UNROLL for (int i = 0; i < A; ++i) {
    ACLORA_UNROLL for (int k = 0; k < B; ++k) gram[(a0 + i) * rank + b0 + k] += sums[i][k];
  }
}

/// gram (rank x rank, row-major) = X X^T for X rank x length, row-major, contiguous.
inline void gram_cpu(const double* x, std::int64_t rank, std::int64_t length, double* gram) {
  // Columns per pass: rank x block doubles (32 KiB) stay in the L1 / L2 caches.
  const std::int64_t block =
      std::max<std::int64_t>(32, (4096 / std::max<std::int64_t>(rank, 1)) & ~std::int64_t{1});
  std::fill(gram, gram + rank * rank, 0.0);
  const std::int64_t tiled = rank - rank % 4;
  for (std::int64_t j0 = 0; j0 < length; j0 += block) {
    const std::int64_t j1 = std::min(length, j0 + block);
    for (std::int64_t a0 = 0; a0 < tiled; a0 += 4)
      for (std::int64_t b0 = 0; b0 < a0 + 4; b0 += 2)
        gram_tile<4, 2>(x, rank, length, a0, b0, j0, j1, gram);
    for (std::int64_t a = tiled; a < rank; ++a)
      for (std::int64_t b = 0; b <= a; ++b)
        gram_tile<1, 1>(x, rank, length, a, b, j0, j1, gram);
  }
  for (std::int64_t a = 0; a < rank; ++a)  // mirror the lower triangle
    for (std::int64_t b = a + 1; b < rank; ++b)
      gram[a * rank + b] = gram[b * rank + a];
}

// out[j] = (base ? base[j] : 0) + sum_k weights[k * weight_step] * rows[k][j], j < count.
inline void combine_rows(double* out, const double* base, const double* weights,
                         std::int64_t weight_step, const double* const* rows, std::int64_t terms,
                         std::int64_t count) {
  std::int64_t j = 0;
#if defined(__GNUC__) || defined(__clang__)
  // Four independent accumulators hide the add latency; each entry still sums its terms
  // in the same order, so the bits equal the one-accumulator loop below.
  for (; j + 8 <= count; j += 8) {
    Double2 acc[4];
    for (int v = 0; v < 4; ++v)
      acc[v] = base ? load2(base + j + 2 * v) : Double2{0.0, 0.0};
    for (std::int64_t k = 0; k < terms; ++k) {
      const double weight = weights[k * weight_step];
      const double* const row = rows[k] + j;
      for (int v = 0; v < 4; ++v)
        acc[v] += weight * load2(row + 2 * v);
    }
    std::memcpy(out + j, acc, sizeof acc);
  }
  for (; j + 2 <= count; j += 2) {
    Double2 acc = base ? load2(base + j) : Double2{0.0, 0.0};
    for (std::int64_t k = 0; k < terms; ++k)
      acc += weights[k * weight_step] * load2(rows[k] + j);
    std::memcpy(out + j, &acc, sizeof acc);
  }
#endif
  for (; j < count; ++j) {
    double acc = base ? base[j] : 0.0;
    for (std::int64_t k = 0; k < terms; ++k)
      acc += weights[k * weight_step] * rows[k][j];
    out[j] = acc;
  }
}

/// Columns per block of project_cpu; `coefficients` must hold width * kProjectBlock doubles.
constexpr std::int64_t kProjectBlock = 256;

/// x <- noise + D (D^T x) in place, for x rank x length (row-major, contiguous), D the
/// rank x width directions (row-major) and noise rank x length or null. Scratch:
/// `coefficients` (width * kProjectBlock doubles) and `rows` (rank pointers).
inline void project_cpu(double* x, const double* noise, const double* directions, std::int64_t rank,
                        std::int64_t length, std::int64_t width, double* coefficients,
                        const double** rows) {
  constexpr std::int64_t block = kProjectBlock;
  for (std::int64_t j0 = 0; j0 < length; j0 += block) {
    const std::int64_t count = std::min(block, length - j0);
    // coefficients[k] = sum_a D[a][k] x[a][j0 + .]
    for (std::int64_t a = 0; a < rank; ++a)
      rows[a] = x + a * length + j0;
    for (std::int64_t k = 0; k < width; ++k)
      combine_rows(coefficients + k * block, nullptr, directions + k, width, rows, rank, count);
    // x[a][j0 + .] = noise[a][j0 + .] + sum_k D[a][k] coefficients[k]
    for (std::int64_t k = 0; k < width; ++k)
      rows[k] = coefficients + k * block;
    for (std::int64_t a = 0; a < rank; ++a) {
      combine_rows(x + a * length + j0, noise ? noise + a * length + j0 : nullptr,
                   directions + a * width, 1, rows, width, count);
    }
  }
}

}  // namespace aclora::backends::torch::detail

#undef ACLORA_UNROLL
