// The command line shared by the programs (examples/cli/aclora_cli.hpp) and aclora-lora's use
// of it: strict numbers, options bound to their command, --help per command, --version,
// one-line errors with exit status 2 and no output file.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "aclora_cli.hpp"
#include "safetensors_test_support.hpp"
#include "tool_test_support.hpp"

namespace {

namespace cli = aclora::cli;
using aclora::test::fixture;
using aclora::test::run_tool;
using aclora::test::ScratchDir;

// The message of the UsageError `parse` throws.
template <class Parse>
std::string usage_error(Parse parse) {
  try {
    parse();
  } catch (const cli::UsageError& error) {
    return error.what();
  }
  ADD_FAILURE() << "accepted";
  return {};
}

}  // namespace

// Whole numbers: decimal digits only, the whole uint64 range, nothing through a double.
TEST(CommandLine, WholeNumbersAreStrict) {
  using u64 = std::uint64_t;
  EXPECT_EQ(cli::parse_whole<u64>("--seed", "0"), 0u);
  EXPECT_EQ(cli::parse_whole<u64>("--seed", "9007199254740993"), 9007199254740993ull);
  EXPECT_EQ(cli::parse_whole<u64>("--seed", "18446744073709551615"),
            std::numeric_limits<u64>::max());
  EXPECT_EQ(cli::parse_whole<int>("--epoch", "2147483647"), std::numeric_limits<int>::max());
  EXPECT_EQ(cli::parse_whole<unsigned>("--n", "007"), 7u);
  const std::pair<const char*, const char*> refused[] = {
      {"18446744073709551616", "too large"}, {"1e3", "not a whole number"},
      {"12abc", "not a whole number"},       {"-1", "negative"},
      {"+1", "not a whole number"},          {" 1", "not a whole number"},
      {"1 ", "not a whole number"},          {"0x10", "not a whole number"},
      {"1.0", "not a whole number"},         {"", "not a whole number"}};
  for (const auto& [text, problem] : refused) {
    const std::string message = usage_error([&] { cli::parse_whole<u64>("--seed", text); });
    EXPECT_NE(message.find(problem), std::string::npos) << text << ": " << message;
    EXPECT_EQ(message.rfind("--seed: '" + std::string(text) + "'", 0), 0u) << message;
  }
  EXPECT_NE(usage_error([] { cli::parse_whole<int>("--epoch", "2147483648"); }).find("too large"),
            std::string::npos);
  EXPECT_NE(usage_error([] {
              cli::parse_whole<unsigned>("--rank", "0", 1u);
            }).find("too small (expected at least 1)"),
            std::string::npos);
}

// Real numbers: finite decimals (exponents allowed), a trailing % where asked.
TEST(CommandLine, RealNumbersAreStrict) {
  EXPECT_EQ(cli::parse_real("--cfg", "0.5"), 0.5);
  EXPECT_EQ(cli::parse_real("--cfg", "-2"), -2.0);
  EXPECT_EQ(cli::parse_real("--loss", "1e-3"), 1e-3);
  EXPECT_EQ(cli::parse_real("--energy", "99%", true), 0.99);
  for (const char* text : {"nan", "inf", "-inf", "0x1p3", "1.5x", "", "1e999", "99%", " 1"})
    EXPECT_NE(usage_error([&] { cli::parse_real("--cfg", text); }).find("--cfg: '"),
              std::string::npos)
        << text;
}

