/// @file conformance_suite.hpp
/// @brief Backend conformance tests, written once and instantiated per backend.
///
/// Every backend is compared with the reference: aclora::backends::EigenBackend's direct SVD in
/// double on the same input values (the values the backend actually stores, read back), with
/// the bounds the precision policy promises (aclora/precision.hpp; derivation on the docs page
/// "The RESTART contract"). A backend joins the suite with a small traits struct and two lines:
///
/// @code
/// struct MyTraits {
///   using backend_type = ...;   // Restart<backend_type> is tested
///   using handle_type = ...;    // owns (or references) the storage of one matrix
///   static std::string skip_reason();          // "" when runnable (device present...)
///   static std::vector<Dtype> dtypes();        // storage types the backend supports
///   static std::vector<Layout> layouts();      // memory layouts it supports
///   static handle_type make(const HostMatrix& values, Dtype, Layout);  // rounded to Dtype
///   static typename backend_type::matrix_type view(handle_type&);      // what Restart sees
///   static HostMatrix read(const handle_type&);                 // current values as double
///   static std::vector<unsigned char> bytes(const handle_type&);  // all storage bytes
///   static std::optional<handle_type> make_unsupported(std::size_t rows, std::size_t cols);
///                                               // a matrix check() rejects, or nullopt
///   static bool same_noise_as_reference();  // draws the contract's Philox stream
///   // Precisions (all three optional; see precisions_of, backend_for, resolved_of):
///   static std::vector<aclora::Precision> precisions();       // settings to test
///   static backend_type backend(aclora::Precision);           // a backend for one of them
///   static aclora::Precision resolved(aclora::Precision);     // what it runs at here
///   static backend_type backend();  // only needed when backend(Precision) is absent
/// };
/// using MyTypes = ::testing::Types<MyTraits>;
/// INSTANTIATE_TYPED_TEST_SUITE_P(MyBackend, Conformance, MyTypes);
/// @endcode
///
/// Handles must stay valid when moved (the suite keeps them in a std::vector).
#pragma once

#include <gtest/gtest.h>

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "../../bench/common/planted.hpp"
#include "aclora/aclora.hpp"
#include "aclora/backends/eigen.hpp"

