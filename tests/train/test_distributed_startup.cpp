// Joining a multi-process run (ProcessGroup's constructor) never hangs: every wait of the
// start-up ends, within its limit, in a DistributedError that names the step and its likely
// cause. A store of another protocol is played by a TCP listener on 127.0.0.1 (a launcher of
// another PyTorch version serves such a store); torchrun's agent store by a c10d TCPStore
// server of this LibTorch.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <torch/version.h>
#include <aclora/adapters/train/distributed/process_group.hpp>

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace {

using aclora::train::distributed::DistributedError;
using aclora::train::distributed::Launch;
using aclora::train::distributed::ProcessGroup;

// A socket bound to a free port of 127.0.0.1; `listening` or not (then connections to it are
// refused).
int loopback_socket(bool listening, std::uint16_t& port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  if (listening)
    EXPECT_EQ(::listen(fd, 64), 0);
  socklen_t length = sizeof address;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  port = ntohs(address.sin_port);
  return fd;
}

// A store that speaks no protocol LibTorch knows: it accepts every connection, then never
// answers (silent) or answers each request with bytes that mean nothing to LibTorch's store
// client (garbage). Its destructor closes every connection, which ends a client still waiting.
class ForeignStore {
 public:
  enum class Answer { silent, garbage };

  explicit ForeignStore(Answer answer) : answer_(answer), listener_(loopback_socket(true, port_)) {
    server_ = std::thread([this] { serve(); });
  }
  ~ForeignStore() {
    stopping_ = true;
    server_.join();
    for (const int fd : connections_)
      ::close(fd);
    ::close(listener_);
  }
  std::uint16_t port() const { return port_; }

 private:
  void serve() {
    while (!stopping_) {
      std::vector<pollfd> fds{{listener_, POLLIN, 0}};
      for (const int fd : connections_)
        fds.push_back({fd, POLLIN, 0});
      if (::poll(fds.data(), fds.size(), 50) <= 0)
        continue;
      if (fds[0].revents & POLLIN)
        connections_.push_back(::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC));
      for (std::size_t i = 1; i < fds.size(); ++i) {
        if (!(fds[i].revents & POLLIN))
          continue;
        char request[4096];
        if (::read(fds[i].fd, request, sizeof request) > 0 && answer_ == Answer::garbage) {
          const std::vector<unsigned char> reply(64, 0xFF);
          (void)!::write(fds[i].fd, reply.data(), reply.size());
        }
      }
    }
  }

  Answer answer_;
  std::uint16_t port_ = 0;
  int listener_;
  std::vector<int> connections_;
  std::atomic<bool> stopping_{false};
  std::thread server_;
};

Launch rank_of(int rank, int world_size, std::uint16_t port, bool agent_store) {
  Launch launch;
  launch.rank = rank;
  launch.world_size = world_size;
  launch.local_rank = rank;
  launch.local_world_size = world_size;
  launch.master_port = port;
  launch.agent_store = agent_store;
  return launch;
}

// What joining as `launch` ends with: "joined", the DistributedError's message, or (when the
// constructor has not returned after `bound`, far beyond the start-up's limits for the
// timeouts used here) a note that it hangs. The thread of a hanging join is left behind, blocked on
// a socket of a store whose destructor later closes it.
std::string join(const Launch& launch, std::chrono::milliseconds timeout,
                 std::chrono::seconds bound = std::chrono::seconds(30)) {
  auto outcome = std::make_shared<std::promise<std::string>>();
  std::future<std::string> result = outcome->get_future();
  std::thread([outcome, launch, timeout] {
    try {
      // Left before the answer: the caller may then end the store this group uses.
      { ProcessGroup group(launch, torch::kCPU, timeout); }
      outcome->set_value("joined");
    } catch (const DistributedError& error) {
      outcome->set_value(error.what());
    } catch (const std::exception& error) {
      outcome->set_value(std::string("not a DistributedError: ") + error.what());
    }
  }).detach();
  if (result.wait_for(bound) != std::future_status::ready)
    return "still joining after " + std::to_string(bound.count()) + " s (a hang)";
  return result.get();
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// A store server of this LibTorch on a free loopback port, as torchrun's agent serves one.
c10d::TCPStore agent_store() {
  c10d::TCPStoreOptions options;
  options.port = 0;
  options.isServer = true;
  options.waitWorkers = false;
  return c10d::TCPStore("127.0.0.1", options);
}

}  // namespace

