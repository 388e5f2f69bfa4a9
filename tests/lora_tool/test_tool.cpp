// aclora-lora commands on the committed fixtures, and every bad-input case: one-line
// error, non-zero exit, no output left behind, input unchanged.
#include <gtest/gtest.h>

#include <Eigen/SVD>

#include <algorithm>
#include <cmath>
#include <map>

#include "safetensors_test_support.hpp"
#include "tool_test_support.hpp"

namespace {

namespace lora = aclora::lora;
namespace st = aclora::safetensors;
using aclora::test::fixture;
using aclora::test::lora_fixtures;
using aclora::test::read_all;
using aclora::test::ScratchDir;
using aclora::test::true_ranks;
using aclora::test::write_all;
using Result = aclora::test::ToolResult;

Result run(const std::vector<std::string>& args) {
  return aclora::test::run_tool(args);
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

// The strict rule's K for p from the singular values of the dense update in double (an
// SVD independent of the tool's product analysis): the number of components whose cumulative
// energy stays below p of the total, clamped to [1, r]. `margin` gets the smallest distance of
// a cumulative share from p (how far the case is from a tie).
std::size_t strict_rank(const std::vector<double>& dw, std::size_t out, std::size_t in,
                        std::size_t stored_rank, double p, double& margin) {
  const Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>
      matrix(dw.data(), static_cast<Eigen::Index>(out), static_cast<Eigen::Index>(in));
  const Eigen::VectorXd values = Eigen::BDCSVD<Eigen::MatrixXd>(matrix).singularValues();
  const double total = values.squaredNorm();
  double cumulative = 0.0;
  std::size_t k = 0;
  for (Eigen::Index i = 0; i < values.size(); ++i) {
    cumulative += values[i] * values[i];
    margin = std::min(margin, std::abs(cumulative / total - p));
    if (cumulative < p * total)
      ++k;
  }
  return std::clamp<std::size_t>(k, 1, stored_rank);
}

// The AC-LoRA rule: p = 1 - L^(1 + e / (N - 1)) (L = 0.05: 0.9975 at e = 9 of N = 10, 0.95
// at e = 0), recorded in the file; K keeps the components whose cumulative energy stays
// strictly below p of the total (restart-contract.md), at least 1. At p = 0.9975 that is the
// planted rank k minus one for every module: the cumulative share reaches 1 (> p) exactly
// at component k, whose own share is at least 4.4% (> 1 - p), so the first k - 1 stay below
// p. At both p each module's K equals the rule applied to an SVD of the dense reference
// update, every cumulative share at least 1e-3 away from p (so float rounding cannot move K),
// and at p = 0.95 some modules keep fewer components than at p = 0.9975.
TEST(LoraTool, ResizeWithTheAcLoraRule) {
  const st::Reader expected = st::Reader::open(lora_fixtures() / "expected_lora.safetensors");
  const auto ranks = true_ranks();
  const lora::LoraFile source = lora::open_lora(fixture("kohya.safetensors"));
  for (const auto& [epoch, p] : {std::pair{9, 0.9975}, std::pair{0, 0.95}}) {
    SCOPED_TRACE(p);
    ScratchDir dir;
    const auto out = dir / "ac.safetensors";
    const Result result = run({"resize", fixture("kohya.safetensors"), "-o", out.string(), "--loss",
                               "0.05", "--epoch", std::to_string(epoch), "--epochs", "10"});
    ASSERT_EQ(result.status, 0) << result.err;
    EXPECT_NE(result.out.find("AC-LoRA, p = "), std::string::npos);
    const lora::LoraFile resized = lora::open_lora(out);
    EXPECT_EQ(resized.metadata.at("aclora_resize_rule"), "ac-lora");
    EXPECT_NEAR(std::stod(resized.metadata.at("aclora_resize_parameter")), p, 1e-12);
    ASSERT_EQ(resized.modules.size(), source.modules.size());
    double margin = 1.0;
    std::size_t below_planted_minus_one = 0;
    for (std::size_t i = 0; i < resized.modules.size(); ++i) {
      const auto& module = resized.modules[i];
      const auto& original = source.modules[i];
      ASSERT_EQ(module.name, original.name);
      const std::size_t planted = ranks.at(module.name);
      if (epoch == 9)
        EXPECT_EQ(module.rank, std::max<std::size_t>(1, planted - 1)) << module.name;
      else
        below_planted_minus_one += module.rank < std::max<std::size_t>(1, planted - 1) ? 1 : 0;
      EXPECT_EQ(module.rank, strict_rank(expected.to_f64(module.name), original.out_features,
                                         original.in_features, original.rank, p, margin))
          << module.name;
    }
    EXPECT_GT(margin, 1e-3);
    if (epoch == 0)
      EXPECT_GT(below_planted_minus_one, 0u);
  }
}

// restart is reproducible: the same seed gives the same bytes in every tensor (names, dtype,
// shape, data). Another seed gives other noise: every module whose kept rank K (recorded in the
// file) is below its allocated rank has a factor with other bytes; the others are identical.
TEST(LoraTool, RestartIsReproducible) {
  ScratchDir dir;
  const auto restart = [&](const char* name, const char* seed) {
    const auto out = dir / name;
    const Result result = run({"restart", fixture("kohya.safetensors"), "-o", out.string(),
                               "--loss", "0.1", "--epoch", "4", "--epochs", "10", "--seed", seed});
    EXPECT_EQ(result.status, 0) << result.err;
    return out;
  };
  const st::Reader a = st::Reader::open(restart("a.safetensors", "7"));
  const st::Reader b = st::Reader::open(restart("b.safetensors", "7"));
  const st::Reader c = st::Reader::open(restart("c.safetensors", "8"));
  const auto same_bytes = [](const st::TensorView& x, const st::TensorView& y) {
    return x.dtype == y.dtype && x.shape == y.shape &&
           std::equal(x.bytes.begin(), x.bytes.end(), y.bytes.begin(), y.bytes.end());
  };
  ASSERT_EQ(a.names(), b.names());
  for (const auto& name : a.names())
    EXPECT_TRUE(same_bytes(a.tensor(name), b.tensor(name))) << name;

  const lora::LoraFile source = lora::open_lora(fixture("kohya.safetensors"));
  const auto kept = aclora::test::module_numbers(a.metadata(), "aclora_module_ranks");
  ASSERT_EQ(a.names(), c.names());
  std::size_t restarted = 0;
  for (const auto& module : source.modules) {
    SCOPED_TRACE(module.name);
    ASSERT_EQ(kept.count(module.name), 1u);
    const std::string down = module.name + ".lora_down.weight";
    const std::string up = module.name + ".lora_up.weight";
    const bool differ =
        !same_bytes(a.tensor(down), c.tensor(down)) || !same_bytes(a.tensor(up), c.tensor(up));
    EXPECT_EQ(differ, kept.at(module.name) < module.rank);
    restarted += kept.at(module.name) < module.rank ? 1 : 0;
  }
  EXPECT_GT(restarted, 0u);
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