namespace aclora::conformance {

/// Storage types a backend may support (f64, f32, f16, bf16).
using Dtype = StorageType;
/// Memory layouts of a matrix: row-major, column-major, row-major with padded rows
/// (a non-contiguous slice of a wider buffer).
enum class Layout { row_major, col_major, padded };

inline const char* to_string(Dtype dtype) {
  switch (dtype) {
    case Dtype::f64:
      return "f64";
    case Dtype::f32:
      return "f32";
    case Dtype::f16:
      return "f16";
    case Dtype::bf16:
      return "bf16";
  }
  return "?";
}
inline const char* to_string(Layout layout) {
  switch (layout) {
    case Layout::row_major:
      return "row_major";
    case Layout::col_major:
      return "col_major";
    case Layout::padded:
      return "padded";
  }
  return "?";
}

/// A matrix on the host in double, row-major.
struct HostMatrix {
  std::size_t rows = 0;
  std::size_t cols = 0;
  std::vector<double> values;  ///< entry (i, j) at i * cols + j
  double& at(std::size_t i, std::size_t j) { return values[i * cols + j]; }
  double at(std::size_t i, std::size_t j) const { return values[i * cols + j]; }
};

/// One layer of a host model.
struct HostLayer {
  HostMatrix matrix;
  RankAxis axis = RankAxis::rows;
};

/// A model on the host: named modules of layers.
struct HostModule {
  std::string name;
  std::vector<HostLayer> layers;
};
using HostModel = std::vector<HostModule>;

/// rows x cols with singular values scale * 2^(-i/2) for i < min(planted, rows, cols) and
/// orthonormal directions, plus a dense Gaussian floor of total energy about
/// (0.02 scale)^2: a planted decaying spectrum (the shared generator, bench/common/planted.hpp).
/// Deterministic for a given seed.
inline HostMatrix planted_matrix(std::size_t rows, std::size_t cols, std::uint64_t seed,
                                 double scale = 1.0, std::size_t planted = 6) {
  const std::size_t count = std::min({planted, rows, cols});
  const workload::PlantedNoise floor{0.02 * scale / std::sqrt(static_cast<double>(rows * cols))};
  workload::PlantedMatrix m = workload::planted_matrix(
      rows, cols, workload::geometric_values(count, scale, std::sqrt(0.5)), floor, seed);
  return HostMatrix{rows, cols, std::move(m.values)};
}

/// A LoRA module with planted factors: down R x in, up out x R.
inline HostModule planted_lora(std::string name, std::size_t rank, std::size_t in, std::size_t out,
                               std::uint64_t seed) {
  return HostModule{std::move(name),
                    {HostLayer{planted_matrix(rank, in, seed), RankAxis::rows},
                     HostLayer{planted_matrix(out, rank, seed + 1), RankAxis::cols}}};
}

/// The small model most tests use: repeated shapes (batching), R = 4, 8, 16, and a
/// layer with fewer columns than R (q < R).
inline HostModel small_model() {
  return {planted_lora("a", 8, 96, 64, 11), planted_lora("b", 8, 96, 64, 21),
          planted_lora("c", 4, 200, 48, 31), planted_lora("d", 16, 12, 40, 41),
          planted_lora("e", 8, 64, 96, 51)};
}

/// Result of one RESTART: the report and every layer's values afterwards.
struct RunResult {
  RestartReport report;
  std::vector<std::vector<HostMatrix>> values;  ///< [module][layer]
};

/// Runs the reference (Eigen backend, double) on a host model.
inline RunResult run_reference(const HostModel& model, double p, NoisePolicy noise,
                               std::uint64_t seed) {
  std::vector<std::vector<Eigen::MatrixXd>> storage;
  for (const HostModule& module : model) {
    auto& layers = storage.emplace_back();
    for (const HostLayer& layer : module.layers) {
      Eigen::MatrixXd m(layer.matrix.rows, layer.matrix.cols);
      for (std::size_t i = 0; i < layer.matrix.rows; ++i)
        for (std::size_t j = 0; j < layer.matrix.cols; ++j)
          m(i, j) = layer.matrix.at(i, j);
      layers.push_back(std::move(m));
    }
  }
  using View = backends::eigen::MatrixView;
  std::vector<Module<View>> modules;
  for (std::size_t m = 0; m < model.size(); ++m) {
    Module<View> module{model[m].name, {}};
    for (std::size_t l = 0; l < model[m].layers.size(); ++l)
      module.layers.push_back(Layer<View>{View(storage[m][l]), model[m].layers[l].axis});
    modules.push_back(std::move(module));
  }
  Restart<backends::EigenBackend> restart(
      {.noise = noise, .seed = seed},
      backends::EigenBackend({.method = backends::eigen::Method::direct_svd}));
  RunResult result{restart.at_threshold(modules, p), {}};
  for (const auto& layers : storage) {
    auto& out = result.values.emplace_back();
    for (const Eigen::MatrixXd& m : layers) {
      HostMatrix h{static_cast<std::size_t>(m.rows()), static_cast<std::size_t>(m.cols()), {}};
      for (Eigen::Index i = 0; i < m.rows(); ++i)
        for (Eigen::Index j = 0; j < m.cols(); ++j)
          h.values.push_back(m(i, j));
      out.push_back(std::move(h));
    }
  }
  return result;
}

// ---------------------------------------------------------------------------------------
// Precisions of a traits struct (each function optional, so older traits still compile).

/// The precision settings the suite tests for a backend: Traits::precisions(), or only
/// the default (automatic) when the traits do not declare any.
template <class Traits>
std::vector<Precision> precisions_of() {
  if constexpr (requires { Traits::precisions(); })
    return Traits::precisions();
  else
    return {Precision::automatic};
}

/// The backend to test for a setting: Traits::backend(precision), else Traits::backend().
template <class Traits>
typename Traits::backend_type backend_for(Precision precision) {
  if constexpr (requires { Traits::backend(precision); })
    return Traits::backend(precision);
  else
    return Traits::backend();
}

/// What a setting runs at on this machine (the bounds follow it): Traits::resolved(request),
/// else the request itself, with automatic taken as fp32 (the looser bounds).
template <class Traits>
Precision resolved_of(Precision requested) {
  if constexpr (requires { Traits::resolved(requested); })
    return Traits::resolved(requested);
  else
    return requested == Precision::automatic ? Precision::fp32 : requested;
}

/// "automatic (runs fp64)" and the like, for traces.
template <class Traits>
std::string describe(Precision precision) {
  return std::string(precision_name(precision)) + " (runs " +
         precision_name(resolved_of<Traits>(precision)) + ")";
}

/// A model stored by a backend: one handle per layer.
template <class Traits>
struct DeviceModel {
  using handle_type = typename Traits::handle_type;
  using matrix_type = typename Traits::backend_type::matrix_type;
  std::vector<std::string> names;
  std::vector<std::vector<RankAxis>> axes;
  std::vector<std::vector<handle_type>> handles;

