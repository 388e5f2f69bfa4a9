// The CUDA backend's analysis and write passes, run on the host: the backend's own plan,
// pass sequence and kernels through kernel_emulation.hpp; cuBLAS's TF32 products and
// cuSOLVER replaced by references that round where they round (emulated_backend.hpp). Checks,
// for each precision setting (fp64, fp32, tf32), spectra and writes against a float64
// reference within the bound the setting promises, for every layout, rank axis, storage type
// (fp64, fp32, fp16, bf16) and rank class; that the workspace limit changes no bit; that
// power-of-two scaling of the input scales every result exactly (so entries near the overflow
// limit restart correctly); that writes stay inside the matrix. Without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "emulated_backend.hpp"

namespace aclora::cuda_test {
namespace {

constexpr Precision precisions[] = {Precision::fp64, Precision::fp32, Precision::tf32};

struct Case {
  std::int64_t rank, length;
  RankAxis axis;
  Layout layout;
  cu::DType dtype;
};

std::string describe(const Case& c) {
  return std::to_string(c.rank) + "x" + std::to_string(c.length) +
         (c.axis == RankAxis::rows ? " rows-axis " : " cols-axis ") + layout_name(c.layout) + " " +
         cu::dtype_name(c.dtype);
}

double roundoff(cu::DType dtype) {
  return storage_roundoff(static_cast<int>(cu::dtype_bytes(dtype)), dtype == cu::DType::bf16);
}
// Half the spacing of the storage type's subnormals: the rounding error of tiny results.
double underflow(cu::DType dtype) {
  switch (dtype) {
    case cu::DType::f64:
      return 0x1p-1074;
    case cu::DType::f32:
      return 0x1p-150;
    case cu::DType::bf16:
      return 0x1p-134;
    default:
      return 0x1p-25;
  }
}

struct Model {
  std::vector<Case> cases;
  std::vector<Planted> planted;
  std::vector<std::unique_ptr<HostStorage>> storage;
  std::vector<cu::PlanInput> inputs;

