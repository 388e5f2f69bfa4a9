// Training states (aclora/adapters/train/state.hpp): exact round trips, and refusal of
// missing, partial, corrupt and mismatched states without changing anything.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <aclora/adapters/train/state.hpp>

#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "scratch_dir.hpp"
#include "tiny_model.hpp"

namespace {

namespace fs = std::filesystem;
using aclora::train::InjectOptions;
using aclora::train::LoraNetwork;
using aclora::train::Naming;
using aclora::train::RunPosition;
using aclora::train::Targets;

// A model with LoRAs and an AdamW that has taken two steps.
struct Trained {
  train_test::TinyNet net;
  LoraNetwork network;
  std::unique_ptr<torch::optim::AdamW> optimizer;

  // The same base model always; `seed` draws the LoRA factors and the training batches.
  explicit Trained(std::int64_t rank = 4, std::uint64_t seed = 5) {
    torch::manual_seed(1);
    net = train_test::TinyNet();
    torch::manual_seed(seed);
    InjectOptions options;
    options.rank = rank;
    options.naming = Naming::plain("lora_unet");
    network.inject(*net, Targets::patterns({"to_q", "ff_out"}), options);
    optimizer = std::make_unique<torch::optim::AdamW>(network.parameters(),
                                                      torch::optim::AdamWOptions(1e-2));
    for (int i = 0; i < 2; ++i) {
      optimizer->zero_grad();
      net->forward(torch::randn({2, 3, 4, 4})).square().mean().backward();
      optimizer->step();
    }
  }

  std::vector<torch::Tensor> factors() const {
    std::vector<torch::Tensor> out;
    for (const auto& factor : network.parameters())
      out.push_back(factor.detach().clone());
    return out;
  }
  std::vector<torch::Tensor> moments() const {
    std::vector<torch::Tensor> out;
    for (const auto& factor : network.parameters()) {
      const auto& state = static_cast<torch::optim::AdamWParamState&>(
          *optimizer->state().at(aclora::train::detail::state_key(optimizer->state(), factor)));
      out.push_back(state.exp_avg().clone());
      out.push_back(state.exp_avg_sq().clone());
    }
    return out;
  }
};

bool all_equal(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  if (a.size() != b.size())
    return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!torch::equal(a[i], b[i]))
      return false;
  return true;
}

RunPosition sample_position() {
  RunPosition p;
  p.epoch = 3;
  p.step_in_epoch = 2;
  p.global_step = 17;
  p.epoch_loss_sum = 0.1 + 0.2;  // not exactly representable: must round-trip bit for bit
  p.epoch_loss_count = 2;
  p.loss_window = {0.3333333333333333, 0.1 / 3.0};
  p.restart_count = 2;
  p.module_ranks = {1, 2, 3, 4};
  p.epoch_losses = {{0, 0.5}, {1, 0.25}, {2, 1.0 / 7.0}};
  p.rank_history = {{0, {4, 4, 3, 2}}, {2, {1, 2, 3, 4}}};
  p.metrics_offset = 1234;
  p.tensorboard_offset = 99;
  p.tensorboard_file = "events.out.tfevents.1.host";
  return p;
}

aclora::json::Value options_json(int seed) {
  aclora::json::Value options = aclora::json::Object{};
  options["seed"] = seed;
  options["targets"] = "to_q,ff_out";
  return options;
}

}  // namespace

