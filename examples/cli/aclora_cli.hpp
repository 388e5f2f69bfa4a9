/// @file aclora_cli.hpp
/// @brief What the command-line programs share (aclora-lora, aclora-sdxl, 01_restart_eigen):
/// strict number parsing, CLI11 set-up, --version, one-line errors and exit codes.
///
/// Errors are one line on the error stream: "PROGRAM: message (see PROGRAM --help)" for a
/// bad command line (exit status 2), "PROGRAM: error: message" for bad input or a failed
/// write (exit status 1). --help and --version print to the output stream (exit status 0).
#pragma once

#include <CLI/CLI.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <limits>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

#ifndef ACLORA_VERSION
#error "ACLORA_VERSION must be defined (the aclora_cli CMake target does it)"
#endif

namespace aclora::cli {

/// Exit statuses of every program.
inline constexpr int kExitSuccess = 0;  ///< done (also after --help and --version)
inline constexpr int kExitFailure = 1;  ///< bad input, failed write or failed check
inline constexpr int kExitUsage = 2;    ///< bad command line

/// A bad command line: reported as "PROGRAM: message (see PROGRAM --help)", exit status 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// "PROGRAM VERSION", the project version from CMake.
inline std::string version_line(std::string_view program) {
  return std::string(program) + " " + ACLORA_VERSION;
}

/// The text with line breaks replaced by spaces (errors stay on one line).
inline std::string one_line(std::string text) {
  std::replace_if(
      text.begin(), text.end(), [](char c) { return c == '\n' || c == '\r'; }, ' ');
  return text;
}

/// Parses all of `text` as a whole decimal number in [min, max]: digits 0-9 only, so no
/// sign, exponent, fraction, hex prefix, space or trailing character.
/// @throws UsageError naming `option` and the text when it is not such a number.
template <std::integral T>
T parse_whole(std::string_view option, std::string_view text, T min = 0,
              T max = std::numeric_limits<T>::max()) {
  const std::string quoted = "'" + std::string(text) + "'";
  const std::string range = max == std::numeric_limits<T>::max() && min != 0
                                ? "at least " + std::to_string(min)
                                : std::to_string(min) + " to " + std::to_string(max);
  if (!text.empty() && text.front() == '-' && text.size() > 1 &&
      std::all_of(text.begin() + 1, text.end(), [](char c) { return c >= '0' && c <= '9'; }))
    throw UsageError(std::string(option) + ": " + quoted + " is negative (expected " + range + ")");
  if (text.empty() ||
      !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; }))
    throw UsageError(std::string(option) + ": " + quoted +
                     " is not a whole number (digits 0-9 only, expected " + range + ")");
  T value{};
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error == std::errc::result_out_of_range || (error == std::errc() && value > max))
    throw UsageError(std::string(option) + ": " + quoted + " is too large (expected " + range +
                     ")");
  if (error != std::errc() || end != text.data() + text.size())
    throw UsageError(std::string(option) + ": " + quoted + " is not a whole number");
  if (value < min)
    throw UsageError(std::string(option) + ": " + quoted + " is too small (expected " + range +
                     ")");
  return value;
}

/// Parses all of `text` as a finite decimal number ("0.5", "-2", "1e-3"; no hex, inf or nan).
/// With `percent`, a trailing '%' divides by 100 ("99%" is 0.99).
/// @throws UsageError naming `option` and the text.
inline double parse_real(std::string_view option, std::string_view text, bool percent = false) {
  std::string_view body = text;
  const bool has_percent = percent && !body.empty() && body.back() == '%';
  if (has_percent)
    body.remove_suffix(1);
  double value = 0.0;
  const auto [end, error] =
      std::from_chars(body.data(), body.data() + body.size(), value, std::chars_format::general);
  if (body.empty() || error != std::errc() || end != body.data() + body.size() ||
      !std::isfinite(value))
    throw UsageError(std::string(option) + ": '" + std::string(text) + "' is not a finite number" +
                     (percent ? " (or percentage like 99%)" : ""));
  return has_percent ? value / 100.0 : value;
}

namespace detail {

template <class T>
struct optional_value {
  using type = T;
};
template <class T>
struct optional_value<std::optional<T>> {
  using type = T;
};

// Adds an option whose text `convert` turns into the target's value.
template <class Target, class Convert>
CLI::Option* add_converted(CLI::App& app, const std::string& flags, Target& target,
                           const std::string& help, const std::string& type_name, Convert convert) {
  CLI::Option* option = app.add_option_function<std::string>(
      flags,
      [&target, convert, name = flags.substr(flags.rfind(',') + 1)](const std::string& text) {
        try {
          target = convert(name, text);
        } catch (const UsageError& error) {
          throw CLI::ValidationError(error.what());
        }
      },
      help);
  option->type_name(type_name);
  return option;
}

}  // namespace detail

