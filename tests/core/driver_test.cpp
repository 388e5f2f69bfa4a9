// The Restart driver with a fake in-test backend whose "matrices" carry a preset
// spectrum: validation before any backend call, selection and plans handed to apply,
// the report, the restart counter, and all-or-nothing behaviour.
#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "aclora/aclora.hpp"

namespace {

using aclora::Error;
using aclora::LayerPlan;
using aclora::LayerSpectrum;
using aclora::MatrixShape;
using aclora::NoisePolicy;
using aclora::RankAxis;

// A matrix as the fake backend sees it: a shape, the singular values its analysis
// reports, an optional reason why the backend refuses it, an optional analysis failure,
// and an optional address (of row-major doubles) for the memory check.
struct FakeMatrix {
  std::size_t rows = 0;
  std::size_t cols = 0;
  std::vector<double> singular_values;
  std::string refusal;
  bool finite = true;
  std::string failure;
  std::uintptr_t address = 0;  // 0: no memory (never overlaps)
};

// Records what the driver asked for.
struct FakeLog {
  int analyze_calls = 0;
  int apply_calls = 0;
  std::vector<LayerPlan> plans;
};

class FakeBackend {
 public:
  using matrix_type = FakeMatrix;
  using analysis_type = int;

  explicit FakeBackend(FakeLog* log = nullptr) : log_(log) {}

  static MatrixShape shape(const FakeMatrix& m) { return {m.rows, m.cols}; }
  static std::string check(const FakeMatrix& m) { return m.refusal; }
  static aclora::MemoryRegion memory(const FakeMatrix& m) {
    return {0,      m.address, m.address == 0 ? 0u : sizeof(double),
            m.rows, m.cols,    static_cast<std::ptrdiff_t>(m.cols),
            1};
  }

  int analyze(std::span<const aclora::Layer<FakeMatrix>> layers, std::span<LayerSpectrum> spectra) {
    ++log_->analyze_calls;
    for (std::size_t i = 0; i < layers.size(); ++i) {
      spectra[i].singular_values = layers[i].matrix.singular_values;
      spectra[i].component_sums.assign(layers[i].matrix.singular_values.size(), 0.0);
      spectra[i].finite = layers[i].matrix.finite;
      spectra[i].failure = layers[i].matrix.failure;
    }
    return 0;
  }
  void apply(std::span<const aclora::Layer<FakeMatrix>>, int&, std::span<const LayerPlan> plans) {
    ++log_->apply_calls;
    log_->plans.assign(plans.begin(), plans.end());
  }

