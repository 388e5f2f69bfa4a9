// The CUDA backend's analysis and write passes run on the host: the backend's own kernels
// through kernel_emulation.hpp, inside its real plan (slots, items, tiles, workspace
// offsets, cuBLAS arguments and operand addresses). cuBLAS is replaced by a column-major
// reference GEMM called with exactly the backend's arguments, cuSOLVER by a Jacobi
// eigen-solver with cuSOLVER's output convention (ascending eigenvalues, eigenvectors as
// columns). Host compiler only.
#pragma once

#include "kernel_emulation.hpp"
// clang-format off: the emulation must come before the kernels.
#include "aclora/backends/cuda/analysis_kernels.cuh"
#include "aclora/backends/cuda/projection_kernels.cuh"
// clang-format on

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include "aclora/backends/cuda/plan.hpp"
#include "aclora/spectrum.hpp"
#include "planted.hpp"

namespace aclora::cuda_test {

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
inline void reference_gemm(const cu::GemmArguments& g, cu::DType dtype, const void* a,
                           const void* b, float* c) {
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
inline void reference_syev(int n, double* a, double* w) {
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

}  // namespace aclora::cuda_test
