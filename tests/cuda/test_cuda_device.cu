// The CUDA backend on a device: checks, the precision `automatic` resolves to, spectra and
// writes of each precision setting within the bounds of accuracy.hpp for every storage type
// (fp64, fp32, fp16, bf16), layout and rank axis, noise numbering and placement, bit-identical
// results whatever the workspace limit, exact power-of-two scaling (extreme magnitudes),
// transactional errors and determinism. Every test that needs a GPU skips (GTEST_SKIP) when
// none is present; view checks that need no GPU run everywhere.
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

using backends::CudaBackend;

constexpr Precision precisions[] = {Precision::fp64, Precision::fp32, Precision::tf32};

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
  // Jacobi (R <= 32) and XsyevBatched (R > 32) paths, every Gram tile and projection class,
  // several chunks, and q = n < R.
  cases.push_back({40, 700, RankAxis::rows, Layout::row_major, dtype});
  cases.push_back({40, 700, RankAxis::cols, Layout::row_major, dtype});
  cases.push_back({16, 10, RankAxis::rows, Layout::row_major, dtype});
  cases.push_back({130, 260, RankAxis::cols, Layout::row_major, dtype});
  cases.push_back({300, 1300, RankAxis::rows, Layout::row_major, dtype});
  return cases;
}

struct Prepared {
  Case c;
  Planted planted;
  std::unique_ptr<DeviceMatrixHolder> holder;
  Layer<cu::DeviceMatrix> layer;

  // The stored values as an R x n rank-major matrix (row-major doubles).
  std::vector<double> stored() const {
    const std::vector<double> m = holder->read();
    if (c.axis == RankAxis::rows)
      return m;
    std::vector<double> x(m.size());
    for (std::int64_t r = 0; r < c.rank; ++r)
      for (std::int64_t col = 0; col < c.length; ++col)
        x[r * c.length + col] = m[col * c.rank + r];
    return x;
  }
};

Prepared prepare(const Case& c, std::uint64_t seed, double scale = 1.0) {
  Prepared p{c, planted(c.rank, c.length, seed), nullptr, {}};
  const std::int64_t rows = c.axis == RankAxis::rows ? c.rank : c.length;
  const std::int64_t cols = c.axis == RankAxis::rows ? c.length : c.rank;
  std::vector<double> values = as_matrix(p.planted.x, c.rank, c.length, c.axis);
  for (double& v : values)
    v *= scale;
  p.holder = std::make_unique<DeviceMatrixHolder>(values, rows, cols, c.dtype, c.layout);
  p.layer = Layer<cu::DeviceMatrix>{p.holder->view(), c.axis};
  return p;
}

CudaBackend backend_with(Precision precision, std::size_t limit = std::size_t{1} << 30) {
  CudaBackend::Options options;
  options.precision = precision;
  options.workspace_limit = limit;
  return CudaBackend(options);
}