  /// Stores `model` with the given dtype and layout.
  static DeviceModel store(const HostModel& model, Dtype dtype, Layout layout) {
    DeviceModel device;
    for (const HostModule& module : model) {
      device.names.push_back(module.name);
      auto& axes = device.axes.emplace_back();
      auto& handles = device.handles.emplace_back();
      for (const HostLayer& layer : module.layers) {
        axes.push_back(layer.axis);
        handles.push_back(Traits::make(layer.matrix, dtype, layout));
      }
    }
    return device;
  }
  /// The stored values, as a host model (what the reference must see).
  HostModel read() const {
    HostModel model;
    for (std::size_t m = 0; m < handles.size(); ++m) {
      HostModule module{names[m], {}};
      for (std::size_t l = 0; l < handles[m].size(); ++l)
        module.layers.push_back(HostLayer{Traits::read(handles[m][l]), axes[m][l]});
      model.push_back(std::move(module));
    }
    return model;
  }
  /// All storage bytes of every layer.
  std::vector<std::vector<unsigned char>> bytes() const {
    std::vector<std::vector<unsigned char>> all;
    for (const auto& module : handles)
      for (const auto& handle : module)
        all.push_back(Traits::bytes(handle));
    return all;
  }
  /// Modules of views for Restart.
  std::vector<Module<matrix_type>> modules() {
    std::vector<Module<matrix_type>> result;
    for (std::size_t m = 0; m < handles.size(); ++m) {
      Module<matrix_type> module{names[m], {}};
      for (std::size_t l = 0; l < handles[m].size(); ++l)
        module.layers.push_back(Layer<matrix_type>{Traits::view(handles[m][l]), axes[m][l]});
      result.push_back(std::move(module));
    }
    return result;
  }
  /// Runs one RESTART at threshold p with the backend configured for `precision`.
  RestartReport restart(double p, NoisePolicy noise, std::uint64_t seed,
                        Precision precision = Precision::automatic) {
    Restart<typename Traits::backend_type> driver({.noise = noise, .seed = seed},
                                                  backend_for<Traits>(precision));
    const auto views = modules();
    return driver.at_threshold(views, p);
  }
};

// ---------------------------------------------------------------------------------------
// The promised bounds, for one layer, against the reference (which has its own fp64 error).

/// R (rank axis) and n (the other axis) of a layer.
struct LayerSizes {
  std::size_t rank = 0;
  std::size_t length = 0;
};
inline LayerSizes sizes_of(const HostLayer& layer) {
  const std::size_t rank = layer.axis == RankAxis::rows ? layer.matrix.rows : layer.matrix.cols;
  const std::size_t length = layer.axis == RankAxis::rows ? layer.matrix.cols : layer.matrix.rows;
  return {rank, length};
}

/// delta for comparing a backend at `resolved` with the fp64 reference.
inline double share_tolerance(Precision resolved, LayerSizes s) {
  return energy_share_tolerance(resolved, s.rank, s.length) +
         energy_share_tolerance(Precision::fp64, s.rank, s.length);
}

/// epsilon (relative to ||M||_F) for comparing the backend's truncation to K (written to
/// `storage`) with the reference's, from the reference spectrum's gap at K (less the
/// reference's own possible error of it).
inline double truncation_bound(Precision resolved, LayerSizes s, std::size_t kept,
                               const std::vector<double>& reference_values, Dtype storage) {
  const double gap = relative_gap(reference_values, kept) -
                     2.0 * gram_tolerance(Precision::fp64, s.rank, s.length);
  return truncation_tolerance(resolved, s.rank, s.length, kept, gap, storage) +
         truncation_tolerance(Precision::fp64, s.rank, s.length, kept, gap, StorageType::f64);
}

/// True when p lies within `tolerance` of a cumulative-energy share E_k / T of the spectrum.
inline bool near_boundary(const std::vector<double>& values, double p, double tolerance) {
  const double scale = energy_scale(values);
  double total = 0.0;
  for (double d : values)
    total += (scale * d) * (scale * d);
  if (!(total > 0.0))
    return false;
  double cumulative = 0.0;
  for (double d : values) {
    cumulative += (scale * d) * (scale * d);
    if (std::abs(cumulative / total - p) <= tolerance)
      return true;
  }
  return false;
}

/// True when, for some layer of the module, p lies within delta of one of the reference's
/// boundaries: only then may the backend's K differ from the reference's.
inline bool module_near_boundary(const HostModule& module, const ModuleReport& reference, double p,
                                 Precision resolved) {
  for (std::size_t l = 0; l < module.layers.size(); ++l) {
    if (near_boundary(reference.layers[l].singular_values, p,
                      share_tolerance(resolved, sizes_of(module.layers[l]))))
      return true;
  }
  return false;
}

/// ||a - b||_F.
inline double frobenius_distance(const HostMatrix& a, const HostMatrix& b) {
  double sum = 0.0;
  for (std::size_t i = 0; i < a.values.size(); ++i)
    sum += (a.values[i] - b.values[i]) * (a.values[i] - b.values[i]);
  return std::sqrt(sum);
}

/// ||a||_F, computed in units of its largest entry (no overflow).
inline double frobenius_norm(const HostMatrix& a) {
  double largest = 0.0;
  for (double v : a.values)
    largest = std::max(largest, std::abs(v));
  if (!(largest > 0.0))
    return 0.0;
  double sum = 0.0;
  for (double v : a.values)
    sum += (v / largest) * (v / largest);
  return largest * std::sqrt(sum);
}

/// Compares one module's report and truncated layers (policy none) with the reference at
/// threshold p: K (unless p is within delta of a boundary), per layer the signal count and
/// singular values (|d^2 - ref^2| <= eta T), sigma and the truncated matrix (within epsilon
/// ||M||_F). `before` holds the stored inputs; `scale` multiplies the reference's values
/// (a power of two: the reference ran on the input divided by it). Returns false when K
/// was not compared (p near a boundary).
inline bool expect_module_matches(const HostModule& before, const ModuleReport& got,
                                  const ModuleReport& want,
                                  const std::vector<HostMatrix>& got_after,
                                  const std::vector<HostMatrix>& want_after, double p,
                                  Precision resolved, Dtype storage, double scale = 1.0) {
  SCOPED_TRACE("module '" + want.name + "' at p = " + std::to_string(p));
  if (module_near_boundary(before, want, p, resolved))
    return false;
  EXPECT_EQ(got.module_rank, want.module_rank);
  if (got.module_rank != want.module_rank)
    return true;
  for (std::size_t l = 0; l < before.layers.size(); ++l) {
    SCOPED_TRACE("layer " + std::to_string(l));
    const LayerSizes s = sizes_of(before.layers[l]);
    const LayerReport& g = got.layers[l];
    const LayerReport& w = want.layers[l];
    EXPECT_EQ(g.signal_count, w.signal_count);
    EXPECT_TRUE(std::isfinite(g.sigma)) << g.sigma;
    EXPECT_EQ(g.singular_values.size(), w.singular_values.size());
    if (g.singular_values.size() != w.singular_values.size())
      continue;
    // Units of the reference's d_1 (times scale), so that huge values do not overflow.
    const double top = w.singular_values.front();
    if (!(top > 0.0))
      continue;
    double total = 0.0;
    for (double d : w.singular_values)
      total += (d / top) * (d / top);
    const double eta = gram_tolerance(resolved, s.rank, s.length) +
                       gram_tolerance(Precision::fp64, s.rank, s.length);
    for (std::size_t i = 0; i < g.singular_values.size(); ++i) {
      const double mine = g.singular_values[i] / scale / top;
      const double theirs = w.singular_values[i] / top;
      EXPECT_LE(std::abs(mine * mine - theirs * theirs), eta * total) << "d_" << i + 1;
    }
    const double epsilon =
        truncation_bound(resolved, s, got.module_rank, w.singular_values, storage);
    // sigma^2 = E_res / N - mean^2: E_res within delta T, the mean within epsilon ||M|| / sqrt N.
    const double entries = static_cast<double>(s.rank * s.length);
    const double sigma_mine = g.sigma / scale / top;
    const double sigma_theirs = w.sigma / top;
    EXPECT_LE(std::abs(sigma_mine * sigma_mine - sigma_theirs * sigma_theirs),
              (share_tolerance(resolved, s) + epsilon * (2.0 + epsilon)) * total / entries)
        << "sigma " << g.sigma << " vs " << w.sigma * scale;
    HostMatrix mine_after = got_after[l];
    for (double& v : mine_after.values)
      v /= scale;
    HostMatrix input = before.layers[l].matrix;
    for (double& v : input.values)
      v /= scale;
    EXPECT_LE(frobenius_distance(mine_after, want_after[l]), epsilon * frobenius_norm(input))
        << "epsilon " << epsilon << " (K = " << got.module_rank << ")";
  }
  return true;
}

/// The thresholds of the sweep: (j + 1/2) / 40 for j < 40, then 0.99, 0.995 and 0.999.
inline std::vector<double> sweep_thresholds() {
  std::vector<double> p;
  for (int j = 0; j < 40; ++j)
    p.push_back((j + 0.5) / 40.0);
  for (double high : {0.99, 0.995, 0.999})
    p.push_back(high);
  return p;
}

/// The model scaled by 2^exponent (exact in double).
inline HostModel scaled(HostModel model, int exponent) {
  for (HostModule& module : model)
    for (HostLayer& layer : module.layers)
      for (double& v : layer.matrix.values)
        v = std::ldexp(v, exponent);
  return model;
}

/// Powers of two near the top and bottom of a storage format's range for the extreme-value
/// test: 2^100 (entries about 1e30, whose squares overflow float32) wherever it fits, the
/// largest that keeps ||M||_F of the small model finite (2^990 in f64, 2^120 in f32 and
/// bf16, 2^13 in f16), and a small one (2^-100; 2^-10 in f16).
inline std::vector<int> extreme_exponents(Dtype dtype) {
  switch (dtype) {
    case Dtype::f64:
      return {100, 990, -100};
    case Dtype::f16:
      return {13, -10};
    default:
      return {100, 120, -100};
  }
}

template <class Traits>
class Conformance : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string reason = Traits::skip_reason();
    if (!reason.empty())
      GTEST_SKIP() << reason;
  }
};

