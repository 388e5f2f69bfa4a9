// Component selection (strict energy rule, union across layers, clamping) and the
// residual statistics the core derives from a spectrum, on hand-built spectra.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstddef>
#include <vector>

#include "aclora/selection.hpp"
#include "aclora/spectrum.hpp"

namespace {

using aclora::kept_energy_fraction;
using aclora::LayerSpectrum;
using aclora::module_rank;
using aclora::residual_statistics;
using aclora::signal_count;

std::size_t count(std::vector<double> singular_values, double p) {
  return signal_count(singular_values, p);
}

// Energies 4, 1, 1, 1, 1 (T = 8, every product exact): at p = 0.625, E_2 = 5 == p T is
// NOT counted (strict rule); one ulp above 0.625 it is.
TEST(SignalCount, ComponentAtExactlyPTimesTIsNotCounted) {
  const std::vector<double> d{2, 1, 1, 1, 1};
  EXPECT_EQ(count(d, 0.625), 1u);
  EXPECT_EQ(count(d, std::nextafter(0.625, 1.0)), 2u);
  EXPECT_EQ(count(d, 0.5), 0u);  // E_1 = 4 == 0.5 * 8
  EXPECT_EQ(count(d, std::nextafter(0.5, 1.0)), 1u);
  EXPECT_EQ(count(d, 0.875), 3u);  // E_4 = 7 == 0.875 * 8 is not counted
}

// p = 0 keeps nothing; p = 1 never counts the last nonzero component (E_q = T).
TEST(SignalCount, ThresholdZeroAndOne) {
  EXPECT_EQ(count({2, 1, 1, 1, 1}, 0.0), 0u);
  EXPECT_EQ(count({2, 1, 1, 1, 1}, 1.0), 4u);
  EXPECT_EQ(count({2, 1, 0, 0}, 1.0), 1u);  // trailing zeros do not raise E above E_2 = T
}

// T = 0 (all zero, or no values at all) gives 0 for any p.
TEST(SignalCount, ZeroEnergyGivesZero) {
  EXPECT_EQ(count({0, 0, 0}, 0.5), 0u);
  EXPECT_EQ(count({0, 0, 0}, 1.0), 0u);
  EXPECT_EQ(count({}, 0.9), 0u);
}

// Equal singular values (ties) are counted one by one through the cumulative energy:
// four unit components, p T = 2 counts one, p T = 2.5 counts two.
TEST(SignalCount, TiedValuesCountedByCumulativeEnergy) {
  const std::vector<double> d{1, 1, 1, 1};
  EXPECT_EQ(count(d, 0.5), 1u);
  EXPECT_EQ(count(d, 0.625), 2u);
  EXPECT_EQ(count(d, 0.75), 2u);
  EXPECT_EQ(count(d, 0.8), 3u);
}

// The module's K is the largest layer count (union of prefixes).
TEST(ModuleRank, UnionTakesTheMaximum) {
  const std::array<std::size_t, 3> counts{2, 5, 3};
  EXPECT_EQ(module_rank(counts, 0, 16), 5u);
  EXPECT_EQ(module_rank(counts, 1, 16), 5u);
}

// min_rank 0 keeps the paper's rule (K may be 0); min_rank 1 floors K at 1.
TEST(ModuleRank, MinRankZeroVersusOne) {
  const std::array<std::size_t, 2> zeros{0, 0};
  EXPECT_EQ(module_rank(zeros, 0, 8), 0u);
  EXPECT_EQ(module_rank(zeros, 1, 8), 1u);
  const std::array<std::size_t, 2> twos{2, 1};
  EXPECT_EQ(module_rank(twos, 1, 8), 2u);
  EXPECT_EQ(module_rank(twos, 3, 8), 3u);
}

// K never exceeds the allocated rank R, neither from counts nor from min_rank.
TEST(ModuleRank, ClampedToAllocatedRank) {
  const std::array<std::size_t, 2> counts{7, 2};
  EXPECT_EQ(module_rank(counts, 1, 4), 4u);
  const std::array<std::size_t, 1> zero{0};
  EXPECT_EQ(module_rank(zero, 9, 4), 4u);
}

// A 3 x 4 matrix M = 5 u1 v1^T + 2 u2 v2^T with orthonormal u's and v's, its spectrum
// written from the definition, and its explicit entries.
struct TwoComponentMatrix {
  static constexpr std::size_t rows = 3, cols = 4;
  std::array<double, 2> d{5.0, 2.0};
  std::array<std::array<double, rows>, 2> u{{{1.0, 0.0, 0.0}, {0.0, 0.6, 0.8}}};
  std::array<std::array<double, cols>, 2> v{{{0.6, 0.8, 0.0, 0.0}, {0.0, 0.0, 0.8, -0.6}}};