// Views that are null, of an unknown storage type, with non-positive strides, misaligned, or
// (as a layer) with a rank axis beyond max_rank are refused without touching CUDA; fp64 views
// are accepted; the memory region describes the view.
TEST(CudaCheck, ViewsAreCheckedWithoutGpu) {
  float* null_data = nullptr;
  EXPECT_NE(cu::check_view(cu::DeviceMatrix(null_data, 4, 4, 4, 1)).find("null"),
            std::string::npos);
  alignas(16) double buffer[64] = {};
  const std::string bad =
      cu::check_view(cu::DeviceMatrix(buffer, static_cast<cu::DType>(9), 2, 2, 2, 1));
  EXPECT_NE(bad.find("unsupported storage type"), std::string::npos) << bad;
  const std::string broadcast =
      cu::check_view(cu::DeviceMatrix(buffer, cu::DType::f32, 4, 4, 0, 1));
  EXPECT_NE(broadcast.find("strides"), std::string::npos) << broadcast;
  auto* misaligned = reinterpret_cast<unsigned char*>(buffer) + 2;
  const std::string alignment =
      cu::check_view(cu::DeviceMatrix(misaligned, cu::DType::f32, 2, 2, 2, 1));
  EXPECT_NE(alignment.find("aligned"), std::string::npos) << alignment;
  EXPECT_EQ(cu::check_view(cu::DeviceMatrix(buffer, 4, 4, 4, 1)), "");  // fp64
  EXPECT_EQ(cu::check_view(cu::DeviceMatrix(misaligned, cu::DType::f16, 2, 2, 2, 1)), "");
  const cu::DeviceMatrix wide(buffer, cu::DType::f32, 1025, 8, 1, 1025);
  EXPECT_EQ(cu::check_layer_view(wide, RankAxis::cols), "");
  const std::string rank = cu::check_layer_view(wide, RankAxis::rows);
  EXPECT_NE(rank.find("1025"), std::string::npos) << rank;
  EXPECT_NE(rank.find("1024"), std::string::npos) << rank;
  const MemoryRegion region = CudaBackend::memory(cu::DeviceMatrix(buffer, 3, 5, 7, 1));
  EXPECT_EQ(region.address, reinterpret_cast<std::uintptr_t>(buffer));
  EXPECT_EQ(region.element_bytes, 8u);
  EXPECT_EQ(region.rows, 3u);
  EXPECT_EQ(region.cols, 5u);
  EXPECT_EQ(region.row_stride, 7);
  EXPECT_EQ(region.col_stride, 1);
}

// Host memory is rejected with a clear reason (needs the runtime to inspect the pointer).
TEST(CudaCheck, HostMemoryIsRejected) {
  ACLORA_REQUIRE_GPU();
  std::vector<float> host(16, 1.0f);
  const std::string reason = CudaBackend::check(cu::DeviceMatrix::row_major(host.data(), 4, 4));
  EXPECT_NE(reason.find("host memory"), std::string::npos) << reason;
  DeviceMatrixHolder device({1, 2, 3, 4}, 2, 2, cu::DType::f32, Layout::row_major);
  EXPECT_EQ(CudaBackend::check(device.view()), "");
  DeviceMatrixHolder f64({1, 2, 3, 4}, 2, 2, cu::DType::f64, Layout::row_major);
  EXPECT_EQ(CudaBackend::check(f64.view()), "");
}

// A rank axis beyond max_rank is refused by check() of the layer, and through the driver
// (which asks check() before any work) as an error naming the module and the layer; nothing
// is written. (The driver must call B::check(layer) when the backend offers it.)
TEST(CudaCheck, RankAboveTheLimitIsRefusedBeforeAnyWork) {
  ACLORA_REQUIRE_GPU();
  Prepared small = prepare({8, 64, RankAxis::rows, Layout::row_major, cu::DType::f32}, 1);
  Prepared big = prepare({1100, 16, RankAxis::cols, Layout::row_major, cu::DType::f32}, 2);
  EXPECT_NE(CudaBackend::check(big.layer).find("1100"), std::string::npos);
  const auto before = big.holder->bytes();
  std::vector<Module<cu::DeviceMatrix>> modules{Module<cu::DeviceMatrix>{"small", {small.layer}},
                                                Module<cu::DeviceMatrix>{"big", {big.layer}}};
  Restart<CudaBackend> restart;
  try {
    (void)restart.at_threshold(modules, 0.5);
    FAIL() << "expected aclora::Error";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("'big'"), std::string::npos) << what;
    EXPECT_NE(what.find("layer 0"), std::string::npos) << what;
  }
  EXPECT_EQ(big.holder->bytes(), before);
}