TYPED_TEST_SUITE_P(Conformance);

// For every precision, dtype and layout at p = 0.9: the same K per module as the fp64
// reference (unless p lies within the promised delta of a cumulative-energy share), the
// same per-layer counts, singular values within the promised eta, sigma, and truncated
// matrices (policy none) within the promised epsilon of the reference, relative to ||M||_F.
TYPED_TEST_P(Conformance, TruncationMatchesDoubleReference) {
  using Traits = TypeParam;
  for (Precision precision : precisions_of<Traits>()) {
    const Precision resolved = resolved_of<Traits>(precision);
    for (Dtype dtype : Traits::dtypes()) {
      for (Layout layout : Traits::layouts()) {
        SCOPED_TRACE(describe<Traits>(precision) + " " + to_string(dtype) + " " +
                     to_string(layout));
        auto device = DeviceModel<Traits>::store(small_model(), dtype, layout);
        const HostModel before = device.read();
        const RunResult expected = run_reference(before, 0.9, NoisePolicy::none, 5);
        const RestartReport report = device.restart(0.9, NoisePolicy::none, 5, precision);
        const HostModel after = device.read();
        ASSERT_EQ(report.modules.size(), expected.report.modules.size());
        std::size_t compared = 0;
        for (std::size_t m = 0; m < report.modules.size(); ++m) {
          std::vector<HostMatrix> got_after;
          for (const HostLayer& layer : after[m].layers)
            got_after.push_back(layer.matrix);
          compared +=
              expect_module_matches(before[m], report.modules[m], expected.report.modules[m],
                                    got_after, expected.values[m], 0.9, resolved, dtype);
        }
        EXPECT_GT(compared, 0u) << "every module had a boundary within delta of p";
      }
    }
  }
}

