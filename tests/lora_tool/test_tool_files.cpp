// What aclora-lora writes: every tensor it rewrites in the file's dtype (alphas included),
// factors rounded to F16 once (scale folding before the one encode), and the resize recorded
// in the metadata.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "aclora/adapters/safetensors/half.hpp"
#include "safetensors_test_support.hpp"
#include "tool_test_support.hpp"

namespace {

namespace lora = aclora::lora;
namespace st = aclora::safetensors;
using aclora::test::fixture;
using aclora::test::ScratchDir;

// Runs a command that must succeed; returns its output path.
std::filesystem::path write_with(const ScratchDir& dir, const std::string& name,
                                 std::vector<std::string> args) {
  const auto out = dir / name;
  args.insert(args.begin() + 2, {"-o", out.string()});
  const auto result = aclora::test::run_tool(args);
  EXPECT_EQ(result.status, 0) << result.err;
  return out;
}

// The F16 bit patterns of a tensor (which must be F16).
std::vector<std::uint16_t> f16_bits(const st::TensorView& view) {
  EXPECT_EQ(view.dtype, st::Dtype::F16) << view.name;
  std::vector<std::uint16_t> bits(view.bytes.size() / 2);
  std::memcpy(bits.data(), view.bytes.data(), bits.size() * 2);
  return bits;
}

// The F32 values of a tensor (which must be F32), each rounded to F16 once.
std::vector<std::uint16_t> rounded_to_f16(const st::TensorView& view) {
  EXPECT_EQ(view.dtype, st::Dtype::F32) << view.name;
  std::vector<std::uint16_t> bits;
  for (const float value : st::convert_to<float>(view))
    bits.push_back(st::f32_to_f16(value));
  return bits;
}

}  // namespace

// The kohya fixture is an F16 file: restart (one alpha for all modules, the scale folded
// into lora_up) and convert --uniform-alpha rewrite factors and alphas, and every tensor of
// their output is F16 again, alphas included; a file converted to diffusers stays F16 too.
TEST(LoraToolFiles, RewrittenTensorsKeepTheFileDtype) {
  ScratchDir dir;
  const st::Reader source = st::Reader::open(fixture("kohya.safetensors"));
  for (const auto& view : source.tensors())
    ASSERT_EQ(view.dtype, st::Dtype::F16) << view.name;
  const std::vector<std::filesystem::path> outputs = {
      write_with(dir, "restart.safetensors",
                 {"restart", fixture("kohya.safetensors"), "--loss", "0.1", "--epoch", "4",
                  "--epochs", "10"}),
      write_with(dir, "uniform.safetensors",
                 {"convert", fixture("kohya.safetensors"), "--to", "kohya", "--uniform-alpha"}),
      write_with(dir, "diffusers.safetensors",
                 {"convert", fixture("kohya.safetensors"), "--to", "diffusers"})};
  for (const auto& path : outputs) {
    SCOPED_TRACE(path.filename().string());
    const st::Reader written = st::Reader::open(path);
    std::size_t alphas = 0;
    for (const auto& view : written.tensors()) {
      EXPECT_EQ(view.dtype, st::Dtype::F16) << view.name;
      alphas += view.name.ends_with(".alpha") ? 1 : 0;
    }
    if (path.filename() != "diffusers.safetensors")
      EXPECT_EQ(alphas, 125u);
    // One alpha for all modules in the kohya outputs, read back as written.
    const lora::LoraFile file = lora::open_lora(path);
    if (path.filename() != "diffusers.safetensors")
      for (const auto& module : file.modules)
        EXPECT_EQ(module.alpha, file.modules.front().alpha) << module.name;
  }
}