// Saved and loaded into another model of the same shape, a state restores the factors, the
// optimizer state, the learning rate, the CPU generator and every counter exactly.
TEST(TrainingState, RoundTripIsExact) {
  const aclora::test::ScratchDir root_scratch;
  const fs::path root = root_scratch.path();
  Trained source;
  source.optimizer->param_groups()[0].options().set_lr(0.00123);
  const RunPosition position = sample_position();
  torch::manual_seed(77);
  std::map<std::string, torch::Tensor> extra{{"order", torch::arange(5)}};
  aclora::train::save_state(root / "state-1", source.network, *source.optimizer, position,
                            options_json(1), extra);
  const torch::Tensor next_draw = torch::randn({4});

  Trained target(4, 9);  // other values, same shapes
  ASSERT_FALSE(all_equal(target.factors(), source.factors()));
  const auto loaded = aclora::train::load_state(root / "state-1", target.network, *target.optimizer,
                                                options_json(1));
  EXPECT_TRUE(all_equal(target.factors(), source.factors()));
  EXPECT_TRUE(all_equal(target.moments(), source.moments()));
  EXPECT_EQ(target.optimizer->param_groups()[0].options().get_lr(), 0.00123);
  EXPECT_TRUE(torch::equal(torch::randn({4}), next_draw));
  const RunPosition& p = loaded.position;
  EXPECT_EQ(p.epoch, 3);
  EXPECT_EQ(p.step_in_epoch, 2);
  EXPECT_EQ(p.global_step, 17);
  EXPECT_EQ(p.epoch_loss_sum, position.epoch_loss_sum);
  EXPECT_EQ(p.loss_window, position.loss_window);
  EXPECT_EQ(p.restart_count, 2u);
  EXPECT_EQ(p.module_ranks, position.module_ranks);
  EXPECT_EQ(p.epoch_losses, position.epoch_losses);
  EXPECT_EQ(p.rank_history, position.rank_history);
  EXPECT_EQ(p.metrics_offset, 1234u);
  EXPECT_EQ(p.tensorboard_file, position.tensorboard_file);
  EXPECT_TRUE(torch::equal(loaded.extra.at("order"), torch::arange(5)));
  // The next optimizer step is the same on both.
  for (auto* side : {&source, &target}) {
    side->optimizer->zero_grad();
    torch::manual_seed(3);
    side->net->forward(torch::randn({2, 3, 4, 4})).square().mean().backward();
    side->optimizer->step();
  }
  EXPECT_TRUE(all_equal(target.factors(), source.factors()));
  EXPECT_EQ(aclora::train::latest_state(root), root / "state-1");
}