  double component(std::size_t c, std::size_t i, std::size_t j) const {
    return d[c] * u[c][i] * v[c][j];
  }
  LayerSpectrum spectrum() const {
    LayerSpectrum s;
    s.singular_values = {d[0], d[1], 0.0};
    s.component_sums = {0.0, 0.0, 0.0};
    for (std::size_t c = 0; c < 2; ++c) {
      for (std::size_t i = 0; i < rows; ++i) {
        for (std::size_t j = 0; j < cols; ++j)
          s.component_sums[c] += component(c, i, j);
      }
      s.entry_sum += s.component_sums[c];
    }
    return s;
  }
  // Entries of M minus its first `kept` components.
  std::vector<double> residual(std::size_t kept) const {
    std::vector<double> entries;
    for (std::size_t i = 0; i < rows; ++i) {
      for (std::size_t j = 0; j < cols; ++j) {
        double value = 0.0;
        for (std::size_t c = kept; c < 2; ++c)
          value += component(c, i, j);
        entries.push_back(value);
      }
    }
    return entries;
  }
};

// Energy, mean and population standard deviation of the residual M - M_K, derived from
// the spectrum alone, equal those computed from the explicit residual entries.
TEST(ResidualStatistics, MatchExplicitResidual) {
  const TwoComponentMatrix m;
  for (std::size_t kept : {0u, 1u, 2u, 3u}) {
    const std::vector<double> entries = m.residual(std::min<std::size_t>(kept, 2));
    double sum = 0.0, squares = 0.0;
    for (double e : entries) {
      sum += e;
      squares += e * e;
    }
    const double mean = sum / entries.size();
    double centred = 0.0;
    for (double e : entries)
      centred += (e - mean) * (e - mean);
    const auto stats = residual_statistics(m.spectrum(), kept, entries.size());
    EXPECT_NEAR(stats.energy, squares, 1e-12) << "K = " << kept;
    EXPECT_NEAR(stats.mean, mean, 1e-12) << "K = " << kept;
    EXPECT_NEAR(stats.sigma, std::sqrt(centred / entries.size()), 1e-12) << "K = " << kept;
  }
}

// Keeping every component leaves a zero residual: sigma exactly 0, never NaN.
TEST(ResidualStatistics, FullRankResidualIsZero) {
  const auto stats = residual_statistics(TwoComponentMatrix{}.spectrum(), 3, 12);
  EXPECT_EQ(stats.energy, 0.0);
  EXPECT_FALSE(std::isnan(stats.sigma));
  EXPECT_NEAR(stats.sigma, 0.0, 1e-12);
}

// A zero matrix (T = 0) has sigma 0 for every K.
TEST(ResidualStatistics, ZeroMatrixHasZeroSigma) {
  LayerSpectrum zero;
  zero.singular_values = {0.0, 0.0};
  zero.component_sums = {0.0, 0.0};
  for (std::size_t kept : {0u, 1u, 2u}) {
    const auto stats = residual_statistics(zero, kept, 8);
    EXPECT_EQ(stats.sigma, 0.0);
    EXPECT_EQ(stats.mean, 0.0);
  }
}

// E_K / T on energies 4, 1, 1, 1, 1; 1 when T = 0.
TEST(KeptEnergyFraction, ShareOfTheFirstKComponents) {
  LayerSpectrum s;
  s.singular_values = {2, 1, 1, 1, 1};
  EXPECT_EQ(kept_energy_fraction(s, 0), 0.0);
  EXPECT_EQ(kept_energy_fraction(s, 1), 0.5);
  EXPECT_EQ(kept_energy_fraction(s, 3), 0.75);
  EXPECT_EQ(kept_energy_fraction(s, 9), 1.0);
  s.singular_values = {0, 0};
  EXPECT_EQ(kept_energy_fraction(s, 1), 1.0);
}

// Energies are summed in units of a power of two near d_1: spectra near the top and the
// bottom of the float64 range select, keep and scatter exactly as the same spectrum at
// unit scale (multiplied by the same power of two), where d^2 would overflow or underflow.
TEST(SignalCount, HugeAndTinySpectraBehaveLikeUnitOnes) {
  const std::vector<double> unit{2, 1, 1, 1, 1};
  for (int exponent : {1000, -1060}) {
    std::vector<double> scaled;
    for (double d : unit)
      scaled.push_back(std::ldexp(d, exponent));
    for (double p : {0.3, 0.5, std::nextafter(0.625, 1.0), 0.9, 1.0})
      EXPECT_EQ(count(scaled, p), count(unit, p)) << exponent << " " << p;
    LayerSpectrum spectrum{scaled, std::vector<double>(5, 0.0), 0.0, true, {}};
    LayerSpectrum reference{unit, std::vector<double>(5, 0.0), 0.0, true, {}};
    EXPECT_EQ(kept_energy_fraction(spectrum, 2), kept_energy_fraction(reference, 2));
    const double sigma = residual_statistics(spectrum, 1, 40).sigma;
    EXPECT_EQ(sigma, std::ldexp(residual_statistics(reference, 1, 40).sigma, exponent));
  }
}

}  // namespace
