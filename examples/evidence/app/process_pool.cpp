#include "process_pool.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <stdexcept>

extern char** environ;

namespace evidence_app {
namespace {

using Clock = std::chrono::steady_clock;

pid_t spawn(const ChildCommand& command) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, command.log.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  std::vector<char*> argv;
  for (const std::string& argument : command.arguments)
    argv.push_back(const_cast<char*>(argument.c_str()));
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int error = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (error != 0)
    throw std::runtime_error(command.label + ": cannot start " + command.arguments[0] + ": " +
                             std::strerror(error));
  return pid;
}

}  // namespace

std::vector<ChildOutcome> run_children(const std::vector<ChildCommand>& commands, int parallel,
                                       const std::function<void(const ChildOutcome&)>& done) {
  std::map<pid_t, std::pair<const ChildCommand*, Clock::time_point>> running;
  std::vector<ChildOutcome> outcomes;
  std::size_t next = 0;
  std::string start_error;
  while (next < commands.size() || !running.empty()) {
    while (start_error.empty() && next < commands.size() &&
           static_cast<int>(running.size()) < parallel) {
      try {
        running[spawn(commands[next])] = {&commands[next], Clock::now()};
        ++next;
      } catch (const std::runtime_error& error) {
        start_error = error.what();
      }
    }
    if (running.empty())
      break;
    int status = 0;
    const pid_t pid = waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR)
        continue;
      throw std::runtime_error(std::string("waiting for the jobs: ") + std::strerror(errno));
    }
    const auto found = running.find(pid);
    if (found == running.end())
      continue;
    ChildOutcome outcome;
    outcome.command = found->second.first;
    outcome.exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    outcome.seconds = std::chrono::duration<double>(Clock::now() - found->second.second).count();
    running.erase(found);
    outcomes.push_back(outcome);
    if (done)
      done(outcomes.back());
    if (!start_error.empty() && running.empty())
      break;
  }
  if (!start_error.empty())
    throw std::runtime_error(start_error);
  return outcomes;
}

}  // namespace evidence_app