 private:
  FakeLog* log_;
};

static_assert(aclora::Backend<FakeBackend>);
static_assert(aclora::DescribesMemory<FakeBackend>);

using Driver = aclora::Restart<FakeBackend>;
using FakeModule = aclora::Module<FakeMatrix>;

// A LoRA module of rank r: down r x 8 and up 8 x r with the given spectra.
FakeModule lora(std::string name, std::size_t r, std::vector<double> down_values,
                std::vector<double> up_values) {
  return FakeModule::lora(std::move(name), FakeMatrix{r, 8, std::move(down_values)},
                          FakeMatrix{8, r, std::move(up_values)});
}

// Runs at_threshold expecting an aclora::Error; checks that the message holds every
// substring and that the backend was never called.
void expect_rejected(std::vector<FakeModule> modules, std::vector<std::string> substrings) {
  FakeLog log;
  Driver driver({}, FakeBackend(&log));
  try {
    driver.at_threshold(modules, 0.5);
    ADD_FAILURE() << "no error raised";
  } catch (const Error& error) {
    for (const auto& text : substrings)
      EXPECT_NE(std::string(error.what()).find(text), std::string::npos)
          << "'" << text << "' not in: " << error.what();
  }
  EXPECT_EQ(log.apply_calls, 0);
  EXPECT_EQ(driver.restart_count(), 0u);
}

// An analysis failure other than NaN (e.g. a solver that did not converge) is raised as
// an error naming the module and layer, before any write.
TEST(DriverValidation, AnalysisFailureIsLocatedBeforeAnyWrite) {
  auto modules =
      std::vector<FakeModule>{lora("a", 2, {1, 0}, {1, 0}), lora("b", 2, {1, 0}, {1, 0})};
  modules[1].layers[1].matrix.failure = "the eigen-solver did not converge";
  expect_rejected(modules, {"'b' (#1), layer 1", "did not converge"});
}

// Two layers whose memory overlaps (here: rows 4-11 and rows 0-7 of one 12 x 8 buffer)
// are refused before any backend call, naming both places; a layer whose memory only
// touches another's is fine.
TEST(DriverValidation, LayersSharingMemoryAreRefused) {
  constexpr std::uintptr_t buffer = 0x100000;
  auto modules = std::vector<FakeModule>{lora("a", 8, {1}, {1}), lora("b", 8, {1}, {1})};
  modules[0].layers[0].matrix.address = buffer;              // 8 x 8 doubles
  modules[1].layers[0].matrix.address = buffer + 4 * 8 * 8;  // starts at row 4
  FakeLog log;
  Driver driver({}, FakeBackend(&log));
  try {
    driver.at_threshold(modules, 0.5);
    ADD_FAILURE() << "no error raised";
  } catch (const Error& error) {
    const std::string text = error.what();
    EXPECT_NE(text.find("'b' (#1), layer 0"), std::string::npos) << text;
    EXPECT_NE(text.find("shares memory with module 'a' (#0), layer 0"), std::string::npos) << text;
  }
  EXPECT_EQ(log.analyze_calls, 0);
  modules[1].layers[0].matrix.address = buffer + 8 * 8 * 8;  // right after the first
  EXPECT_NO_THROW(driver.at_threshold(modules, 0.5));
}

// An empty module list is an error.
TEST(DriverValidation, EmptyModuleListIsRejected) {
  expect_rejected({}, {"no modules"});
}

// A module without layers is an error naming the module, before any analysis.
TEST(DriverValidation, ModuleWithoutLayersIsRejected) {
  FakeLog log;
  Driver driver({}, FakeBackend(&log));
  std::vector<FakeModule> modules{lora("ok", 2, {1, 0}, {1, 0}), FakeModule{"empty", {}}};
  EXPECT_THROW(driver.at_threshold(modules, 0.5), Error);
  EXPECT_EQ(log.analyze_calls, 0);
  expect_rejected(modules, {"'empty'", "#1", "no layers"});
}

// Two modules with the same name are an error naming the second one.
TEST(DriverValidation, DuplicateNamesAreRejected) {
  expect_rejected(
      {lora("a", 2, {1, 0}, {1, 0}), lora("b", 2, {1, 0}, {1, 0}), lora("a", 2, {1, 0}, {1, 0})},
      {"'a'", "#2", "duplicate"});
}

// Layers of one module that disagree on R are an error naming module and layer.
TEST(DriverValidation, RankMismatchIsRejected) {
  FakeModule module{"m",
                    {{FakeMatrix{4, 8, {1, 0, 0, 0}}, RankAxis::rows},
                     {FakeMatrix{8, 3, {1, 0, 0}}, RankAxis::cols}}};
  expect_rejected({module}, {"'m'", "layer 1", "rank axis has length 3", "4"});
}

// A zero-sized matrix is an error naming module and layer.
TEST(DriverValidation, ZeroSizedMatrixIsRejected) {
  FakeModule module{"z", {{FakeMatrix{2, 0, {}}, RankAxis::rows}}};
  expect_rejected({lora("ok", 2, {1, 0}, {1, 0}), module}, {"'z'", "#1", "layer 0", "zero-sized"});
}

// A matrix the backend refuses is an error carrying the backend's reason.
TEST(DriverValidation, BackendRefusalIsReported) {
  FakeModule module = lora("dev", 2, {1, 0}, {1, 0});
  module.layers[1].matrix.refusal = "unsupported device";
  expect_rejected({module}, {"'dev'", "layer 1", "unsupported device"});
}

// NaN or Inf found by the analysis is an error naming module and layer; apply is never
// called, so nothing is written.
TEST(DriverValidation, NonFiniteLayerIsRejectedBeforeAnyWrite) {
  std::vector<FakeModule> modules{lora("first", 2, {1, 0}, {1, 0}),
                                  lora("last", 2, {1, 0}, {1, 0})};
  modules[1].layers[1].matrix.finite = false;
  expect_rejected(modules, {"'last'", "#1", "layer 1", "NaN"});
}

// Unnamed modules are located by position only.
TEST(DriverValidation, UnnamedModuleIsLocatedByPosition) {
  FakeModule module{"", {{FakeMatrix{2, 0, {}}, RankAxis::rows}}};
  expect_rejected({lora("", 2, {1, 0}, {1, 0}), module}, {"module (#1), layer 0"});
}

// p outside [0, 1] or NaN passed to at_threshold is an error; so is a bad loss.
TEST(DriverValidation, BadThresholdOrLossIsRejected) {
  FakeLog log;
  Driver driver({}, FakeBackend(&log));
  std::vector<FakeModule> modules{lora("a", 2, {1, 0}, {1, 0})};
  EXPECT_THROW(driver.at_threshold(modules, -0.1), Error);
  EXPECT_THROW(driver.at_threshold(modules, 1.5), Error);
  EXPECT_THROW(driver.at_threshold(modules, std::numeric_limits<double>::quiet_NaN()), Error);
  EXPECT_THROW(driver(modules, aclora::Schedule{100, 10}, 10, 0.0), Error);
  EXPECT_THROW(driver(modules, aclora::Schedule{100, 10}, 100, 0.5), Error);
  EXPECT_EQ(log.analyze_calls, 0);
}

// K is the union (max) of the layers' strict counts, floored by min_rank and clamped to
// R; every layer of a module gets the same K; the report carries k_j and K.
TEST(DriverSelection, ModuleRankIsUnionOfLayerCounts) {
  FakeLog log;
  Driver driver({.noise = NoisePolicy::whole, .min_rank = 1, .seed = 5}, FakeBackend(&log));
  // energies: down 4,1,1,1,1 (k = 1 at p = 0.6), up 1,1,1,1,1 (k = 2 at p = 0.6)
  std::vector<FakeModule> modules{lora("a", 5, {2, 1, 1, 1, 1}, {1, 1, 1, 1, 1}),
                                  lora("b", 5, {1, 0, 0, 0, 0}, {0, 0, 0, 0, 0})};
  const auto report = driver.at_threshold(modules, 0.6);
  ASSERT_EQ(report.modules.size(), 2u);
  EXPECT_EQ(report.modules[0].layers[0].signal_count, 1u);
  EXPECT_EQ(report.modules[0].layers[1].signal_count, 2u);
  EXPECT_EQ(report.modules[0].module_rank, 2u);
  EXPECT_EQ(report.modules[0].allocated_rank, 5u);
  EXPECT_EQ(report.modules[1].module_rank, 1u);  // counts 0 and 0, floored at min_rank 1
  ASSERT_EQ(log.plans.size(), 4u);
  EXPECT_EQ(log.plans[0].kept, 2u);
  EXPECT_EQ(log.plans[1].kept, 2u);
  EXPECT_EQ(log.plans[2].kept, 1u);
  EXPECT_EQ(log.plans[3].kept, 1u);
  EXPECT_TRUE(std::isnan(report.mean_loss));
  EXPECT_EQ(report.threshold, 0.6);
  EXPECT_EQ(report.total_module_rank(), 3u);
}

// With min_rank 0 a module whose layers count nothing keeps K = 0 (paper's rule).
TEST(DriverSelection, MinRankZeroAllowsEmptyModule) {
  FakeLog log;
  Driver driver({.min_rank = 0}, FakeBackend(&log));
  std::vector<FakeModule> modules{lora("a", 3, {1, 0, 0}, {1, 0, 0})};
  EXPECT_EQ(driver.at_threshold(modules, 0.9).modules[0].module_rank, 0u);
  EXPECT_EQ(log.plans[0].kept, 0u);
}

// Plans carry sigma from the residual statistics (energies 4, 1, 1, 1, 1 with K = 1 leave a
// residual energy of 4 over 5 x 8 = 40 entries with zero sums: sigma = sqrt(4 / 40)), the
// policy, and the key of (seed 77, restart 0, module "mod", layer): known answers computed
// outside aclora from the contract's definition (FNV-1a of the name, SplitMix64's finaliser;
// that implementation reproduces the published vectors FNV-1a("a") = 0xaf63dc4c8601ec8c and
// SplitMix64(0) = 0xe220a8397b1dcdaf). Policy none plans sigma 0 but reports the residual sigma.
TEST(DriverPlans, SigmaPolicyAndKeys) {
  const std::uint64_t expected_streams[2] = {0x6f76796c570f0ae0ull, 0x4ca82c37cfab43fdull};
  for (NoisePolicy policy : {NoisePolicy::whole, NoisePolicy::discarded, NoisePolicy::none}) {
    FakeLog log;
    Driver driver({.noise = policy, .min_rank = 1, .seed = 77}, FakeBackend(&log));
    std::vector<FakeModule> modules{lora("mod", 5, {2, 1, 1, 1, 1}, {2, 1, 1, 1, 1})};
    const auto report = driver.at_threshold(modules, 0.5);  // k = 0 -> K = 1
    ASSERT_EQ(log.plans.size(), 2u);
    for (std::size_t l = 0; l < 2; ++l) {
      const double sigma = std::sqrt(4.0 / 40.0);
      EXPECT_NEAR(report.modules[0].layers[l].sigma, sigma, 1e-15);
      EXPECT_EQ(log.plans[l].sigma,
                policy == NoisePolicy::none ? 0.0 : report.modules[0].layers[l].sigma);
      EXPECT_EQ(log.plans[l].noise, policy);
      EXPECT_EQ(log.plans[l].key.seed, 77u);
      EXPECT_EQ(log.plans[l].key.stream, expected_streams[l]) << "layer " << l;
    }
  }
}

// The scheduled call reports L, alpha(e) and p = 1 - L^alpha and counts restarts; the
// counter is part of the next restart's keys (known answers for module "a", layer 0 at
// restarts 1 and 9, computed as in SigmaPolicyAndKeys) and does not advance on failure.
TEST(DriverPlans, ScheduledRestartReportsAndCounts) {
  FakeLog log;
  Driver driver({.seed = 3}, FakeBackend(&log));
  std::vector<FakeModule> modules{lora("a", 2, {1, 1}, {1, 1})};
  const aclora::Schedule schedule{3, 1};
  const auto first = driver(modules, schedule, 2, 0.25);
  EXPECT_EQ(first.restart_index, 0u);
  EXPECT_EQ(first.mean_loss, 0.25);
  EXPECT_EQ(first.alpha, 2.0);
  EXPECT_NEAR(first.threshold, 0.9375, 1e-12);
  EXPECT_EQ(driver.restart_count(), 1u);
  modules[0].layers[0].matrix.finite = false;
  EXPECT_THROW(driver(modules, schedule, 2, 0.25), Error);
  EXPECT_EQ(driver.restart_count(), 1u);
  modules[0].layers[0].matrix.finite = true;
  const auto second = driver(modules, schedule, 2, 0.25);
  EXPECT_EQ(second.restart_index, 1u);
  EXPECT_EQ(log.plans[0].key.seed, 3u);
  EXPECT_EQ(log.plans[0].key.stream, 0xf10f507f862b506eull);
  driver.set_restart_count(9);
  driver.at_threshold(modules, 0.5);
  EXPECT_EQ(log.plans[0].key.stream, 0x1c698b0e8958d00dull);
}

// A spectrum near the top of the float64 range (d^2 would overflow) gives the same K and
// kept fraction as at unit scale, and sigma scaled by the same power of two.
TEST(DriverPlans, HugeSpectraGiveFiniteScaledPlans) {
  FakeLog log;
  Driver driver({.seed = 1}, FakeBackend(&log));
  std::vector<FakeModule> unit{lora("m", 5, {2, 1, 1, 1, 1}, {2, 1, 1, 1, 1})};
  const auto expected = driver.at_threshold(unit, 0.7);
  std::vector<double> huge;
  for (double d : {2.0, 1.0, 1.0, 1.0, 1.0})
    huge.push_back(std::ldexp(d, 1000));
  std::vector<FakeModule> scaled{lora("m", 5, huge, huge)};
  const auto report = driver.at_threshold(scaled, 0.7);
  EXPECT_EQ(report.modules[0].module_rank, expected.modules[0].module_rank);
  for (std::size_t l = 0; l < 2; ++l) {
    EXPECT_EQ(report.modules[0].layers[l].kept_energy_fraction,
              expected.modules[0].layers[l].kept_energy_fraction);
    EXPECT_EQ(report.modules[0].layers[l].sigma,
              std::ldexp(expected.modules[0].layers[l].sigma, 1000));
    EXPECT_EQ(log.plans[l].sigma, report.modules[0].layers[l].sigma);
  }
}

}  // namespace
