/// @file element.cuh
/// @brief Device loads and stores of fp32 / fp16 / bf16 entries as fp32 (rounding to
/// nearest even at the store: the single rounding of a RESTART).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "aclora/backends/cuda/plan.hpp"

namespace aclora::backends::cuda::kernels {

#ifndef ACLORA_CUDA_KERNEL_EMULATION
/// The block's dynamic shared memory, 16-byte aligned. (The host-side kernel emulation of
/// the tests defines ACLORA_CUDA_KERNEL_EMULATION and supplies its own.)
__device__ inline float* dynamic_shared_floats() {
  extern __shared__ __align__(16) float aclora_dynamic_shared[];
  return aclora_dynamic_shared;
}
#endif

/// Entry `offset` (elements) of `data` stored as `dtype`, as float.
__device__ inline float load_element(const void* data, std::int32_t dtype, std::int64_t offset) {
  switch (static_cast<DType>(dtype)) {
    case DType::f16:
      return __half2float(static_cast<const __half*>(data)[offset]);
    case DType::bf16:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(data)[offset]);
    default:
      return static_cast<const float*>(data)[offset];
  }
}

/// Stores `value` rounded to `dtype` at entry `offset` of `data`.
__device__ inline void store_element(void* data, std::int32_t dtype, std::int64_t offset,
                                     float value) {
  switch (static_cast<DType>(dtype)) {
    case DType::f16:
      static_cast<__half*>(data)[offset] = __float2half_rn(value);
      break;
    case DType::bf16:
      static_cast<__nv_bfloat16*>(data)[offset] = __float2bfloat16_rn(value);
      break;
    default:
      static_cast<float*>(data)[offset] = value;
      break;
  }
}

/// Entry (r, c) of a slot's rank-major view, as float.
__device__ inline float load_view(const LayerSlot& slot, std::int64_t r, std::int64_t c) {
  return load_element(slot.data, slot.dtype, r * slot.rank_stride + c * slot.length_stride);
}

}  // namespace aclora::backends::cuda::kernels
