// aclora-lora's command line (CLI11 through aclora_cli.hpp) and error reporting.
#include <sstream>

#include "aclora/error.hpp"
#include "aclora_cli.hpp"
#include "commands.hpp"
#include "lora_tool/tool.hpp"

namespace aclora::lora_tool {

namespace {

constexpr const char* kProgram = "aclora-lora";

constexpr const char* kEnergyNote =
    "--energy P keeps, per module, the fewest leading singular components of dW = up @ down "
    "whose squared singular values hold at least P of the sum (P of ||dW||_F^2). That is "
    "sd-scripts' resize_lora.py --dynamic_method sv_fro --dynamic_param sqrt(P) (its sv_fro "
    "is a share of the Frobenius norm, not of its square): sv_fro 0.99 is --energy 0.9801. "
    "Give sd-scripts a --new_rank at least the file's rank, its default of 4 caps the result.";

constexpr const char* kAlphaNote =
    "kohya output gets one alpha for all modules, the scale differences folded into lora_up "
    "(diffusers 0.42 mis-scales kohya files whose alpha varies per module), except in kohya -> "
    "kohya conversion, which keeps the bytes; --uniform-alpha / --per-module-alpha choose.";

// Options every command that writes a file takes.
void add_output_options(CLI::App& command, Options& options, bool to_required) {
  command.add_option("-o,--output", options.output, "file (or PEFT folder) to write")
      ->type_name("OUT")
      ->required();
  CLI::Option* to = command.add_option(
      "--to", options.to, to_required ? "output format" : "output format (default: the input's)");
  to->type_name("FORMAT")->check(CLI::IsMember({"kohya", "diffusers", "peft"}));
  if (to_required)
    to->required();
  CLI::Option* uniform = command.add_flag_callback(
      "--uniform-alpha", [&options] { options.uniform_alpha = true; },
      "kohya output: one alpha, scale folded into lora_up");
  CLI::Option* per_module = command.add_flag_callback(
      "--per-module-alpha", [&options] { options.uniform_alpha = false; },
      "kohya output: keep each module's alpha");
  uniform->excludes(per_module);
}

void add_input(CLI::App& command, Options& options) {
  command
      .add_option("FILE", options.input,
                  "LoRA file: kohya, diffusers, PEFT (file or adapter folder), LyCORIS")
      ->type_name("")
      ->required();
}

void add_threads(CLI::App& command, Options& options) {
  cli::add_whole(command, "--threads", options.threads, "worker threads (default 0: all cores)", 0,
                 std::numeric_limits<unsigned>::max(), "T");
}

// The AC-LoRA schedule options (--loss, --epoch, --epochs); required for restart.
void add_schedule(CLI::App& command, Options& options, bool required) {
  CLI::Option* loss = cli::add_real(command, "--loss", options.loss,
                                    "mean training loss since the last restart, > 0", false, "L");
  CLI::Option* epoch =
      cli::add_whole(command, "--epoch", options.epoch, "0-based epoch of the restart, < --epochs",
                     0, std::numeric_limits<int>::max(), "E");
  CLI::Option* epochs =
      cli::add_whole(command, "--epochs", options.epochs, "total epochs of the schedule", 1,
                     std::numeric_limits<int>::max(), "N");
  if (required) {
    loss->required();
    epoch->required();
    epochs->required();
  } else {
    loss->needs(epoch)->needs(epochs);
    epoch->needs(loss);
    epochs->needs(loss);
  }
}

// Builds the parser; the options land in `options`, the command in options.command.
void build(CLI::App& app, Options& options) {
  cli::configure(app, kProgram);
  app.description(
      "Inspect, resize, restart and convert LoRA files (kohya / sd-scripts, diffusers, PEFT; "
      "LyCORIS read only). Exit status: 0 done, 1 bad input or failed write (one line "
      "'aclora-lora: error: ...', no output file left, the input untouched), 2 bad command "
      "line.");

  CLI::App* inspect = app.add_subcommand(
      "inspect",
      "format, base model, modules, rank and alpha per module, ranks holding 90 / 99 / 99.9% "
      "of each dW's energy, parameters and bytes");
  add_input(*inspect, options);
  inspect->add_flag("--json", options.json, "print JSON instead of a table");
  add_threads(*inspect, options);

  CLI::App* resize = app.add_subcommand(
      "resize",
      "new rank per module from the exact SVD of dW = up @ down (computed from the factors), "
      "the scale kept; exactly one rule: --rank N, --energy P, or --loss L --epoch E --epochs N");
  add_input(*resize, options);
  add_output_options(*resize, options, false);
  CLI::Option* rank =
      cli::add_whole(*resize, "--rank", options.rank, "at most N components per module", 1);
  CLI::Option* energy = cli::add_real(
      *resize, "--energy", options.energy,
      "keep P of each dW's energy, P in (0, 1] or a percentage (99%): sv_fro sqrt(P)", true, "P");
  add_schedule(*resize, options, false);
  rank->excludes(energy)->excludes("--loss");
  energy->excludes("--loss");
  resize
      ->add_option("--dtype", options.dtype,
                   "dtype of the refactored factors (default f32; keep: the input's)")
      ->type_name("T")
      ->check(CLI::IsMember({"f32", "f16", "bf16", "keep"}));
  add_threads(*resize, options);

  CLI::App* restart = app.add_subcommand(
      "restart",
      "one AC-LoRA RESTART of the factors (truncation to the kept rank + noise), as in training; "
      "p = 1 - L^(1 + E / (N - 1))");
  add_input(*restart, options);
  add_output_options(*restart, options, false);
  add_schedule(*restart, options, true);
  cli::add_whole(*restart, "--seed", options.seed, "noise seed, 0 to 2^64-1 (default 0)", 0,
                 std::numeric_limits<std::uint64_t>::max(), "S");
  add_threads(*restart, options);

  CLI::App* convert =
      app.add_subcommand("convert", "the same modules in another layout (kohya, diffusers, PEFT)");
  add_input(*convert, options);
  add_output_options(*convert, options, true);

  constexpr const char* kPeftNote =
      "FILE may be a PEFT adapter folder; PEFT output is a folder with one adapter per component "
      "(unet/, text_encoder/, text_encoder_2/).";
  inspect->footer(kPeftNote);
  resize->footer(std::string(kEnergyNote) + "\n" + kAlphaNote + "\n" + kPeftNote);
  restart->footer(std::string(kAlphaNote) + "\n" + kPeftNote);
  convert->footer(std::string(kAlphaNote) + "\n" + kPeftNote);
  // Set last: subcommands copy the footer their parent has when they are added.
  app.footer("Run 'aclora-lora COMMAND --help' for a command's options.");
}

}  // namespace

std::string usage() {
  CLI::App app;
  Options options;
  build(app, options);
  return app.help();
}

int run(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  CLI::App app;
  Options options;
  build(app, options);
  // "aclora-lora help [COMMAND]" as a synonym of --help.
  if (!args.empty() && args[0] == "help") {
    std::vector<std::string> help_args(args.begin() + 1, args.end());
    help_args.push_back("--help");
    return cli::parse(app, help_args, out, err).value_or(cli::kExitSuccess);
  }
  if (const auto status = cli::parse(app, args, out, err))
    return *status;
  const CLI::App* command = cli::selected_subcommand(app);
  if (command == nullptr)
    return cli::report_usage_error(err, kProgram, "no command given");
  options.command = command->get_name();
  const std::string context = cli::command_name(app);
  try {
    if (options.command == "inspect")
      return inspect(options, out, err);
    if (options.command == "resize")
      return resize(options, out, err);
    if (options.command == "restart")
      return restart(options, out, err);
    return convert(options, out, err);
  } catch (const UsageError& error) {
    return cli::report_usage_error(err, context, error.what());
  } catch (const std::exception& error) {
    return cli::report_failure(err, kProgram, error.what());
  }
}

}  // namespace aclora::lora_tool
