// LoRA writers: read -> write -> read is bit-exact for unchanged tensors, and every format
// converts to every other with the same merged updates.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <string>

#include "lora_test_support.hpp"
#include "safetensors_test_support.hpp"

namespace {

namespace lora = aclora::lora;
using aclora::test::lora_fixtures;

std::vector<lora::OutputModule> unchanged(const lora::LoraFile& file) {
  std::vector<lora::OutputModule> out;
  for (const auto& module : file.modules)
    out.push_back(lora::unchanged_module(module));
  return out;
}

void write_as(const std::string& format, const lora::LoraFile& file,
              const std::filesystem::path& path) {
  const auto modules = unchanged(file);
  if (format == "kohya")
    lora::write_kohya(modules, lora::kohya_metadata(file.metadata, modules, "t", true), path);
  else if (format == "diffusers")
    lora::write_diffusers(modules, path);
  else
    lora::write_peft(modules, path);
}

bool same_bytes(const aclora::safetensors::TensorView& a,
                const aclora::safetensors::TensorView& b) {
  return a.dtype == b.dtype && a.shape == b.shape &&
         std::equal(a.bytes.begin(), a.bytes.end(), b.bytes.begin(), b.bytes.end());
}

std::map<std::string, const lora::LoraModule*> by_name(const lora::LoraFile& file) {
  std::map<std::string, const lora::LoraModule*> index;
  for (const auto& module : file.modules)
    index[module.name] = &module;
  return index;
}

struct RoundTrip {
  const char* fixture;
  const char* format;
};

// Writing a fixture back in its own format and reading it gives the same modules with
// byte-identical factors (and alpha tensors for kohya) and the same alphas.
TEST(LoraRoundTrip, SameFormatIsBitExact) {
  const RoundTrip cases[] = {{"kohya.safetensors", "kohya"},
                             {"kohya_const_alpha.safetensors", "kohya"},
                             {"diffusers.safetensors", "diffusers"},
                             {"peft", "peft"}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.fixture);
    aclora::test::ScratchDir dir;
    const lora::LoraFile source = lora::open_lora(lora_fixtures() / c.fixture);
    const auto path =
        dir / (std::string("out") + (std::string(c.format) == "peft" ? "" : ".safetensors"));
    write_as(c.format, source, path);
    const lora::LoraFile back = lora::open_lora(path);
    EXPECT_EQ(back.format, source.format);
    ASSERT_EQ(back.modules.size(), source.modules.size());
    EXPECT_TRUE(back.unknown_keys.empty());
    const auto index = by_name(back);
    for (const auto& module : source.modules) {
      const auto found = index.find(module.name);
      ASSERT_NE(found, index.end()) << module.name;
      const lora::LoraModule& other = *found->second;
      EXPECT_TRUE(same_bytes(module.down, other.down)) << module.name;
      EXPECT_TRUE(same_bytes(module.up, other.up)) << module.name;
      EXPECT_EQ(module.alpha, other.alpha) << module.name;
      EXPECT_EQ(module.path, other.path);
      if (module.alpha_tensor) {
        ASSERT_TRUE(other.alpha_tensor);
        EXPECT_TRUE(same_bytes(*module.alpha_tensor, *other.alpha_tensor));
      }
    }
  }
}

// Every fixture converts to kohya, diffusers and PEFT with merged updates equal to the
// source's (scales folded or carried in metadata, names mapped).
TEST(LoraRoundTrip, EveryFormatConvertsToEveryFormat) {
  for (const char* fixture :
       {"kohya.safetensors", "diffusers.safetensors", "diffusers_old.safetensors", "peft"}) {
    const lora::LoraFile source = lora::open_lora(lora_fixtures() / fixture);
    for (const char* format : {"kohya", "diffusers", "peft"}) {
      SCOPED_TRACE(std::string(fixture) + " -> " + format);
      aclora::test::ScratchDir dir;
      const auto path = dir / (std::string(format) == "peft" ? "out" : "out.safetensors");
      write_as(format, source, path);
      const lora::LoraFile back = lora::open_lora(path);
      EXPECT_EQ(lora::format_name(back.format), format);
      ASSERT_EQ(back.modules.size(), source.modules.size());
      const auto index = by_name(back);
      for (const auto& module : source.modules) {
        const auto found = index.find(module.name);
        ASSERT_NE(found, index.end()) << module.name;
        EXPECT_LT(aclora::test::relative_difference(aclora::test::merged_update(*found->second),
                                                    aclora::test::merged_update(module)),
                  1e-6)
            << module.name;
      }
    }
  }
}

// kohya output carries the ss_* / modelspec metadata tools expect, with "Dynamic" ranks.
TEST(LoraRoundTrip, KohyaMetadata) {
  aclora::test::ScratchDir dir;
  const lora::LoraFile source = lora::open_lora(lora_fixtures() / "diffusers.safetensors");
  write_as("kohya", source, dir / "k.safetensors");
  const lora::LoraFile back = lora::open_lora(dir / "k.safetensors");
  EXPECT_EQ(back.metadata.at("ss_network_module"), "networks.lora");
  EXPECT_EQ(back.metadata.at("ss_network_dim"), "Dynamic");
  EXPECT_EQ(back.metadata.at("modelspec.sai_model_spec"), "1.0.1");
  EXPECT_EQ(back.metadata.at("modelspec.architecture"), "stable-diffusion-xl-v1-base/lora");
  EXPECT_EQ(back.metadata.at("ss_base_model_version"), "sdxl_base_v1-0");
  EXPECT_EQ(back.metadata.count("lora_adapter_metadata"), 0u);
}

// A failed write leaves nothing behind (missing folder).
TEST(LoraRoundTrip, FailedWriteLeavesNothing) {
  aclora::test::ScratchDir dir;
  const lora::LoraFile source = lora::open_lora(lora_fixtures() / "kohya.safetensors");
  EXPECT_THROW(write_as("kohya", source, dir / "missing" / "k.safetensors"), lora::Error);
  EXPECT_THROW(write_as("peft", source, dir / "missing" / "p"), lora::Error);
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

}  // namespace
