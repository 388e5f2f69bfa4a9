// Export at the chosen ranks (aclora/adapters/train/export.hpp): files read back with our
// LoRA readers hold the rank-K truncation of each module's update, with the scale kept.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <aclora/adapters/json/parse.hpp>
#include <aclora/adapters/safetensors/convert.hpp>
#include <aclora/adapters/safetensors/reader.hpp>
#include <aclora/adapters/train/export.hpp>

#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "scratch_dir.hpp"
#include "tiny_model.hpp"

namespace {

namespace fs = std::filesystem;
using aclora::train::ExportOptions;
using aclora::train::LoraNetwork;

// LoRAs on every linear of the blocks and the conv, with random factors of full rank.
struct Network {
  train_test::TinyNet net;
  LoraNetwork network;
  Network() {
    torch::manual_seed(21);
    net = train_test::TinyNet(16, 1);
    aclora::train::InjectOptions options;
    options.rank = 6;
    options.alpha = 3.0;
    options.conv_rank = 5;
    options.naming = aclora::train::Naming::plain("lora_unet");
    network.inject(*net, {{{"blocks.*"}, {"conv", aclora::train::conv_layers}}}, options);
    torch::NoGradGuard no_grad;
    for (auto& module : network.modules())
      module.adapter->up.normal_();
  }
};

// The update scale * up @ down of a module, in float64, as a matrix.
torch::Tensor update_of(const aclora::train::LoraModuleEntry& entry) {
  return torch::matmul(entry.adapter->up_matrix().to(torch::kFloat64),
                       entry.adapter->down_matrix().to(torch::kFloat64)) *
         entry.adapter->scale();
}

// Its best rank-k approximation (float64 SVD).
torch::Tensor truncated(const torch::Tensor& update, std::int64_t k) {
  const auto [u, s, vh] = torch::linalg_svd(update, false);
  using torch::indexing::Slice;
  return torch::matmul(u.index({Slice(), Slice(0, k)}) * s.index({Slice(0, k)}),
                       vh.index({Slice(0, k)}));
}

// A module of a kohya file written for a non-SDXL model (our LoRA reader maps SDXL names
// only, so the tensors are read directly): (alpha / r) up @ down in float64, and r.
struct FileModule {
  torch::Tensor update;
  std::int64_t rank = 0;
  double alpha = 0.0;
  aclora::safetensors::Dtype dtype = aclora::safetensors::Dtype::F32;
};

FileModule module_in_file(const aclora::safetensors::Reader& file, const std::string& name) {
  const auto to_tensor = [&](const std::string& key) {
    const auto& view = file.tensor(key);
    std::vector<float> values = aclora::safetensors::convert_to<float>(view);
    return torch::from_blob(values.data(), {static_cast<std::int64_t>(values.size())},
                            torch::kFloat32)
        .clone()
        .to(torch::kFloat64);
  };
  FileModule out;
  out.rank = file.tensor(name + ".lora_down.weight").shape[0];
  out.alpha = to_tensor(name + ".alpha").item<double>();
  out.dtype = file.tensor(name + ".alpha").dtype;
  out.update = torch::matmul(to_tensor(name + ".lora_up.weight").view({-1, out.rank}),
                             to_tensor(name + ".lora_down.weight").view({out.rank, -1})) *
               (out.alpha / static_cast<double>(out.rank));
  return out;
}

double relative_error(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).norm().item<double>() / b.norm().item<double>();
}

}  // namespace

// Each module written at its own K (kohya, float32) reads back as the rank-K truncation of
// its update within 1e-6 relative; ss_network_dim says "Dynamic"; aclora_module_ranks lists
// K per module; one alpha serves every module.
TEST(Export, ChosenRanksHoldTheTruncatedUpdates) {
  Network model;
  const aclora::test::ScratchDir folder_scratch;
  const fs::path folder = folder_scratch.path();
  std::vector<std::size_t> ranks;
  for (std::size_t i = 0; i < model.network.size(); ++i)
    ranks.push_back(1 + i % 5);
  ExportOptions options;
  options.sdxl = false;
  options.metadata["ss_training_comment"] = "test";
  aclora::train::write_lora(model.network, ranks, options, folder / "lora.safetensors");

  const auto file = aclora::safetensors::Reader::open(folder / "lora.safetensors");
  ASSERT_EQ(file.names().size(), 3 * model.network.size());
  EXPECT_EQ(file.metadata().at("ss_network_dim"), "Dynamic");
  EXPECT_EQ(file.metadata().at("ss_training_comment"), "test");
  const auto listed = aclora::json::parse(file.metadata().at("aclora_module_ranks"));
  std::set<double> alphas;
  for (std::size_t i = 0; i < model.network.size(); ++i) {
    const auto& entry = model.network.modules()[i];
    const FileModule module = module_in_file(file, entry.name);
    EXPECT_EQ(module.rank, static_cast<std::int64_t>(ranks[i])) << entry.name;
    EXPECT_EQ(listed.find(entry.name)->as_int(), static_cast<std::int64_t>(ranks[i]));
    const torch::Tensor expected = truncated(update_of(entry), module.rank);
    EXPECT_LT(relative_error(module.update, expected), 1e-6) << entry.name;
    alphas.insert(module.alpha);
  }
  EXPECT_EQ(alphas.size(), 1u);
}

