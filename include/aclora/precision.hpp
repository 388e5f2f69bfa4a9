/// @file precision.hpp
/// @brief The arithmetic of a RESTART's heavy stages, one policy for every backend.
///
/// The Gram matrix of each factor along its rank axis (M M^T, R x R) and the projection onto
/// the kept directions are the two stages that touch every entry. Their arithmetic is a
/// setting of the backend (its Options::precision):
/// - `fp64`: products and sums in float64, the contract's reference arithmetic;
/// - `fp32`: products in float32; a matrix's partial Gram matrices over column chunks are
///   summed in float64; the projection in float32 with float64 sums over chunks;
/// - `tf32`: as fp32 with TF32 tensor-core products where the device has them (CUDA);
///   elsewhere exactly fp32;
/// - `automatic` (default): fp64 on CPUs and on GPUs with full-rate float64 (compute
///   capability 6.0, 7.0, 8.0 and 9.0: P100, V100, A100, H100 / H200), fp32 on GPUs whose
///   float64 runs at 1/32 to 1/64 of float32 (GeForce and other consumer or inference cards,
///   where most LoRA training happens).
/// The small R x R eigen-decompositions always run in float64. What each setting promises
/// (K versus the fp64 reference, truncated matrices versus ||M||_F) is stated in the docs
/// (page "The RESTART contract", with the derivation of every bound below) and proven by the
/// conformance suite; the functions below compute those bounds.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <span>

