// Test programs run as child processes (to be killed and resumed, say): posix_spawn and
// waitpid with GoogleTest checks.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>

#include <string>
#include <vector>

namespace aclora::test {

/// Starts `program` with `arguments` (its standard output to /dev/null when `quiet`); returns
/// its pid.
inline pid_t start_child(const std::string& program, const std::vector<std::string>& arguments,
                         bool quiet = false) {
  std::vector<std::string> words{program};
  words.insert(words.end(), arguments.begin(), arguments.end());
  std::vector<char*> argv;
  for (auto& word : words)
    argv.push_back(word.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (quiet)
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  pid_t pid = 0;
  EXPECT_EQ(posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ), 0) << program;
  posix_spawn_file_actions_destroy(&actions);
  return pid;
}

/// Waits for the child `pid`; returns its wait status.
inline int wait_for(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return status;
}

}  // namespace aclora::test
