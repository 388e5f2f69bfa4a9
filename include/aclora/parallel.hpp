/// @file parallel.hpp
/// @brief aclora::for_each_index: independent per-layer tasks on a few threads of our own,
/// used by the CPU backends (Eigen, and LibTorch's CPU route) and the LoRA tools.
///
/// Why our own threads and not ATen's at::parallel_for: with an OpenMP build of LibTorch
/// (Debian's), at::parallel_for is an inline template whose `#pragma omp parallel` only takes
/// effect in translation units compiled with -fopenmp; elsewhere it runs serially.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "aclora/error.hpp"

namespace aclora {

/// The number of workers for_each_index uses for `threads` (0: one per hardware thread).
inline unsigned worker_count(std::size_t count, unsigned threads) {
  if (threads == 0)
    threads = std::max(1u, std::thread::hardware_concurrency());
  return static_cast<unsigned>(std::max<std::size_t>(1, std::min<std::size_t>(threads, count)));
}

/// How for_each_index starts a worker thread (tests substitute one that fails).
struct StartThread {
  /// A thread running `body`. @throws std::system_error when the system refuses one.
  std::thread operator()(std::function<void()> body) const { return std::thread(std::move(body)); }
};

/// Calls task(i, worker) for every i in [0, count) on worker_count(count, threads)
/// threads; `worker` < worker_count identifies the calling thread (for scratch memory).
/// Each task runs whole on one thread, so results do not depend on the thread count.
/// Every worker thread is started before any task runs: when one cannot start, no task
/// has run, the started ones are joined, and an aclora::Error says so. The first exception
/// thrown by a task is rethrown after all threads joined.
template <class Task, class Start = StartThread>
void for_each_index(std::size_t count, unsigned threads, Task&& task, Start&& start = Start{}) {
  threads = worker_count(count, threads);
  if (threads == 1) {
    for (std::size_t i = 0; i < count; ++i)
      task(i, 0u);
    return;
  }
  enum : int { waiting = 0, running = 1, cancelled = 2 };
  std::atomic<int> state{waiting};
  std::atomic<std::size_t> next{0};
  std::exception_ptr failure;
  std::mutex failure_mutex;
  auto worker = [&](unsigned worker_id) {
    state.wait(waiting);
    if (state.load() == cancelled)
      return;
    for (std::size_t i = next++; i < count; i = next++) {
      try {
        task(i, worker_id);
      } catch (...) {
        std::lock_guard lock(failure_mutex);
        if (!failure)
          failure = std::current_exception();
        next = count;
      }
    }
  };
  std::vector<std::thread> pool;
  auto release = [&](int how) {
    state.store(how);
    state.notify_all();
    for (auto& thread : pool)
      thread.join();
  };
  try {
    pool.reserve(threads - 1);
    for (unsigned t = 1; t < threads; ++t)
      pool.push_back(start([&worker, t] { worker(t); }));
  } catch (const std::exception& error) {
    release(cancelled);
    throw Error("could not start worker thread " + std::to_string(pool.size() + 1) + " of " +
                std::to_string(threads) + " (" + error.what() +
                "); nothing was computed or written (set fewer threads)");
  }
  state.store(running);
  state.notify_all();
  worker(0u);
  for (auto& thread : pool)
    thread.join();
  if (failure)
    std::rethrow_exception(failure);
}

}  // namespace aclora