// Options another command takes, unknown options and bad numbers are refused with one line
// naming the command and the option, exit status 2, and no output file; before, inspect
// --rank and restart --energy were silently ignored.
TEST(LoraToolCommandLine, OptionsAreBoundToTheirCommand) {
  ScratchDir dir;
  const auto out = (dir / "out.safetensors").string();
  const std::string kohya = fixture("kohya.safetensors");
  const std::vector<std::string> restart = {"restart", kohya,     "-o", out,        "--loss",
                                            "0.1",     "--epoch", "4",  "--epochs", "10"};
  const auto with = [](std::vector<std::string> args, std::vector<std::string> extra) {
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  const std::pair<std::vector<std::string>, const char*> cases[] = {
      {{"inspect", kohya, "--rank", "3"}, "aclora-lora inspect: unknown option '--rank'"},
      {with(restart, {"--energy", "0.9"}), "aclora-lora restart: unknown option '--energy'"},
      {{"convert", kohya, "-o", out, "--to", "kohya", "--threads", "2"}, "'--threads'"},
      {{"resize", kohya, "-o", out, "--energy", "0.9", "--seed", "3"}, "'--seed'"},
      {{"resize", kohya, "-o", out, "--rank", "1e3"}, "--rank: '1e3' is not a whole number"},
      {{"resize", kohya, "-o", out, "--rank", "12abc"}, "--rank: '12abc'"},
      {{"resize", kohya, "-o", out, "--rank", "-1"}, "--rank: '-1' is negative"},
      {{"resize", kohya, "-o", out, "--rank", "0"}, "--rank: '0' is too small"},
      {{"resize", kohya, "-o", out, "--rank", "2", "--energy", "0.5"}, "excludes"},
      {{"resize", kohya, "-o", out, "--rank", "2", "--epoch", "3"}, "--epoch requires --loss"},
      {{"resize", kohya, "-o", out, "--energy", "2"}, "--energy must lie in (0, 1]"},
      {{"resize", kohya, "-o", out, "--energy", "abc"}, "--energy: 'abc'"},
      {{"resize", kohya, "-o", out}, "exactly one rule"},
      {{"resize", kohya, "-o", out, "--rank", "2", "--dtype", "f8"}, "--dtype"},
      {with(restart, {"--seed", "18446744073709551616"}),
       "--seed: '18446744073709551616' is too large"},
      {{"convert", kohya, "-o", out}, "--to is required"},
      {{"convert", kohya, "-o", out, "--to", "kohya", "--uniform-alpha", "--per-module-alpha"},
       "excludes"},
      {{"frobnicate", kohya}, "aclora-lora: unknown command 'frobnicate'"},
      {{}, "aclora-lora: no command given"},
      {{"inspect"}, "FILE is required"},
      {{"inspect", kohya, "extra"}, "unexpected argument 'extra'"}};
  for (const auto& [args, message] : cases) {
    const auto result = run_tool(args);
    const std::string line = result.err;
    EXPECT_EQ(result.status, 2) << line;
    EXPECT_NE(line.find(message), std::string::npos) << line;
    EXPECT_EQ(std::count(line.begin(), line.end(), '\n'), 1) << line;
    EXPECT_NE(line.find("(see aclora-lora"), std::string::npos) << line;
    EXPECT_TRUE(result.out.empty()) << result.out;
    EXPECT_FALSE(std::filesystem::exists(out)) << line;
  }
}

// A seed takes the whole uint64 range and is printed and recorded exactly.
TEST(LoraToolCommandLine, SeedTakesTheWholeUint64Range) {
  ScratchDir dir;
  const auto out = dir / "out.safetensors";
  const auto result =
      run_tool({"restart", fixture("kohya.safetensors"), "-o", out.string(), "--loss", "0.1",
                "--epoch", "4", "--epochs", "10", "--seed", "18446744073709551615"});
  ASSERT_EQ(result.status, 0) << result.err;
  EXPECT_NE(result.out.find("seed 18446744073709551615)"), std::string::npos) << result.out;
  EXPECT_EQ(aclora::safetensors::Reader::open(out).metadata().at("aclora_restart_seed"),
            "18446744073709551615");
}

// --help per command (and "help COMMAND"), --version: exit status 0, text on the output stream.
TEST(LoraToolCommandLine, HelpAndVersion) {
  const auto version = run_tool({"--version"});
  EXPECT_EQ(version.status, 0);
  EXPECT_EQ(version.out, std::string("aclora-lora ") + ACLORA_VERSION + "\n");
  const auto top = run_tool({"--help"});
  EXPECT_EQ(top.status, 0);
  for (const char* command : {"inspect", "resize", "restart", "convert"})
    EXPECT_NE(top.out.find(command), std::string::npos) << command;
  const auto resize = run_tool({"resize", "--help"});
  EXPECT_EQ(resize.status, 0);
  EXPECT_NE(resize.out.find("--energy"), std::string::npos);
  EXPECT_NE(resize.out.find("sv_fro sqrt(P)"), std::string::npos);
  EXPECT_EQ(resize.out.find("--seed"), std::string::npos);  // restart's, not resize's
  EXPECT_EQ(run_tool({"help", "restart"}).out, run_tool({"restart", "--help"}).out);
  EXPECT_NE(run_tool({"restart", "-h"}).out.find("--seed"), std::string::npos);
}
