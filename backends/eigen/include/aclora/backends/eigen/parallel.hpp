/// @file parallel.hpp
/// @brief Runs independent per-layer tasks on a few threads.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace aclora::backends::eigen {

/// The number of workers for_each_index uses for `threads` (0: one per hardware thread).
inline unsigned worker_count(std::size_t count, unsigned threads) {
  if (threads == 0)
    threads = std::max(1u, std::thread::hardware_concurrency());
  return static_cast<unsigned>(std::max<std::size_t>(1, std::min<std::size_t>(threads, count)));
}

/// Calls task(i, worker) for every i in [0, count) on worker_count(count, threads)
/// threads; `worker` < worker_count identifies the calling thread (for scratch memory).
/// Each task runs whole on one thread, so results do not depend on the thread count.
/// The first exception thrown by a task is rethrown after all threads joined.
template <class Task>
void for_each_index(std::size_t count, unsigned threads, Task&& task) {
  threads = worker_count(count, threads);
  if (threads == 1) {
    for (std::size_t i = 0; i < count; ++i)
      task(i, 0u);
    return;
  }
  std::atomic<std::size_t> next{0};
  std::exception_ptr failure;
  std::mutex failure_mutex;
  auto worker = [&](unsigned worker_id) {
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
  for (unsigned t = 1; t < threads; ++t)
    pool.emplace_back(worker, t);
  worker(0u);
  for (auto& thread : pool)
    thread.join();
  if (failure)
    std::rethrow_exception(failure);
}

}  // namespace aclora::backends::eigen
