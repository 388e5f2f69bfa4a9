/// @file selection.hpp
/// @brief Component selection: per-layer signal counts and the module rank (union).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>

namespace aclora {

/// A power of two s with s * max|values| in [1/2, 1) (1 when the largest value is 0 or not
/// finite; at most 2^1021 for subnormal values). Multiplying by s is exact away from underflow, so
/// energies computed from s d_i round exactly as those from d_i would, yet cannot overflow: the
/// core's energy sums use it.
inline double energy_scale(std::span<const double> values) {
  double largest = 0.0;
  for (double d : values)
    largest = std::max(largest, std::abs(d));
  if (!(largest > 0.0) || !std::isfinite(largest))
    return 1.0;
  return std::ldexp(1.0, std::clamp(-std::ilogb(largest) - 1, -1021, 1021));
}

/// Number of leading components whose cumulative energy stays strictly below p * T
/// (paper eq. 3): k = #{ i : E_i < p T } with E_i = d_1^2 + ... + d_i^2 and T = E_q.
/// `singular_values` must be sorted in decreasing order. T = 0 gives 0. The energies are
/// summed in units of a power of two near d_1 (energy_scale), so any finite values work.
inline std::size_t signal_count(std::span<const double> singular_values, double p) {
  const double scale = energy_scale(singular_values);
  double total = 0.0;
  for (double d : singular_values)
    total += (scale * d) * (scale * d);
  if (!(total > 0.0))
    return 0;
  const double bound = p * total;
  double cumulative = 0.0;
  std::size_t count = 0;
  for (double d : singular_values) {
    cumulative += (scale * d) * (scale * d);
    if (!(cumulative < bound))
      break;
    ++count;
  }
  return count;
}

/// The module's kept count K: the union of its layers' signal prefixes (the largest
/// count), clamped to [min_rank, allocated_rank].
inline std::size_t module_rank(std::span<const std::size_t> signal_counts, std::size_t min_rank,
                               std::size_t allocated_rank) {
  std::size_t rank = 0;
  for (std::size_t count : signal_counts)
    rank = std::max(rank, count);
  rank = std::max(rank, min_rank);
  return std::min(rank, allocated_rank);
}

}  // namespace aclora
