// The CUDA backend on a device: spectra, truncation, noise numbering and placement,
// storage types, layouts, batching, transactional errors and determinism. Every test that
// needs a GPU skips (GTEST_SKIP) when none is present; view checks that need no GPU run
// everywhere.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "aclora/backends/cuda.cuh"
#include "device_helpers.cuh"

namespace aclora::cuda_test {
namespace {

using backends::Cuda;

struct Case {
  std::int64_t rank, length;
  RankAxis axis;
  Layout layout;
  cu::DType dtype;
};

std::string name(const Case& c) {
  return std::to_string(c.rank) + "x" + std::to_string(c.length) +
         (c.axis == RankAxis::rows ? " rows-axis " : " cols-axis ") + layout_name(c.layout) + " " +
         cu::dtype_name(c.dtype);
}

std::vector<Case> all_cases(cu::DType dtype) {
  std::vector<Case> cases;
  for (RankAxis axis : {RankAxis::rows, RankAxis::cols})
    for (Layout layout : {Layout::row_major, Layout::col_major, Layout::padded, Layout::strided})
      cases.push_back({8, 300, axis, layout, dtype});
  // Jacobi (R <= 32) and XsyevBatched (R > 32) paths, and q = n < R.
  cases.push_back({40, 700, RankAxis::rows, Layout::row_major, dtype});
  cases.push_back({40, 700, RankAxis::cols, Layout::row_major, dtype});
  cases.push_back({16, 10, RankAxis::rows, Layout::row_major, dtype});
  cases.push_back({130, 260, RankAxis::cols, Layout::row_major, dtype});
  return cases;
}

struct Prepared {
  Planted planted;
  std::unique_ptr<DeviceMatrixHolder> holder;
  Layer<cu::DeviceMatrix> layer;
};

Prepared prepare(const Case& c, std::uint64_t seed) {
  Prepared p{planted(c.rank, c.length, seed), nullptr, {}};
  const std::int64_t rows = c.axis == RankAxis::rows ? c.rank : c.length;
  const std::int64_t cols = c.axis == RankAxis::rows ? c.length : c.rank;
  p.holder = std::make_unique<DeviceMatrixHolder>(as_matrix(p.planted.x, c.rank, c.length, c.axis),
                                                  rows, cols, c.dtype, c.layout);
  p.layer = Layer<cu::DeviceMatrix>{p.holder->view(), c.axis};
  return p;
}

double dtype_tolerance(cu::DType dtype) {
  return dtype == cu::DType::f32 ? 2e-5 : 1e-2;
}

// Views that are null or carry an unknown storage type are rejected without touching CUDA.
TEST(CudaCheck, NullAndUnknownTypeAreRejectedWithoutGpu) {
  float* null_data = nullptr;
  EXPECT_NE(Cuda::check(cu::DeviceMatrix(null_data, 4, 4, 4, 1)).find("null"), std::string::npos);
  int dummy = 0;
  const std::string bad =
      Cuda::check(cu::DeviceMatrix(&dummy, static_cast<cu::DType>(9), 2, 2, 2, 1));
  EXPECT_NE(bad.find("unsupported storage type"), std::string::npos) << bad;
  const std::string broadcast =
      cu::check_view(cu::DeviceMatrix(&dummy, cu::DType::f32, 4, 4, 0, 1));
  EXPECT_NE(broadcast.find("strides"), std::string::npos) << broadcast;
}

// Host memory is rejected with a clear reason (needs the runtime to inspect the pointer).
TEST(CudaCheck, HostMemoryIsRejected) {
  ACLORA_REQUIRE_GPU();
  std::vector<float> host(16, 1.0f);
  const std::string reason = Cuda::check(cu::DeviceMatrix::row_major(host.data(), 4, 4));
  EXPECT_NE(reason.find("host memory"), std::string::npos) << reason;
  DeviceMatrixHolder device({1, 2, 3, 4}, 2, 2, cu::DType::f32, Layout::row_major);
  EXPECT_EQ(Cuda::check(device.view()), "");
}

// Singular values, component sums and the entry sum match the planted decomposition for
// every layout, both rank axes, both eigen-solver paths and q < R.
TEST(CudaAnalysis, SpectrumMatchesPlantedDecomposition) {
  ACLORA_REQUIRE_GPU();
  for (cu::DType dtype : {cu::DType::f32, cu::DType::f16, cu::DType::bf16}) {
    const std::vector<Case> cases = all_cases(dtype);
    std::vector<Prepared> prepared;
    std::vector<Layer<cu::DeviceMatrix>> layers;
    for (std::size_t i = 0; i < cases.size(); ++i) {
      prepared.push_back(prepare(cases[i], 100 + i));
      layers.push_back(prepared.back().layer);
    }
    Cuda backend;
    std::vector<LayerSpectrum> spectra(layers.size());
    (void)backend.analyze(layers, spectra);
    const double tol = dtype_tolerance(dtype);
    for (std::size_t i = 0; i < cases.size(); ++i) {
      SCOPED_TRACE(name(cases[i]));
      const Planted& p = prepared[i].planted;
      const std::size_t q = static_cast<std::size_t>(std::min(p.rank, p.length));
      ASSERT_TRUE(spectra[i].finite);
      ASSERT_EQ(spectra[i].singular_values.size(), q);
      ASSERT_EQ(spectra[i].component_sums.size(), q);
      // Singular values: relative to d_1 (the Gram route loses the smallest ones).
      for (std::size_t k = 0; k < q; ++k)
        EXPECT_NEAR(spectra[i].singular_values[k], p.d[k], tol * 4 * p.d[0]) << "k = " << k;
      double entry_sum = 0.0;
      for (double e : p.x)
        entry_sum += e;
      const double scale = std::sqrt(static_cast<double>(p.rank * p.length)) * p.d[0];
      EXPECT_NEAR(spectra[i].entry_sum, entry_sum, tol * scale);
      // Leading component sums (well separated singular values): d (1^T u)(1^T v).
      for (std::size_t k = 0; k < std::min<std::size_t>(q, 3); ++k) {
        double su = 0.0, sv = 0.0;
        for (double e : p.u[k])
          su += e;
        for (double e : p.v[k])
          sv += e;
        EXPECT_NEAR(spectra[i].component_sums[k], p.d[k] * su * sv, 20 * tol * scale) << k;
      }
    }
  }
}

// The opt-in TF32 Gram products keep singular values within 1e-2 of the largest and the
// leading directions usable for truncation.
TEST(CudaAnalysis, Tf32GramStaysClose) {
  ACLORA_REQUIRE_GPU();
  const Case c{64, 1280, RankAxis::rows, Layout::row_major, cu::DType::f32};
  Prepared p = prepare(c, 900);
  const std::vector<Layer<cu::DeviceMatrix>> layers{p.layer};
  Cuda::Options options;
  options.tf32_gram = true;
  Cuda backend(options);
  std::vector<LayerSpectrum> spectra(1);
  auto analysis = backend.analyze(layers, spectra);
  for (std::size_t k = 0; k < 64; ++k)
    EXPECT_NEAR(spectra[0].singular_values[k], p.planted.d[k], 1e-2 * p.planted.d[0]) << k;
  const std::vector<LayerPlan> plans{LayerPlan{3, 0.0, NoisePolicy::none, {1, 1}}};
  backend.apply(layers, analysis, plans);
  EXPECT_LT(relative_error(p.holder->read(), p.planted.truncated(3)), 1e-2);
}

// Analysis modifies nothing: every storage byte (padding included) is unchanged.
TEST(CudaAnalysis, AnalysisWritesNothing) {
  ACLORA_REQUIRE_GPU();
  const Case c{8, 300, RankAxis::cols, Layout::padded, cu::DType::f32};
  Prepared p = prepare(c, 7);
  const auto before = p.holder->bytes();
  Cuda backend;
  std::vector<LayerSpectrum> spectra(1);
  const std::vector<Layer<cu::DeviceMatrix>> layers{p.layer};
  (void)backend.analyze(layers, spectra);
  EXPECT_EQ(p.holder->bytes(), before);
}

// Policy none writes the rank-K truncation along the rank axis, and only the matrix
// entries (padding bytes keep their sentinel).
TEST(CudaApply, TruncationWithoutNoise) {
  ACLORA_REQUIRE_GPU();
  for (cu::DType dtype : {cu::DType::f32, cu::DType::bf16}) {
    const std::vector<Case> cases = all_cases(dtype);
    std::vector<Prepared> prepared;
    std::vector<Layer<cu::DeviceMatrix>> layers;
    for (std::size_t i = 0; i < cases.size(); ++i) {
      prepared.push_back(prepare(cases[i], 200 + i));
      layers.push_back(prepared.back().layer);
    }
    Cuda backend;
    std::vector<LayerSpectrum> spectra(layers.size());
    auto analysis = backend.analyze(layers, spectra);
    std::vector<LayerPlan> plans(layers.size());
    for (std::size_t i = 0; i < plans.size(); ++i)
      plans[i] = LayerPlan{3, 0.0, NoisePolicy::none, NoiseKey{1, i}};
    backend.apply(layers, analysis, plans);
    for (std::size_t i = 0; i < cases.size(); ++i) {
      SCOPED_TRACE(name(cases[i]));
      const Planted& pl = prepared[i].planted;
      const auto expected = as_matrix(pl.truncated(3), pl.rank, pl.length, cases[i].axis);
      EXPECT_LT(relative_error(prepared[i].holder->read(), expected), 4 * dtype_tolerance(dtype));
    }
  }
}

// Policy whole adds sigma * Z where Z(i, j) is draw i * cols + j of the layer's stream
// (the core's numbering), whatever the layout and rank axis: keeping all components, the
// change of every entry is sigma times the host-computed draw.
TEST(CudaApply, WholeNoiseFollowsCoreNumbering) {
  ACLORA_REQUIRE_GPU();
  std::vector<Case> cases;
  for (RankAxis axis : {RankAxis::rows, RankAxis::cols})
    for (Layout layout : {Layout::row_major, Layout::col_major, Layout::strided})
      cases.push_back({8, 99, axis, layout, cu::DType::f32});
  std::vector<Prepared> prepared;
  std::vector<Layer<cu::DeviceMatrix>> layers;
  for (std::size_t i = 0; i < cases.size(); ++i) {
    prepared.push_back(prepare(cases[i], 300 + i));
    layers.push_back(prepared.back().layer);
  }
  Cuda backend;
  std::vector<LayerSpectrum> spectra(layers.size());
  auto analysis = backend.analyze(layers, spectra);
  std::vector<LayerPlan> plans(layers.size());
  const double sigma = 0.25;
  for (std::size_t i = 0; i < plans.size(); ++i)
    plans[i] = LayerPlan{8, sigma, NoisePolicy::whole, NoiseKey{42, 1000 + i}};
  backend.apply(layers, analysis, plans);
  for (std::size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(name(cases[i]));
    const Planted& pl = prepared[i].planted;
    const auto before = as_matrix(pl.x, pl.rank, pl.length, cases[i].axis);
    const auto after = prepared[i].holder->read();
    const std::int64_t cols = cases[i].axis == RankAxis::rows ? pl.length : pl.rank;
    double worst = 0.0;
    for (std::size_t e = 0; e < after.size(); ++e) {
      const std::int64_t row = static_cast<std::int64_t>(e) / cols;
      const std::int64_t col = static_cast<std::int64_t>(e) % cols;
      const double z =
          gaussian_at<float>(plans[i].key, static_cast<std::uint64_t>(row * cols + col));
      worst = std::max(worst, std::abs((after[e] - before[e]) - sigma * z));
    }
    EXPECT_LT(worst, 1e-4);
  }
}

// Policy discarded writes P (M - sigma Z) + sigma Z along the rank axis, P = U_K U_K^T.
TEST(CudaApply, DiscardedNoiseStaysOutsideKeptDirections) {
  ACLORA_REQUIRE_GPU();
  for (RankAxis axis : {RankAxis::rows, RankAxis::cols}) {
    SCOPED_TRACE(axis == RankAxis::rows ? "rows axis" : "cols axis");
    const Case c{12, 150, axis, Layout::row_major, cu::DType::f32};
    Prepared p = prepare(c, 400);
    const std::vector<Layer<cu::DeviceMatrix>> layers{p.layer};
    Cuda backend;
    std::vector<LayerSpectrum> spectra(1);
    auto analysis = backend.analyze(layers, spectra);
    const std::size_t kept = 4;
    const double sigma = 0.1;
    const std::vector<LayerPlan> plans{LayerPlan{kept, sigma, NoisePolicy::discarded, {5, 6}}};
    backend.apply(layers, analysis, plans);
    const Planted& pl = p.planted;
    const auto projector = pl.projector(kept);
    // Rank-major reference: Y = P (X - sZ) + sZ with Z(r, c) the draw of matrix entry.
    std::vector<double> y(pl.x.size());
    auto draw = [&](std::int64_t r, std::int64_t c) {
      const std::uint64_t index = axis == RankAxis::rows ? r * pl.length + c : c * pl.rank + r;
      return sigma * gaussian_at<float>(plans[0].key, index);
    };
    for (std::int64_t r = 0; r < pl.rank; ++r)
      for (std::int64_t c = 0; c < pl.length; ++c) {
        double sum = 0.0;
        for (std::int64_t k = 0; k < pl.rank; ++k)
          sum += projector[r * pl.rank + k] * (pl.x[k * pl.length + c] - draw(k, c));
        y[r * pl.length + c] = sum + draw(r, c);
      }
    EXPECT_LT(relative_error(p.holder->read(), as_matrix(y, pl.rank, pl.length, axis)), 1e-4);
  }
}

// A small workspace limit forces several batches; results agree with one batch.
TEST(CudaApply, BatchingDoesNotChangeResults) {
  ACLORA_REQUIRE_GPU();
  const std::vector<Case> cases = all_cases(cu::DType::f32);
  auto make_layers = [&](std::vector<Prepared>& prepared) {
    std::vector<Layer<cu::DeviceMatrix>> layers;
    for (std::size_t i = 0; i < cases.size(); ++i) {
      prepared.push_back(prepare(cases[i], 500 + i));
      layers.push_back(prepared.back().layer);
    }
    return layers;
  };
  // The smallest of a few limits that the planner splits into several batches (the
  // solver's workspace is only known on the device).
  std::size_t limit = 0;
  {
    std::vector<Prepared> prepared;
    const auto layers = make_layers(prepared);
    cu::Handles handles;
    handles.bind(nullptr);
    const auto query = [&](std::int32_t rank, std::size_t count) {
      return cu::solver_workspace(handles, rank, count);
    };
    for (std::size_t candidate = 64 * 1024; candidate <= (std::size_t{64} << 20); candidate *= 2) {
      try {
        const cu::Plan plan = cu::make_plan(Cuda::plan_inputs(layers), candidate, query);
        if (plan.analysis_batches.size() > 1 && plan.apply_batches.size() > 1) {
          limit = candidate;
          break;
        }
      } catch (const Error&) {
        // one layer does not fit yet: try a larger limit
      }
    }
  }
  ASSERT_GT(limit, 0u) << "no limit splits the test model";
  auto run = [&](std::size_t bound) {
    std::vector<Prepared> prepared;
    const auto layers = make_layers(prepared);
    Cuda backend(Cuda::Options{nullptr, bound});
    std::vector<LayerSpectrum> spectra(layers.size());
    auto analysis = backend.analyze(layers, spectra);
    std::vector<LayerPlan> plans(layers.size());
    for (std::size_t i = 0; i < plans.size(); ++i)
      plans[i] = LayerPlan{2, 0.01, NoisePolicy::whole, NoiseKey{3, i}};
    backend.apply(layers, analysis, plans);
    std::vector<std::vector<double>> values;
    for (auto& p : prepared)
      values.push_back(p.holder->read());
    return values;
  };
  const auto single = run(std::size_t{1} << 30);
  const auto many = run(limit);
  ASSERT_EQ(single.size(), many.size());
  for (std::size_t i = 0; i < single.size(); ++i)
    EXPECT_LT(relative_error(many[i], single[i]), 1e-5) << i;
}

// The whole driver: same inputs and seed give bit-identical results; a different seed
// gives different noise.
TEST(CudaRestart, DeterministicPerSeed) {
  ACLORA_REQUIRE_GPU();
  auto run = [](std::uint64_t seed) {
    Prepared down = prepare({16, 320, RankAxis::rows, Layout::row_major, cu::DType::f32}, 600);
    Prepared up = prepare({16, 640, RankAxis::cols, Layout::row_major, cu::DType::f32}, 601);
    std::vector<Module<cu::DeviceMatrix>> modules{
        Module<cu::DeviceMatrix>::lora("block.attn", down.layer.matrix, up.layer.matrix)};
    Restart<Cuda> restart({.seed = seed});
    const RestartReport report = restart.at_threshold(modules, 0.9);
    EXPECT_GE(report.modules[0].module_rank, 1u);
    std::vector<unsigned char> bytes = down.holder->bytes();
    const auto more = up.holder->bytes();
    bytes.insert(bytes.end(), more.begin(), more.end());
    return bytes;
  };
  EXPECT_EQ(run(11), run(11));
  EXPECT_NE(run(11), run(12));
}

// A NaN in the last layer: the driver raises an error naming that module and layer, and
// no byte of any matrix changed.
TEST(CudaRestart, NanLeavesEverythingUnchanged) {
  ACLORA_REQUIRE_GPU();
  Prepared a_down = prepare({8, 64, RankAxis::rows, Layout::row_major, cu::DType::f32}, 700);
  Prepared a_up = prepare({8, 64, RankAxis::cols, Layout::row_major, cu::DType::f32}, 701);
  Prepared b_down = prepare({8, 64, RankAxis::rows, Layout::row_major, cu::DType::bf16}, 702);
  Prepared b_up = prepare({8, 64, RankAxis::cols, Layout::row_major, cu::DType::bf16}, 703);
  b_up.holder->set(5, 3, std::nan(""));
  std::vector<DeviceMatrixHolder*> all{a_down.holder.get(), a_up.holder.get(), b_down.holder.get(),
                                       b_up.holder.get()};
  std::vector<std::vector<unsigned char>> before;
  for (auto* h : all)
    before.push_back(h->bytes());
  std::vector<Module<cu::DeviceMatrix>> modules{
      Module<cu::DeviceMatrix>::lora("a", a_down.layer.matrix, a_up.layer.matrix),
      Module<cu::DeviceMatrix>::lora("b", b_down.layer.matrix, b_up.layer.matrix)};
  Restart<Cuda> restart;
  try {
    (void)restart.at_threshold(modules, 0.5);
    FAIL() << "expected aclora::Error";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("'b'"), std::string::npos) << what;
    EXPECT_NE(what.find("layer 1"), std::string::npos) << what;
  }
  for (std::size_t i = 0; i < all.size(); ++i)
    EXPECT_EQ(all[i]->bytes(), before[i]) << i;
}

// The reported workspace covers the per-layer state and stays within limit + state.
TEST(CudaRestart, WorkspaceBytesAreReported) {
  ACLORA_REQUIRE_GPU();
  Prepared p = prepare({64, 1280, RankAxis::rows, Layout::row_major, cu::DType::f32}, 800);
  const std::vector<Layer<cu::DeviceMatrix>> layers{p.layer};
  Cuda backend;
  const std::size_t bytes = backend.workspace_bytes(layers);
  EXPECT_GE(bytes, 64u * 64u * sizeof(double));
  EXPECT_LE(bytes, backend.options().workspace_limit + (std::size_t{1} << 20));
}

}  // namespace
}  // namespace aclora::cuda_test
