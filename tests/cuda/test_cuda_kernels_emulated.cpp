// The CUDA backend's own kernels, run on the host through kernel_emulation.hpp, inside the
// backend's real plan (slots, items, tiles, workspace offsets, cuBLAS arguments and operand
// addresses). cuBLAS is replaced by a column-major reference GEMM called with exactly the
// backend's arguments, cuSOLVER by a Jacobi eigen-solver with cuSOLVER's output convention
// (ascending eigenvalues, eigenvectors as columns). Checks spectra, component sums,
// truncation and noise placement for every layout, rank axis, storage type and rank
// class without a GPU.
#include "kernel_emulation.hpp"
// clang-format off: the emulation must come before the kernels.
#include "aclora/backends/cuda/analysis_kernels.cuh"
#include "aclora/backends/cuda/projection_kernels.cuh"
// clang-format on

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "aclora/backends/cuda/plan.hpp"
#include "aclora/noise.hpp"
#include "planted.hpp"

namespace aclora::cuda_test {
namespace {

namespace cu = aclora::backends::cuda;
namespace kernels = aclora::backends::cuda::kernels;

// A matrix in host memory standing in for device memory.
struct HostStorage {
  std::int64_t rows, cols, row_stride = 0, col_stride = 0;
  cu::DType dtype;
  std::vector<unsigned char> bytes;

  HostStorage(const std::vector<double>& values, std::int64_t r, std::int64_t c, cu::DType type,
              Layout layout)
      : rows(r), cols(c), dtype(type) {
    std::int64_t elements = rows * cols;
    switch (layout) {
      case Layout::row_major:
        row_stride = cols, col_stride = 1;
        break;
      case Layout::col_major:
        row_stride = 1, col_stride = rows;
        break;
      case Layout::padded:
        row_stride = cols + 3, col_stride = 1, elements = rows * (cols + 3);
        break;
      case Layout::strided:
        row_stride = 2, col_stride = 2 * rows + 1, elements = cols * (2 * rows + 1);
        break;
    }
    bytes.assign(static_cast<std::size_t>(elements) * cu::dtype_bytes(dtype), 0);
    for (std::int64_t i = 0; i < rows; ++i)
      for (std::int64_t j = 0; j < cols; ++j)
        set(i * row_stride + j * col_stride, values[i * cols + j]);
  }
  void set(std::int64_t at, double value) {
    const auto f = static_cast<float>(value);
    if (dtype == cu::DType::f32)
      reinterpret_cast<float*>(bytes.data())[at] = f;
    else if (dtype == cu::DType::f16)
      reinterpret_cast<__half*>(bytes.data())[at] = __float2half_rn(f);
    else
      reinterpret_cast<__nv_bfloat16*>(bytes.data())[at] = __float2bfloat16_rn(f);
  }
  double get(std::int64_t at) const {
    if (dtype == cu::DType::f32)
      return reinterpret_cast<const float*>(bytes.data())[at];
    if (dtype == cu::DType::f16)
      return __half2float(reinterpret_cast<const __half*>(bytes.data())[at]);
    return __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(bytes.data())[at]);
  }
  std::vector<double> read() const {
    std::vector<double> out(static_cast<std::size_t>(rows * cols));
    for (std::int64_t i = 0; i < rows; ++i)
      for (std::int64_t j = 0; j < cols; ++j)
        out[i * cols + j] = get(i * row_stride + j * col_stride);
    return out;
  }
};

// Column-major C (m x n) = op(A) op(B), A and B stored as `dtype`, C as float.
void reference_gemm(const cu::GemmArguments& g, cu::DType dtype, const void* a, const void* b,
                    float* c) {
  auto load = [&](const void* p, std::int64_t i) {
    if (dtype == cu::DType::f32)
      return static_cast<double>(static_cast<const float*>(p)[i]);
    if (dtype == cu::DType::f16)
      return static_cast<double>(__half2float(static_cast<const __half*>(p)[i]));
    return static_cast<double>(__bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]));
  };
  for (int i = 0; i < g.m; ++i)
    for (int j = 0; j < g.n; ++j) {
      double sum = 0.0;
      for (int l = 0; l < g.k; ++l) {
        const double x = g.transpose_a ? load(a, l + static_cast<std::int64_t>(i) * g.lda)
                                       : load(a, i + static_cast<std::int64_t>(l) * g.lda);
        const double y = g.transpose_b ? load(b, j + static_cast<std::int64_t>(l) * g.ldb)
                                       : load(b, l + static_cast<std::int64_t>(j) * g.ldb);
        sum += x * y;
      }
      c[i + static_cast<std::int64_t>(j) * g.ldc] = static_cast<float>(sum);
    }
}

