// All-or-nothing RESTART with the Eigen backend: every invalid input raises
// aclora::Error naming module and layer, and leaves every matrix byte-for-byte as it
// was; a zero factor (B at initialisation) restarts without NaN.
#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "aclora/backends/eigen.hpp"
#include "reference.hpp"

namespace {

using aclora::NoisePolicy;
using aclora::RankAxis;
using Backend = aclora::backends::EigenBackend;
using aclora::backends::eigen::Method;
using aclora_test::planted_matrix;
using Driver = aclora::Restart<Backend>;
using ViewModule = Driver::module_type;

// Three valid modules (float row-major, double column-major, float column-major) and
// a snapshot of their bytes.
struct ValidModel {
  Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> down0, up0;
  Eigen::MatrixXd down1, up1;
  Eigen::MatrixXf down2, up2;
  std::vector<std::vector<unsigned char>> snapshot;

  ValidModel()
      : down0(planted_matrix(8, 64, {4, 2}, 0.05, 1).cast<float>()),
        up0(planted_matrix(32, 8, {4, 2}, 0.05, 2).cast<float>()),
        down1(planted_matrix(6, 40, {3, 1}, 0.05, 3)),
        up1(planted_matrix(50, 6, {3, 1}, 0.05, 4)),
        down2(planted_matrix(4, 30, {2, 1}, 0.05, 5).cast<float>()),
        up2(planted_matrix(20, 4, {2, 1}, 0.05, 6).cast<float>()) {
    snapshot = bytes();
  }

  std::vector<ViewModule> modules() {
    return {ViewModule::lora("first", down0, up0), ViewModule::lora("second", down1, up1),
            ViewModule::lora("last", down2, up2)};
  }