namespace aclora {

/// Arithmetic of the Gram and projection stages (see the file comment).
enum class Precision {
  automatic,  ///< fp64 on CPUs and on GPUs with full-rate float64, fp32 on other GPUs
  fp64,       ///< float64 products and sums
  fp32,       ///< float32 products, float64 sums of per-chunk partial results
  tf32,       ///< as fp32, with TF32 tensor-core products where available
};

/// The precision a request means on a device: `automatic` becomes fp64 when the device has
/// full-rate float64 (every CPU; GPUs of compute capability 6.0, 7.0, 8.0, 9.0) and fp32
/// otherwise; any other request stands.
constexpr Precision resolve_precision(Precision requested, bool full_rate_float64) {
  if (requested != Precision::automatic)
    return requested;
  return full_rate_float64 ? Precision::fp64 : Precision::fp32;
}

/// True for the CUDA compute capabilities whose float64 runs at half the float32 rate
/// (6.0, 7.0, 8.0, 9.0); false for the consumer and inference parts (1/32 to 1/64 rate).
constexpr bool full_rate_float64(int major, int minor) {
  return minor == 0 && (major == 6 || major == 7 || major == 8 || major == 9);
}

/// "automatic", "fp64", "fp32" or "tf32".
constexpr const char* precision_name(Precision precision) {
  switch (precision) {
    case Precision::automatic:
      return "automatic";
    case Precision::fp64:
      return "fp64";
    case Precision::fp32:
      return "fp32";
    case Precision::tf32:
      return "tf32";
  }
  return "?";
}

/// Storage formats of matrices (what RESTART reads and writes back, rounded once).
enum class StorageType {
  f64,   ///< IEEE binary64
  f32,   ///< IEEE binary32
  f16,   ///< IEEE binary16
  bf16,  ///< bfloat16 (8 exponent bits, 8 significand bits)
};

/// Unit roundoff of a storage format (half the distance from 1 to the next value):
/// 2^-53, 2^-24, 2^-11, 2^-8.
constexpr double unit_roundoff(StorageType storage) {
  switch (storage) {
    case StorageType::f64:
      return 0x1p-53;
    case StorageType::f32:
      return 0x1p-24;
    case StorageType::f16:
      return 0x1p-11;
    case StorageType::bf16:
      return 0x1p-8;
  }
  return 1.0;
}

/// The longest float32 sum the fp32 and tf32 settings allow for a rank-R layer: every
/// float32 partial sum (of a Gram entry over a column chunk, of a projection coefficient
/// over the rank axis) adds at most 256 + 4 R products; longer sums add float32 partials
/// in float64. The bounds below assume it; backends must not exceed it.
constexpr std::size_t float32_sum_limit(std::size_t rank) {
  return 256 + 4 * rank;
}

namespace detail {

// gamma_m = m u / (1 - m u), the classic bound on the relative error of m roundings;
// infinity when m u >= 1.
inline double gamma(double m, double u) {
  const double mu = m * u;
  return mu < 1.0 ? mu / (1.0 - mu) : std::numeric_limits<double>::infinity();
}

// The arithmetic of a precision setting: unit roundoff of the product inputs (0: exact),
// of the accumulation, and whether sums are chunked into float32 partials.
struct Arithmetic {
  double input = 0.0;       // rounding of each operand before the product
  double accumulate = 0.0;  // rounding of each product and sum inside a partial
  bool chunked = false;     // float32 partials of at most float32_sum_limit(R) terms
};

inline Arithmetic arithmetic_of(Precision precision) {
  switch (precision) {
    case Precision::fp64:
      return {0.0, 0x1p-53, false};
    case Precision::tf32:  // TF32 keeps 10 significand bits: 2^-10 covers rounding and truncation
      return {0x1p-10, 0x1p-24, true};
    default:  // fp32, and automatic (whose bounds are those of the weaker outcome, fp32)
      return {0x1p-24, 0x1p-24, true};
  }
}

// Relative error bound of a dot product of `length` terms (products of inputs rounded with
// `input`) as the precision computes it, relative to the sum of |terms|.
inline double dot_error(const Arithmetic& a, std::size_t length, std::size_t limit) {
  const double input = (1.0 + a.input) * (1.0 + a.input);
  if (!a.chunked)
    return input * (1.0 + gamma(static_cast<double>(length), a.accumulate)) - 1.0;
  const std::size_t chunk = std::max<std::size_t>(1, std::min(length, limit));
  const double chunks = std::ceil(static_cast<double>(length) / static_cast<double>(chunk));
  return input * (1.0 + gamma(static_cast<double>(chunk), a.accumulate)) *
             (1.0 + gamma(chunks, 0x1p-53)) -
         1.0;
}

// Backward error of the float64 symmetric eigen-solve of an R x R matrix, relative to its
// norm (Householder tridiagonalisation and QR / Jacobi iterations: a low-degree polynomial
// in R times u; 16 R^2 u is taken), which also bounds the loss of orthogonality of the
// computed eigenvectors.
inline double eigensolver_error(std::size_t rank) {
  const double r = static_cast<double>(rank);
  return 16.0 * r * r * 0x1p-53;
}

// Entrywise relative error of the Gram matrix, including the exact power-of-two scaling's
// gradual underflow (below 2^-100 relative for lengths under 2^46).
inline double gram_entry_error(Precision precision, std::size_t rank, std::size_t length) {
  return dot_error(arithmetic_of(precision), length, float32_sum_limit(rank)) + 0x1p-100;
}

}  // namespace detail

/// eta: a bound on |computed d_i^2 - d_i^2| / ||M||_F^2 for every singular value of an R x n
/// layer (rank R along the rank axis, length n along the other) analysed with `precision`:
/// the Gram matrix's error in the 2-norm (entrywise bound c_G |X| |X|^T, whose 2-norm is at
/// most c_G ||M||_F^2), the eigen-solver's backward error (Weyl's inequality turns both into
/// eigenvalue errors) and the rounding of d = sqrt(lambda) and d^2. Derivation: page "The
/// RESTART contract". `automatic` gets the bounds of fp32, the weaker of its outcomes.
inline double gram_tolerance(Precision precision, std::size_t rank, std::size_t length) {
  const double gram = detail::gram_entry_error(precision, rank, length);
  const double solver = detail::eigensolver_error(rank) * (1.0 + gram);
  return gram + solver + 4.0 * 0x1p-53;
}

/// delta: a bound on |computed E_k / T - E_k / T| for every k (E_k: energy of the first k
/// components, T = ||M||_F^2) of an R x n layer analysed with `precision`. The signal count
/// k(p) (hence K) equals the exact one whenever no cumulative-energy share E_k / T of the
/// layer lies within delta of p. Derivation: page "The RESTART contract".
inline double energy_share_tolerance(Precision precision, std::size_t rank, std::size_t length) {
  const double r = static_cast<double>(rank);
  const double gram = detail::gram_entry_error(precision, rank, length);
  // Nuclear norm of the perturbation of the Gram matrix, relative to T.
  const double nuclear = std::sqrt(r) * gram + r * detail::eigensolver_error(rank) * (1.0 + gram);
  // Error of E_k and of T (perturbation, clamping of negative eigenvalues, float64 sums of
  // the squared singular values by the core), relative to T.
  const double sums = 2.0 * nuclear + 2.0 * detail::gamma(r + 4.0, 0x1p-53) * (1.0 + 2.0 * nuclear);
  if (!(sums < 1.0))
    return 1.0;
  return std::min(1.0, 2.0 * sums / (1.0 - sums) + 2.0 * 0x1p-53);
}

/// g: the relative gap (d_K^2 - d_{K+1}^2) / sum_i d_i^2 after the first `kept` of
/// `singular_values` (decreasing; d_{K+1} = 0 when K >= their count). 0 for an all-zero
/// spectrum or K = 0. Computed in units of d_1, so huge values do not overflow.
inline double relative_gap(std::span<const double> singular_values, std::size_t kept) {
  if (singular_values.empty() || kept == 0 || !(singular_values[0] > 0.0))
    return 0.0;
  const double top = singular_values[0];
  double total = 0.0;
  for (double d : singular_values)
    total += (d / top) * (d / top);
  const std::size_t k = std::min(kept, singular_values.size());
  const double last = singular_values[k - 1] / top;
  const double next = k < singular_values.size() ? singular_values[k] / top : 0.0;
  return (last * last - next * next) / total;
}

/// epsilon: a bound on ||computed M_K - M_K||_F / ||M||_F for the rank-K truncation of an
/// R x n layer analysed and projected with `precision` and written to `storage`, given the
/// layer's relative gap g (relative_gap()) at K. Terms: the kept subspace's error
/// (Davis-Kahan: sin(theta) <= eta / (g - eta), at most 1, times sqrt(2)), the projection's
/// arithmetic, and the one rounding to the storage format. For K >= R the projector is the
/// identity and no gap is needed. Derivation: page "The RESTART contract".
inline double truncation_tolerance(Precision precision, std::size_t rank, std::size_t length,
                                   std::size_t kept, double gap, StorageType storage) {
  const detail::Arithmetic a = detail::arithmetic_of(precision);
  const double orthogonality = 2.0 * detail::eigensolver_error(rank);
  double subspace = orthogonality;
  if (kept < rank) {
    const double eta = gram_tolerance(precision, rank, length);
    const double sine = gap > eta ? std::min(1.0, eta / (gap - eta)) : 1.0;
    subspace += std::sqrt(2.0) * sine;
  }
  const std::size_t k = std::max<std::size_t>(1, std::min(kept, rank));
  const double root_k = std::sqrt(static_cast<double>(k));
  const std::size_t limit = float32_sum_limit(rank);
  // Rounding of the inputs (M, and U_K for each of its two uses) and the two products
  // C = U_K^T M (sums over R) and U_K C (sums over K), each with a sqrt(K) factor from
  // the K columns of U_K.
  detail::Arithmetic exact_inputs = a;
  exact_inputs.input = 0.0;
  const double projection = a.input + 2.0 * root_k * a.input +
                            root_k * (detail::dot_error(exact_inputs, rank, limit) +
                                      detail::dot_error(exact_inputs, k, limit));
  const double u = unit_roundoff(storage);
  return (subspace + projection) * (1.0 + u) + u;
}

}  // namespace aclora
