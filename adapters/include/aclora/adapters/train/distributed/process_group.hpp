/// @file process_group.hpp
/// @brief aclora::train::distributed::ProcessGroup: the c10d process group of a
/// multi-process run (ProcessGroupGloo on CPU, ProcessGroupNCCL on CUDA when LibTorch has
/// it), over a TCPStore at MASTER_ADDR:MASTER_PORT, with collectives that never hang
/// silently: each one that fails or passes the timeout throws DistributedError naming this
/// rank, the collective, and what became of the other ranks (failed with a message, stopped
/// responding, or alive). Joining never hangs silently either: each wait of the start-up has a
/// limit and an error naming its likely cause (see the constructor).
///
/// Gloo needs its headers (Debian: libgloo-dev; PyPI's torch ships none, so a build against it
/// has NCCL only); NCCL needs a CUDA LibTorch and ACLORA_WITH_NCCL (set by aclora::train's
/// CMake when nccl.h is found). Link aclora::train.
#pragma once

#include <torch/torch.h>
#include <torch/version.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#if __has_include(<gloo/context.h>)
#define ACLORA_WITH_GLOO 1
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#if defined(ACLORA_WITH_NCCL)
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "aclora/adapters/train/distributed/launch.hpp"
#include "aclora/adapters/train/distributed/startup.hpp"
#include "aclora/adapters/train/error.hpp"

namespace aclora::train::distributed {

/// A collective failed or timed out; the message names the ranks at fault where it can.
class DistributedError : public Error {
 public:
  using Error::Error;
};

namespace detail {

// The collectives we use, over the concrete c10d class (its base is ProcessGroup in
// LibTorch 1.13 and Backend in 2.x; the concrete classes have the same calls in both).
struct Collectives {
  virtual ~Collectives() = default;
  virtual c10::intrusive_ptr<c10d::Work> allreduce(std::vector<at::Tensor>& tensors,
                                                   const c10d::AllreduceOptions& options) = 0;
  virtual c10::intrusive_ptr<c10d::Work> broadcast(std::vector<at::Tensor>& tensors,
                                                   const c10d::BroadcastOptions& options) = 0;
};

template <class Group>
struct CollectivesOf final : Collectives {
  explicit CollectivesOf(c10::intrusive_ptr<Group> group) : group(std::move(group)) {}
  c10::intrusive_ptr<c10d::Work> allreduce(std::vector<at::Tensor>& tensors,
                                           const c10d::AllreduceOptions& options) override {
    return group->allreduce(tensors, options);
  }
  c10::intrusive_ptr<c10d::Work> broadcast(std::vector<at::Tensor>& tensors,
                                           const c10d::BroadcastOptions& options) override {
    return group->broadcast(tensors, options);
  }
  c10::intrusive_ptr<Group> group;
};

inline std::string first_line(const std::string& text) {
  const auto end = text.find('\n');
  return end == std::string::npos ? text : text.substr(0, end);
}

}  // namespace detail

/// A collective launched and not yet waited for (see ProcessGroup::all_reduce_sum_async).
class PendingCollective {
 private:
  friend class ProcessGroup;
  PendingCollective(c10::intrusive_ptr<c10d::Work> work, std::string what)
      : work_(std::move(work)), what_(std::move(what)) {}
  c10::intrusive_ptr<c10d::Work> work_;
  std::string what_;
};

/// The process group of one process of a multi-process run (see the file comment). Every
/// process must make the same collective calls in the same order.
class ProcessGroup {
 public:
  /// How long a store that accepted this process's connection may take to answer it: a store
  /// of the same protocol answers at once, one of another PyTorch version never does.
  static constexpr std::chrono::milliseconds kStoreAnswerLimit{60000};