// The full-rank export holds the updates as trained; F16 output is rounded once (error at
// fp16's resolution) and keeps its alphas in F16. (The diffusers and PEFT layouts are
// tested on the SDXL UNet, whose paths they name: tests/sdxl/test_lora_training.cpp.)
TEST(Export, FullRankAndOtherFormats) {
  Network model;
  const aclora::test::ScratchDir folder_scratch;
  const fs::path folder = folder_scratch.path();
  ExportOptions options;
  options.sdxl = false;
  const auto full = aclora::train::full_ranks(model.network);
  aclora::train::write_lora(model.network, full, options, folder / "full.safetensors");
  const auto full_file = aclora::safetensors::Reader::open(folder / "full.safetensors");
  EXPECT_EQ(full_file.metadata().at("ss_network_dim"), "Dynamic");  // conv rank 5, linear 6
  ASSERT_EQ(full_file.names().size(), 3 * model.network.size());
  for (const auto& entry : model.network.modules())
    EXPECT_LT(relative_error(module_in_file(full_file, entry.name).update, update_of(entry)), 1e-6);

  const std::vector<std::size_t> ranks(model.network.size(), 2);
  options.dtype = aclora::safetensors::Dtype::F16;
  aclora::train::write_lora(model.network, ranks, options, folder / "f16.safetensors");
  const auto half = aclora::safetensors::Reader::open(folder / "f16.safetensors");
  ASSERT_EQ(half.names().size(), 3 * model.network.size());
  for (const auto& entry : model.network.modules()) {
    EXPECT_EQ(half.tensor(entry.name + ".lora_down.weight").dtype, aclora::safetensors::Dtype::F16);
    const FileModule module = module_in_file(half, entry.name);
    EXPECT_EQ(module.dtype, aclora::safetensors::Dtype::F16);
    // Two fp16 factors, each rounded once: relative error about 2 * 2^-11 per entry.
    EXPECT_LT(relative_error(module.update, truncated(update_of(entry), 2)),
              4 * std::ldexp(1.0, -11));
  }
}

// Bad ranks and non-finite factors are refused, and nothing is written.
TEST(Export, ErrorsLeaveNoFile) {
  Network model;
  const aclora::test::ScratchDir folder_scratch;
  const fs::path folder = folder_scratch.path();
  ExportOptions options;
  std::vector<std::size_t> ranks(model.network.size(), 2);
  ranks[1] = 7;  // above R
  EXPECT_THROW(aclora::train::write_lora(model.network, ranks, options, folder / "a.safetensors"),
               aclora::train::Error);
  ranks[1] = 0;
  EXPECT_THROW(aclora::train::write_lora(model.network, ranks, options, folder / "a.safetensors"),
               aclora::train::Error);
  ranks.pop_back();
  EXPECT_THROW(aclora::train::write_lora(model.network, ranks, options, folder / "a.safetensors"),
               aclora::train::Error);
  ranks.assign(model.network.size(), 2);
  {
    torch::NoGradGuard no_grad;
    model.network.modules()[0].adapter->down[0][0] = std::numeric_limits<float>::infinity();
  }
  try {
    aclora::train::write_lora(model.network, ranks, options, folder / "a.safetensors");
    ADD_FAILURE() << "no error";
  } catch (const aclora::train::Error& error) {
    EXPECT_NE(std::string(error.what()).find(model.network.modules()[0].name), std::string::npos);
  }
  EXPECT_TRUE(fs::is_empty(folder));
}

// module_at_rank, the one refactor that export and in-place cuts share: up' down' times the
// scale is the best rank-K approximation of the module's update, at every K in [1, R] (at
// K = R the update itself), within float32 rounding; a K outside [1, R] or a NaN is refused
// naming the module.
TEST(Export, ModuleAtRankIsTheTruncatedUpdate) {
  Network model;
  for (const auto& entry : model.network.modules()) {
    const auto rank = static_cast<std::size_t>(entry.adapter->rank());
    const torch::Tensor update = update_of(entry);
    for (std::size_t k = 1; k <= rank; ++k) {
      aclora::ProductFactors factors = aclora::train::module_at_rank(entry, k);
      ASSERT_EQ(factors.rank, k);
      const auto rows = static_cast<std::int64_t>(factors.rows);
      const auto columns = static_cast<std::int64_t>(factors.columns);
      const auto kept = static_cast<std::int64_t>(k);
      const torch::Tensor up =
          torch::from_blob(factors.up.data(), {rows, kept}, torch::kFloat32).to(torch::kFloat64);
      const torch::Tensor down =
          torch::from_blob(factors.down.data(), {kept, columns}, torch::kFloat32)
              .to(torch::kFloat64);
      // The float64 refactor rounded once to float32 factors (2^-24 relative each): as the
      // export test, 1e-6 relative.
      EXPECT_LT(
          relative_error(torch::matmul(up, down) * entry.adapter->scale(), truncated(update, kept)),
          1e-6)
          << entry.name << " at rank " << k;
    }
  }
  const auto& first = model.network.modules()[0];
  for (const std::size_t bad :
       {std::size_t{0}, static_cast<std::size_t>(first.adapter->rank()) + 1}) {
    try {
      aclora::train::module_at_rank(first, bad);
      ADD_FAILURE() << "rank " << bad << " accepted";
    } catch (const aclora::train::Error& error) {
      EXPECT_NE(std::string(error.what()).find(first.name), std::string::npos) << error.what();
    }
  }
  {
    torch::NoGradGuard no_grad;
    first.adapter->up[0][0] = std::numeric_limits<float>::quiet_NaN();
  }
  try {
    aclora::train::module_product(first);
    ADD_FAILURE() << "NaN accepted";
  } catch (const aclora::train::Error& error) {
    EXPECT_NE(std::string(error.what()).find(first.name + "' holds NaN or Inf"), std::string::npos)
        << error.what();
  }
}