// Cyclic Jacobi on a symmetric column-major n x n matrix: eigenvalues ascending into w,
// eigenvectors as columns over a.
void reference_syev(int n, double* a, double* w) {
  std::vector<double> m(a, a + n * n), v(static_cast<std::size_t>(n) * n, 0.0);
  for (int i = 0; i < n; ++i)
    v[i + i * n] = 1.0;
  for (int sweep = 0; sweep < 60; ++sweep) {
    double off = 0.0;
    for (int p = 0; p < n; ++p)
      for (int q = p + 1; q < n; ++q)
        off += m[p + q * n] * m[p + q * n];
    if (off < 1e-30)
      break;
    for (int p = 0; p < n; ++p)
      for (int q = p + 1; q < n; ++q) {
        const double apq = m[p + q * n];
        if (std::abs(apq) < 1e-300)
          continue;
        const double theta = (m[q + q * n] - m[p + p * n]) / (2 * apq);
        const double t = (theta >= 0 ? 1 : -1) / (std::abs(theta) + std::sqrt(theta * theta + 1));
        const double c = 1 / std::sqrt(t * t + 1), s = t * c;
        for (int k = 0; k < n; ++k) {  // columns p, q
          const double mkp = m[k + p * n], mkq = m[k + q * n];
          m[k + p * n] = c * mkp - s * mkq;
          m[k + q * n] = s * mkp + c * mkq;
        }
        for (int k = 0; k < n; ++k) {  // rows p, q
          const double mpk = m[p + k * n], mqk = m[q + k * n];
          m[p + k * n] = c * mpk - s * mqk;
          m[q + k * n] = s * mpk + c * mqk;
        }
        for (int k = 0; k < n; ++k) {
          const double vkp = v[k + p * n], vkq = v[k + q * n];
          v[k + p * n] = c * vkp - s * vkq;
          v[k + q * n] = s * vkp + c * vkq;
        }
      }
  }
  std::vector<int> order(n);
  for (int i = 0; i < n; ++i)
    order[i] = i;
  std::sort(order.begin(), order.end(), [&](int x, int y) { return m[x + x * n] < m[y + y * n]; });
  for (int j = 0; j < n; ++j) {
    w[j] = m[order[j] + order[j] * n];
    for (int i = 0; i < n; ++i)
      a[i + j * n] = v[i + order[j] * n];
  }
}

// The backend's analysis and write passes over host memory, launch by launch.
class EmulatedBackend {
 public:
  explicit EmulatedBackend(const std::vector<cu::PlanInput>& inputs, std::size_t limit) {
    plan_ = cu::make_plan(inputs, limit, [](std::int32_t rank, std::size_t count) {
      return cu::SolverBytes{static_cast<std::size_t>(rank) * rank * 8 * count, 0};
    });
    arena_.reset(new (std::align_val_t{256}) unsigned char[plan_.device_bytes()]);
    std::memset(arena_.get(), 0, plan_.device_bytes());
    const cu::DeviceLayout& at = plan_.layout;
    std::memcpy(base() + at.slots, plan_.slots.data(), plan_.slots.size() * sizeof(cu::LayerSlot));
    std::memcpy(base() + at.items, plan_.items.data(), plan_.items.size() * sizeof(cu::WorkItem));
    std::memcpy(base() + at.tiles, plan_.tiles.data(), plan_.tiles.size() * sizeof(cu::WorkItem));
  }

  const cu::Plan& plan() const { return plan_; }

