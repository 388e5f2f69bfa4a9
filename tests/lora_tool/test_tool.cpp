// aclora-lora commands on the committed fixtures, and every bad-input case: one-line
// error, non-zero exit, no output left behind, input unchanged.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <map>
#include <sstream>

#include "aclora/adapters/json/parse.hpp"
#include "lora_test_support.hpp"
#include "lora_tool/tool.hpp"
#include "safetensors_test_support.hpp"

namespace {

namespace lora = aclora::lora;
namespace st = aclora::safetensors;
using aclora::test::lora_fixtures;
using aclora::test::ScratchDir;

struct Result {
  int status = 0;
  std::string out;
  std::string err;
};

Result run(std::vector<std::string> args) {
  std::ostringstream out, err;
  Result result;
  result.status = aclora::lora_tool::run(args, out, err);
  result.out = out.str();
  result.err = err.str();
  return result;
}

std::string fixture(const char* name) {
  return (lora_fixtures() / name).string();
}

std::string read_all(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_all(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

// The planted true rank of every module, by kohya key (expected.json).
std::map<std::string, std::size_t> true_ranks() {
  const auto root = aclora::json::parse(read_all(lora_fixtures() / "expected.json"));
  std::map<std::string, std::size_t> ranks;
  for (const auto& module : root.find("lora")->find("modules")->as_array())
    ranks[module.find("kohya_key")->as_string()] =
        static_cast<std::size_t>(module.find("true_rank")->as_int());
  return ranks;
}

// inspect succeeds on every fixture layout and names the format; --json is valid JSON with
// the module count.
TEST(LoraTool, InspectEveryFixture) {
  const std::pair<const char*, const char*> cases[] = {{"kohya.safetensors", "kohya"},
                                                       {"diffusers.safetensors", "diffusers"},
                                                       {"diffusers_old.safetensors", "diffusers"},
                                                       {"peft", "peft"},
                                                       {"peft/unet", "peft"},
                                                       {"lokr.safetensors", "lycoris"},
                                                       {"loha.safetensors", "lycoris"}};
  for (const auto& [name, format] : cases) {
    SCOPED_TRACE(name);
    const Result text = run({"inspect", fixture(name)});
    ASSERT_EQ(text.status, 0) << text.err;
    EXPECT_NE(text.out.find(std::string("format:      ") + format), std::string::npos);
    const Result json = run({"inspect", fixture(name), "--json"});
    ASSERT_EQ(json.status, 0) << json.err;
    const auto root = aclora::json::parse(json.out);
    EXPECT_EQ(root.find("format")->as_string(), format);
    const auto modules =
        root.find("module_count")->as_int() + root.find("lycoris_module_count")->as_int();
    EXPECT_EQ(modules, std::string(name) == "peft/unet"
                           ? 65
                           : (std::string(format) == "lycoris" ? 12 : 125));
  }
}

// inspect's 99.9% energy rank of every planted module is its true rank, and the base
// model is recognised from the metadata.
TEST(LoraTool, InspectFindsThePlantedRanks) {
  const Result json = run({"inspect", fixture("kohya.safetensors"), "--json"});
  ASSERT_EQ(json.status, 0) << json.err;
  const auto root = aclora::json::parse(json.out);
  EXPECT_EQ(root.find("base_model")->as_string().rfind("SDXL", 0), 0u);
  const auto ranks = true_ranks();
  for (const auto& module : root.find("modules")->as_array()) {
    const std::string name = module.find("name")->as_string();
    EXPECT_EQ(static_cast<std::size_t>(module.find("numerical_rank")->as_int()), ranks.at(name))
        << name;
    EXPECT_LE(static_cast<std::size_t>(module.find("rank_999")->as_int()), ranks.at(name)) << name;
  }
}

// resize --energy 1 on every LoRA layout: each module's new rank is its planted rank, the
// merged update changes by less than 1e-5 relative, the scale is kept and the file shrinks.
TEST(LoraTool, ResizeToTheTrueRanksKeepsEveryUpdate) {
  const st::Reader expected = st::Reader::open(lora_fixtures() / "expected_lora.safetensors");
  const auto ranks = true_ranks();
  for (const char* name : {"kohya.safetensors", "diffusers.safetensors", "peft"}) {
    SCOPED_TRACE(name);
    ScratchDir dir;
    const bool folder = std::string(name) == "peft";
    const auto out = dir / (folder ? "out" : "out.safetensors");
    const Result result = run({"resize", fixture(name), "-o", out.string(), "--energy", "1"});
    ASSERT_EQ(result.status, 0) << result.err;
    EXPECT_NE(result.out.find("parameters:"), std::string::npos);
    const lora::LoraFile source = lora::open_lora(fixture(name));
    const lora::LoraFile resized = lora::open_lora(out);
    ASSERT_EQ(resized.modules.size(), 125u);
    EXPECT_LT(resized.parameters(), source.parameters());
    for (const auto& module : resized.modules) {
      EXPECT_EQ(module.rank, ranks.at(module.name)) << module.name;
      const auto merged = aclora::test::merged_update(module);
      EXPECT_LT(aclora::test::relative_difference(merged, expected.to_f64(module.name)), 1e-5)
          << module.name;
    }
  }
}

// resize --rank N caps every module at N; modules whose true rank is <= N keep their update.
TEST(LoraTool, ResizeToAFixedRank) {
  ScratchDir dir;
  const auto out = dir / "r2.safetensors";
  const Result result =
      run({"resize", fixture("kohya.safetensors"), "-o", out.string(), "--rank", "3"});
  ASSERT_EQ(result.status, 0) << result.err;
  const st::Reader expected = st::Reader::open(lora_fixtures() / "expected_lora.safetensors");
  const auto ranks = true_ranks();
  const lora::LoraFile resized = lora::open_lora(out);
  for (const auto& module : resized.modules) {
    EXPECT_LE(module.rank, 3u);
    const double error = aclora::test::relative_difference(aclora::test::merged_update(module),
                                                           expected.to_f64(module.name));
    if (ranks.at(module.name) <= 3)
      EXPECT_LT(error, 1e-5) << module.name;
    else
      EXPECT_GT(error, 1e-3) << module.name;  // a component was really dropped
  }
}

// The AC-LoRA rule picks ranks in [1, r] from each dW's spectrum.
TEST(LoraTool, ResizeWithTheAcLoraRule) {
  ScratchDir dir;
  const auto out = dir / "ac.safetensors";
  const Result result = run({"resize", fixture("kohya.safetensors"), "-o", out.string(), "--loss",
                             "0.05", "--epoch", "9", "--epochs", "10"});
  ASSERT_EQ(result.status, 0) << result.err;
  EXPECT_NE(result.out.find("AC-LoRA, p = "), std::string::npos);
  for (const auto& module : lora::open_lora(out).modules) {
    EXPECT_GE(module.rank, 1u);
    EXPECT_LE(module.rank, 8u);
  }
}

// restart keeps every module's allocated rank, changes the factors, and is reproducible
// for a given seed.
TEST(LoraTool, RestartIsReproducible) {
  ScratchDir dir;
  const auto first = dir / "a.safetensors";
  const auto second = dir / "b.safetensors";
  for (const auto& out : {first, second}) {
    const Result result = run({"restart", fixture("kohya.safetensors"), "-o", out.string(),
                               "--loss", "0.1", "--epoch", "4", "--epochs", "10", "--seed", "7"});
    ASSERT_EQ(result.status, 0) << result.err;
  }
  const lora::LoraFile a = lora::open_lora(first);
  const lora::LoraFile b = lora::open_lora(second);
  const lora::LoraFile source = lora::open_lora(fixture("kohya.safetensors"));
  ASSERT_EQ(a.modules.size(), source.modules.size());
  bool changed = false;
  for (std::size_t i = 0; i < a.modules.size(); ++i) {
    EXPECT_EQ(a.modules[i].rank, source.modules[i].rank);
    EXPECT_TRUE(std::equal(a.modules[i].down.bytes.begin(), a.modules[i].down.bytes.end(),
                           b.modules[i].down.bytes.begin(), b.modules[i].down.bytes.end()));
    changed = changed ||
              !std::equal(a.modules[i].up.bytes.begin(), a.modules[i].up.bytes.end(),
                          source.modules[i].up.bytes.begin(), source.modules[i].up.bytes.end());
  }
  EXPECT_TRUE(changed);
}

// convert writes every target layout, and the result reads back as that layout.
TEST(LoraTool, ConvertToEveryFormat) {
  for (const char* to : {"kohya", "diffusers", "peft"}) {
    ScratchDir dir;
    const auto out = dir / (std::string(to) == "peft" ? "out" : "out.safetensors");
    const Result result =
        run({"convert", fixture("kohya.safetensors"), "-o", out.string(), "--to", to});
    ASSERT_EQ(result.status, 0) << result.err;
    EXPECT_EQ(lora::format_name(lora::open_lora(out).format), to);
  }
}

// --uniform-alpha writes one alpha for every kohya module, the scale folded into lora_up:
// the merged updates are unchanged (planted scales are powers of two, so exactly).
TEST(LoraTool, UniformAlphaKeepsEveryUpdate) {
  ScratchDir dir;
  const auto out = dir / "u.safetensors";
  const Result result = run({"resize", fixture("kohya.safetensors"), "-o", out.string(), "--energy",
                             "1", "--uniform-alpha"});
  ASSERT_EQ(result.status, 0) << result.err;
  const st::Reader expected = st::Reader::open(lora_fixtures() / "expected_lora.safetensors");
  const lora::LoraFile resized = lora::open_lora(out);
  ASSERT_FALSE(resized.modules.empty());
  for (const auto& module : resized.modules) {
    EXPECT_EQ(module.alpha, resized.modules.front().alpha) << module.name;
    EXPECT_LT(aclora::test::relative_difference(aclora::test::merged_update(module),
                                                expected.to_f64(module.name)),
              1e-5)
        << module.name;
  }
  EXPECT_EQ(resized.metadata.at("ss_network_dim"), "Dynamic");
}

// Expects a one-line error naming `problem`, exit status 1, nothing at `out`.
void expect_failure(const Result& result, const std::string& problem,
                    const std::filesystem::path& out) {
  EXPECT_EQ(result.status, 1);
  EXPECT_EQ(result.err.rfind("aclora-lora: error: ", 0), 0u) << result.err;
  EXPECT_EQ(std::count(result.err.begin(), result.err.end(), '\n'), 1) << result.err;
  EXPECT_NE(result.err.find(problem), std::string::npos) << result.err;
  EXPECT_FALSE(std::filesystem::exists(out));
}

// Builds the bad input files of the issue in `dir`.
std::map<std::string, std::pair<std::filesystem::path, std::string>> bad_inputs(
    const ScratchDir& dir) {
  std::map<std::string, std::pair<std::filesystem::path, std::string>> cases;
  cases["missing"] = {dir / "missing.safetensors", "no such file"};
  write_all(dir / "text.safetensors", "this is not a safetensors file at all\n");
  cases["not safetensors"] = {dir / "text.safetensors", "text.safetensors"};
  const std::string kohya = read_all(fixture("kohya.safetensors"));
  write_all(dir / "truncated.safetensors", kohya.substr(0, kohya.size() / 2));
  cases["truncated"] = {dir / "truncated.safetensors", "truncated.safetensors"};
  std::string corrupt = kohya;
  corrupt[8] = 'x';  // the header no longer starts a JSON object
  write_all(dir / "corrupt.safetensors", corrupt);
  cases["corrupt header"] = {dir / "corrupt.safetensors", "corrupt.safetensors"};
  {
    st::Writer writer;
    writer.add("model.diffusion_model.out.2.weight", {2, 2}, std::vector<float>(4, 1.f));
    writer.write(dir / "unknown.safetensors");
  }
  cases["unknown format"] = {dir / "unknown.safetensors", "unknown LoRA format"};
  {
    st::Writer writer;
    std::vector<float> down(8, 0.5f);
    down[3] = std::numeric_limits<float>::quiet_NaN();
    writer.add("lora_unet_middle_block_1_proj_in.lora_down.weight", {2, 4}, down);
    writer.add("lora_unet_middle_block_1_proj_in.lora_up.weight", {4, 2},
               std::vector<float>(8, 1.f));
    writer.write(dir / "nan.safetensors");
  }
  cases["nan"] = {dir / "nan.safetensors", "NaN"};
  return cases;
}

// Every bad input fails every command the same way, and the input is left unchanged.
TEST(LoraTool, BadInputsFailCleanly) {
  ScratchDir dir;
  for (const auto& [what, input] : bad_inputs(dir)) {
    const auto& [path, problem] = input;
    const std::string before = std::filesystem::exists(path) ? read_all(path) : "";
    for (const std::vector<std::string>& extra :
         {std::vector<std::string>{"inspect"},
          {"resize", "--rank", "1"},
          {"convert", "--to", "diffusers"},
          {"restart", "--loss", "0.1", "--epoch", "1", "--epochs", "10"}}) {
      SCOPED_TRACE(what + " / " + extra[0]);
      const auto out = dir / "out.safetensors";
      std::vector<std::string> args = {extra[0], path.string()};
      if (extra[0] != "inspect") {
        args.push_back("-o");
        args.push_back(out.string());
      }
      args.insert(args.end(), extra.begin() + 1, extra.end());
      expect_failure(run(args), problem, out);
      if (std::filesystem::exists(path))
        EXPECT_EQ(read_all(path), before);
    }
  }
  // No temporary file was left in the folder either.
  for (const auto& entry : std::filesystem::directory_iterator(dir.path()))
    EXPECT_EQ(entry.path().filename().string().find(".tmp"), std::string::npos) << entry.path();
}

// An output that cannot be written (missing folder, a file as folder, the input itself)
// fails before any work, leaving nothing and the input unchanged.
TEST(LoraTool, UnwritableOutputFailsCleanly) {
  ScratchDir dir;
  const auto input = dir / "in.safetensors";
  write_all(input, read_all(fixture("kohya.safetensors")));
  const std::string before = read_all(input);
  expect_failure(
      run({"resize", input.string(), "-o", (dir / "no" / "x.safetensors").string(), "--rank", "2"}),
      "does not exist", dir / "no" / "x.safetensors");
  expect_failure(
      run({"convert", input.string(), "-o", (input / "x.safetensors").string(), "--to", "kohya"}),
      "does not exist", input / "x.safetensors");
  const Result same = run({"convert", input.string(), "-o", input.string(), "--to", "kohya"});
  EXPECT_EQ(same.status, 1);
  EXPECT_NE(same.err.find("output is the input"), std::string::npos);
  EXPECT_EQ(read_all(input), before);
}

// LyCORIS files are inspected but not resized, converted or restarted.
TEST(LoraTool, LycorisIsInspectOnly) {
  ScratchDir dir;
  expect_failure(run({"resize", fixture("lokr.safetensors"), "-o", (dir / "o.safetensors").string(),
                      "--rank", "2"}),
                 "LyCORIS", dir / "o.safetensors");
}

// Usage errors exit with status 2 and print the usage.
TEST(LoraTool, UsageErrors) {
  EXPECT_EQ(run({}).status, 2);
  EXPECT_EQ(run({"frobnicate", "x"}).status, 2);
  EXPECT_EQ(run({"resize", fixture("kohya.safetensors"), "-o", "/tmp/x.safetensors"}).status, 2);
  EXPECT_EQ(
      run({"resize", fixture("kohya.safetensors"), "-o", "/tmp/x.safetensors", "--energy", "2"})
          .status,
      2);
  EXPECT_EQ(run({"convert", fixture("kohya.safetensors"), "-o", "/tmp/x.safetensors"}).status, 2);
  EXPECT_EQ(run({"inspect", fixture("kohya.safetensors"), "--rank", "abc"}).status, 2);
  EXPECT_FALSE(std::filesystem::exists("/tmp/x.safetensors"));
  EXPECT_EQ(run({"--help"}).status, 0);
}

}  // namespace
