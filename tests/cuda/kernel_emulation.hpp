// Runs the CUDA backend's own kernels on the host, compiled by the host compiler: each
// thread of a block is a fiber (ucontext) on the calling thread, __syncthreads a block
// barrier, __shfl_down_sync a warp exchange between two warp barriers, __shared__ arrays are
// shared statics. Fibers switch only at barriers, so a block costs no OS thread and no
// sleeping; blocks run one after the other. Slow and only for small inputs, but it checks the
// kernels' index math and rounding on machines without a GPU. Include before any kernel
// header, in a translation unit that the host compiler (not nvcc) builds.
#pragma once

#ifdef __CUDACC__
#error "kernel_emulation.hpp is for the host compiler only"
#endif

#include <cuda_runtime.h>  // dim3, float4 (host definitions)
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <vector>

#define ACLORA_CUDA_KERNEL_EMULATION 1
#undef __shared__
#define __shared__ static
#ifdef __launch_bounds__
#undef __launch_bounds__
#endif
#define __launch_bounds__(threads)

namespace aclora_emulation {

inline dim3 thread_index;  // of the running fiber
inline dim3 block_index;
inline dim3 grid_size;
inline dim3 block_size;
alignas(16) inline float dynamic_shared[1 << 16];

enum class FiberState { ready, block_barrier, warp_barrier, done };

struct Fiber {
  ucontext_t context{};
  std::unique_ptr<char[]> stack;
  FiberState state = FiberState::done;
};

inline constexpr std::size_t fiber_stack_bytes = 256 * 1024;
inline std::vector<Fiber> fibers;
inline ucontext_t scheduler_context;
inline Fiber* running = nullptr;
inline const std::function<void()>* body = nullptr;
inline std::vector<double> warp_slots;

inline void fiber_main() {
  (*body)();
  running->state = FiberState::done;  // returns to scheduler_context (uc_link)
}

// Suspends the running fiber in `state` and resumes the scheduler.
inline void suspend(FiberState state) {
  running->state = state;
  swapcontext(&running->context, &scheduler_context);
}

// Runs the fibers of one block to completion, releasing a warp barrier when every live lane
// of the warp waits at it, and the block barrier when every live fiber waits at it.
inline void run_block(unsigned threads) {
  // One getcontext (a system call) in all: every fiber starts from a copy of its result.
  static ucontext_t blank;
  static bool have_blank = false;
  if (!have_blank) {
    getcontext(&blank);
    have_blank = true;
  }
  for (unsigned t = 0; t < threads; ++t) {
    Fiber& fiber = fibers[t];
    fiber.context = blank;
    fiber.context.uc_stack.ss_sp = fiber.stack.get();
    fiber.context.uc_stack.ss_size = fiber_stack_bytes;
    fiber.context.uc_link = &scheduler_context;
    makecontext(&fiber.context, fiber_main, 0);
    fiber.state = FiberState::ready;
  }
  for (;;) {
    for (unsigned t = 0; t < threads; ++t) {
      if (fibers[t].state != FiberState::ready)
        continue;
      running = &fibers[t];
      thread_index = dim3(t, 0, 0);
      swapcontext(&scheduler_context, &fibers[t].context);
    }
    bool live = false, released = false, all_at_block = true;
    for (unsigned w = 0; w * 32 < threads; ++w) {
      bool waiting = false, all_at_warp = true;
      for (unsigned t = 32 * w; t < threads && t < 32 * (w + 1); ++t) {
        const FiberState state = fibers[t].state;
        if (state == FiberState::done)
          continue;
        live = true;
        waiting = waiting || state == FiberState::warp_barrier;
        all_at_warp = all_at_warp && state == FiberState::warp_barrier;
        all_at_block = all_at_block && state == FiberState::block_barrier;
      }
      if (waiting && all_at_warp) {
        for (unsigned t = 32 * w; t < threads && t < 32 * (w + 1); ++t)
          fibers[t].state = FiberState::ready;
        released = true;
      }
    }
    if (!live)
      return;
    if (released)
      continue;
    if (!all_at_block) {
      std::fprintf(stderr, "kernel emulation: fibers wait at different barriers (deadlock)\n");
      std::abort();
    }
    for (unsigned t = 0; t < threads; ++t)
      if (fibers[t].state == FiberState::block_barrier)
        fibers[t].state = FiberState::ready;
  }
}

/// Runs `kernel()` for every thread of every block of `grid` x `block` (1-D blocks), one
/// block after the other.
inline void launch(dim3 grid, dim3 block, const std::function<void()>& kernel) {
  grid_size = grid;
  block_size = block;
  body = &kernel;
  const unsigned threads = block.x;
  if (fibers.size() < threads) {
    fibers.resize(threads);
    for (Fiber& fiber : fibers)
      if (!fiber.stack)
        fiber.stack = std::make_unique<char[]>(fiber_stack_bytes);
  }
  warp_slots.assign(threads, 0.0);
  for (unsigned by = 0; by < grid.y; ++by) {
    for (unsigned bx = 0; bx < grid.x; ++bx) {
      block_index = dim3(bx, by, 0);
      run_block(threads);
    }
  }
  body = nullptr;
  running = nullptr;
}

}  // namespace aclora_emulation

#define threadIdx (::aclora_emulation::thread_index)
#define blockIdx (::aclora_emulation::block_index)
#define blockDim (::aclora_emulation::block_size)
#define gridDim (::aclora_emulation::grid_size)

inline void __syncthreads() {
  aclora_emulation::suspend(aclora_emulation::FiberState::block_barrier);
}

inline double __shfl_down_sync(unsigned /*mask*/, double value, int offset) {
  using namespace aclora_emulation;
  const unsigned t = thread_index.x;
  const unsigned warp = t / 32, lane = t % 32;
  const unsigned lanes = std::min(32u, block_size.x - 32 * warp);
  warp_slots[t] = value;
  suspend(FiberState::warp_barrier);
  const double result = lane + offset < lanes ? warp_slots[t + offset] : value;
  suspend(FiberState::warp_barrier);
  return result;
}

using std::isfinite;

namespace aclora::backends::cuda::kernels {
inline float* dynamic_shared_floats() {
  return aclora_emulation::dynamic_shared;
}
}  // namespace aclora::backends::cuda::kernels