// `automatic` follows the device's compute capability (fp64 with full-rate float64, else
// fp32); explicit settings stand.
TEST(CudaPrecision, AutomaticFollowsTheDevice) {
  ACLORA_REQUIRE_GPU();
  int device = 0, major = 0, minor = 0;
  ASSERT_EQ(cudaGetDevice(&device), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device), cudaSuccess);
  EXPECT_EQ(CudaBackend().precision(),
            full_rate_float64(major, minor) ? Precision::fp64 : Precision::fp32);
  for (Precision precision : precisions)
    EXPECT_EQ(backend_with(precision).precision(), precision);
}

// Singular values within the bound of each precision (accuracy.hpp: Weyl over the Gram
// rounding) of a float64 reference of the stored values, for every storage type and case;
// entry sums exact to float64 summation.
TEST(CudaAnalysis, SpectrumWithinTheBoundOfEachPrecision) {
  ACLORA_REQUIRE_GPU();
  for (Precision precision : precisions) {
    for (cu::DType dtype : {cu::DType::f64, cu::DType::f32, cu::DType::f16, cu::DType::bf16}) {
      SCOPED_TRACE(std::string(precision_name(precision)) + " " + cu::dtype_name(dtype));
      const std::vector<Case> cases = all_cases(dtype);
      std::vector<Prepared> prepared;
      std::vector<Layer<cu::DeviceMatrix>> layers;
      for (std::size_t i = 0; i < cases.size(); ++i) {
        prepared.push_back(prepare(cases[i], 100 + i));
        layers.push_back(prepared.back().layer);
      }
      CudaBackend backend = backend_with(precision);
      std::vector<LayerSpectrum> spectra(layers.size());
      (void)backend.analyze(layers, spectra);
      for (std::size_t i = 0; i < cases.size(); ++i) {
        const Case& c = cases[i];
        SCOPED_TRACE(name(c));
        const std::vector<double> x = prepared[i].stored();
        const double gram = gram_relative_bound(precision, cu::gram_chunk_width(c.rank), c.length,
                                                dtype == cu::DType::f64);
        EXPECT_LE(worst_spectrum_error(spectra[i], x, reference_spectrum(x, c.rank, c.length),
                                       c.rank, c.length, gram),
                  1.0)
            << spectra[i].failure;
      }
    }
  }
}

// Analysis modifies nothing: every storage byte (padding included) is unchanged.
TEST(CudaAnalysis, AnalysisWritesNothing) {
  ACLORA_REQUIRE_GPU();
  for (Precision precision : precisions) {
    Prepared p = prepare({8, 300, RankAxis::cols, Layout::padded, cu::DType::f32}, 7);
    const auto before = p.holder->bytes();
    CudaBackend backend = backend_with(precision);
    std::vector<LayerSpectrum> spectra(1);
    const std::vector<Layer<cu::DeviceMatrix>> layers{p.layer};
    (void)backend.analyze(layers, spectra);
    EXPECT_EQ(p.holder->bytes(), before) << precision_name(precision);
  }
}

