// The CUDA backend's own kernels, run on the host through kernel_emulation.hpp, inside the
// backend's real plan (slots, items, tiles, workspace offsets, cuBLAS arguments and operand
// addresses). cuBLAS is replaced by a column-major reference GEMM called with exactly the
// backend's arguments, cuSOLVER by a Jacobi eigen-solver with cuSOLVER's output convention
// (ascending eigenvalues, eigenvectors as columns). Checks spectra, component sums,
// truncation and noise placement for every layout, rank axis, storage type and rank
// class without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "emulated_backend.hpp"

namespace aclora::cuda_test {
namespace {

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

struct Model {
  std::vector<Case> cases;
  std::vector<Planted> planted;
  std::vector<std::unique_ptr<HostStorage>> storage;
  std::vector<cu::PlanInput> inputs;

  explicit Model(std::vector<Case> list) : cases(std::move(list)) {
    for (std::size_t i = 0; i < cases.size(); ++i) {
      const Case& c = cases[i];
      planted.push_back(aclora::cuda_test::planted(c.rank, c.length, 31 + i));
      const std::int64_t rows = c.axis == RankAxis::rows ? c.rank : c.length;
      const std::int64_t cols = c.axis == RankAxis::rows ? c.length : c.rank;
      storage.push_back(std::make_unique<HostStorage>(
          as_matrix(planted.back().x, c.rank, c.length, c.axis), rows, cols, c.dtype, c.layout));
      const HostStorage& h = *storage.back();
      inputs.push_back(
          cu::PlanInput{const_cast<unsigned char*>(h.bytes.data()), c.dtype,
                        cu::rank_major_view(rows, cols, h.row_stride, h.col_stride, c.axis)});
    }
  }
};

double tolerance(cu::DType dtype) {
  return dtype == cu::DType::f32 ? 2e-5 : 1e-2;
}

std::vector<Case> layout_cases(cu::DType dtype) {
  std::vector<Case> cases;
  for (RankAxis axis : {RankAxis::rows, RankAxis::cols})
    for (Layout layout : {Layout::row_major, Layout::col_major, Layout::padded, Layout::strided})
      cases.push_back({6, 300, axis, layout, dtype});
  return cases;
}

// Spectra, component sums and entry sums from the emulated kernels match the planted
// decomposition: every layout (both Gram sources and the packed path), both rank axes,
// q < R, every rank class (R = 6, 20, 40, 130) and 16-bit storage.
TEST(CudaKernelsEmulated, SpectrumMatchesPlantedDecomposition) {
  std::vector<Case> cases = layout_cases(cu::DType::f32);
  cases.push_back({20, 70, RankAxis::cols, Layout::row_major, cu::DType::f32});
  cases.push_back({40, 90, RankAxis::rows, Layout::col_major, cu::DType::f32});
  cases.push_back({16, 10, RankAxis::rows, Layout::row_major, cu::DType::f32});
  cases.push_back({130, 140, RankAxis::cols, Layout::row_major, cu::DType::f32});
  cases.push_back({8, 300, RankAxis::rows, Layout::row_major, cu::DType::bf16});
  cases.push_back({8, 300, RankAxis::cols, Layout::padded, cu::DType::f16});
  Model model(cases);
  EmulatedBackend backend(model.inputs, std::size_t{1} << 30);
  const std::vector<LayerSpectrum> spectra = backend.analyze();
  for (std::size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(describe(cases[i]));
    const Planted& p = model.planted[i];
    const std::size_t q = static_cast<std::size_t>(std::min(p.rank, p.length));
    ASSERT_TRUE(spectra[i].finite);
    ASSERT_EQ(spectra[i].singular_values.size(), q);
    const double tol = tolerance(cases[i].dtype);
    for (std::size_t k = 0; k < q; ++k)
      EXPECT_NEAR(spectra[i].singular_values[k], p.d[k], 4 * tol * p.d[0]) << k;
    const std::vector<double> stored = model.storage[i]->read();
    double entry_sum = 0.0;
    for (double e : stored)
      entry_sum += e;
    EXPECT_NEAR(spectra[i].entry_sum, entry_sum, 1e-9 * (1.0 + std::abs(entry_sum)));
    // All components together sum to the entry sum (the basis is complete when q = R).
    if (q == static_cast<std::size_t>(p.rank)) {
      double components = 0.0;
      for (double c : spectra[i].component_sums)
        components += c;
      EXPECT_NEAR(components, entry_sum, 1e-6 * (1.0 + std::abs(entry_sum)));
    }
    for (std::size_t k = 0; k < std::min<std::size_t>(q, 3); ++k) {
      double su = 0.0, sv = 0.0;
      for (double e : p.u[k])
        su += e;
      for (double e : p.v[k])
        sv += e;
      EXPECT_NEAR(spectra[i].component_sums[k], p.d[k] * su * sv, 50 * tol) << k;
    }
  }
}

// A NaN or an infinity marks the layer non-finite; other layers are unaffected.
TEST(CudaKernelsEmulated, NonFiniteEntriesAreFlagged) {
  Model model({{6, 300, RankAxis::rows, Layout::row_major, cu::DType::f32},
               {6, 300, RankAxis::cols, Layout::col_major, cu::DType::f32},
               {6, 300, RankAxis::rows, Layout::padded, cu::DType::bf16}});
  model.storage[0]->set(2 * 300 + 17, std::nan(""));
  model.storage[2]->set(4 * 303 + 299, INFINITY);
  EmulatedBackend backend(model.inputs, std::size_t{1} << 30);
  const std::vector<LayerSpectrum> spectra = backend.analyze();
  EXPECT_FALSE(spectra[0].finite);
  EXPECT_TRUE(spectra[1].finite);
  EXPECT_FALSE(spectra[2].finite);
}

// The write, per policy: none gives the rank-K truncation; whole adds sigma Z with Z(i, j)
// the core's draw i * cols + j; discarded gives P (X - sigma Z) + sigma Z along the rank
// axis. Every rank class (tiles of 64, 32 and 8 columns), layout, axis and q < R.
TEST(CudaKernelsEmulated, WriteMatchesReferenceForEveryPolicy) {
  std::vector<Case> cases = layout_cases(cu::DType::f32);
  cases.push_back({20, 70, RankAxis::cols, Layout::row_major, cu::DType::f32});
  cases.push_back({40, 90, RankAxis::rows, Layout::col_major, cu::DType::f32});
  cases.push_back({16, 10, RankAxis::rows, Layout::row_major, cu::DType::f32});
  cases.push_back({130, 70, RankAxis::cols, Layout::row_major, cu::DType::f32});
  cases.push_back({8, 300, RankAxis::rows, Layout::row_major, cu::DType::bf16});
  cases.push_back({300, 20, RankAxis::rows, Layout::row_major, cu::DType::f32});
  // Every case under `whole`; the other policies on one case per Gram source and pass count.
  const std::vector<Case> short_list{cases[0], cases[5], cases[9], cases[11]};
  for (NoisePolicy policy : {NoisePolicy::whole, NoisePolicy::none, NoisePolicy::discarded}) {
    SCOPED_TRACE(policy == NoisePolicy::none    ? "none"
                 : policy == NoisePolicy::whole ? "whole"
                                                : "discarded");
    Model model(policy == NoisePolicy::whole ? cases : short_list);
    const std::vector<Case>& cases = model.cases;
    EmulatedBackend backend(model.inputs, std::size_t{1} << 30);
    (void)backend.analyze();
    std::vector<LayerPlan> plans;
    for (std::size_t i = 0; i < cases.size(); ++i)
      plans.push_back(
          LayerPlan{3, policy == NoisePolicy::none ? 0.0 : 0.05, policy, NoiseKey{77, 1000 + i}});
    backend.apply(plans);
    for (std::size_t i = 0; i < cases.size(); ++i) {
      SCOPED_TRACE(describe(cases[i]));
      const Case& c = cases[i];
      const Planted& p = model.planted[i];
      const std::vector<double> projector = p.projector(3);
      const std::int64_t cols = c.axis == RankAxis::rows ? p.length : p.rank;
      const double sigma = plans[i].sigma;
      auto draw = [&](std::int64_t r, std::int64_t col) {
        if (policy == NoisePolicy::none)
          return 0.0;
        const std::int64_t row_in_matrix = c.axis == RankAxis::rows ? r : col;
        const std::int64_t col_in_matrix = c.axis == RankAxis::rows ? col : r;
        return sigma *
               static_cast<double>(gaussian_at<float>(
                   plans[i].key, static_cast<std::uint64_t>(row_in_matrix * cols + col_in_matrix)));
      };
      // The input the kernels saw is the stored (rounded) matrix, in rank-major form.
      const std::vector<double> x_matrix = HostStorage(as_matrix(p.x, p.rank, p.length, c.axis),
                                                       c.axis == RankAxis::rows ? p.rank : p.length,
                                                       cols, c.dtype, Layout::row_major)
                                               .read();
      auto x = [&](std::int64_t r, std::int64_t col) {
        return c.axis == RankAxis::rows ? x_matrix[r * cols + col] : x_matrix[col * cols + r];
      };
      std::vector<double> y(static_cast<std::size_t>(p.rank * p.length));
      for (std::int64_t r = 0; r < p.rank; ++r)
        for (std::int64_t col = 0; col < p.length; ++col) {
          double sum = 0.0;
          for (std::int64_t k = 0; k < p.rank; ++k) {
            const double input =
                policy == NoisePolicy::discarded ? x(k, col) - draw(k, col) : x(k, col);
            sum += projector[r * p.rank + k] * input;
          }
          y[r * p.length + col] = sum + draw(r, col);
        }
      const double error =
          relative_error(model.storage[i]->read(), as_matrix(y, p.rank, p.length, c.axis));
      EXPECT_LT(error, c.dtype == cu::DType::f32 ? 5e-5 : 1e-2);
    }
  }
}

// Only matrix entries are written: padding and the gaps of strided layouts keep their bytes.
TEST(CudaKernelsEmulated, WritesStayInsideTheMatrix) {
  Model model({{6, 300, RankAxis::rows, Layout::padded, cu::DType::f32},
               {6, 300, RankAxis::cols, Layout::strided, cu::DType::f32}});
  std::vector<std::vector<unsigned char>> before;
  for (auto& s : model.storage) {
    // Mark every storage byte that is not an entry.
    std::vector<bool> entry(s->bytes.size() / 4, false);
    for (std::int64_t i = 0; i < s->rows; ++i)
      for (std::int64_t j = 0; j < s->cols; ++j)
        entry[i * s->row_stride + j * s->col_stride] = true;
    for (std::size_t e = 0; e < entry.size(); ++e)
      if (!entry[e])
        s->set(static_cast<std::int64_t>(e), 7.25);
    before.push_back(s->bytes);
  }
  EmulatedBackend backend(model.inputs, std::size_t{1} << 30);
  (void)backend.analyze();
  backend.apply({LayerPlan{2, 0.1, NoisePolicy::whole, {1, 2}},
                 LayerPlan{2, 0.1, NoisePolicy::whole, {1, 3}}});
  for (std::size_t m = 0; m < model.storage.size(); ++m) {
    const HostStorage& s = *model.storage[m];
    std::size_t changed_gaps = 0, changed_entries = 0;
    std::vector<bool> entry(s.bytes.size() / 4, false);
    for (std::int64_t i = 0; i < s.rows; ++i)
      for (std::int64_t j = 0; j < s.cols; ++j)
        entry[i * s.row_stride + j * s.col_stride] = true;
    for (std::size_t e = 0; e < entry.size(); ++e) {
      const bool changed = std::memcmp(&s.bytes[4 * e], &before[m][4 * e], 4) != 0;
      (entry[e] ? changed_entries : changed_gaps) += changed ? 1 : 0;
    }
    EXPECT_EQ(changed_gaps, 0u) << m;
    EXPECT_GT(changed_entries, 0u) << m;
  }
}

}  // namespace
}  // namespace aclora::cuda_test
