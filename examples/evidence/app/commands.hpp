// The subcommands of aclora-evidence: their options and what each runs.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace evidence_app {

struct PretrainArguments {
  std::string output;
  int64_t steps = 5000;
  int64_t batch = 64;
  uint64_t seed = 0;
  int threads = 1;
};

struct ClassifierArguments {
  std::string output;
  int64_t epochs = 2;
  uint64_t seed = 0;
  int threads = 1;
};

struct RunArguments {
  std::string plan = "full";
  std::string output;  // default: evidence-PLAN
  std::string page;    // default: OUTPUT/evidence.md
  int jobs = 2;
};

struct JobArguments {
  std::string plan;
  std::string task;
  std::string arm;
  uint64_t seed = 0;
  std::string output;
};

struct ReportArguments {
  std::string plan = "full";
  std::string output;
  std::string page;
};

struct Commands {
  PretrainArguments pretrain;
  ClassifierArguments classifier;
  RunArguments run;
  JobArguments job;
  ReportArguments report;
};

// Adds the subcommands and their options to `app`.
void add_commands(CLI::App& app, Commands& commands);

// Runs the subcommand `name`; `command_line` is argv (recorded on the page). Returns the
// exit status.
int run_command(const std::string& name, const Commands& commands,
                const std::vector<std::string>& command_line);

}  // namespace evidence_app