// The same comparison over a sweep of 43 thresholds p in (0, 1) (row-major storage): K
// equals the reference's for every module except where p lies within delta of one of its
// layers' cumulative-energy shares, and the truncated matrices stay within epsilon. At
// least a quarter of the (module, p) pairs must be compared (the test cannot pass empty).
TYPED_TEST_P(Conformance, ThresholdSweepMatchesDoubleReference) {
  using Traits = TypeParam;
  std::size_t compared = 0, pairs = 0;
  for (Dtype dtype : Traits::dtypes()) {
    const HostModel before =
        DeviceModel<Traits>::store(small_model(), dtype, Layout::row_major).read();
    for (double p : sweep_thresholds()) {
      const RunResult expected = run_reference(before, p, NoisePolicy::none, 5);
      for (Precision precision : precisions_of<Traits>()) {
        SCOPED_TRACE(describe<Traits>(precision) + " " + to_string(dtype));
        const Precision resolved = resolved_of<Traits>(precision);
        auto device = DeviceModel<Traits>::store(before, dtype, Layout::row_major);
        const RestartReport report = device.restart(p, NoisePolicy::none, 5, precision);
        const HostModel after = device.read();
        for (std::size_t m = 0; m < report.modules.size(); ++m) {
          std::vector<HostMatrix> got_after;
          for (const HostLayer& layer : after[m].layers)
            got_after.push_back(layer.matrix);
          compared +=
              expect_module_matches(before[m], report.modules[m], expected.report.modules[m],
                                    got_after, expected.values[m], p, resolved, dtype);
        }
        pairs += report.modules.size();
      }
    }
  }
  EXPECT_GE(4 * compared, pairs) << compared << " of " << pairs << " (module, p) pairs compared";
}