  /// Joins the run: connects to (rank 0: serves) the store, forms the group and runs a first
  /// all-reduce. Every wait has a limit (docs/distributed.md): the store's port must accept a
  /// connection within `timeout`; a store that accepts but does not answer (a launcher of
  /// another PyTorch version) fails after at most kStoreAnswerLimit; forming the group and the
  /// first all-reduce get `timeout` each.
  /// @param launch this process's place (Launch::from_environment)
  /// @param device where the collectives' tensors live: CPU -> Gloo, CUDA -> NCCL
  /// @param timeout how long any collective may wait for the other ranks
  /// @throws DistributedError naming the step that failed or ran out of time, and its likely
  /// cause; std::invalid_argument for CUDA when this LibTorch build has no NCCL.
  ProcessGroup(const Launch& launch, torch::Device device, std::chrono::milliseconds timeout)
      : launch_(launch), device_(device), timeout_(timeout) {
    try {
      store_ = join_store();
      collectives_ = form_group();
      first_all_reduce();
    } catch (const std::invalid_argument&) {
      throw;
    } catch (const DistributedError&) {
      throw;
    } catch (const std::exception& error) {
      throw DistributedError(who() + "cannot join the process group at " + endpoint() + ": " +
                             detail::first_line(error.what()));
    }
    heartbeat_ = std::thread([this] { beat(); });
  }

  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  ~ProcessGroup() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    if (heartbeat_.joinable())
      heartbeat_.join();
  }

  /// This process's place.
  const Launch& launch() const { return launch_; }
  /// RANK.
  int rank() const { return launch_.rank; }
  /// WORLD_SIZE.
  int world_size() const { return launch_.world_size; }
  /// The device of the collectives' tensors.
  torch::Device device() const { return device_; }

  /// Starts summing `tensor` over the ranks in place; wait() finishes it. Collectives run in
  /// the order they are started, on every rank.
  PendingCollective all_reduce_sum_async(torch::Tensor tensor, const std::string& what) {
    std::vector<at::Tensor> tensors{std::move(tensor)};
    c10d::AllreduceOptions options;
    options.reduceOp = c10d::ReduceOp::SUM;
    try {
      return PendingCollective(collectives_->allreduce(tensors, options), what);
    } catch (const std::exception& error) {
      fail(what, error.what());
    }
  }

  /// Waits for a started collective.
  /// @throws DistributedError naming the ranks at fault.
  void wait(PendingCollective& pending) {
    try {
      pending.work_->wait();
    } catch (const std::exception& error) {
      fail(pending.what_, error.what());
    }
  }

  /// Reduces `values` (doubles) over the ranks with `op` (SUM, MIN or MAX); `what` names the
  /// collective in errors.
  std::vector<double> all_reduce(const std::vector<double>& values, c10d::ReduceOp op,
                                 const std::string& what) {
    torch::Tensor tensor = torch::tensor(values, torch::dtype(torch::kFloat64)).to(device_);
    std::vector<at::Tensor> tensors{tensor};
    c10d::AllreduceOptions options;
    options.reduceOp = op;
    try {
      collectives_->allreduce(tensors, options)->wait();
    } catch (const std::exception& error) {
      fail(what, error.what());
    }
    tensor = tensor.cpu();
    return std::vector<double>(tensor.data_ptr<double>(),
                               tensor.data_ptr<double>() + tensor.numel());
  }

  /// Whether every rank passed the same `value` (an exact comparison of 64 bits).
  bool all_equal(std::uint64_t value, const std::string& what) {
    // Two 32-bit halves, each exact in a double.
    const double high = static_cast<double>(value >> 32);
    const double low = static_cast<double>(value & 0xFFFFFFFFull);
    const std::vector<double> lowest = all_reduce({high, low}, c10d::ReduceOp::MIN, what);
    const std::vector<double> highest = all_reduce({high, low}, c10d::ReduceOp::MAX, what);
    return lowest == highest;
  }

  /// Overwrites `tensors` (same shapes on every rank) with rank `root`'s.
  void broadcast(std::vector<torch::Tensor>& tensors, int root, const std::string& what) {
    c10d::BroadcastOptions options;
    options.rootRank = root;
    for (torch::Tensor& tensor : tensors) {
      std::vector<at::Tensor> one{tensor};
      try {
        collectives_->broadcast(one, options)->wait();
      } catch (const std::exception& error) {
        fail(what, error.what());
      }
    }
  }

