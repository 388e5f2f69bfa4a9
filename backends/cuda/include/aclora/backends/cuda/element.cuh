/// @file element.cuh
/// @brief Device loads and stores of fp64 / fp32 / fp16 / bf16 entries, power-of-two
/// scaling, and fused multiply-adds in the arithmetic type of a precision setting.
///
/// Every multiply-add of the kernels is written as fused() so that the device (which would
/// contract a * b + c into an FMA on its own) and the host emulation of the tests (which
/// would not) round at the same places. Scaling by powers of two is exact (scalbn), so the
/// analysis runs on entries of magnitude below 1 without changing any result.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>

#include "aclora/backends/cuda/plan.hpp"

namespace aclora::backends::cuda::kernels {
/// @cond INTERNAL (kernels: documented in the source, not part of the API)

#ifndef ACLORA_CUDA_KERNEL_EMULATION
// The block's dynamic shared memory, 16-byte aligned. (The host-side kernel emulation of
// the tests defines ACLORA_CUDA_KERNEL_EMULATION and supplies its own.)
__device__ inline float* dynamic_shared_floats() {
  extern __shared__ __align__(16) float aclora_dynamic_shared[];
  return aclora_dynamic_shared;
}
#endif

// a * b + c rounded once.
__device__ inline float fused(float a, float b, float c) {
  return fmaf(a, b, c);
}
__device__ inline double fused(double a, double b, double c) {
  return fma(a, b, c);
}

// x * 2^exponent (exact unless the result leaves the type's normal range).
__device__ inline float scaled(float x, int exponent) {
  return scalbnf(x, exponent);
}
__device__ inline double scaled(double x, int exponent) {
  return scalbn(x, exponent);
}

// Entry `offset` (elements) of `data` stored as `dtype`, as double (exact).
__device__ inline double load_double(const void* data, std::int32_t dtype, std::int64_t offset) {
  switch (static_cast<DType>(dtype)) {
    case DType::f16:
      return static_cast<double>(__half2float(static_cast<const __half*>(data)[offset]));
    case DType::bf16:
      return static_cast<double>(__bfloat162float(static_cast<const __nv_bfloat16*>(data)[offset]));
    case DType::f64:
      return static_cast<const double*>(data)[offset];
    default:
      return static_cast<double>(static_cast<const float*>(data)[offset]);
  }
}

// Entry (r, c) of a slot's rank-major view, as double (exact).
__device__ inline double load_view(const LayerSlot& slot, std::int64_t r, std::int64_t c) {
  return load_double(slot.data, slot.dtype, r * slot.rank_stride + c * slot.length_stride);
}

// Entry (r, c) of a slot's view times 2^-exponent, rounded once to Real. fp32 arithmetic
// on fp32 / fp16 / bf16 storage stays in float (the entry is exact in float); fp64 storage
// is scaled in double before its one rounding.
template <class Real>
__device__ inline Real load_scaled(const LayerSlot& slot, std::int64_t r, std::int64_t c,
                                   int exponent) {
  const std::int64_t offset = r * slot.rank_stride + c * slot.length_stride;
  if constexpr (sizeof(Real) == sizeof(float)) {
    if (static_cast<DType>(slot.dtype) != DType::f64)
      return scaled(static_cast<float>(load_double(slot.data, slot.dtype, offset)), -exponent);
  }
  return static_cast<Real>(scaled(load_double(slot.data, slot.dtype, offset), -exponent));
}

// Stores value * 2^exponent at entry (r, c) of a slot's view, rounded once to the storage
// type (round to nearest even).
template <class Real>
__device__ inline void store_scaled(const LayerSlot& slot, std::int64_t r, std::int64_t c,
                                    Real value, int exponent) {
  const std::int64_t offset = r * slot.rank_stride + c * slot.length_stride;
  switch (static_cast<DType>(slot.dtype)) {
    case DType::f64:
      static_cast<double*>(slot.data)[offset] = scaled(static_cast<double>(value), exponent);
      break;
    case DType::f16:
      if constexpr (sizeof(Real) == sizeof(double))
        static_cast<__half*>(slot.data)[offset] = __double2half(scaled(value, exponent));
      else
        static_cast<__half*>(slot.data)[offset] = __float2half_rn(scaled(value, exponent));
      break;
    case DType::bf16:
      if constexpr (sizeof(Real) == sizeof(double))
        static_cast<__nv_bfloat16*>(slot.data)[offset] = __double2bfloat16(scaled(value, exponent));
      else
        static_cast<__nv_bfloat16*>(slot.data)[offset] =
            __float2bfloat16_rn(scaled(value, exponent));
      break;
    default:
      static_cast<float*>(slot.data)[offset] = static_cast<float>(scaled(value, exponent));
      break;
  }
}

/// @endcond
}  // namespace aclora::backends::cuda::kernels