  explicit Model(std::vector<Case> list, double scale = 1.0) : cases(std::move(list)) {
    for (std::size_t i = 0; i < cases.size(); ++i) {
      const Case& c = cases[i];
      planted.push_back(aclora::cuda_test::planted(c.rank, c.length, 31 + i));
      std::vector<double> values = as_matrix(planted.back().x, c.rank, c.length, c.axis);
      for (double& v : values)
        v *= scale;
      const std::int64_t rows = c.axis == RankAxis::rows ? c.rank : c.length;
      const std::int64_t cols = c.axis == RankAxis::rows ? c.length : c.rank;
      storage.push_back(std::make_unique<HostStorage>(values, rows, cols, c.dtype, c.layout));
      inputs.push_back(storage.back()->input(c.axis));
    }
  }
  // The stored values of layer i as an R x n rank-major matrix (row-major doubles).
  std::vector<double> stored(std::size_t i) const {
    const Case& c = cases[i];
    const std::vector<double> m = storage[i]->read();
    if (c.axis == RankAxis::rows)
      return m;
    std::vector<double> x(m.size());
    for (std::int64_t r = 0; r < c.rank; ++r)
      for (std::int64_t col = 0; col < c.length; ++col)
        x[r * c.length + col] = m[col * c.rank + r];
    return x;
  }
  std::vector<std::vector<unsigned char>> bytes() const {
    std::vector<std::vector<unsigned char>> all;
    for (const auto& s : storage)
      all.push_back(s->bytes);
    return all;
  }
};

// Every layout (both cuBLAS sources and the strided view), both rank axes, every storage
// type, every rank class of the Gram tiles (16, 32, 64) and of the projection (R <= 64, 128,
// 256, 1024), several chunks, q < R.
std::vector<Case> all_cases() {
  std::vector<Case> cases;
  for (RankAxis axis : {RankAxis::rows, RankAxis::cols})
    for (Layout layout : {Layout::row_major, Layout::col_major, Layout::padded, Layout::strided})
      cases.push_back({6, 300, axis, layout, cu::DType::f32});
  cases.push_back({20, 70, RankAxis::cols, Layout::row_major, cu::DType::f32});
  cases.push_back({40, 600, RankAxis::rows, Layout::col_major, cu::DType::f32});
  cases.push_back({16, 10, RankAxis::rows, Layout::row_major, cu::DType::f32});
  cases.push_back({100, 140, RankAxis::cols, Layout::row_major, cu::DType::f32});
  cases.push_back({130, 70, RankAxis::rows, Layout::row_major, cu::DType::f32});
  cases.push_back({300, 20, RankAxis::rows, Layout::col_major, cu::DType::f32});
  cases.push_back({8, 300, RankAxis::rows, Layout::row_major, cu::DType::bf16});
  cases.push_back({8, 300, RankAxis::cols, Layout::padded, cu::DType::f16});
  cases.push_back({12, 520, RankAxis::rows, Layout::row_major, cu::DType::f64});
  cases.push_back({12, 520, RankAxis::cols, Layout::strided, cu::DType::f64});
  return cases;
}

// Singular values within the bound of each precision (Weyl's inequality over the Gram
// rounding of gram_relative_bound) of a float64 reference of the stored values; entry sums
// exact to float64 summation; the leading component sums within the subspace bound. For every
// case of all_cases.
TEST(CudaKernelsEmulated, SpectrumWithinTheBoundOfEachPrecision) {
  for (Precision precision : precisions) {
    SCOPED_TRACE(precision_name(precision));
    Model model(all_cases());
    EmulatedBackend backend(model.inputs, std::size_t{1} << 30, precision);
    const std::vector<LayerSpectrum> spectra = backend.analyze();
    for (std::size_t i = 0; i < model.cases.size(); ++i) {
      const Case& c = model.cases[i];
      SCOPED_TRACE(describe(c));
      const std::vector<double> x = model.stored(i);
      const double gram = gram_relative_bound(precision, cu::gram_chunk_width(c.rank), c.length,
                                              c.dtype == cu::DType::f64);
      const ReferenceSpectrum reference = reference_spectrum(x, c.rank, c.length);
      ASSERT_LE(worst_spectrum_error(spectra[i], x, reference, c.rank, c.length, gram), 1.0);
      const std::size_t q = static_cast<std::size_t>(std::min(c.rank, c.length));
      // Component k sums to (1^T u_k)(u_k^T s): a direction error of sin(theta) moves it by at
      // most 2 sin(theta) sqrt(R) ||s||.
      std::vector<double> row_sums(static_cast<std::size_t>(c.rank), 0.0);
      double row_norm = 0.0;
      for (std::int64_t r = 0; r < c.rank; ++r) {
        for (std::int64_t col = 0; col < c.length; ++col)
          row_sums[r] += x[r * c.length + col];
        row_norm += row_sums[r] * row_sums[r];
      }
      row_norm = std::sqrt(row_norm);
      for (std::size_t k = 0; k < std::min<std::size_t>(q - 1, 3); ++k) {
        // Direction k alone: the span of the first k + 1 minus that of the first k.
        const double angle =
            subspace_bound(reference, k + 1, gram) + subspace_bound(reference, k, gram);
        const std::vector<double>& u = reference.vectors[k];
        double sum_u = 0.0, dot = 0.0;
        for (std::int64_t r = 0; r < c.rank; ++r) {
          sum_u += u[r];
          dot += u[r] * row_sums[r];
        }
        EXPECT_NEAR(spectra[i].component_sums[k], sum_u * dot,
                    2.0 * angle * std::sqrt(static_cast<double>(c.rank)) * row_norm +
                        1e-12 * (1.0 + row_norm))
            << k;
      }
    }
  }
}

// The setting decides the arithmetic: on the same fp32 matrices, fp64 and fp32 give
// different singular values (fp32 sums round in float), tf32 differs from both (its products
// see TF32 inputs), and fp64's stay within fp64's own bound.
TEST(CudaKernelsEmulated, EachPrecisionRoundsItsOwnWay) {
  const std::vector<Case> cases{{16, 700, RankAxis::rows, Layout::row_major, cu::DType::f32},
                                {40, 600, RankAxis::cols, Layout::row_major, cu::DType::f32}};
  std::vector<std::vector<LayerSpectrum>> results;
  for (Precision precision : precisions) {
    Model model(cases);
    EmulatedBackend backend(model.inputs, std::size_t{1} << 30, precision);
    results.push_back(backend.analyze());
  }
  for (std::size_t i = 0; i < cases.size(); ++i) {
    EXPECT_NE(results[0][i].singular_values, results[1][i].singular_values) << i;
    EXPECT_NE(results[1][i].singular_values, results[2][i].singular_values) << i;
    EXPECT_NE(results[0][i].singular_values, results[2][i].singular_values) << i;
  }
}

// A NaN or an infinity marks the layer non-finite; other layers, including finite fp64
// entries far beyond the float range, are unaffected.
TEST(CudaKernelsEmulated, NonFiniteEntriesAreFlagged) {
  for (Precision precision : precisions) {
    SCOPED_TRACE(precision_name(precision));
    Model model({{6, 300, RankAxis::rows, Layout::row_major, cu::DType::f32},
                 {6, 300, RankAxis::cols, Layout::col_major, cu::DType::f32},
                 {6, 300, RankAxis::rows, Layout::padded, cu::DType::bf16},
                 {6, 300, RankAxis::rows, Layout::row_major, cu::DType::f64},
                 {6, 300, RankAxis::rows, Layout::row_major, cu::DType::f64}});
    model.storage[0]->set(2 * 300 + 17, std::nan(""));
    model.storage[2]->set(4 * 303 + 299, INFINITY);
    model.storage[3]->set(5 * 300 + 3, -INFINITY);
    model.storage[4]->set(1 * 300 + 3, 1e300);
    EmulatedBackend backend(model.inputs, std::size_t{1} << 30, precision);
    const std::vector<LayerSpectrum> spectra = backend.analyze();
    EXPECT_FALSE(spectra[0].finite);
    EXPECT_TRUE(spectra[1].finite);
    EXPECT_FALSE(spectra[2].finite);
    EXPECT_FALSE(spectra[3].finite);
    EXPECT_TRUE(spectra[4].finite);
    // One dominant entry: d_1 = |x| up to the Gram rounding (relative c / 2, c of
    // gram_relative_bound) and the 1e-15-relative rest of the planted matrix.
    const double c = gram_relative_bound(precision, cu::gram_chunk_width(6), 300, true);
    EXPECT_NEAR(spectra[4].singular_values[0], 1e300, (c + 1e-14) * 1e300);
  }
}

// The write for each precision and policy, within its bound of the float64 reference
// P_K V (+ sigma Z), V = X (none, whole) or X - sigma Z (discarded), P_K the reference
// projector: per column, (sin theta + projection_relative_bound) ||v||_2 for the kept span
// and the arithmetic, plus one rounding to the storage type and the fused noise add. Z(i, j)
// is the core's draw i * cols + j in the arithmetic type.
TEST(CudaKernelsEmulated, WriteWithinTheBoundForEveryPolicy) {
  const std::vector<Case> cases = all_cases();
  // Every case under `whole`; the other policies on one case per Gram source and rank class.
  const std::vector<Case> short_list{cases[0], cases[5], cases[7], cases[11], cases[12], cases[15]};
  for (Precision precision : precisions) {
    for (NoisePolicy policy : {NoisePolicy::whole, NoisePolicy::none, NoisePolicy::discarded}) {
      SCOPED_TRACE(std::string(precision_name(precision)) + " " +
                   (policy == NoisePolicy::none    ? "none"
                    : policy == NoisePolicy::whole ? "whole"
                                                   : "discarded"));
      Model model(policy == NoisePolicy::whole ? cases : short_list);
      EmulatedBackend backend(model.inputs, std::size_t{1} << 30, precision);
      (void)backend.analyze();
      std::vector<std::vector<double>> inputs;
      for (std::size_t i = 0; i < model.cases.size(); ++i)
        inputs.push_back(model.stored(i));
      std::vector<LayerPlan> plans;
      for (std::size_t i = 0; i < model.cases.size(); ++i)
        plans.push_back(
            LayerPlan{3, policy == NoisePolicy::none ? 0.0 : 0.05, policy, NoiseKey{77, 1000 + i}});
      backend.apply(plans);
      for (std::size_t i = 0; i < model.cases.size(); ++i) {
        const Case& c = model.cases[i];
        SCOPED_TRACE(describe(c));
        const std::vector<double>& x = inputs[i];
        const double gram = gram_relative_bound(precision, cu::gram_chunk_width(c.rank), c.length,
                                                c.dtype == cu::DType::f64);
        const ExpectedWrite expected =
            expected_write(x, c.axis, c.rank, c.length, plans[i], precision, gram);
        EXPECT_LE(worst_write_error(expected, model.stored(i), c.length, precision,
                                    roundoff(c.dtype), 0.0, underflow(c.dtype)),
                  1.0);
      }
    }
  }
}

// One RESTART's analysis and write, run with a given limit: every spectrum value and every
// storage byte afterwards.
struct Outcome {
  std::vector<std::vector<double>> spectra;  // singular values, component sums, entry sum
  std::vector<std::vector<unsigned char>> bytes;
  std::size_t rounds = 0, batches = 0;
  friend bool operator==(const Outcome& a, const Outcome& b) {
    return a.spectra == b.spectra && a.bytes == b.bytes;
  }
};

Outcome run(const std::vector<Case>& cases, Precision precision, std::size_t limit,
            double scale = 1.0, NoisePolicy policy = NoisePolicy::whole) {
  Model model(cases, scale);
  EmulatedBackend backend(model.inputs, limit, precision);
  const std::vector<LayerSpectrum> spectra = backend.analyze();
  Outcome outcome;
  outcome.rounds = backend.plan().rounds.size();
  outcome.batches = backend.plan().apply_batches.size();
  std::vector<LayerPlan> plans;
  for (std::size_t i = 0; i < cases.size(); ++i) {
    std::vector<double> values = spectra[i].singular_values;
    values.insert(values.end(), spectra[i].component_sums.begin(), spectra[i].component_sums.end());
    values.push_back(spectra[i].entry_sum);
    outcome.spectra.push_back(values);
    plans.push_back(LayerPlan{2, 0.01 * scale, policy, NoiseKey{3, i}});
  }
  backend.apply(plans);
  outcome.bytes = model.bytes();
  return outcome;
}

// A model with several shapes per rank, both Gram paths of tf32, fp64 and 16-bit storage,
// repeated shapes (units of several layers); R = 300 is left to the other tests (its
// reference eigen-solves are the slowest part of the emulation).
std::vector<Case> batching_cases() {
  std::vector<Case> cases;
  for (const Case& c : all_cases())
    if (c.rank != 300)
      cases.push_back(c);
  cases.push_back({6, 300, RankAxis::rows, Layout::row_major, cu::DType::f32});
  cases.push_back({40, 600, RankAxis::rows, Layout::col_major, cu::DType::f32});
  return cases;
}

// Bit-identical results whatever the batching (the contract's promise): the smallest limits
// (every unit its own round, every layer its own write batch) give the same spectra and the
// same storage bytes as one round and one batch, for each precision.
TEST(CudaKernelsEmulated, BatchingDoesNotChangeResults) {
  const std::vector<Case> cases = batching_cases();
  for (Precision precision : precisions) {
    SCOPED_TRACE(precision_name(precision));
    const Outcome single = run(cases, precision, std::size_t{1} << 30);
    ASSERT_EQ(single.rounds, 1u);
    ASSERT_EQ(single.batches, 1u);
    for (std::size_t limit : {std::size_t{1}, std::size_t{20000}}) {
      const Outcome many = run(cases, precision, limit);
      EXPECT_GT(many.rounds, 1u) << limit;
      EXPECT_GT(many.batches, 1u) << limit;
      if (limit == 1)
        EXPECT_EQ(many.batches, cases.size());
      ASSERT_EQ(many.spectra.size(), single.spectra.size());
      for (std::size_t i = 0; i < cases.size(); ++i) {
        EXPECT_EQ(many.spectra[i], single.spectra[i]) << describe(cases[i]) << " limit " << limit;
        EXPECT_EQ(many.bytes[i], single.bytes[i]) << describe(cases[i]) << " limit " << limit;
      }
    }
  }
}

// Scaling a matrix by 2^k scales every result by exactly 2^k (singular values, component and
// entry sums, and the written matrix, noise of sigma 2^k included), for each precision: the
// analysis runs on entries scaled to below 1, so fp32 storage near its overflow limit (2^120)
// or fp64 storage at 2^100 (about 1.3e30) and 2^900 restarts like any other. For tf32 the
// entries beyond 2^40 leave cuBLAS for the own fp32 kernel, so there the scaled results equal
// those of the fp32 setting.
TEST(CudaKernelsEmulated, PowerOfTwoScalingIsExact) {
  const std::vector<Case> f32_cases{{6, 300, RankAxis::rows, Layout::row_major, cu::DType::f32},
                                    {40, 600, RankAxis::cols, Layout::row_major, cu::DType::f32},
                                    {8, 300, RankAxis::rows, Layout::padded, cu::DType::bf16}};
  const std::vector<Case> f64_cases{{12, 520, RankAxis::rows, Layout::row_major, cu::DType::f64},
                                    {40, 300, RankAxis::cols, Layout::strided, cu::DType::f64}};
  struct Scaling {
    const std::vector<Case>* cases;
    int exponent;
  };
  for (const Scaling& scaling :
       {Scaling{&f32_cases, 120}, Scaling{&f32_cases, -100}, Scaling{&f64_cases, 100},
        Scaling{&f64_cases, 900}, Scaling{&f64_cases, -900}}) {
    const std::vector<Case>& cases = *scaling.cases;
    const double factor = std::ldexp(1.0, scaling.exponent);
    for (Precision precision : precisions) {
      SCOPED_TRACE(std::string(precision_name(precision)) + " 2^" +
                   std::to_string(scaling.exponent));
      const Precision unscaled_precision =
          precision == Precision::tf32 ? Precision::fp32 : precision;
      const Outcome plain = run(cases, unscaled_precision, std::size_t{1} << 30);
      const Outcome scaled = run(cases, precision, std::size_t{1} << 30, factor);
      for (std::size_t i = 0; i < cases.size(); ++i) {
        SCOPED_TRACE(describe(cases[i]));
        ASSERT_EQ(scaled.spectra[i].size(), plain.spectra[i].size());
        for (std::size_t k = 0; k < plain.spectra[i].size(); ++k)
          EXPECT_EQ(scaled.spectra[i][k], plain.spectra[i][k] * factor) << k;
        const HostStorage layout = *Model(cases).storage[i];  // shape, strides, type of layer i
        auto decode = [&](const std::vector<unsigned char>& bytes) {
          HostStorage storage = layout;
          storage.bytes = bytes;
          return storage.read();
        };
        const std::vector<double> got = decode(scaled.bytes[i]), want = decode(plain.bytes[i]);
        std::size_t differing = 0;
        for (std::size_t e = 0; e < got.size(); ++e)
          differing += got[e] == want[e] * factor ? 0 : 1;
        EXPECT_EQ(differing, 0u);
      }
    }
  }
}

// Only matrix entries are written: padding and the gaps of strided layouts keep their bytes.
TEST(CudaKernelsEmulated, WritesStayInsideTheMatrix) {
  for (Precision precision : precisions) {
    SCOPED_TRACE(precision_name(precision));
    Model model({{6, 300, RankAxis::rows, Layout::padded, cu::DType::f32},
                 {6, 300, RankAxis::cols, Layout::strided, cu::DType::f32},
                 {6, 300, RankAxis::cols, Layout::strided, cu::DType::f64}});
    std::vector<std::vector<unsigned char>> before;
    auto entries = [](const HostStorage& s) {
      std::vector<bool> entry(s.bytes.size() / cu::dtype_bytes(s.dtype), false);
      for (std::int64_t i = 0; i < s.rows; ++i)
        for (std::int64_t j = 0; j < s.cols; ++j)
          entry[i * s.row_stride + j * s.col_stride] = true;
      return entry;
    };
    for (auto& s : model.storage) {
      const std::vector<bool> entry = entries(*s);
      for (std::size_t e = 0; e < entry.size(); ++e)
        if (!entry[e])
          s->set(static_cast<std::int64_t>(e), 7.25);
      before.push_back(s->bytes);
    }
    EmulatedBackend backend(model.inputs, std::size_t{1} << 30, precision);
    (void)backend.analyze();
    backend.apply({LayerPlan{2, 0.1, NoisePolicy::whole, {1, 2}},
                   LayerPlan{2, 0.1, NoisePolicy::whole, {1, 3}},
                   LayerPlan{2, 0.1, NoisePolicy::whole, {1, 4}}});
    for (std::size_t m = 0; m < model.storage.size(); ++m) {
      const HostStorage& s = *model.storage[m];
      const std::size_t width = cu::dtype_bytes(s.dtype);
      const std::vector<bool> entry = entries(s);
      std::size_t changed_gaps = 0, changed_entries = 0;
      for (std::size_t e = 0; e < entry.size(); ++e) {
        const bool changed = std::memcmp(&s.bytes[width * e], &before[m][width * e], width) != 0;
        (entry[e] ? changed_entries : changed_gaps) += changed ? 1 : 0;
      }
      EXPECT_EQ(changed_gaps, 0u) << m;
      EXPECT_GT(changed_entries, 0u) << m;
    }
  }
}

}  // namespace
}  // namespace aclora::cuda_test
