// Multi-process training pieces (aclora/adapters/train/distributed): torchrun's environment
// contract, the bucketed gradient sum and the factor agreement after a RESTART, each over a
// real Gloo process group of two ranks (two threads of this process, loopback TCP).
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <aclora/adapters/train/distributed/factors.hpp>
#include <aclora/adapters/train/distributed/gradients.hpp>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tiny_model.hpp"

namespace {

using aclora::train::distributed::Launch;
using aclora::train::distributed::LaunchError;
using aclora::train::distributed::ProcessGroup;

// A TCP port nobody listens on now (the kernel's choice for a bound, then closed, socket).
std::uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  socklen_t length = sizeof address;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

// Runs body(group) on ranks 0 and 1 of a two-rank Gloo group, one thread each.
void on_two_ranks(const std::function<void(ProcessGroup&)>& body) {
  const std::uint16_t port = free_port();
  std::vector<std::thread> threads;
  std::vector<std::string> errors(2);
  for (int rank = 0; rank < 2; ++rank) {
    threads.emplace_back([&, rank] {
      try {
        Launch launch;
        launch.rank = rank;
        launch.world_size = 2;
        launch.local_rank = rank;
        launch.local_world_size = 2;
        launch.master_port = port;
        ProcessGroup group(launch, torch::kCPU, std::chrono::seconds(60));
        body(group);
      } catch (const std::exception& error) {
        errors[static_cast<std::size_t>(rank)] = error.what();
      }
    });
  }
  for (auto& thread : threads)
    thread.join();
  EXPECT_EQ(errors[0], "");
  EXPECT_EQ(errors[1], "");
}

std::function<const char*(const char*)> environment(std::map<std::string, std::string> values) {
  return [values = std::move(values)](const char* name) -> const char* {
    const auto found = values.find(name);
    return found == values.end() ? nullptr : found->second.c_str();
  };
}

std::string launch_error(std::map<std::string, std::string> values) {
  try {
    Launch::from_environment(environment(std::move(values)));
  } catch (const LaunchError& error) {
    return error.what();
  }
  return "no error";
}

}  // namespace

