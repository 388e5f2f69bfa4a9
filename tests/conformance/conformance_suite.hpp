/// @file conformance_suite.hpp
/// @brief Backend conformance tests, written once and instantiated per backend.
///
/// Every backend is compared with the reference: aclora::backends::Eigen run in double
/// on the same input values (the values the backend actually stores, read back). A
/// backend joins the suite with a small traits struct and two lines:
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
///   static double tolerance(Dtype);   // max |result - reference| / max |reference|
///   static bool same_noise_as_reference();  // draws bit-equal to Eigen's double draws
///   static backend_type backend();            // the configured backend to test
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
#include <random>
#include <string>
#include <vector>

#include "aclora/aclora.hpp"
#include "aclora/backends/eigen.hpp"

namespace aclora::conformance {

/// Storage types a backend may support.
enum class Dtype { f64, f32, f16, bf16 };
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

/// rows x cols with singular values about scale * 2^(-i/2) for i < planted, plus a small
/// dense floor: a planted decaying spectrum. Deterministic for a given seed.
inline HostMatrix planted_matrix(std::size_t rows, std::size_t cols, std::uint64_t seed,
                                 double scale = 1.0, std::size_t planted = 6) {
  std::mt19937_64 generator(seed);
  std::normal_distribution<double> normal;
  HostMatrix m{rows, cols, std::vector<double>(rows * cols, 0.0)};
  std::vector<double> left(rows), right(cols);
  for (std::size_t c = 0; c < std::min({planted, rows, cols}); ++c) {
    for (double& x : left)
      x = normal(generator) / std::sqrt(static_cast<double>(rows));
    for (double& y : right)
      y = normal(generator) / std::sqrt(static_cast<double>(cols));
    const double d = scale * std::pow(2.0, -0.5 * static_cast<double>(c));
    for (std::size_t i = 0; i < rows; ++i)
      for (std::size_t j = 0; j < cols; ++j)
        m.at(i, j) += d * left[i] * right[j];
  }
  const double floor = 0.02 * scale / std::sqrt(static_cast<double>(rows * cols));
  for (double& v : m.values)
    v += floor * normal(generator);
  return m;
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
  Restart<backends::Eigen> restart(
      {.noise = noise, .seed = seed},
      backends::Eigen({.method = backends::eigen::Method::direct_svd}));
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
  /// Runs one RESTART at threshold p.
  RestartReport restart(double p, NoisePolicy noise, std::uint64_t seed) {
    Restart<typename Traits::backend_type> driver({.noise = noise, .seed = seed},
                                                  Traits::backend());
    const auto views = modules();
    return driver.at_threshold(views, p);
  }
};

/// max |a - b| / max |b| over all entries (0 when b is all zero and a equals it).
inline double relative_difference(const HostMatrix& a, const HostMatrix& b) {
  double difference = 0.0, largest = 0.0;
  for (std::size_t i = 0; i < b.values.size(); ++i) {
    difference = std::max(difference, std::abs(a.values[i] - b.values[i]));
    largest = std::max(largest, std::abs(b.values[i]));
  }
  return largest > 0.0 ? difference / largest : difference;
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

// Same K per module and per-layer counts, singular values and sigma within the dtype's
// tolerance, and truncated matrices (policy none) within it, for every dtype and layout.
TYPED_TEST_P(Conformance, TruncationMatchesDoubleReference) {
  using Traits = TypeParam;
  for (Dtype dtype : Traits::dtypes()) {
    for (Layout layout : Traits::layouts()) {
      SCOPED_TRACE(std::string(to_string(dtype)) + " " + to_string(layout));
      const double tolerance = Traits::tolerance(dtype);
      auto device = DeviceModel<Traits>::store(small_model(), dtype, layout);
      const RunResult expected = run_reference(device.read(), 0.9, NoisePolicy::none, 5);
      const RestartReport report = device.restart(0.9, NoisePolicy::none, 5);
      const HostModel after = device.read();
      ASSERT_EQ(report.modules.size(), expected.report.modules.size());
      for (std::size_t m = 0; m < report.modules.size(); ++m) {
        const ModuleReport& got = report.modules[m];
        const ModuleReport& want = expected.report.modules[m];
        EXPECT_EQ(got.module_rank, want.module_rank) << "module " << want.name;
        for (std::size_t l = 0; l < got.layers.size(); ++l) {
          EXPECT_EQ(got.layers[l].signal_count, want.layers[l].signal_count);
          ASSERT_EQ(got.layers[l].singular_values.size(), want.layers[l].singular_values.size());
          const double top = want.layers[l].singular_values.front();
          for (std::size_t i = 0; i < got.layers[l].singular_values.size(); ++i) {
            EXPECT_NEAR(got.layers[l].singular_values[i], want.layers[l].singular_values[i],
                        tolerance * top);
          }
          EXPECT_NEAR(got.layers[l].sigma, want.layers[l].sigma,
                      tolerance * std::max(want.layers[l].sigma, 1e-3 * top));
          EXPECT_LE(relative_difference(after[m].layers[l].matrix, expected.values[m][l]),
                    tolerance)
              << "module " << want.name << " layer " << l;
        }
      }
    }
  }
}

// With policy whole, result - truncation is the noise: mean about 0 and standard
// deviation within 2 % of the reported sigma (about 100k draws per layer pair).
TYPED_TEST_P(Conformance, NoiseHasReportedSigma) {
  using Traits = TypeParam;
  const HostModel model{planted_lora("big", 32, 2048, 1024, 77)};
  for (Dtype dtype : Traits::dtypes()) {
    SCOPED_TRACE(to_string(dtype));
    auto device = DeviceModel<Traits>::store(model, dtype, Layout::row_major);
    const RunResult truncated = run_reference(device.read(), 0.9, NoisePolicy::none, 9);
    const RestartReport report = device.restart(0.9, NoisePolicy::whole, 9);
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

// Backends that share the host generator reproduce the reference's noisy result
// (policies whole and discarded) within the dtype's tolerance.
TYPED_TEST_P(Conformance, NoisyResultMatchesReferenceWhenSharingGenerator) {
  using Traits = TypeParam;
  if (!Traits::same_noise_as_reference())
    GTEST_SKIP() << "this backend draws its own noise (checked in distribution only)";
  for (NoisePolicy policy : {NoisePolicy::whole, NoisePolicy::discarded}) {
    for (Dtype dtype : Traits::dtypes()) {
      SCOPED_TRACE(to_string(dtype));
      auto device = DeviceModel<Traits>::store(small_model(), dtype, Layout::row_major);
      const RunResult expected = run_reference(device.read(), 0.9, policy, 13);
      device.restart(0.9, policy, 13);
      const HostModel after = device.read();
      for (std::size_t m = 0; m < after.size(); ++m)
        for (std::size_t l = 0; l < after[m].layers.size(); ++l)
          EXPECT_LE(relative_difference(after[m].layers[l].matrix, expected.values[m][l]),
                    Traits::tolerance(dtype));
    }
  }
}

// Same seed: bit-identical results; another seed: different results.
TYPED_TEST_P(Conformance, NoiseIsDeterministicPerSeed) {
  using Traits = TypeParam;
  const Dtype dtype = Traits::dtypes().front();
  auto run = [&](std::uint64_t seed) {
    auto device = DeviceModel<Traits>::store(small_model(), dtype, Layout::row_major);
    device.restart(0.9, NoisePolicy::whole, seed);
    return device.bytes();
  };
  const auto first = run(1234);
  EXPECT_EQ(first, run(1234));
  const auto other = run(1235);
  ASSERT_EQ(first.size(), other.size());
  for (std::size_t i = 0; i < first.size(); ++i)
    EXPECT_NE(first[i], other[i]) << "layer " << i;
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
      device.restart(0.9, NoisePolicy::whole, 1);
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
  EXPECT_THROW(device.restart(0.9, NoisePolicy::whole, 1), Error);
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
    device.restart(0.9, NoisePolicy::whole, 1);
    ADD_FAILURE() << "expected aclora::Error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("'bad'"), std::string::npos) << error.what();
  }
  EXPECT_EQ(before, device.bytes());
}

// All-zero factors: no NaN, nothing kept but the floor, zero sigma, zeros written back;
// the other modules are processed normally.
TYPED_TEST_P(Conformance, ZeroMatrixStaysZero) {
  using Traits = TypeParam;
  HostModel model = small_model();
  model.push_back(
      HostModule{"zero",
                 {HostLayer{HostMatrix{8, 50, std::vector<double>(400)}, RankAxis::rows},
                  HostLayer{HostMatrix{70, 8, std::vector<double>(560)}, RankAxis::cols}}});
  for (Dtype dtype : Traits::dtypes()) {
    auto device = DeviceModel<Traits>::store(model, dtype, Layout::row_major);
    const RestartReport report = device.restart(0.9, NoisePolicy::whole, 1);
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

REGISTER_TYPED_TEST_SUITE_P(Conformance, TruncationMatchesDoubleReference, NoiseHasReportedSigma,
                            NoisyResultMatchesReferenceWhenSharingGenerator,
                            NoiseIsDeterministicPerSeed, NanInLastLayerLeavesEverythingUnchanged,
                            RankMismatchLeavesEverythingUnchanged,
                            UnsupportedMatrixLeavesEverythingUnchanged, ZeroMatrixStaysZero);

}  // namespace aclora::conformance