  /// Leaves the run after an error of this process: tells the other ranks `message` (their
  /// errors then name it), closes this rank's connections so that their collectives fail at
  /// once, and, on the rank that serves the store, keeps it up a few seconds for them to read
  /// the message. No collective may follow. Never throws.
  void abandon(const std::string& message) noexcept {
    try {
      const std::string text = detail::first_line(message);
      store_->set(error_key(launch_.rank), std::vector<std::uint8_t>(text.begin(), text.end()));
      collectives_.reset();
      if (launch_.rank == 0 && !launch_.agent_store)
        std::this_thread::sleep_for(kReadingTime);
    } catch (...) {
    }
  }

 private:
  static constexpr std::chrono::milliseconds kBeat{500};
  // Added to the limits of start-up steps that end in c10d's own timeout error (which names
  // what it waited for) so that this error comes first.
  static constexpr std::chrono::milliseconds kGrace{5000};
  // How long a failing rank waits before its error is read: the others' diagnosis, which
  // watches the heartbeats for 6 beats, and some slack.
  static constexpr std::chrono::milliseconds kReadingTime{8 * kBeat.count() + 2000};

  std::string endpoint() const {
    return launch_.master_addr + ":" + std::to_string(launch_.master_port);
  }

  std::string error_key(int rank) const { return "error/" + std::to_string(rank); }
  std::string beat_key(int rank) const { return "alive/" + std::to_string(rank); }

  // A store client (or rank 0's server) under this run's prefix.
  static c10::intrusive_ptr<c10d::Store> connect(const Launch& launch, bool server,
                                                 std::chrono::milliseconds timeout,
                                                 bool count_worker) {
    c10d::TCPStoreOptions options;
    options.port = launch.master_port;
    options.isServer = server;
    options.timeout = timeout;
    options.multiTenant = server;
    if (count_worker)
      options.numWorkers = static_cast<std::size_t>(launch.world_size);
    options.waitWorkers = count_worker;
    auto store = c10::make_intrusive<c10d::TCPStore>(launch.master_addr, options);
    return c10::make_intrusive<c10d::PrefixStore>("aclora/attempt_" + launch.attempt,
                                                  std::move(store));
  }
  c10::intrusive_ptr<c10d::Store> connect(bool server, std::chrono::milliseconds timeout,
                                          bool count_worker) const {
    return connect(launch_, server, timeout, count_worker);
  }

  // "rank R of W: ", the start of every error.
  std::string who() const {
    return "rank " + std::to_string(launch_.rank) + " of " + std::to_string(launch_.world_size) +
           ": ";
  }

  // The likely cause of a store that does not speak this LibTorch's protocol, and the remedy.
  static std::string other_pytorch() {
    const std::string version = TORCH_VERSION;
    return "The likely cause: the launcher (torchrun) comes from another PyTorch version than "
           "the LibTorch " +
           version +
           " this program was built with, and its store speaks "
           "another protocol (as PyTorch 2's torchrun does for a LibTorch 1.13 program). Launch "
           "with the torchrun of PyTorch " +
           version +
           " (for Debian's libtorch-dev: "
           "/usr/bin/torchrun of python3-torch), or give PyTorch 2's torchrun --standalone (or "
           "--rdzv-backend c10d) with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 set, so that rank 0 "
           "serves the store; see docs/distributed.md.";
  }

  static std::string seconds(std::chrono::milliseconds duration) {
    std::ostringstream text;
    text << duration.count() / 1000.0 << " s";
    return text.str();
  }

