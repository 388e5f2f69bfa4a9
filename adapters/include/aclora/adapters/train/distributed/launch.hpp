/// @file launch.hpp
/// @brief aclora::train::distributed::Launch: where this process stands in a multi-process
/// run, read from torchrun's environment contract (RANK, WORLD_SIZE, LOCAL_RANK,
/// LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT, TORCHELASTIC_USE_AGENT_STORE,
/// TORCHELASTIC_RESTART_COUNT), so `torchrun --no-python ...` or any launcher that sets the
/// same variables starts it.
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <optional>
#include <string>

#include "aclora/adapters/train/error.hpp"

namespace aclora::train::distributed {

/// A bad or incomplete launch environment (the message names the variable).
class LaunchError : public Error {
 public:
  using Error::Error;
};

/// One process's place in a run of `world_size` processes.
struct Launch {
  int rank = 0;                           ///< RANK: 0 .. world_size - 1, rank 0 writes the files
  int world_size = 1;                     ///< WORLD_SIZE: processes in the run
  int local_rank = 0;                     ///< LOCAL_RANK: index on this machine (picks the GPU)
  int local_world_size = 1;               ///< LOCAL_WORLD_SIZE: processes on this machine
  std::string master_addr = "127.0.0.1";  ///< MASTER_ADDR: host of the rendezvous store
  std::uint16_t master_port = 29500;      ///< MASTER_PORT: its port
  /// TORCHELASTIC_USE_AGENT_STORE=True: torchrun's agent serves the store (every process
  /// is a client); otherwise rank 0 serves it.
  bool agent_store = false;
  std::string attempt = "0";  ///< TORCHELASTIC_RESTART_COUNT: torchrun's restart number

  /// Whether this process writes the run's files (rank 0).
  bool writes_files() const { return rank == 0; }

  /// The launch the environment describes; std::nullopt when WORLD_SIZE is unset or 1 (a
  /// single-process run). `lookup` reads a variable (std::getenv by default; tests pass
  /// their own).
  /// @throws LaunchError naming the variable that is missing or not a valid number.
  static std::optional<Launch> from_environment(
      const std::function<const char*(const char*)>& lookup = [](const char* name) {
        return std::getenv(name);
      }) {
    const char* world = lookup("WORLD_SIZE");
    if (world == nullptr || std::string(world) == "1" || std::string(world).empty())
      return std::nullopt;
    Launch launch;
    launch.world_size = integer(lookup, "WORLD_SIZE", 1, 1 << 20, nullptr);
    launch.rank = integer(lookup, "RANK", 0, launch.world_size - 1, nullptr);
    launch.local_rank = integer(lookup, "LOCAL_RANK", 0, launch.world_size - 1, "0");
    launch.local_world_size =
        integer(lookup, "LOCAL_WORLD_SIZE", 1, launch.world_size, nullptr, launch.world_size);
    const char* addr = lookup("MASTER_ADDR");
    if (addr == nullptr || std::string(addr).empty())
      throw LaunchError("WORLD_SIZE is " + std::to_string(launch.world_size) +
                        " but MASTER_ADDR is not set (the host of rank 0 or of torchrun's store)");
    launch.master_addr = addr;
    launch.master_port =
        static_cast<std::uint16_t>(integer(lookup, "MASTER_PORT", 1, 65535, nullptr));
    const char* agent = lookup("TORCHELASTIC_USE_AGENT_STORE");
    launch.agent_store = agent != nullptr && std::string(agent) == "True";
    if (const char* attempt = lookup("TORCHELASTIC_RESTART_COUNT"); attempt != nullptr)
      launch.attempt = attempt;
    return launch;
  }

 private:
  static int integer(const std::function<const char*(const char*)>& lookup, const char* name,
                     long lowest, long highest, const char* fallback,
                     std::optional<int> absent = std::nullopt) {
    const char* text = lookup(name);
    if (text == nullptr && absent)
      return *absent;
    if (text == nullptr)
      text = fallback;
    if (text == nullptr)
      throw LaunchError(std::string("WORLD_SIZE is set but ") + name +
                        " is not (launch with torchrun, or set RANK, WORLD_SIZE, MASTER_ADDR "
                        "and MASTER_PORT)");
    errno = 0;
    char* end = nullptr;
    const long value = std::strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value < lowest || value > highest)
      throw LaunchError(std::string(name) + " is '" + text + "', not an integer in [" +
                        std::to_string(lowest) + ", " + std::to_string(highest) + "]");
    return static_cast<int>(value);
  }
};

}  // namespace aclora::train::distributed