// A store that accepts the connection and never answers (torchrun of PyTorch 2 serving a
// LibTorch 1.13 program did this): the join fails after the timeout, naming the store, the
// launcher of another PyTorch version as the likely cause, and the remedy.
TEST(DistributedStartup, SilentStoreFailsAfterTheTimeoutNamingTheLauncher) {
  ForeignStore store(ForeignStore::Answer::silent);
  const std::string error = join(rank_of(1, 2, store.port(), true), std::chrono::seconds(2));
  EXPECT_TRUE(contains(
      error, "rank 1 of 2: the rendezvous store at 127.0.0.1:" + std::to_string(store.port()) +
                 " (served by torchrun's agent) accepted the connection but did "
                 "not answer within 2 s."))
      << error;
  EXPECT_TRUE(contains(error, "another PyTorch version than the LibTorch " TORCH_VERSION)) << error;
  EXPECT_TRUE(contains(error, "Launch with the torchrun of PyTorch " TORCH_VERSION)) << error;
  EXPECT_TRUE(contains(error, "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1")) << error;
}

// A store whose answers mean nothing to this LibTorch: the join fails at once, with the same
// cause named (the reader's own error quoted).
TEST(DistributedStartup, StoreOfAnotherProtocolFailsNamingTheLauncher) {
  ForeignStore store(ForeignStore::Answer::garbage);
  const std::string error = join(rank_of(1, 2, store.port(), true), std::chrono::seconds(2));
  EXPECT_TRUE(contains(
      error, "rank 1 of 2: the rendezvous store at 127.0.0.1:" + std::to_string(store.port()) +
                 " (served by torchrun's agent) accepted the connection, then its "
                 "answer failed: "))
      << error;
  EXPECT_TRUE(contains(error, "Launch with the torchrun of PyTorch " TORCH_VERSION)) << error;
}

// Nothing listens at MASTER_ADDR:MASTER_PORT: the join fails after the timeout, naming the
// address, who should serve the store, and the variables to check.
TEST(DistributedStartup, NoStoreFailsAfterTheTimeoutNamingTheAddress) {
  std::uint16_t port = 0;
  const int refusing = loopback_socket(false, port);
  const std::string error = join(rank_of(1, 2, port, false), std::chrono::seconds(2));
  ::close(refusing);
  EXPECT_TRUE(contains(
      error, "rank 1 of 2: nothing accepts connections at 127.0.0.1:" + std::to_string(port) +
                 " (the rendezvous store, served by rank 0) after 2 s: "))
      << error;
  EXPECT_TRUE(contains(error, "MASTER_ADDR/MASTER_PORT")) << error;
}

// torchrun's agent serves the store (a TCPStore server of this LibTorch, as torchrun of the
// same PyTorch has): both ranks join, and their first all-reduce counts both.
TEST(DistributedStartup, AgentStoreOfTheSameLibTorchJoins) {
  c10d::TCPStore agent = agent_store();
  std::vector<std::string> errors(2);
  std::vector<std::thread> ranks;
  for (int rank = 0; rank < 2; ++rank)
    ranks.emplace_back([&, rank] {
      errors[static_cast<std::size_t>(rank)] =
          join(rank_of(rank, 2, agent.getPort(), true), std::chrono::seconds(60),
               std::chrono::seconds(120));
    });
  for (auto& rank : ranks)
    rank.join();
  EXPECT_EQ(errors[0], "joined");
  EXPECT_EQ(errors[1], "joined");
}

// WORLD_SIZE 3 with only two ranks started: each fails after the timeout with an error that
// names the group's forming and the ranks it waits for; so does rank 0 serving the store alone.
TEST(DistributedStartup, MissingRankEndsTheJoinWithAnError) {
  c10d::TCPStore agent = agent_store();
  std::vector<std::string> errors(2);
  std::vector<std::thread> ranks;
  for (int rank = 0; rank < 2; ++rank)
    ranks.emplace_back([&, rank] {
      errors[static_cast<std::size_t>(rank)] =
          join(rank_of(rank, 3, agent.getPort(), true), std::chrono::seconds(2));
    });
  for (auto& rank : ranks)
    rank.join();
  for (int rank = 0; rank < 2; ++rank) {
    const std::string& error = errors[static_cast<std::size_t>(rank)];
    EXPECT_TRUE(contains(
        error, "rank " + std::to_string(rank) + " of 3: forming the process group failed: "))
        << error;
    EXPECT_TRUE(contains(error, "every rank of WORLD_SIZE 3 must join within 2 s")) << error;
  }

  // Rank 0 serving the store itself, alone: it stops as well, waiting for the group.
  std::uint16_t port = 0;
  ::close(loopback_socket(false, port));  // a port free now
  const std::string alone = join(rank_of(0, 2, port, false), std::chrono::seconds(2));
  EXPECT_TRUE(contains(alone, "rank 0 of 2: forming the process group failed: ")) << alone;
  EXPECT_TRUE(contains(alone, "every rank of WORLD_SIZE 2 must join within 2 s")) << alone;
}