/// Adds an option taking a whole number (parse_whole) into `target` (an integer or a
/// std::optional of one), in [min, max].
template <class Target, class T = typename detail::optional_value<Target>::type>
CLI::Option* add_whole(CLI::App& app, const std::string& flags, Target& target,
                       const std::string& help, std::type_identity_t<T> min = 0,
                       std::type_identity_t<T> max = std::numeric_limits<T>::max(),
                       const std::string& type_name = "N") {
  return detail::add_converted(app, flags, target, help, type_name,
                               [min, max](const std::string& name, const std::string& text) {
                                 return parse_whole<T>(name, text, min, max);
                               });
}

/// Adds an option taking a finite number (parse_real) into `target` (a double or a
/// std::optional<double>); `percent` also accepts "99%".
template <class Target>
CLI::Option* add_real(CLI::App& app, const std::string& flags, Target& target,
                      const std::string& help, bool percent = false,
                      const std::string& type_name = "X") {
  return detail::add_converted(app, flags, target, help, type_name,
                               [percent](const std::string& name, const std::string& text) {
                                 return parse_real(name, text, percent);
                               });
}

/// Sets up a program's CLI11 application: --version, help text width, the last of a
/// repeated option wins. Call before adding subcommands (they copy these settings).
inline void configure(CLI::App& app, std::string_view program) {
  app.name(std::string(program));
  app.set_version_flag("--version", version_line(program), "print the version and exit");
  app.set_help_flag("-h,--help", "print this help and exit");
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.get_formatter()->column_width(26);
}

/// Writes "PROGRAM: message (see PROGRAM --help)" and returns kExitUsage. `program` may name
/// a subcommand too ("aclora-lora resize").
inline int report_usage_error(std::ostream& err, std::string_view program,
                              std::string_view message) {
  err << program << ": " << one_line(std::string(message)) << " (see " << program << " --help)\n";
  return kExitUsage;
}

/// Writes "PROGRAM: error: message" and returns kExitFailure.
inline int report_failure(std::ostream& err, std::string_view program, std::string_view message) {
  err << program << ": error: " << one_line(std::string(message)) << "\n";
  return kExitFailure;
}

/// Writes "PROGRAM: error: message" for an exception and returns kExitFailure. Only the
/// message's first line is kept: LibTorch's errors carry a C++ backtrace after it.
inline int report_exception(std::ostream& err, std::string_view program,
                            const std::exception& error) {
  std::string message = error.what();
  if (const auto newline = message.find('\n'); newline != std::string::npos)
    message.resize(newline);
  return report_failure(err, program, message);
}

/// The subcommand the command line selected, or null.
inline const CLI::App* selected_subcommand(const CLI::App& app) {
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; }))
    if (sub->parsed())
      return sub;
  return nullptr;
}

/// "PROGRAM" or "PROGRAM SUBCOMMAND", for messages.
inline std::string command_name(const CLI::App& app) {
  const CLI::App* sub = selected_subcommand(app);
  return sub == nullptr ? app.get_name() : app.get_name() + " " + sub->get_name();
}

/// Parses `args` (without the program name). Returns the exit status when the program
/// should stop: kExitSuccess after printing --help (of the selected subcommand) or
/// --version to `out`, kExitUsage after a one-line error on `err` (unknown option or
/// command, an option its subcommand does not take, a bad or missing value). Returns
/// nothing when the command line is valid.
inline std::optional<int> parse(CLI::App& app, const std::vector<std::string>& args,
                                std::ostream& out, std::ostream& err) {
  // Unknown arguments are collected, not thrown, so the message can name them plainly.
  app.allow_extras();
  for (CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; }))
    sub->allow_extras();
  std::vector<std::string> reversed(args.rbegin(), args.rend());  // CLI11 takes them reversed
  try {
    app.parse(reversed);
  } catch (const CLI::CallForHelp&) {
    out << app.help();
    return kExitSuccess;
  } catch (const CLI::CallForAllHelp&) {
    out << app.help("", CLI::AppFormatMode::All);
    return kExitSuccess;
  } catch (const CLI::CallForVersion& version) {
    out << version.what() << "\n";
    return kExitSuccess;
  } catch (const CLI::ParseError& error) {
    return report_usage_error(err, command_name(app), error.what());
  }
  const CLI::App* sub = selected_subcommand(app);
  std::vector<std::string> extras = app.remaining();
  if (sub != nullptr && extras.empty())
    extras = sub->remaining();
  if (!extras.empty()) {
    const std::string& first = extras.front();
    std::string message;
    if (sub == nullptr && !app.get_subcommands([](const CLI::App*) { return true; }).empty() &&
        first.rfind('-', 0) != 0)
      message = "unknown command '" + first + "'";
    else if (first.size() > 1 && first.front() == '-')
      message = "unknown option '" + first + "'" +
                (sub != nullptr ? " (" + sub->get_name() + " does not take it)" : "");
    else
      message = "unexpected argument '" + first + "'";
    return report_usage_error(err, command_name(app), message);
  }
  return std::nullopt;
}

}  // namespace aclora::cli