// resize --dtype f16 rounds each factor to F16 once: every F16 value equals the F32 result of
// the same resize (--dtype f32) rounded to F16 (modules that keep their rank keep their F16
// factors in both), for kohya output with one alpha (the scale
// differences folded into lora_up first) and for diffusers output (the scale folded into
// lora_B). Resized alphas (alpha K / r) differ per module, so the folding factors are not
// powers of two: rounding up to F16 before folding and again after would give other values
// for some elements, which the test shows as well.
TEST(LoraToolFiles, F16FactorsAreRoundedOnce) {
  ScratchDir dir;
  const std::vector<std::string> resize = {"resize", fixture("kohya.safetensors"), "--energy", "1"};
  const auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = resize;
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  for (const char* to : {"kohya", "diffusers"}) {
    SCOPED_TRACE(to);
    const std::string stem = to;
    const st::Reader f16 = st::Reader::open(
        write_with(dir, stem + "16.safetensors", with({"--to", to, "--dtype", "f16"})));
    const st::Reader f32 = st::Reader::open(
        write_with(dir, stem + "32.safetensors", with({"--to", to, "--dtype", "f32"})));
    ASSERT_EQ(f16.names(), f32.names());
    for (const auto& name : f16.names()) {
      if (name.ends_with(".alpha"))
        continue;
      const st::TensorView& exact = f32.tensor(name);
      if (exact.dtype == st::Dtype::F16)  // a module kept at its rank keeps its F16 factors
        EXPECT_EQ(f16_bits(f16.tensor(name)), f16_bits(exact)) << name;
      else
        EXPECT_EQ(f16_bits(f16.tensor(name)), rounded_to_f16(exact)) << name;
    }
  }
  // What two roundings would give: up rounded to F16 at its own alpha, then folded and
  // rounded again.
  const st::Reader per_module = st::Reader::open(
      write_with(dir, "per_module32.safetensors", with({"--dtype", "f32", "--per-module-alpha"})));
  const st::Reader once = st::Reader::open(dir / "kohya16.safetensors");
  const lora::LoraFile uniform = lora::open_lora(dir / "kohya16.safetensors");
  const lora::LoraFile unfolded = lora::open_lora(dir / "per_module32.safetensors");
  std::size_t differing = 0;
  for (std::size_t i = 0; i < unfolded.modules.size(); ++i) {
    const auto& module = unfolded.modules[i];
    const double factor = module.alpha / uniform.modules[i].alpha;
    const auto up = st::convert_to<float>(per_module.tensor(module.name + ".lora_up.weight"));
    const auto stored = f16_bits(once.tensor(module.name + ".lora_up.weight"));
    for (std::size_t j = 0; j < up.size(); ++j) {
      const float first = st::f16_to_f32(st::f32_to_f16(up[j]));
      differing += st::f32_to_f16(static_cast<float>(first * factor)) != stored[j] ? 1 : 0;
    }
  }
  EXPECT_GT(differing, 0u);
}

// A resized file records the rule, its parameter, the source ranks and the new ranks, in
// every output format.
TEST(LoraToolFiles, ResizeIsRecordedInTheMetadata) {
  ScratchDir dir;
  const lora::LoraFile source = lora::open_lora(fixture("kohya.safetensors"));
  std::map<std::string, std::size_t> source_ranks;
  for (const auto& module : source.modules)
    source_ranks[module.name] = module.rank;
  const std::pair<std::vector<std::string>, std::pair<const char*, const char*>> cases[] = {
      {{"--rank", "3"}, {"rank", "3"}},
      {{"--energy", "99%"}, {"energy", "0.99"}},
      {{"--rank", "2", "--to", "diffusers"}, {"rank", "2"}}};
  for (const auto& [extra, rule] : cases) {
    SCOPED_TRACE(rule.first);
    std::vector<std::string> args = {"resize", fixture("kohya.safetensors")};
    args.insert(args.end(), extra.begin(), extra.end());
    const auto path = write_with(dir, std::string(rule.first) + rule.second + ".safetensors", args);
    const st::Reader written = st::Reader::open(path);
    EXPECT_EQ(written.metadata().at("aclora_resize_rule"), rule.first);
    EXPECT_EQ(written.metadata().at("aclora_resize_parameter"), rule.second);
    EXPECT_EQ(aclora::test::module_numbers(written.metadata(), "aclora_source_ranks"),
              source_ranks);
    const lora::LoraFile file = lora::open_lora(path);
    std::map<std::string, std::size_t> ranks;
    for (const auto& module : file.modules)
      ranks[module.name] = module.rank;  // kohya names in every format
    EXPECT_EQ(aclora::test::module_numbers(written.metadata(), "aclora_module_ranks"), ranks);
  }
  // PEFT: every component's adapter_model.safetensors carries the entries.
  const auto folder = write_with(
      dir, "peft", {"resize", fixture("kohya.safetensors"), "--rank", "3", "--to", "peft"});
  for (const char* component : {"unet", "text_encoder", "text_encoder_2"}) {
    const st::Reader adapter = st::Reader::open(folder / component / "adapter_model.safetensors");
    EXPECT_EQ(adapter.metadata().at("aclora_resize_rule"), "rank") << component;
  }
}
