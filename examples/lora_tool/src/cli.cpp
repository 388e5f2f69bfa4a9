// aclora-lora argument parsing and error reporting.
#include <charconv>
#include <cmath>
#include <system_error>

#include "aclora/error.hpp"
#include "commands.hpp"
#include "lora_tool/tool.hpp"

namespace aclora::lora_tool {

std::string usage() {
  return "usage: aclora-lora COMMAND FILE [options]\n"
         "  inspect FILE [--json]\n"
         "      format, base model, modules, rank and alpha per module, ranks holding\n"
         "      90 / 99 / 99.9% of each dW's energy, parameters and bytes\n"
         "  resize FILE -o OUT (--rank N | --energy P | --loss L --epoch E --epochs N)\n"
         "         [--to kohya|diffusers|peft] [--dtype f32|f16|bf16|keep]\n"
         "      new rank per module from the exact SVD of dW = up @ down; scale kept\n"
         "  restart FILE -o OUT --loss L --epoch E --epochs N [--seed S] [--to FORMAT]\n"
         "      one AC-LoRA RESTART of the factors (truncation + noise), as in training\n"
         "  convert FILE -o OUT --to kohya|diffusers|peft\n"
         "common: --threads T (0 = all cores); --uniform-alpha | --per-module-alpha (kohya\n"
         "output: one alpha for all modules with the scale differences folded into lora_up,\n"
         "since diffusers 0.42 mis-scales kohya files whose alpha varies per module; default\n"
         "uniform, except kohya -> kohya conversion, which keeps the bytes).\n"
         "FILE may be a PEFT adapter folder; PEFT output\n"
         "is a folder with one adapter per component (unet/, text_encoder/, text_encoder_2/).\n";
}

namespace {

template <class T>
T parse_number(const std::string& flag, const std::string& text) {
  T value{};
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec != std::errc() || ptr != end)
    throw UsageError(flag + ": '" + text + "' is not a valid number");
  return value;
}

double parse_real(const std::string& flag, const std::string& text) {
  std::string body = text;
  bool percent = false;
  if (!body.empty() && body.back() == '%') {
    percent = true;
    body.pop_back();
  }
  std::size_t used = 0;
  double value = 0.0;
  try {
    value = std::stod(body, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != body.size() || !std::isfinite(value))
    throw UsageError(flag + ": '" + text + "' is not a valid number");
  return percent ? value / 100.0 : value;
}

Options parse(const std::vector<std::string>& args) {
  if (args.empty())
    throw UsageError("no command given");
  Options options;
  options.command = args[0];
  if (options.command != "inspect" && options.command != "resize" && options.command != "restart" &&
      options.command != "convert")
    throw UsageError("unknown command '" + options.command + "'");
  bool have_input = false;
  for (std::size_t i = 1; i < args.size(); ++i) {
    const std::string& arg = args[i];
    const auto value = [&]() -> const std::string& {
      if (i + 1 >= args.size())
        throw UsageError(arg + " needs a value");
      return args[++i];
    };
    if (arg == "-o" || arg == "--output")
      options.output = value();
    else if (arg == "--uniform-alpha")
      options.uniform_alpha = true;
    else if (arg == "--per-module-alpha")
      options.uniform_alpha = false;
    else if (arg == "--json")
      options.json = true;
    else if (arg == "--rank")
      options.rank = parse_number<std::size_t>(arg, value());
    else if (arg == "--energy")
      options.energy = parse_real(arg, value());
    else if (arg == "--loss")
      options.loss = parse_real(arg, value());
    else if (arg == "--epoch")
      options.epoch = parse_number<int>(arg, value());
    else if (arg == "--epochs")
      options.epochs = parse_number<int>(arg, value());
    else if (arg == "--seed")
      options.seed = parse_number<std::uint64_t>(arg, value());
    else if (arg == "--to")
      options.to = value();
    else if (arg == "--dtype")
      options.dtype = value();
    else if (arg == "--threads")
      options.threads = parse_number<unsigned>(arg, value());
    else if (!arg.empty() && arg[0] == '-')
      throw UsageError("unknown option '" + arg + "'");
    else if (!have_input) {
      options.input = arg;
      have_input = true;
    } else
      throw UsageError("unexpected argument '" + arg + "'");
  }
  if (!have_input)
    throw UsageError(options.command + " needs a FILE");
  return options;
}

// Keeps error messages on one line.
std::string one_line(std::string text) {
  for (char& c : text)
    if (c == '\n' || c == '\r')
      c = ' ';
  return text;
}

}  // namespace

int run(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  if (!args.empty() && (args[0] == "-h" || args[0] == "--help" || args[0] == "help")) {
    out << usage();
    return 0;
  }
  try {
    const Options options = parse(args);
    if (options.command == "inspect")
      return inspect(options, out, err);
    if (options.command == "resize")
      return resize(options, out, err);
    if (options.command == "restart")
      return restart(options, out, err);
    return convert(options, out, err);
  } catch (const UsageError& error) {
    err << "aclora-lora: usage error: " << one_line(error.what()) << "\n" << usage();
    return 2;
  } catch (const lora::Error& error) {
    err << "aclora-lora: error: " << one_line(error.what()) << "\n";
  } catch (const aclora::Error& error) {
    err << "aclora-lora: error: " << one_line(error.what()) << "\n";
  } catch (const std::exception& error) {
    err << "aclora-lora: error: " << one_line(error.what()) << "\n";
  }
  return 1;
}

}  // namespace aclora::lora_tool