// The write of each precision and policy within its bound of the float64 reference
// P_K V (+ sigma Z), V = X or X - sigma Z (discarded): per column (sin theta +
// projection_relative_bound) ||v||_2, one rounding to the storage type, the noise add; Z(i, j)
// is draw i * cols + j of the layer's stream in the arithmetic type (the device's float
// transform within 2^-20 of the host's). Every storage type, layout and rank class.
TEST(CudaApply, WriteWithinTheBoundForEveryPolicy) {
  ACLORA_REQUIRE_GPU();
  for (Precision precision : precisions) {
    for (NoisePolicy policy : {NoisePolicy::none, NoisePolicy::whole, NoisePolicy::discarded}) {
      for (cu::DType dtype : {cu::DType::f64, cu::DType::f32, cu::DType::bf16}) {
        SCOPED_TRACE(std::string(precision_name(precision)) + " " + cu::dtype_name(dtype) +
                     (policy == NoisePolicy::none    ? " none"
                      : policy == NoisePolicy::whole ? " whole"
                                                     : " discarded"));
        const std::vector<Case> cases = all_cases(dtype);
        std::vector<Prepared> prepared;
        std::vector<Layer<cu::DeviceMatrix>> layers;
        std::vector<std::vector<double>> inputs;
        for (std::size_t i = 0; i < cases.size(); ++i) {
          prepared.push_back(prepare(cases[i], 200 + i));
          layers.push_back(prepared.back().layer);
          inputs.push_back(prepared.back().stored());
        }
        CudaBackend backend = backend_with(precision);
        std::vector<LayerSpectrum> spectra(layers.size());
        auto analysis = backend.analyze(layers, spectra);
        std::vector<LayerPlan> plans(layers.size());
        for (std::size_t i = 0; i < plans.size(); ++i)
          plans[i] = LayerPlan{3, policy == NoisePolicy::none ? 0.0 : 0.05, policy, NoiseKey{1, i}};
        backend.apply(layers, analysis, plans);
        for (std::size_t i = 0; i < cases.size(); ++i) {
          const Case& c = cases[i];
          SCOPED_TRACE(name(c));
          const std::vector<double>& x = inputs[i];
          const double gram = gram_relative_bound(precision, cu::gram_chunk_width(c.rank), c.length,
                                                  dtype == cu::DType::f64);
          const ExpectedWrite expected =
              expected_write(x, c.axis, c.rank, c.length, plans[i], precision, gram);
          // The device's float noise transform lies within 2^-20 of the host's.
          const double u_store =
              storage_roundoff(static_cast<int>(cu::dtype_bytes(dtype)), dtype == cu::DType::bf16);
          EXPECT_LE(worst_write_error(expected, prepared[i].stored(), c.length, precision, u_store,
                                      0x1p-20, 1e-300),
                    1.0);
        }
      }
    }
  }
}

// Every RESTART result as bytes: spectra and all storage bytes after the write.
std::vector<std::vector<unsigned char>> restart_bytes(Precision precision, std::size_t limit,
                                                      double scale = 1.0,
                                                      std::size_t* rounds = nullptr) {
  std::vector<Case> cases = all_cases(cu::DType::f32);
  for (const Case& c : all_cases(cu::DType::f64))
    cases.push_back(c);
  cases.push_back({8, 300, RankAxis::rows, Layout::row_major, cu::DType::bf16});
  std::vector<Prepared> prepared;
  std::vector<Layer<cu::DeviceMatrix>> layers;
  for (std::size_t i = 0; i < cases.size(); ++i) {
    prepared.push_back(prepare(cases[i], 500 + i, scale));
    layers.push_back(prepared.back().layer);
  }
  if (rounds != nullptr) {
    cu::Handles handles;
    handles.bind(nullptr);
    *rounds = cu::make_plan(CudaBackend::plan_inputs(layers), limit, precision,
                            [&](std::int32_t rank, std::size_t count) {
                              return cu::solver_workspace(handles, rank, count);
                            })
                  .rounds.size();
  }
  CudaBackend backend = backend_with(precision, limit);
  std::vector<LayerSpectrum> spectra(layers.size());
  auto analysis = backend.analyze(layers, spectra);
  std::vector<std::vector<unsigned char>> bytes;
  for (const LayerSpectrum& s : spectra) {
    std::vector<double> values = s.singular_values;
    values.insert(values.end(), s.component_sums.begin(), s.component_sums.end());
    values.push_back(s.entry_sum);
    const auto* raw = reinterpret_cast<const unsigned char*>(values.data());
    bytes.emplace_back(raw, raw + values.size() * sizeof(double));
  }
  std::vector<LayerPlan> plans(layers.size());
  for (std::size_t i = 0; i < plans.size(); ++i)
    plans[i] = LayerPlan{2, 0.01 * scale, NoisePolicy::whole, NoiseKey{3, i}};
  backend.apply(layers, analysis, plans);
  for (auto& p : prepared)
    bytes.push_back(p.holder->bytes());
  return bytes;
}