// torchrun's variables make a Launch; no WORLD_SIZE (or 1) is a single process; a missing or
// malformed variable is an error that names it.
TEST(DistributedLaunch, ReadsTorchrunsVariablesAndNamesTheBadOne) {
  EXPECT_FALSE(Launch::from_environment(environment({})).has_value());
  EXPECT_FALSE(Launch::from_environment(environment({{"WORLD_SIZE", "1"}})).has_value());
  const std::map<std::string, std::string> torchrun{{"WORLD_SIZE", "8"},
                                                    {"RANK", "5"},
                                                    {"LOCAL_RANK", "1"},
                                                    {"LOCAL_WORLD_SIZE", "4"},
                                                    {"MASTER_ADDR", "node0"},
                                                    {"MASTER_PORT", "29400"},
                                                    {"TORCHELASTIC_USE_AGENT_STORE", "True"},
                                                    {"TORCHELASTIC_RESTART_COUNT", "2"}};
  const std::optional<Launch> launch = Launch::from_environment(environment(torchrun));
  ASSERT_TRUE(launch.has_value());
  EXPECT_EQ(launch->world_size, 8);
  EXPECT_EQ(launch->rank, 5);
  EXPECT_EQ(launch->local_rank, 1);
  EXPECT_EQ(launch->local_world_size, 4);
  EXPECT_EQ(launch->master_addr, "node0");
  EXPECT_EQ(launch->master_port, 29400);
  EXPECT_TRUE(launch->agent_store);
  EXPECT_EQ(launch->attempt, "2");
  EXPECT_FALSE(launch->writes_files());

  auto without = [&](const std::string& name) {
    auto values = torchrun;
    values.erase(name);
    return values;
  };
  auto with = [&](const std::string& name, const std::string& value) {
    auto values = torchrun;
    values[name] = value;
    return values;
  };
  EXPECT_NE(launch_error(without("RANK")).find("RANK is not"), std::string::npos);
  EXPECT_NE(launch_error(without("MASTER_ADDR")).find("MASTER_ADDR is not set"), std::string::npos);
  EXPECT_NE(launch_error(without("MASTER_PORT")).find("MASTER_PORT is not"), std::string::npos);
  EXPECT_NE(launch_error(with("RANK", "8")).find("RANK is '8', not an integer in [0, 7]"),
            std::string::npos);
  EXPECT_NE(launch_error(with("MASTER_PORT", "http")).find("MASTER_PORT is 'http'"),
            std::string::npos);
  EXPECT_NE(launch_error(with("WORLD_SIZE", "two")).find("WORLD_SIZE is 'two'"), std::string::npos);
  // LOCAL_RANK defaults to 0 and LOCAL_WORLD_SIZE to WORLD_SIZE (a launcher that omits them).
  const auto minimal = Launch::from_environment(environment(
      {{"WORLD_SIZE", "2"}, {"RANK", "1"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1"}}));
  ASSERT_TRUE(minimal.has_value());
  EXPECT_EQ(minimal->local_rank, 0);
  EXPECT_EQ(minimal->local_world_size, 2);
  EXPECT_FALSE(minimal->agent_store);
}

// Every gradient becomes its sum over the ranks, whatever the bucket size (here a few
// buckets of mixed sizes); a parameter without a gradient on one rank counts as zero; the
// scalars are summed along. The values are small integers: every sum is exact in float32.
TEST(DistributedGradientSum, SumsEveryGradientAndScalarOverTheRanks) {
  for (const std::size_t bucket_bytes : {std::size_t{40}, std::size_t{25} << 20}) {
    on_two_ranks([bucket_bytes](ProcessGroup& group) {
      const double r = group.rank() + 1;  // 1 or 2
      std::vector<torch::Tensor> parameters{torch::zeros({3, 4}, torch::requires_grad()),
                                            torch::zeros({5}, torch::requires_grad()),
                                            torch::zeros({2, 2}, torch::requires_grad())};
      parameters[0].mutable_grad() = torch::arange(12, torch::kFloat32).view({3, 4}) * r;
      parameters[1].mutable_grad() = torch::full({5}, r);
      if (group.rank() == 0)
        parameters[2].mutable_grad() = torch::ones({2, 2});
      aclora::train::distributed::GradientSum sum(parameters, group, bucket_bytes);
      // 40 bytes, in reverse order: the 16- and 20-byte gradients together, the 48-byte one
      // alone.
      EXPECT_EQ(sum.bucket_count(), bucket_bytes == 40 ? 2u : 1u);
      const std::vector<double> scalars = sum.sum({r, 10.0 * r}, 0);
      EXPECT_EQ(scalars, (std::vector<double>{3.0, 30.0}));
      EXPECT_TRUE(
          torch::equal(parameters[0].grad(), torch::arange(12, torch::kFloat32).view({3, 4}) * 3));
      EXPECT_TRUE(torch::equal(parameters[1].grad(), torch::full({5}, 3.0f)));
      EXPECT_TRUE(torch::equal(parameters[2].grad(), torch::ones({2, 2})));
    });
  }
}

// Overlapped with a real backward: with two micro-batches (the second one's backward starting
// the buckets' sums from its hooks), each gradient becomes the sum over the ranks and micro-
// batches of the exact gradients; the hooks started every bucket. When the overlapped
// backward produces a parameter's gradient twice (two backward passes), the sum is redone from
// the accumulated gradients and is still exact.
TEST(DistributedGradientSum, OverlapsWithTheBackwardAndStaysExact) {
  for (const int passes : {1, 2}) {
    on_two_ranks([passes](ProcessGroup& group) {
      const double r = group.rank() + 1;
      torch::Tensor weight = torch::zeros({4, 3}, torch::requires_grad());
      torch::Tensor bias = torch::zeros({4}, torch::requires_grad());
      aclora::train::distributed::GradientSum sum({weight, bias}, group, 16);
      ASSERT_EQ(sum.bucket_count(), 2u);
      // loss = sum(weight * x) + sum(bias * y): gradients x and y, small integers (exact).
      const auto backward = [&](double scale) {
        const torch::Tensor x = torch::arange(12, torch::kFloat32).view({4, 3}) * scale;
        const torch::Tensor y = torch::full({4}, scale);
        ((weight * x).sum() + (bias * y).sum()).backward();
      };
      backward(r);  // micro-batch 1
      sum.overlap_next_backward(7);
      for (int pass = 0; pass < passes; ++pass)
        backward(10 * r);  // micro-batch 2 (twice: a second pass over the same parameters)
      const std::vector<double> totals = sum.sum({r}, 7);
      EXPECT_EQ(totals, std::vector<double>{3.0});
      // Over ranks r = 1, 2: sum of r + passes * 10 r = 3 (1 + 10 passes).
      const float scale = static_cast<float>(3 * (1 + 10 * passes));
      EXPECT_TRUE(
          torch::equal(weight.grad(), torch::arange(12, torch::kFloat32).view({4, 3}) * scale));
      EXPECT_TRUE(torch::equal(bias.grad(), torch::full({4}, scale)));
      EXPECT_EQ(sum.overlapped_buckets(), passes == 1 ? 2u : 0u);
    });
  }
}

// After a RESTART the ranks compare their factors: identical factors are left alone
// (true); differing ones are replaced by rank 0's on every rank (false), after which they
// agree.
TEST(DistributedFactors, IdenticalFactorsPassAndDifferentOnesBecomeRankZeros) {
  on_two_ranks([](ProcessGroup& group) {
    static std::mutex generator;  // the ranks are threads sharing the default generator
    train_test::TinyNet net{nullptr};
    aclora::train::LoraNetwork network;
    {
      std::lock_guard<std::mutex> lock(generator);
      torch::manual_seed(3);  // the same model and factors on both ranks
      net = train_test::TinyNet();
      aclora::train::InjectOptions inject;
      inject.rank = 2;
      network.inject(*net, aclora::train::Targets::patterns({"to_q"}), inject);
    }
    EXPECT_TRUE(aclora::train::distributed::agree_on_factors(network, group, "(same)"));

    torch::Tensor up = network.parameters()[1];
    {
      torch::NoGradGuard no_grad;
      up.fill_(static_cast<float>(group.rank() + 1));
    }
    EXPECT_FALSE(aclora::train::distributed::agree_on_factors(network, group, "(different)"));
    EXPECT_TRUE(torch::equal(up, torch::ones_like(up)));
    EXPECT_TRUE(aclora::train::distributed::agree_on_factors(network, group, "(after)"));
  });
}