// With policy whole, result - truncation is the noise: mean about 0 and standard
// deviation within 2 % of the reported sigma (about 100k draws per layer pair).
TYPED_TEST_P(Conformance, NoiseHasReportedSigma) {
  using Traits = TypeParam;
  const HostModel model{planted_lora("big", 32, 2048, 1024, 77)};
  for (Precision precision : precisions_of<Traits>()) {
    for (Dtype dtype : Traits::dtypes()) {
      SCOPED_TRACE(describe<Traits>(precision) + " " + to_string(dtype));
      auto device = DeviceModel<Traits>::store(model, dtype, Layout::row_major);
      const RunResult truncated = run_reference(device.read(), 0.9, NoisePolicy::none, 9);
      const RestartReport report = device.restart(0.9, NoisePolicy::whole, 9, precision);
      const HostModel after = device.read();
      for (std::size_t l = 0; l < 2; ++l) {
        const double sigma = report.modules[0].layers[l].sigma;
        ASSERT_GT(sigma, 0.0);
        const auto& got = after[0].layers[l].matrix.values;
        const auto& base = truncated.values[0][l].values;
        double sum = 0.0, squares = 0.0;
        for (std::size_t i = 0; i < got.size(); ++i) {
          const double noise = got[i] - base[i];
          sum += noise;
          squares += noise * noise;
        }
        const double count = static_cast<double>(got.size());
        const double mean = sum / count;
        const double deviation = std::sqrt(squares / count - mean * mean);
        EXPECT_LT(std::abs(mean), 0.02 * sigma) << "layer " << l;
        EXPECT_NEAR(deviation, sigma, 0.02 * sigma) << "layer " << l;
      }
    }
  }
}

// Backends that draw the contract's Philox stream reproduce the reference's noisy result
// (policies whole and discarded): the truncation within 2 epsilon (the noise passes through
// the projection for `discarded`) plus the difference of the float and double Box-Muller
// transforms of the same words, below 2^-11 + 2^-16 per draw near u1 = 1 (where the float
// rounding of u1 moves -2 log u1 by 2^-24), so below that times sigma sqrt(N) <= ||M||_F.
TYPED_TEST_P(Conformance, NoisyResultMatchesReferenceWhenSharingGenerator) {
  using Traits = TypeParam;
  if (!Traits::same_noise_as_reference())
    GTEST_SKIP() << "this backend draws its own noise (checked in distribution only)";
  constexpr double transform = 0x1p-11 + 0x1p-16;
  for (Precision precision : precisions_of<Traits>()) {
    const Precision resolved = resolved_of<Traits>(precision);
    for (NoisePolicy policy : {NoisePolicy::whole, NoisePolicy::discarded}) {
      for (Dtype dtype : Traits::dtypes()) {
        SCOPED_TRACE(describe<Traits>(precision) + " " + to_string(dtype));
        auto device = DeviceModel<Traits>::store(small_model(), dtype, Layout::row_major);
        const HostModel before = device.read();
        const RunResult expected = run_reference(before, 0.9, policy, 13);
        device.restart(0.9, policy, 13, precision);
        const HostModel after = device.read();
        for (std::size_t m = 0; m < after.size(); ++m) {
          if (module_near_boundary(before[m], expected.report.modules[m], 0.9, resolved))
            continue;
          for (std::size_t l = 0; l < after[m].layers.size(); ++l) {
            const LayerSizes s = sizes_of(before[m].layers[l]);
            const double epsilon =
                truncation_bound(resolved, s, expected.report.modules[m].module_rank,
                                 expected.report.modules[m].layers[l].singular_values, dtype);
            EXPECT_LE(frobenius_distance(after[m].layers[l].matrix, expected.values[m][l]),
                      (2.0 * epsilon + transform) * frobenius_norm(before[m].layers[l].matrix))
                << "module " << m << " layer " << l;
          }
        }
      }
    }
  }
}

// Same seed: bit-identical results; another seed: different results (every precision).
TYPED_TEST_P(Conformance, NoiseIsDeterministicPerSeed) {
  using Traits = TypeParam;
  const Dtype dtype = Traits::dtypes().front();
  for (Precision precision : precisions_of<Traits>()) {
    SCOPED_TRACE(describe<Traits>(precision));
    auto run = [&](std::uint64_t seed) {
      auto device = DeviceModel<Traits>::store(small_model(), dtype, Layout::row_major);
      device.restart(0.9, NoisePolicy::whole, seed, precision);
      return device.bytes();
    };
    const auto first = run(1234);
    EXPECT_EQ(first, run(1234));
    const auto other = run(1235);
    ASSERT_EQ(first.size(), other.size());
    for (std::size_t i = 0; i < first.size(); ++i)
      EXPECT_NE(first[i], other[i]) << "layer " << i;
  }
}

