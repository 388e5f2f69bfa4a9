// Runs child processes, at most N at a time: how `aclora-evidence run` spreads its jobs over
// the cores (one LibTorch thread per process is much faster than several threads on one
// small model).
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace evidence_app {

struct ChildCommand {
  std::vector<std::string> arguments;  // argv, the program first
  std::filesystem::path log;           // receives the child's stdout and stderr
  std::string label;                   // for messages
};

struct ChildOutcome {
  const ChildCommand* command = nullptr;
  int exit_status = 0;  // 128 + signal when killed by a signal
  double seconds = 0.0;
};

// Runs every command, at most `parallel` at once, in the given order; `done` is called as
// each ends. Returns the outcomes in the order the children ended. Throws
// std::runtime_error when a child cannot be started (the running ones are waited for).
std::vector<ChildOutcome> run_children(const std::vector<ChildCommand>& commands, int parallel,
                                       const std::function<void(const ChildOutcome&)>& done);

}  // namespace evidence_app