// Bit-identical results whatever the batching (the contract's promise): the smallest limit
// (every unit its own round, every layer its own write batch) gives the same spectra and
// the same storage bytes as one round and one batch, for each precision.
TEST(CudaApply, BatchingDoesNotChangeResults) {
  ACLORA_REQUIRE_GPU();
  for (Precision precision : precisions) {
    SCOPED_TRACE(precision_name(precision));
    std::size_t rounds_single = 0, rounds_many = 0;
    const auto single = restart_bytes(precision, std::size_t{1} << 30, 1.0, &rounds_single);
    const auto many = restart_bytes(precision, 1, 1.0, &rounds_many);
    EXPECT_EQ(rounds_single, 1u);
    EXPECT_GT(rounds_many, 3u);
    ASSERT_EQ(single.size(), many.size());
    for (std::size_t i = 0; i < single.size(); ++i)
      EXPECT_EQ(single[i], many[i]) << i;
  }
}

// Scaling the inputs by 2^k scales every result by exactly 2^k: the analysis runs on entries
// scaled below 1, so fp32 entries near 2^120 or fp64 entries of 2^100 (about 1e30) restart
// like any other. (Compared through the written values: equal bytes after rescaling.)
TEST(CudaRestart, PowerOfTwoScalingIsExact) {
  ACLORA_REQUIRE_GPU();
  for (Precision precision : {Precision::fp64, Precision::fp32}) {
    for (int exponent : {100, -100}) {
      SCOPED_TRACE(std::string(precision_name(precision)) + " 2^" + std::to_string(exponent));
      const double factor = std::ldexp(1.0, exponent);
      for (cu::DType dtype : {cu::DType::f32, cu::DType::f64}) {
        const Case c{40, 700, RankAxis::cols, Layout::row_major, dtype};
        Prepared plain = prepare(c, 42), big = prepare(c, 42, factor);
        for (Prepared* p : {&plain, &big}) {
          CudaBackend backend = backend_with(precision);
          const std::vector<Layer<cu::DeviceMatrix>> layers{p->layer};
          std::vector<LayerSpectrum> spectra(1);
          auto analysis = backend.analyze(layers, spectra);
          const double sigma = p == &plain ? 0.01 : 0.01 * factor;
          const std::vector<LayerPlan> plans{LayerPlan{3, sigma, NoisePolicy::whole, {9, 9}}};
          backend.apply(layers, analysis, plans);
        }
        const std::vector<double> a = plain.holder->read(), b = big.holder->read();
        std::size_t differing = 0;
        for (std::size_t e = 0; e < a.size(); ++e)
          differing += b[e] == a[e] * factor ? 0 : 1;
        EXPECT_EQ(differing, 0u) << cu::dtype_name(dtype);
      }
    }
  }
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
    Restart<CudaBackend> restart({.seed = seed});
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
  Prepared a_up = prepare({8, 64, RankAxis::cols, Layout::row_major, cu::DType::f64}, 701);
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
  Restart<CudaBackend> restart;
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

// The reported workspace covers the per-layer state and stays within limit + state +
// solver workspace.
TEST(CudaRestart, WorkspaceBytesAreReported) {
  ACLORA_REQUIRE_GPU();
  Prepared p = prepare({64, 1280, RankAxis::rows, Layout::row_major, cu::DType::f32}, 800);
  const std::vector<Layer<cu::DeviceMatrix>> layers{p.layer};
  for (Precision precision : precisions) {
    CudaBackend backend = backend_with(precision, std::size_t{1} << 20);
    const std::size_t bytes = backend.workspace_bytes(layers);
    EXPECT_GE(bytes, 64u * 64u * sizeof(double));
    EXPECT_LE(bytes, std::size_t{64} << 20) << precision_name(precision);
  }
}

}  // namespace
}  // namespace aclora::cuda_test
