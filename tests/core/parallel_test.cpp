// aclora::for_each_index: all-or-nothing thread start, every task run once, the first
// task exception rethrown after every worker stopped.
#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "aclora/error.hpp"
#include "aclora/parallel.hpp"

namespace {

// Starts the first `allowed` threads, then fails as a system out of threads does.
struct FailingStart {
  int allowed = 0;
  std::thread operator()(std::function<void()> body) {
    if (allowed-- <= 0)
      throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again));
    return std::thread(std::move(body));
  }
};

// When the third of four worker threads cannot start, no task runs at all (the started
// threads are released and joined) and an aclora::Error says what happened.
TEST(Threads, WorkerThatCannotStartRunsNoTask) {
  std::atomic<int> tasks{0};
  try {
    aclora::for_each_index(
        100, 4, [&](std::size_t, unsigned) { ++tasks; }, FailingStart{2});
    ADD_FAILURE() << "expected aclora::Error";
  } catch (const aclora::Error& error) {
    EXPECT_NE(std::string(error.what()).find("could not start worker thread 3 of 4"),
              std::string::npos)
        << error.what();
  }
  EXPECT_EQ(tasks.load(), 0);
  // With every thread started, every task runs once.
  aclora::for_each_index(
      100, 4, [&](std::size_t, unsigned) { ++tasks; }, FailingStart{3});
  EXPECT_EQ(tasks.load(), 100);
}

// Tasks spread over the workers each run once, whatever the worker count; a task that
// throws stops the others from taking new tasks, and its exception reaches the caller.
TEST(Threads, EveryTaskRunsOnceAndFailuresPropagate) {
  for (unsigned threads : {1u, 2u, 3u, 8u}) {
    std::vector<std::atomic<int>> runs(257);
    std::vector<std::atomic<int>> worker_seen(aclora::worker_count(runs.size(), threads));
    aclora::for_each_index(runs.size(), threads, [&](std::size_t i, unsigned worker) {
      ++runs[i];
      ++worker_seen.at(worker);
    });
    for (const auto& count : runs)
      EXPECT_EQ(count.load(), 1) << threads;
  }
  EXPECT_THROW(aclora::for_each_index(50, 2,
                                      [](std::size_t i, unsigned) {
                                        if (i == 7)
                                          throw std::runtime_error("task 7");
                                      }),
               std::runtime_error);
}

}  // namespace