  std::vector<LayerSpectrum> analyze() {
    const cu::DeviceLayout& at = plan_.layout;
    auto* slots = reinterpret_cast<const cu::LayerSlot*>(base() + at.slots);
    auto* items = reinterpret_cast<const cu::WorkItem*>(base() + at.items);
    auto* basis = reinterpret_cast<double*>(base() + at.basis);
    auto* eigenvalues = reinterpret_cast<double*>(base() + at.eigenvalues);
    auto* row_sums = reinterpret_cast<double*>(base() + at.row_sums);
    auto* flags = reinterpret_cast<int*>(base() + at.flags);
    auto* infos = reinterpret_cast<int*>(base() + at.infos);
    auto* records = reinterpret_cast<double*>(base() + at.records);
    unsigned char* scratch = base() + at.scratch;
    for (const cu::AnalysisBatch& batch : plan_.analysis_batches) {
      auto* partials = reinterpret_cast<float*>(scratch);
      auto* row_partials = reinterpret_cast<double*>(scratch + batch.row_sums_at);
      auto* packed = reinterpret_cast<float*>(scratch + batch.packed_at);
      for (std::size_t s = batch.first_slot; s < batch.first_slot + batch.slot_count; ++s) {
        if (static_cast<cu::GramSource>(plan_.slots[s].source) == cu::GramSource::packed) {
          aclora_emulation::launch(dim3(2), dim3(cu::block_threads), [&] {
            kernels::pack_kernel(slots, static_cast<std::int32_t>(s), packed);
          });
        }
      }
      aclora_emulation::launch(
          dim3(static_cast<unsigned>(batch.item_count)), dim3(cu::block_threads),
          [&] { kernels::row_sum_kernel(slots, items + batch.first_item, row_partials); });
      for (const cu::GemmCall& call : batch.gemms) {
        const cu::GemmArguments args = cu::gemm_arguments(call);
        for (std::size_t i = call.first_item; i < call.first_item + call.count; ++i) {
          const cu::WorkItem item = plan_.items[i];
          const cu::LayerSlot& slot = plan_.slots[item.slot];
          const void* a = cu::gram_operand(slot, item.index, packed);
          reference_gemm(args, call.dtype, a, a, cu::gram_partial(slot, item.index, partials));
        }
      }
      aclora_emulation::launch(
          dim3(static_cast<unsigned>(batch.slot_count), 2), dim3(cu::block_threads), [&] {
            kernels::reduce_kernel(slots, static_cast<std::int32_t>(batch.first_slot), partials,
                                   row_partials, basis, row_sums, flags);
          });
      for (const cu::EigenRun& run : batch.eigen_runs) {
        for (std::size_t s = run.first_slot; s < run.first_slot + run.count; ++s) {
          const cu::LayerSlot& slot = plan_.slots[s];
          reference_syev(slot.rank, basis + slot.basis_offset, eigenvalues + slot.vector_offset);
          infos[s] = 0;
        }
      }
      aclora_emulation::launch(dim3(static_cast<unsigned>(batch.slot_count)), dim3(128), [&] {
        kernels::spectrum_kernel(slots, static_cast<std::int32_t>(batch.first_slot), basis,
                                 eigenvalues, row_sums, flags, infos, records);
      });
    }
    std::vector<LayerSpectrum> spectra(plan_.slots.size());
    for (const cu::LayerSlot& slot : plan_.slots) {
      const double* record = records + slot.record_offset;
      const std::int64_t q = std::min<std::int64_t>(slot.rank, slot.length);
      LayerSpectrum& spectrum = spectra[slot.layer];
      spectrum.finite = static_cast<int>(record[2 * slot.rank + 1]) == 0;
      spectrum.singular_values.assign(record, record + q);
      spectrum.component_sums.assign(record + slot.rank, record + slot.rank + q);
      spectrum.entry_sum = record[2 * slot.rank];
    }
    return spectra;
  }

  void apply(const std::vector<LayerPlan>& plans) {
    const cu::DeviceLayout& at = plan_.layout;
    auto* slots = reinterpret_cast<const cu::LayerSlot*>(base() + at.slots);
    auto* writes = reinterpret_cast<cu::WriteSlot*>(base() + at.writes);
    auto* tiles = reinterpret_cast<const cu::WorkItem*>(base() + at.tiles);
    auto* basis = reinterpret_cast<const double*>(base() + at.basis);
    auto* kept_bases = reinterpret_cast<float*>(base() + at.scratch);
    cu::stage_writes(plan_, plans, writes);
    for (const cu::ApplyBatch& batch : plan_.apply_batches) {
      aclora_emulation::launch(
          dim3(static_cast<unsigned>(batch.slot_count), 2), dim3(cu::block_threads), [&] {
            kernels::kept_basis_kernel(slots, writes, static_cast<std::int32_t>(batch.first_slot),
                                       basis, kept_bases);
          });
      for (const cu::ProjectionLaunch& launch : batch.launches) {
        ASSERT_LE(cu::projection_shared_bytes(launch.max_rank),
                  sizeof(aclora_emulation::dynamic_shared));
        const cu::WorkItem* first = tiles + launch.first_tile;
        aclora_emulation::launch(
            dim3(static_cast<unsigned>(launch.tile_count)), dim3(cu::block_threads), [&] {
              switch (launch.shape.config) {
                case 0:
                  kernels::project_write_kernel<64>(slots, writes, first, kept_bases);
                  break;
                case 1:
                  kernels::project_write_kernel<32>(slots, writes, first, kept_bases);
                  break;
                default:
                  kernels::project_write_kernel<8>(slots, writes, first, kept_bases);
              }
            });
      }
    }
  }

 private:
  unsigned char* base() { return arena_.get(); }
  struct AlignedDelete {
    void operator()(unsigned char* p) const { operator delete[](p, std::align_val_t{256}); }
  };
  cu::Plan plan_;
  std::unique_ptr<unsigned char[], AlignedDelete> arena_;
};

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