// Missing, partial, corrupt and mismatched states are refused with a message naming the
// problem, and neither the factors nor the optimizer state change.
TEST(TrainingState, BadStatesAreRefusedAndChangeNothing) {
  const aclora::test::ScratchDir root_scratch;
  const fs::path root = root_scratch.path();
  Trained source;
  aclora::train::save_state(root / "good", source.network, *source.optimizer, sample_position(),
                            options_json(1));
  const auto copy_good = [&](const std::string& name) {
    fs::copy(root / "good", root / name, fs::copy_options::recursive);
    return root / name;
  };
  const fs::path no_manifest = copy_good("no_manifest");
  fs::remove(no_manifest / "manifest.json");
  const fs::path missing_file = copy_good("missing_file");
  fs::remove(missing_file / "optimizer.safetensors");
  const fs::path flipped = copy_good("flipped");
  {
    std::fstream file(flipped / "lora.safetensors",
                      std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(-3, std::ios::end);
    file.put('\x5a');
  }
  const fs::path truncated = copy_good("truncated");
  fs::resize_file(truncated / "rng.safetensors", 20);
  const fs::path bad_json = copy_good("bad_json");
  std::ofstream(bad_json / "manifest.json") << "{\"format\": ";
  const fs::path version = copy_good("version");
  {
    std::string text = aclora::train::detail::read_file(version / "manifest.json");
    text.replace(text.find("\"version\": 1"), 12, "\"version\": 7");
    std::ofstream(version / "manifest.json") << text;
  }

  Trained target(4, 9);
  const auto factors = target.factors();
  const auto moments = target.moments();
  const auto expect_refused = [&](const fs::path& folder, LoraNetwork& network,
                                  torch::optim::Optimizer& optimizer, int seed,
                                  const std::string& words) {
    try {
      aclora::train::load_state(folder, network, optimizer, options_json(seed));
      ADD_FAILURE() << folder << " was accepted";
    } catch (const aclora::train::Error& error) {
      EXPECT_NE(std::string(error.what()).find(words), std::string::npos)
          << folder << ": " << error.what();
    }
  };
  expect_refused(root / "nowhere", target.network, *target.optimizer, 1, "no such");
  expect_refused(no_manifest, target.network, *target.optimizer, 1,
                 "not a complete training state");
  expect_refused(missing_file, target.network, *target.optimizer, 1,
                 "optimizer.safetensors is missing");
  expect_refused(flipped, target.network, *target.optimizer, 1, "checksum");
  expect_refused(truncated, target.network, *target.optimizer, 1, "size differs");
  expect_refused(bad_json, target.network, *target.optimizer, 1, "corrupt");
  expect_refused(version, target.network, *target.optimizer, 1, "version 7");
  expect_refused(root / "good", target.network, *target.optimizer, 2, "other options: seed");
  EXPECT_TRUE(all_equal(target.factors(), factors));
  EXPECT_TRUE(all_equal(target.moments(), moments));

  Trained other_rank(8, 9);
  expect_refused(root / "good", other_rank.network, *other_rank.optimizer, 1,
                 "another network: module #0 ('lora_unet_blocks_0_to_q'): rank is 4 in the state "
                 "but 8 in this run");

  // Saving never overwrites: an existing folder is refused and left as it was.
  const auto before = aclora::train::detail::read_file(root / "good" / "manifest.json");
  EXPECT_THROW(aclora::train::save_state(root / "good", target.network, *target.optimizer,
                                         sample_position(), options_json(1)),
               aclora::train::Error);
  EXPECT_EQ(aclora::train::detail::read_file(root / "good" / "manifest.json"), before);
  // Only complete state-* folders count as states.
  EXPECT_FALSE(aclora::train::latest_state(root));
}

namespace {

// A generator of its own with a state of its own (CPU generators stand in for CUDA ones:
// the pairing by name is what is tested, and it needs no GPU).
at::Generator generator_seeded(std::uint64_t seed) {
  return at::detail::createCPUGenerator(seed);
}

torch::Tensor state_of(at::Generator generator) {
  std::lock_guard<std::mutex> lock(generator.mutex());
  return generator.get_state();
}

// rng.safetensors holding the state of a generator seeded `seed + i` for each name i.
aclora::safetensors::Reader saved_states(const fs::path& path,
                                         const std::vector<std::string>& names) {
  aclora::safetensors::Writer writer;
  for (std::size_t i = 0; i < names.size(); ++i)
    aclora::train::add_tensor(writer, names[i], state_of(generator_seeded(100 + i)));
  writer.write(path);
  return aclora::safetensors::Reader::open(path);
}

}  // namespace

// A resume restores the generators that were saved and are present now, whatever the number
// of visible GPUs: saved cuda:0..3 with cuda:0..1 visible restores cpu, cuda:0 and cuda:1;
// saved cpu alone with cuda:0 visible restores cpu and leaves cuda:0 as it is. A state
// without the CPU generator, or with a state of another layout, is refused.
TEST(TrainingState, GeneratorsRestoreThoseSavedAndPresent) {
  const aclora::test::ScratchDir scratch;
  const std::vector<std::pair<std::string, at::Generator>> present = {
      {"cpu", generator_seeded(1)},
      {"cuda:0", generator_seeded(2)},
      {"cuda:1", generator_seeded(3)}};

  const auto four_gpus = saved_states(scratch.path() / "four.safetensors",
                                      {"cpu", "cuda:0", "cuda:1", "cuda:2", "cuda:3"});
  const auto fewer = aclora::train::detail::saved_generator_states(four_gpus, present, "state");
  ASSERT_EQ(fewer.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(fewer[i].first == present[i].second) << present[i].first;
    EXPECT_TRUE(torch::equal(fewer[i].second, state_of(generator_seeded(100 + i))))
        << present[i].first;
  }

  const auto cpu_only = saved_states(scratch.path() / "cpu.safetensors", {"cpu"});
  const auto more =
      aclora::train::detail::saved_generator_states(cpu_only, {present[0], present[1]}, "state");
  ASSERT_EQ(more.size(), 1u);
  EXPECT_TRUE(more[0].first == present[0].second);
  EXPECT_TRUE(torch::equal(more[0].second, state_of(generator_seeded(100))));

  const auto no_cpu = saved_states(scratch.path() / "no_cpu.safetensors", {"cuda:0"});
  try {
    aclora::train::detail::saved_generator_states(no_cpu, present, "state");
    ADD_FAILURE() << "no error";
  } catch (const aclora::train::Error& error) {
    EXPECT_NE(std::string(error.what()).find("no state for the generator 'cpu'"), std::string::npos)
        << error.what();
  }

  aclora::safetensors::Writer writer;
  aclora::train::add_tensor(writer, "cpu", state_of(generator_seeded(1)));
  aclora::train::add_tensor(writer, "cuda:0", torch::zeros({3}, torch::kUInt8));
  writer.write(scratch.path() / "layout.safetensors");
  const auto other_layout =
      aclora::safetensors::Reader::open(scratch.path() / "layout.safetensors");
  try {
    aclora::train::detail::saved_generator_states(other_layout, present, "state");
    ADD_FAILURE() << "no error";
  } catch (const aclora::train::Error& error) {
    EXPECT_NE(std::string(error.what()).find("the state of 'cuda:0' has another layout"),
              std::string::npos)
        << error.what();
  }
}