  // Start-up step 1: the store. Rank 0 serves it (unless torchrun's agent does); the others
  // first wait for its port to accept connections, then connect, and write and read back a key
  // of their own. LibTorch's store client waits for each answer without a limit (1.13 does),
  // so a store that speaks another protocol would hold it forever: hence the thread.
  c10::intrusive_ptr<c10d::Store> join_store() const {
    const bool serves = launch_.rank == 0 && !launch_.agent_store;
    const std::string server = launch_.agent_store ? "torchrun's agent" : "rank 0";
    if (!serves) {
      if (const auto error = detail::await_listener(launch_.master_addr, launch_.master_port,
                                                    detail::Clock::now() + timeout_))
        throw DistributedError(who() + "nothing accepts connections at " + endpoint() +
                               " (the rendezvous store, served by " + server + ") after " +
                               seconds(timeout_) + ": " + *error + ". " + server +
                               " has not started, or MASTER_ADDR/MASTER_PORT point elsewhere.");
    }
    const std::chrono::milliseconds limit =
        serves ? timeout_ + kGrace : std::min(timeout_, kStoreAnswerLimit);
    std::optional<c10::intrusive_ptr<c10d::Store>> store;
    try {
      store = detail::within(limit, [launch = launch_, serves, timeout = timeout_] {
        auto store = connect(launch, serves, timeout, true);
        const std::string key = "handshake/" + std::to_string(launch.rank);
        const std::vector<std::uint8_t> probe{'a', 'c', 'l', 'o', 'r', 'a'};
        store->set(key, probe);
        if (store->get(key) != probe)
          throw DistributedError("a key read back is not what this rank wrote");
        return store;
      });
    } catch (const std::exception& error) {
      if (serves)
        throw DistributedError(who() + "the rendezvous store this rank serves at " + endpoint() +
                               " failed: " + detail::first_line(error.what()));
      throw DistributedError(who() + "the rendezvous store at " + endpoint() + " (served by " +
                             server + ") accepted the connection, then its answer failed: " +
                             detail::first_line(error.what()) + ". " + other_pytorch());
    }
    if (!store && serves)
      throw DistributedError(who() + "the other ranks did not all connect to the rendezvous " +
                             "store this rank serves at " + endpoint() + " within " +
                             seconds(limit) + ".");
    if (!store)
      throw DistributedError(who() + "the rendezvous store at " + endpoint() + " (served by " +
                             server + ") accepted the connection but did not answer within " +
                             seconds(limit) + ". " + other_pytorch());
    return std::move(*store);
  }

  // Start-up step 2: the process group (Gloo or NCCL) over the store.
  std::shared_ptr<detail::Collectives> form_group() const {
    const std::chrono::milliseconds limit = timeout_ + kGrace;
    std::optional<std::shared_ptr<detail::Collectives>> collectives;
    try {
      collectives = detail::within(
          limit, [launch = launch_, device = device_, timeout = timeout_, store = store_] {
            return make_collectives(launch, device, timeout, store);
          });
    } catch (const std::invalid_argument&) {
      throw;
    } catch (const std::exception& error) {
      throw DistributedError(
          who() + "forming the process group failed: " + detail::first_line(error.what()) +
          " (every rank of WORLD_SIZE " + std::to_string(launch_.world_size) +
          " must join within " + seconds(timeout_) + ").");
    }
    if (!collectives)
      throw DistributedError(who() + "the process group did not form within " + seconds(limit) +
                             " (the rendezvous store at " + endpoint() +
                             " answers): not every rank of WORLD_SIZE " +
                             std::to_string(launch_.world_size) + " has joined.");
    return std::move(*collectives);
  }

  // Start-up step 3: one all-reduce over every rank, which must sum their ones to WORLD_SIZE
  // (NCCL connects the ranks here, at the first collective).
  void first_all_reduce() const {
    const std::chrono::milliseconds limit = timeout_ + kGrace;
    const auto sum = detail::within(limit, [collectives = collectives_, device = device_] {
      std::vector<at::Tensor> one{torch::ones({1}, torch::dtype(torch::kFloat64).device(device))};
      c10d::AllreduceOptions options;
      options.reduceOp = c10d::ReduceOp::SUM;
      collectives->allreduce(one, options)->wait();
      return one[0].item<double>();
    });
    if (!sum)
      throw DistributedError(who() + "the first all-reduce over the new process group did not " +
                             "complete within " + seconds(limit) + ": a rank is missing or stuck.");
    if (*sum != launch_.world_size)
      throw DistributedError(who() + "the first all-reduce counted " +
                             std::to_string(static_cast<long long>(*sum)) + " ranks, not " +
                             std::to_string(launch_.world_size) + " (WORLD_SIZE).");
  }

