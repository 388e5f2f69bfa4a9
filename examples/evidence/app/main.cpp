// aclora-evidence: the evidence experiment (docs/evidence.md).
//   aclora-evidence run [--quick | --plan P] [-o DIR] [--page FILE] [--jobs N]   the experiment
//   aclora-evidence report [--plan P] [-o DIR] [--page FILE]       its page, again
//   aclora-evidence pretrain -o FILE [--steps N] [--seed N]       the committed base model
//   aclora-evidence classifier -o FILE [--epochs N] [--seed N]    the committed judge
#include <ATen/Parallel.h>

#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "aclora_cli.hpp"
#include "commands.hpp"

namespace {

namespace cli = aclora::cli;

constexpr const char* kProgram = "aclora-evidence";

}  // namespace

int main(int argc, char** argv) {
  CLI::App app;
  evidence_app::Commands commands;
  cli::configure(app, kProgram);
  app.description(
      "The evidence experiment: AC-LoRA against fixed-rank LoRA on Fashion-MNIST with a small "
      "SDXL-layout UNet (docs/evidence.md). Exit status: 0 done, 1 error, 2 bad command line.");
  evidence_app::add_commands(app, commands);
  if (const auto status =
          cli::parse(app, std::vector<std::string>(argv + 1, argv + argc), std::cout, std::cerr))
    return *status;
  const CLI::App* selected = cli::selected_subcommand(app);
  if (selected == nullptr)
    return cli::report_usage_error(
        std::cerr, kProgram,
        "no command given (the commands are run, report, pretrain, classifier)");
  const std::string context = cli::command_name(app);
  try {
    return evidence_app::run_command(selected->get_name(), commands,
                                     std::vector<std::string>(argv, argv + argc));
  } catch (const cli::UsageError& error) {
    return cli::report_usage_error(std::cerr, context, error.what());
  } catch (const std::exception& error) {
    return cli::report_exception(std::cerr, kProgram, error);
  }
}
