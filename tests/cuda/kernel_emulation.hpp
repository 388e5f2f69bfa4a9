// Runs the CUDA backend's own kernels on the host, compiled by the host compiler: each
// block's threads are std::threads, __syncthreads is a block barrier, __shfl_down_sync a
// warp exchange, __shared__ arrays are shared statics. Slow and only for small inputs, but
// it checks the kernels' index math on machines without a GPU. Include before any kernel
// header, in a translation unit that the host compiler (not nvcc) builds.
#pragma once

#ifdef __CUDACC__
#error "kernel_emulation.hpp is for the host compiler only"
#endif

#include <cuda_runtime.h>  // dim3, float4 (host definitions)

#include <barrier>
#include <cmath>
#include <cstddef>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#define ACLORA_CUDA_KERNEL_EMULATION 1
#undef __shared__
#define __shared__ static
#ifdef __launch_bounds__
#undef __launch_bounds__
#endif
#define __launch_bounds__(threads)

namespace aclora_emulation {

inline thread_local dim3 thread_index;
inline thread_local dim3 block_index;
inline dim3 grid_size;
inline dim3 block_size;
inline std::barrier<>* block_barrier = nullptr;
inline std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
inline std::vector<double> warp_slots;
alignas(16) inline float dynamic_shared[1 << 16];

/// Runs `kernel()` for every thread of every block of `grid` x `block` (1-D blocks), one
/// block after the other, on one std::thread per thread of a block.
inline void launch(dim3 grid, dim3 block, const std::function<void()>& kernel) {
  grid_size = grid;
  block_size = block;
  const unsigned threads = block.x;
  std::barrier<> barrier(static_cast<std::ptrdiff_t>(threads));
  block_barrier = &barrier;
  warp_barriers.clear();
  for (unsigned w = 0; w < (threads + 31) / 32; ++w) {
    const unsigned lanes = std::min(32u, threads - 32 * w);
    warp_barriers.push_back(std::make_unique<std::barrier<>>(lanes));
  }
  warp_slots.assign(threads, 0.0);
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      thread_index = dim3(t, 0, 0);
      for (unsigned by = 0; by < grid.y; ++by) {
        for (unsigned bx = 0; bx < grid.x; ++bx) {
          block_index = dim3(bx, by, 0);
          kernel();
          barrier.arrive_and_wait();  // the block ends before the next one starts
        }
      }
    });
  }
  for (auto& thread : pool)
    thread.join();
  block_barrier = nullptr;
}

}  // namespace aclora_emulation

#define threadIdx (::aclora_emulation::thread_index)
#define blockIdx (::aclora_emulation::block_index)
#define blockDim (::aclora_emulation::block_size)
#define gridDim (::aclora_emulation::grid_size)

inline void __syncthreads() {
  aclora_emulation::block_barrier->arrive_and_wait();
}

inline double __shfl_down_sync(unsigned /*mask*/, double value, int offset) {
  using namespace aclora_emulation;
  const unsigned t = thread_index.x;
  const unsigned warp = t / 32, lane = t % 32;
  const unsigned lanes = std::min(32u, block_size.x - 32 * warp);
  warp_slots[t] = value;
  warp_barriers[warp]->arrive_and_wait();
  const double result = lane + offset < lanes ? warp_slots[t + offset] : value;
  warp_barriers[warp]->arrive_and_wait();
  return result;
}

using std::isfinite;

namespace aclora::backends::cuda::kernels {
inline float* dynamic_shared_floats() {
  return aclora_emulation::dynamic_shared;
}
}  // namespace aclora::backends::cuda::kernels