  std::vector<std::vector<unsigned char>> bytes() const {
    std::vector<std::vector<unsigned char>> all;
    auto add = [&](const auto& m) {
      const auto* begin = reinterpret_cast<const unsigned char*>(m.data());
      all.emplace_back(begin, begin + sizeof(*m.data()) * m.size());
    };
    add(down0), add(up0), add(down1), add(up1), add(down2), add(up2);
    return all;
  }
};

// Restarts `modules` (both routes, both noise-carrying policies), expecting an Error
// whose message holds every substring, and every matrix of `model` unchanged.
void expect_failure_changes_nothing(ValidModel& model, const std::vector<ViewModule>& modules,
                                    const std::vector<std::string>& substrings) {
  for (Method method : {Method::gram, Method::direct_svd}) {
    Driver driver({.noise = NoisePolicy::whole, .min_rank = 1, .seed = 3},
                  Backend({.method = method, .threads = 2}));
    try {
      driver.at_threshold(modules, 0.9);
      ADD_FAILURE() << "no error raised";
    } catch (const aclora::Error& error) {
      for (const auto& text : substrings) {
        EXPECT_NE(std::string(error.what()).find(text), std::string::npos)
            << "'" << text << "' not in: " << error.what();
      }
    }
    const auto now = model.bytes();
    for (std::size_t i = 0; i < now.size(); ++i) {
      ASSERT_EQ(now[i].size(), model.snapshot[i].size());
      EXPECT_EQ(std::memcmp(now[i].data(), model.snapshot[i].data(), now[i].size()), 0)
          << "matrix " << i << " was modified";
    }
  }
}

// A NaN in the last entry of the last layer of the last module: error names 'last',
// #2, layer 1; nothing written.
TEST(Transaction, NanInLastMatrixChangesNothing) {
  ValidModel model;
  model.up2(19, 3) = std::numeric_limits<float>::quiet_NaN();
  model.snapshot = model.bytes();
  expect_failure_changes_nothing(model, model.modules(), {"'last'", "#2", "layer 1", "NaN"});
}

// An infinity in a middle module's first layer: error names 'second', layer 0.
TEST(Transaction, InfinityInMiddleModuleChangesNothing) {
  ValidModel model;
  model.down1(0, 0) = -std::numeric_limits<double>::infinity();
  model.snapshot = model.bytes();
  expect_failure_changes_nothing(model, model.modules(), {"'second'", "#1", "layer 0", "Inf"});
}

// Layers that disagree on R (down 8 x 64, up 32 x 4): error names the module and layer 1.
TEST(Transaction, RankMismatchChangesNothing) {
  ValidModel model;
  auto modules = model.modules();
  Eigen::MatrixXf narrow_up = Eigen::MatrixXf::Ones(32, 4);
  modules.push_back(ViewModule::lora("mismatch", model.down0, narrow_up));
  expect_failure_changes_nothing(model, modules, {"'mismatch'", "#3", "layer 1", "rank axis"});
}

// A module with no layers: error names it.
TEST(Transaction, EmptyModuleChangesNothing) {
  ValidModel model;
  auto modules = model.modules();
  modules.push_back(ViewModule{"hollow", {}});
  expect_failure_changes_nothing(model, modules, {"'hollow'", "#3", "no layers"});
}

// A 4 x 0 matrix: error names module and layer.
TEST(Transaction, ZeroSizedMatrixChangesNothing) {
  ValidModel model;
  auto modules = model.modules();
  Eigen::MatrixXf empty(4, 0);
  modules.push_back(ViewModule{"zero", {{empty, RankAxis::rows}}});
  expect_failure_changes_nothing(model, modules, {"'zero'", "#3", "layer 0", "zero-sized"});
}

// Two modules named alike: error names the second.
TEST(Transaction, DuplicateNamesChangeNothing) {
  ValidModel model;
  auto modules = model.modules();
  modules.push_back(ViewModule::lora("first", model.down1, model.up1));
  expect_failure_changes_nothing(model, modules, {"'first'", "#3", "duplicate"});
}

// B = 0 (LoRA at initialisation) with an isotropic A, scheduled p = 1 - 0.95 = 0.05:
// both counts are 0, K = min_rank = 1; no NaN anywhere; B stays exactly 0 with sigma 0;
// without noise A becomes its rank-1 truncation.
TEST(ZeroFactor, ZeroUpFactorRestartsWithoutNan) {
  for (Method method : {Method::gram, Method::direct_svd}) {
    for (NoisePolicy policy : {NoisePolicy::whole, NoisePolicy::discarded, NoisePolicy::none}) {
      Eigen::MatrixXf down = aclora_test::gaussian_matrix(8, 128, 77).cast<float>();
      Eigen::MatrixXf up = Eigen::MatrixXf::Zero(96, 8);
      const aclora_test::Reference down_reference(down.cast<double>());
      std::vector<ViewModule> modules{ViewModule::lora("init", down, up)};
      Driver driver({.noise = policy, .min_rank = 1, .seed = 5}, Backend({.method = method}));
      const auto report = driver(modules, aclora::Schedule{100, 10}, 0, 0.95);
      ASSERT_NEAR(report.threshold, 0.05, 1e-12);
      EXPECT_EQ(report.modules[0].layers[0].signal_count, 0u);
      EXPECT_EQ(report.modules[0].layers[1].signal_count, 0u);
      EXPECT_EQ(report.modules[0].module_rank, 1u);
      EXPECT_EQ(report.modules[0].layers[1].sigma, 0.0);
      EXPECT_EQ(report.modules[0].layers[1].kept_energy_fraction, 1.0);
      EXPECT_TRUE(down.allFinite());
      EXPECT_TRUE((up.array() == 0.0f).all());
      if (policy == NoisePolicy::none) {
        const Eigen::MatrixXd expected = down_reference.truncated(1);
        EXPECT_LE((down.cast<double>() - expected).cwiseAbs().maxCoeff(),
                  1e-6 * expected.cwiseAbs().maxCoeff());
      }
    }
  }
}

}  // namespace