// Entries near the top and the bottom of each storage format's range (the small model
// scaled by 2^e: e = 100, about 1e30, whose squares overflow float32; e = 990 in f64,
// whose squares overflow float64; 2^-100) restart without error; scaled back, K, the
// singular values, sigma and the truncation match the reference run on the unscaled
// values within the promised bounds; with noise every written entry is finite.
TYPED_TEST_P(Conformance, ExtremeMagnitudesRestartCorrectly) {
  using Traits = TypeParam;
  for (Dtype dtype : Traits::dtypes()) {
    for (int exponent : extreme_exponents(dtype)) {
      const HostModel before =
          DeviceModel<Traits>::store(scaled(small_model(), exponent), dtype, Layout::row_major)
              .read();
      const RunResult expected =
          run_reference(scaled(before, -exponent), 0.9, NoisePolicy::none, 5);
      for (Precision precision : precisions_of<Traits>()) {
        SCOPED_TRACE(describe<Traits>(precision) + " " + to_string(dtype) + " 2^" +
                     std::to_string(exponent));
        auto device = DeviceModel<Traits>::store(before, dtype, Layout::row_major);
        RestartReport report;
        try {
          report = device.restart(0.9, NoisePolicy::none, 5, precision);
        } catch (const Error& error) {
          ADD_FAILURE() << error.what();
          continue;
        }
        const HostModel after = device.read();
        for (std::size_t m = 0; m < report.modules.size(); ++m) {
          std::vector<HostMatrix> got_after;
          for (const HostLayer& layer : after[m].layers)
            got_after.push_back(layer.matrix);
          expect_module_matches(before[m], report.modules[m], expected.report.modules[m], got_after,
                                expected.values[m], 0.9, resolved_of<Traits>(precision), dtype,
                                std::ldexp(1.0, exponent));
        }
        auto noisy = DeviceModel<Traits>::store(before, dtype, Layout::row_major);
        EXPECT_NO_THROW(noisy.restart(0.9, NoisePolicy::whole, 5, precision));
        for (const HostModule& module : noisy.read())
          for (const HostLayer& layer : module.layers)
            for (double v : layer.matrix.values)
              ASSERT_TRUE(std::isfinite(v)) << "a non-finite entry was written";
      }
    }
  }
}

// The same matrix given as a layer of two modules: an aclora::Error naming both places,
// before any write (RESTART writes in place; the backend must describe its memory, see
// aclora::DescribesMemory, so that the driver can refuse shared memory).
TYPED_TEST_P(Conformance, SharedMemoryIsRefused) {
  using Traits = TypeParam;
  using Backend = typename Traits::backend_type;
  if constexpr (!DescribesMemory<Backend>) {
    ADD_FAILURE() << "the backend does not describe its memory (static MemoryRegion "
                     "memory(const matrix_type&)), so layers sharing memory are not refused";
  } else {
    auto device =
        DeviceModel<Traits>::store(small_model(), Traits::dtypes().front(), Layout::row_major);
    const auto before = device.bytes();
    auto modules = device.modules();
    modules.push_back(Module<typename Backend::matrix_type>{"twin", {modules[1].layers[0]}});
    Restart<Backend> driver({.seed = 1}, backend_for<Traits>(precisions_of<Traits>().front()));
    try {
      driver.at_threshold(modules, 0.9);
      ADD_FAILURE() << "expected aclora::Error";
    } catch (const Error& error) {
      const std::string text = error.what();
      EXPECT_NE(text.find("'twin'"), std::string::npos) << text;
      EXPECT_NE(text.find("'b'"), std::string::npos) << text;
      EXPECT_NE(text.find("memory"), std::string::npos) << text;
    }
    EXPECT_EQ(before, device.bytes());
  }
}

// A NaN in the very last layer: an aclora::Error naming that module, nothing written.
TYPED_TEST_P(Conformance, NanInLastLayerLeavesEverythingUnchanged) {
  using Traits = TypeParam;
  for (Dtype dtype : Traits::dtypes()) {
    HostModel model = small_model();
    model.back().layers.back().matrix.at(3, 2) = std::numeric_limits<double>::quiet_NaN();
    auto device = DeviceModel<Traits>::store(model, dtype, Layout::row_major);
    const auto before = device.bytes();
    try {
      device.restart(0.9, NoisePolicy::whole, 1, precisions_of<Traits>().front());
      ADD_FAILURE() << "expected aclora::Error";
    } catch (const Error& error) {
      EXPECT_NE(std::string(error.what()).find("'e'"), std::string::npos) << error.what();
      EXPECT_NE(std::string(error.what()).find("NaN"), std::string::npos) << error.what();
    }
    EXPECT_EQ(before, device.bytes()) << to_string(dtype);
  }
}

