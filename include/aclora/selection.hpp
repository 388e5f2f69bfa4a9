/// @file selection.hpp
/// @brief Component selection: per-layer signal counts and the module rank (union).
#pragma once

#include <algorithm>
#include <cstddef>
#include <span>

namespace aclora {

/// Number of leading components whose cumulative energy stays strictly below p * T
/// (paper eq. 3): k = #{ i : E_i < p T } with E_i = d_1^2 + ... + d_i^2 and T = E_q.
/// `singular_values` must be sorted in decreasing order. T = 0 gives 0.
inline std::size_t signal_count(std::span<const double> singular_values, double p) {
  double total = 0.0;
  for (double d : singular_values)
    total += d * d;
  if (!(total > 0.0))
    return 0;
  const double bound = p * total;
  double cumulative = 0.0;
  std::size_t count = 0;
  for (double d : singular_values) {
    cumulative += d * d;
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
