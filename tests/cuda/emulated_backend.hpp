// The CUDA backend's analysis and write passes run on the host: the backend's own plan and
// pass sequence (passes.cuh) with its own kernels, launched through kernel_emulation.hpp.
// Only the library calls are replaced: cuBLAS's TF32 Gram products by a column-major GEMM that
// rounds where TF32 tensor cores round (inputs to TF32, exact products, float sums), cuSOLVER
// by a Jacobi eigen-solver with cuSOLVER's output convention (ascending eigenvalues,
// eigenvectors as columns). The own kernels call fused() for every multiply-add, so the host
// rounds exactly where the device does. Host compiler only.
#pragma once

#include "kernel_emulation.hpp"
// clang-format off: the emulation must come before the kernels.
#include "aclora/backends/cuda/passes.cuh"
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

#include "accuracy.hpp"
#include "aclora/backends/cuda/plan.hpp"
#include "aclora/precision.hpp"
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
    if (dtype == cu::DType::f64) {
      reinterpret_cast<double*>(bytes.data())[at] = value;
      return;
    }
    const auto f = static_cast<float>(value);
    if (dtype == cu::DType::f32)
      reinterpret_cast<float*>(bytes.data())[at] = f;
    else if (dtype == cu::DType::f16)
      reinterpret_cast<__half*>(bytes.data())[at] = __float2half_rn(f);
    else
      reinterpret_cast<__nv_bfloat16*>(bytes.data())[at] = __float2bfloat16_rn(f);
  }
  double get(std::int64_t at) const {
    if (dtype == cu::DType::f64)
      return reinterpret_cast<const double*>(bytes.data())[at];
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
  cu::PlanInput input(RankAxis axis) {
    return cu::PlanInput{bytes.data(), dtype,
                         cu::rank_major_view(rows, cols, row_stride, col_stride, axis)};
  }
};

// x rounded to TF32 (10 explicit mantissa bits), to nearest with ties away from zero, as
// the cvt.rna.tf32.f32 instruction does. Values of fp16 and bf16 storage are unchanged.
inline float round_to_tf32(float x) {
  std::uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  if ((bits & 0x7f800000u) != 0x7f800000u)  // finite: add half an ulp of TF32, truncate
    bits = (bits + 0x1000u) & 0xffffe000u;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

// Column-major C (m x n) = op(A) op(B) as TF32 tensor cores compute it: inputs rounded to
// TF32, products exact (11-bit significands), sums in float in order of the inner index.
inline void tf32_gemm(const cu::GemmArguments& g, cu::DType dtype, const void* a, const void* b,
                      float* c) {
  auto load = [&](const void* p, std::int64_t i) {
    float value;
    if (dtype == cu::DType::f32)
      value = static_cast<const float*>(p)[i];
    else if (dtype == cu::DType::f16)
      value = __half2float(static_cast<const __half*>(p)[i]);
    else
      value = __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    return round_to_tf32(value);
  };
  for (int i = 0; i < g.m; ++i)
    for (int j = 0; j < g.n; ++j) {
      float sum = 0.0f;
      for (int l = 0; l < g.k; ++l) {
        const float x = g.transpose_a ? load(a, l + static_cast<std::int64_t>(i) * g.lda)
                                      : load(a, i + static_cast<std::int64_t>(l) * g.lda);
        const float y = g.transpose_b ? load(b, j + static_cast<std::int64_t>(l) * g.ldb)
                                      : load(b, l + static_cast<std::int64_t>(j) * g.ldb);
        sum = std::fmaf(x, y, sum);
      }
      c[i + static_cast<std::int64_t>(j) * g.ldc] = sum;
    }
}

// The executor of the passes on the host (see passes.cuh): kernels through the emulation,
// cuBLAS and cuSOLVER by the references above. Every launch must fit the shared memory a
// device grants without opt-in.
struct EmulatedDevice {
  template <class... Parameters, class... Arguments>
  void launch(void (*kernel)(Parameters...), dim3 grid, dim3 block, std::size_t shared_bytes,
              Arguments... arguments) {
    EXPECT_LE(shared_bytes, cu::default_shared_bytes);
    EXPECT_LE(shared_bytes, sizeof(aclora_emulation::dynamic_shared));
    EXPECT_LE(grid.y, 65535u);
    ++launches;
    aclora_emulation::launch(grid, block, [&] { kernel(static_cast<Parameters>(arguments)...); });
  }
  void zero(void* data, std::size_t bytes) { std::memset(data, 0, bytes); }
  void gemm(const cu::GemmCall& call, const void* const* operands, void* const* results) {
    EXPECT_LE(call.count, cu::max_gemm_batch);
    ++gemm_calls;
    const cu::GemmArguments args = cu::gemm_arguments(call);
    for (std::size_t i = 0; i < call.count; ++i)
      tf32_gemm(args, call.dtype, operands[i], operands[i], static_cast<float*>(results[i]));
  }
  void eigen(const cu::EigenRun& run, double* matrices, double* values, int* infos, void*,
             std::size_t) {
    const auto entries = static_cast<std::size_t>(run.rank) * run.rank;
    for (std::size_t i = 0; i < run.count; ++i) {
      reference_syev(run.rank, matrices + i * entries, values + i * run.rank);
      infos[i] = 0;
    }
  }
  std::size_t launches = 0;
  std::size_t gemm_calls = 0;
};

// The backend's analysis and write passes over host memory.
class EmulatedBackend {
 public:
  EmulatedBackend(const std::vector<cu::PlanInput>& inputs, std::size_t limit,
                  Precision precision) {
    plan_ = cu::make_plan(inputs, limit, precision, [](std::int32_t rank, std::size_t count) {
      return cu::SolverBytes{static_cast<std::size_t>(rank) * rank * 8 * count, 0};
    });
    arena_.reset(new (std::align_val_t{256}) unsigned char[plan_.device_bytes()]);
    // Garbage everywhere (as fresh device memory may hold): the passes must not read
    // anything they did not write.
    std::memset(arena_.get(), 0xA5, plan_.device_bytes());
    cu::stage_tables(plan_, base(), base());
  }

  const cu::Plan& plan() const { return plan_; }
  const EmulatedDevice& device() const { return device_; }

  std::vector<LayerSpectrum> analyze() {
    cu::run_analysis(device_, plan_, base());
    std::vector<LayerSpectrum> spectra(plan_.slots.size());
    cu::read_spectra(plan_, reinterpret_cast<const double*>(base() + plan_.layout.records),
                     spectra);
    return spectra;
  }

  void apply(const std::vector<LayerPlan>& plans) {
    cu::stage_writes(plan_, plans, reinterpret_cast<cu::WriteSlot*>(base() + plan_.layout.writes));
    cu::run_write(device_, plan_, base());
  }

 private:
  unsigned char* base() { return arena_.get(); }
  struct AlignedDelete {
    void operator()(unsigned char* p) const { operator delete[](p, std::align_val_t{256}); }
  };
  cu::Plan plan_;
  EmulatedDevice device_;
  std::unique_ptr<unsigned char[], AlignedDelete> arena_;
};

}  // namespace aclora::cuda_test
