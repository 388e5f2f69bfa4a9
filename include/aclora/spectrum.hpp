/// @file spectrum.hpp
/// @brief What a backend's analysis reports per layer, and the residual statistics
/// the core derives from it for any kept count K (no second pass over the matrix).
#pragma once

#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "aclora/selection.hpp"

namespace aclora {

/// The component analysis of one layer M, computed by a backend.
struct LayerSpectrum {
  /// Singular values d_1 >= ... >= d_q >= 0, q = min(rows, cols).
  std::vector<double> singular_values;
  /// component_sums[i]: sum of the entries of the i-th rank-one component d_i u_i v_i^T,
  /// so the entries of the rank-K truncation M_K sum to component_sums[0..K).
  std::vector<double> component_sums;
  /// Sum of all entries of M.
  double entry_sum = 0.0;
  /// False when M holds a NaN or an infinity (the other fields are then meaningless).
  bool finite = true;
  /// Empty when the analysis succeeded; else why it failed for this layer although M is
  /// finite (e.g. "the eigen-solver did not converge"). The driver raises it as an Error
  /// naming the module and layer, before any write.
  std::string failure;
};

/// For backends that scale a layer before analysing it: sets `failure` when a value scaled
/// back (entry sum, a singular value, a component sum) left the float64 range.
inline void mark_out_of_range(LayerSpectrum& spectrum) {
  bool finite = std::isfinite(spectrum.entry_sum);
  for (double d : spectrum.singular_values)
    finite = finite && std::isfinite(d);
  for (double s : spectrum.component_sums)
    finite = finite && std::isfinite(s);
  if (!finite) {
    spectrum.failure =
        "entries too large: the Frobenius norm or the entry sums exceed the float64 range";
  }
}

/// Statistics of the residual Res = M - M_K.
struct ResidualStatistics {
  double energy = 0.0;  ///< squared Frobenius norm d_{K+1}^2 + ... + d_q^2 (inf beyond float64)
  double mean = 0.0;    ///< mean entry
  double sigma = 0.0;   ///< population standard deviation of the entries
};

/// Residual statistics of a layer with `entry_count` entries truncated to `kept` components.
/// Energies and the variance are formed in units of a power of two near d_1 (energy_scale),
/// so sigma is right for any finite spectrum, however large or small.
inline ResidualStatistics residual_statistics(const LayerSpectrum& spectrum, std::size_t kept,
                                              std::size_t entry_count) {
  ResidualStatistics result;
  const std::size_t q = spectrum.singular_values.size();
  const double scale = energy_scale(spectrum.singular_values);
  double kept_sum = 0.0;
  double scaled_energy = 0.0;
  for (std::size_t i = 0; i < q; ++i) {
    const double d = scale * spectrum.singular_values[i];
    if (i < kept) {
      if (i < spectrum.component_sums.size())
        kept_sum += spectrum.component_sums[i];
    } else {
      scaled_energy += d * d;
    }
  }
  result.energy = scaled_energy / scale / scale;
  if (entry_count == 0)
    return result;
  const double count = static_cast<double>(entry_count);
  result.mean = (spectrum.entry_sum - kept_sum) / count;
  const double scaled_mean = scale * result.mean;
  const double variance = scaled_energy / count - scaled_mean * scaled_mean;
  result.sigma = variance > 0.0 ? std::sqrt(variance) / scale : 0.0;
  return result;
}

/// E_K / T, the share of the energy kept by the first `kept` components (1 when T = 0).
inline double kept_energy_fraction(const LayerSpectrum& spectrum, std::size_t kept) {
  const double scale = energy_scale(spectrum.singular_values);
  double total = 0.0;
  double kept_energy = 0.0;
  for (std::size_t i = 0; i < spectrum.singular_values.size(); ++i) {
    const double d = scale * spectrum.singular_values[i];
    const double energy = d * d;
    total += energy;
    if (i < kept)
      kept_energy += energy;
  }
  return total > 0.0 ? kept_energy / total : 1.0;
}

}  // namespace aclora