// A module whose layers disagree on R: an error before anything is written.
TYPED_TEST_P(Conformance, RankMismatchLeavesEverythingUnchanged) {
  using Traits = TypeParam;
  HostModel model = small_model();
  model.push_back(HostModule{"bad",
                             {HostLayer{planted_matrix(8, 30, 3), RankAxis::rows},
                              HostLayer{planted_matrix(30, 6, 4), RankAxis::cols}}});
  auto device = DeviceModel<Traits>::store(model, Traits::dtypes().front(), Layout::row_major);
  const auto before = device.bytes();
  EXPECT_THROW(device.restart(0.9, NoisePolicy::whole, 1, precisions_of<Traits>().front()), Error);
  EXPECT_EQ(before, device.bytes());
}

// A matrix the backend cannot process (e.g. an integer tensor) in the last module:
// an error naming the problem, nothing written.
TYPED_TEST_P(Conformance, UnsupportedMatrixLeavesEverythingUnchanged) {
  using Traits = TypeParam;
  auto unsupported = Traits::make_unsupported(8, 30);
  if (!unsupported)
    GTEST_SKIP() << "every matrix this backend can express is supported";
  auto device =
      DeviceModel<Traits>::store(small_model(), Traits::dtypes().front(), Layout::row_major);
  device.names.push_back("bad");
  device.axes.push_back({RankAxis::rows, RankAxis::cols});
  device.handles.emplace_back();
  device.handles.back().push_back(std::move(*unsupported));
  device.handles.back().push_back(
      Traits::make(planted_matrix(30, 8, 4), Traits::dtypes().front(), Layout::row_major));
  const auto before = device.bytes();
  try {
    device.restart(0.9, NoisePolicy::whole, 1, precisions_of<Traits>().front());
    ADD_FAILURE() << "expected aclora::Error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("'bad'"), std::string::npos) << error.what();
  }
  EXPECT_EQ(before, device.bytes());
}

// All-zero factors: no NaN, nothing kept but the floor, zero sigma, zeros written back;
// the other modules are processed normally (every precision).
TYPED_TEST_P(Conformance, ZeroMatrixStaysZero) {
  using Traits = TypeParam;
  HostModel model = small_model();
  model.push_back(
      HostModule{"zero",
                 {HostLayer{HostMatrix{8, 50, std::vector<double>(400)}, RankAxis::rows},
                  HostLayer{HostMatrix{70, 8, std::vector<double>(560)}, RankAxis::cols}}});
  for (Precision precision : precisions_of<Traits>()) {
    for (Dtype dtype : Traits::dtypes()) {
      SCOPED_TRACE(describe<Traits>(precision) + " " + to_string(dtype));
      auto device = DeviceModel<Traits>::store(model, dtype, Layout::row_major);
      const RestartReport report = device.restart(0.9, NoisePolicy::whole, 1, precision);
      const ModuleReport& zero = report.modules.back();
      EXPECT_EQ(zero.module_rank, 1u);  // min_rank floor
      for (const LayerReport& layer : zero.layers) {
        EXPECT_EQ(layer.signal_count, 0u);
        EXPECT_EQ(layer.sigma, 0.0);
        for (double d : layer.singular_values)
          EXPECT_EQ(d, 0.0);
      }
      const HostModel after = device.read();
      for (const HostLayer& layer : after.back().layers)
        for (double v : layer.matrix.values)
          EXPECT_EQ(v, 0.0);
      EXPECT_GT(report.modules.front().layers.front().sigma, 0.0);
    }
  }
}

REGISTER_TYPED_TEST_SUITE_P(Conformance, TruncationMatchesDoubleReference,
                            ThresholdSweepMatchesDoubleReference, NoiseHasReportedSigma,
                            NoisyResultMatchesReferenceWhenSharingGenerator,
                            NoiseIsDeterministicPerSeed, ExtremeMagnitudesRestartCorrectly,
                            SharedMemoryIsRefused, NanInLastLayerLeavesEverythingUnchanged,
                            RankMismatchLeavesEverythingUnchanged,
                            UnsupportedMatrixLeavesEverythingUnchanged, ZeroMatrixStaysZero);

}  // namespace aclora::conformance