  static std::shared_ptr<detail::Collectives> make_collectives(
      const Launch& launch, torch::Device device, std::chrono::milliseconds timeout,
      const c10::intrusive_ptr<c10d::Store>& store) {
    auto group_store = c10::make_intrusive<c10d::PrefixStore>("group", store);
    if (device.is_cuda()) {
#if defined(ACLORA_WITH_NCCL)
      auto options = c10d::ProcessGroupNCCL::Options::create();
      options->timeout = timeout;
      return std::make_shared<detail::CollectivesOf<c10d::ProcessGroupNCCL>>(
          c10::make_intrusive<c10d::ProcessGroupNCCL>(group_store, launch.rank, launch.world_size,
                                                      options));
#else
      throw std::invalid_argument(
          "this build has no NCCL process group (LibTorch without CUDA, or aclora built "
          "without ACLORA_WITH_NCCL): train on --device cpu, or rebuild against a CUDA "
          "LibTorch");
#endif
    }
#if defined(ACLORA_WITH_GLOO)
    auto options = c10d::ProcessGroupGloo::Options::create(timeout);
    const char* interface = std::getenv("GLOO_SOCKET_IFNAME");
    options->devices.push_back(interface != nullptr && *interface != '\0'
                                   ? c10d::ProcessGroupGloo::createDeviceForInterface(interface)
                                   : c10d::ProcessGroupGloo::createDefaultDevice());
    return std::make_shared<detail::CollectivesOf<c10d::ProcessGroupGloo>>(
        c10::make_intrusive<c10d::ProcessGroupGloo>(group_store, launch.rank, launch.world_size,
                                                    options));
#else
    throw std::invalid_argument(
        "this build has no Gloo process group (aclora was built without Gloo's headers; "
        "Debian: libgloo-dev): train on --device cuda, or rebuild with them");
#endif
  }

  // Counts up this rank's heartbeat key on a connection of its own (the main one is busy in
  // collectives); stops quietly when the store goes away.
  void beat() {
    try {
      auto store = connect(false, timeout_, false);
      std::unique_lock<std::mutex> lock(mutex_);
      while (!stopping_) {
        lock.unlock();
        store->add(beat_key(launch_.rank), 1);
        lock.lock();
        wake_.wait_for(lock, kBeat, [this] { return stopping_; });
      }
    } catch (...) {
    }
  }

  // What became of the other ranks, in words, read from the store.
  std::string diagnosis() const {
    try {
      auto store = connect(false, std::chrono::seconds(5), false);
      std::vector<std::int64_t> before(static_cast<std::size_t>(launch_.world_size));
      for (int rank = 0; rank < launch_.world_size; ++rank)
        before[static_cast<std::size_t>(rank)] = store->add(beat_key(rank), 0);
      std::this_thread::sleep_for(6 * kBeat);
      std::string failed, silent;
      for (int rank = 0; rank < launch_.world_size; ++rank) {
        if (rank == launch_.rank)
          continue;
        if (store->check({error_key(rank)})) {
          const std::vector<std::uint8_t> text = store->get(error_key(rank));
          failed += " rank " + std::to_string(rank) +
                    " failed: " + std::string(text.begin(), text.end()) + ".";
        } else if (store->add(beat_key(rank), 0) == before[static_cast<std::size_t>(rank)]) {
          silent +=
              " rank " + std::to_string(rank) + " stopped responding (killed, crashed or frozen).";
        }
      }
      if (failed.empty() && silent.empty())
        return " Every other rank is alive: one of them is slow or stuck (the collective "
               "timeout, --ddp-timeout, ran out), or the ranks called different collectives.";
      return failed + silent;
    } catch (...) {
      return " The rendezvous store at " + endpoint() +
             " cannot be reached: rank 0 (or torchrun's agent, which serves it) has ended.";
    }
  }

  [[noreturn]] void fail(const std::string& what, const std::string& cause) const {
    throw DistributedError("rank " + std::to_string(launch_.rank) + " of " +
                           std::to_string(launch_.world_size) + ": " + what +
                           " failed: " + detail::first_line(cause) + "." + diagnosis());
  }

  Launch launch_;
  torch::Device device_;
  std::chrono::milliseconds timeout_;
  c10::intrusive_ptr<c10d::Store> store_;
  // Shared with a start-up step's thread, which may outlive a constructor that gave up on it.
  std::shared_ptr<detail::Collectives> collectives_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread heartbeat_;
};

}  // namespace aclora::train::distributed
