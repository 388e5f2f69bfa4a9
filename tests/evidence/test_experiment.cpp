// The evidence experiment's own pieces: cutting LoRAs to a rank, ranks by energy, the
// result files, the plans and task images, and the smoke run of the whole pipeline
// (aclora-evidence run --plan smoke): losses fall, RESTARTs happen, measures are computed.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <aclora/adapters/json/parse.hpp>
#include <aclora/adapters/train/network.hpp>
#include <aclora/adapters/train/targets.hpp>

#include <sys/wait.h>
#include <algorithm>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "evidence/experiment.hpp"
#include "evidence/job.hpp"
#include "evidence/lora_cut.hpp"
#include "evidence/report.hpp"
#include "scratch_dir.hpp"

namespace {

namespace fs = std::filesystem;
using aclora::test::ScratchDir;

struct TwoLayersImpl : torch::nn::Module {
  TwoLayersImpl() {
    first = register_module("first", torch::nn::Linear(12, 10));
    second = register_module("second", torch::nn::Linear(10, 8));
  }
  torch::nn::Linear first{nullptr}, second{nullptr};
};
TORCH_MODULE(TwoLayers);

// A rank-6 LoRA on both layers with random (nonzero) factors.
void random_loras(TwoLayers& net, aclora::train::LoraNetwork& network) {
  aclora::train::InjectOptions inject;
  inject.rank = 6;
  network.inject(*net, aclora::train::Targets::patterns({"first", "second"}), inject);
  torch::NoGradGuard no_grad;
  torch::manual_seed(11);
  for (torch::Tensor factor : network.parameters())
    factor.copy_(torch::randn(factor.sizes(), torch::kFloat64).to(factor.dtype()));
}

torch::Tensor update_of(const aclora::train::LoraModuleEntry& entry) {
  return torch::matmul(entry.adapter->up_matrix().to(torch::kFloat64),
                       entry.adapter->down_matrix().to(torch::kFloat64));
}

// The best rank-k approximation of m (Eckart-Young), in double.
torch::Tensor truncated(const torch::Tensor& m, int64_t k) {
  auto [u, s, vh] = torch::linalg::svd(m, false, c10::nullopt);
  return torch::matmul(u.slice(1, 0, k) * s.slice(0, 0, k), vh.slice(0, 0, k));
}

// Cutting keeps each module's best rank-K approximation of its update, stored in the first
// K rows of down and columns of up, with zeros after them. The float32 factors round the
// product at about 1e-7 relative to its largest entries; 1e-5 leaves room for the sums.
TEST(LoraCut, KeepsTheBestRankKApproximationInTheLeadingComponents) {
  TwoLayers net;
  aclora::train::LoraNetwork network;
  random_loras(net, network);
  std::vector<torch::Tensor> before;
  for (const auto& entry : network.modules())
    before.push_back(update_of(entry));
  evidence::cut_to_ranks(network, {2, 5});
  const std::vector<int64_t> kept{2, 5};
  for (std::size_t i = 0; i < network.size(); ++i) {
    const auto& entry = network.modules()[i];
    const torch::Tensor expected = truncated(before[i], kept[i]);
    const double scale = expected.abs().max().item<double>();
    EXPECT_LT((update_of(entry) - expected).abs().max().item<double>(), 1e-5 * scale) << entry.name;
    EXPECT_EQ(entry.adapter->down_matrix().slice(0, kept[i]).abs().sum().item<double>(), 0.0);
    EXPECT_EQ(entry.adapter->up_matrix().slice(1, kept[i]).abs().sum().item<double>(), 0.0);
  }
}

// A bad rank is refused naming the module, and no module is changed (checked first).
TEST(LoraCut, ABadRankChangesNothing) {
  TwoLayers net;
  aclora::train::LoraNetwork network;
  random_loras(net, network);
  std::vector<torch::Tensor> before;
  for (const torch::Tensor& factor : network.parameters())
    before.push_back(factor.clone());
  try {
    evidence::cut_to_ranks(network, {2, 7});
    FAIL() << "rank 7 of a rank-6 LoRA was accepted";
  } catch (const aclora::Error& error) {
    EXPECT_NE(std::string(error.what()).find("rank 7 outside [1, 6]"), std::string::npos)
        << error.what();
  }
  EXPECT_THROW(evidence::cut_to_ranks(network, {2}), aclora::Error);
  for (std::size_t i = 0; i < before.size(); ++i)
    EXPECT_TRUE(torch::equal(network.parameters()[i], before[i]));
}

// Ranks by energy: the smallest K whose leading squared singular values of the update reach
// the fraction of their sum, computed here from LibTorch's SVD of the product.
TEST(LoraCut, RanksForEnergyMatchTheUpdatesSpectrum) {
  TwoLayers net;
  aclora::train::LoraNetwork network;
  random_loras(net, network);
  for (const double fraction : {0.5, 0.9, 0.99, 1.0}) {
    const std::vector<std::size_t> ranks = evidence::ranks_for_energy(network, fraction);
    ASSERT_EQ(ranks.size(), 2u);
    for (std::size_t i = 0; i < ranks.size(); ++i) {
      const torch::Tensor s = torch::linalg::svdvals(update_of(network.modules()[i]), c10::nullopt);
      const torch::Tensor energy = (s * s).cumsum(0) / (s * s).sum();
      // K-1 leading components hold less than the fraction (up to rounding), K enough.
      if (ranks[i] > 1)
        EXPECT_LT(energy[static_cast<int64_t>(ranks[i]) - 2].item<double>(), fraction + 1e-9);
      EXPECT_GE(energy[static_cast<int64_t>(ranks[i]) - 1].item<double>(), fraction - 1e-9);
    }
  }
  EXPECT_THROW(evidence::ranks_for_energy(network, 0.0), aclora::Error);
}

// A result survives its JSON file unchanged (the report reads what the job wrote).
TEST(JobResult, JsonRoundTripKeepsEveryField) {
  evidence::JobResult result;
  result.plan = "full";
  result.task = "style-15";
  result.arm = "ac-64";
  result.seed = 2;
  result.train_seconds = 12.5;
  result.epoch_losses = {0.25, 0.125};
  result.held_out_loss = 0.0625;
  result.training_set_loss = 0.03125;
  result.content_accuracy = 0.75;
  result.style_accuracy = 0.5;
  result.frechet_distance = 3.25;
  result.parameters = 1234;
  result.mean_rank = 4.5;
  result.family_ranks = {{"attn1.to_q", 3.0}, {"ff.net.2", 6.0}};
  result.rank_history = {{1, 64.0}, {11, 8.5}};
  const evidence::JobResult back = evidence::result_from_json(evidence::to_json(result));
  EXPECT_EQ(back.plan, result.plan);
  EXPECT_EQ(back.task, result.task);
  EXPECT_EQ(back.arm, result.arm);
  EXPECT_EQ(back.seed, result.seed);
  EXPECT_EQ(back.train_seconds, result.train_seconds);
  EXPECT_EQ(back.epoch_losses, result.epoch_losses);
  EXPECT_EQ(back.held_out_loss, result.held_out_loss);
  EXPECT_EQ(back.training_set_loss, result.training_set_loss);
  EXPECT_EQ(back.content_accuracy, result.content_accuracy);
  EXPECT_EQ(back.style_accuracy, result.style_accuracy);
  EXPECT_EQ(back.frechet_distance, result.frechet_distance);
  EXPECT_EQ(back.parameters, result.parameters);
  EXPECT_EQ(back.mean_rank, result.mean_rank);
  EXPECT_EQ(back.family_ranks, result.family_ranks);
  ASSERT_EQ(back.rank_history.size(), 2u);
  EXPECT_EQ(back.rank_history[1].epoch, 11);
  EXPECT_EQ(back.rank_history[1].mean_rank, 8.5);

  result.style_accuracy.reset();  // the subject task has none
  EXPECT_FALSE(evidence::result_from_json(evidence::to_json(result)).style_accuracy);
  aclora::json::Value broken = evidence::to_json(result);
  auto& members = broken.as_object();
  members.erase(std::find_if(members.begin(), members.end(),
                             [](const auto& member) { return member.first == "train_seconds"; }));
  try {
    evidence::result_from_json(broken);
    FAIL() << "a result without train_seconds was accepted";
  } catch (const std::runtime_error& error) {
    EXPECT_NE(std::string(error.what()).find("train_seconds"), std::string::npos);
  }
}

// The full plan is the issue's: 3 tasks, fixed ranks 1..64, AC-LoRA from 64 and 32, resize
// from 64, the base model, 3 seeds, 100 epochs, E = 10; unknown names are refused.
TEST(Plans, FullPlanIsTheIssuesDesign) {
  const evidence::Plan plan = evidence::full_plan();
  ASSERT_EQ(plan.tasks.size(), 3u);
  EXPECT_EQ(plan.tasks[0].images, 15);
  EXPECT_EQ(plan.tasks[1].images, 150);
  EXPECT_EQ(plan.tasks[2].kind, evidence::TaskKind::style);
  std::vector<std::string> names;
  for (const evidence::Arm& arm : plan.arms)
    names.push_back(arm.name);
  EXPECT_EQ(names, (std::vector<std::string>{"base", "fixed-1", "fixed-2", "fixed-4", "fixed-8",
                                             "fixed-16", "fixed-32", "fixed-64", "ac-64", "ac-32",
                                             "resize-64"}));
  EXPECT_EQ(plan.seeds.size(), 3u);
  EXPECT_EQ(plan.epochs, 100);
  EXPECT_EQ(plan.restart_every, 10);
  EXPECT_TRUE(evidence::arm_named(plan, "ac-32").restarts);
  EXPECT_THROW(evidence::plan_named("huge"), std::invalid_argument);
  EXPECT_THROW(evidence::arm_named(plan, "fixed-3"), std::invalid_argument);
}

// Task images: the subject task trains on class 9 only and asks for it; the style task
// trains on outlined classes 0..2 and asks for outlined classes 0..8 (judge classes 10..18).
TEST(Plans, TaskImagesAreWhatTheTasksSay) {
  const fs::path folder = evidence::default_fashion_mnist_folder();
  if (!fs::exists(folder / "t10k-labels-idx1-ubyte.gz"))
    GTEST_SKIP() << folder << " is absent (Debian package dataset-fashion-mnist)";
  const evidence::FashionMnist data = evidence::read_fashion_mnist(folder);
  const evidence::Plan plan = evidence::full_plan();
  const evidence::TaskData subject = evidence::task_data(plan.tasks[1], plan, data);
  EXPECT_EQ(subject.train_images.sizes(), (std::vector<int64_t>{150, 1, 28, 28}));
  EXPECT_TRUE((subject.train_labels == 9).all().item<bool>());
  EXPECT_EQ(subject.test_images.size(0), 1000);
  EXPECT_TRUE((subject.wanted_judge_classes == 9).all().item<bool>());
  const evidence::TaskData style = evidence::task_data(plan.tasks[2], plan, data);
  EXPECT_EQ(style.train_images.size(0), 15);
  EXPECT_TRUE(
      torch::equal(torch::bincount(style.train_labels), torch::full({3}, 5, torch::kInt64)));
  std::vector<torch::Tensor> first_five;
  for (int64_t label = 0; label < 3; ++label)
    first_five.push_back((data.train.labels == label).nonzero().flatten().slice(0, 0, 5));
  const torch::Tensor plain =
      evidence::to_model_range(data.train.images.index({torch::cat(first_five)}));
  EXPECT_TRUE(torch::equal(style.train_images, evidence::apply_style(plain)));
  EXPECT_EQ(style.test_images.size(0), 1000);
  EXPECT_TRUE((style.test_labels < 9).all().item<bool>());
  EXPECT_EQ(style.sample_labels.size(0), 90);
  EXPECT_TRUE(torch::equal(style.wanted_judge_classes, style.sample_labels + 10));
  evidence::Task odd = plan.tasks[2];
  odd.images = 16;
  EXPECT_THROW(evidence::task_data(odd, plan, data), std::invalid_argument);
}

aclora::json::Value read_json(const fs::path& file) {
  std::ifstream in(file);
  std::stringstream text;
  text << in.rdbuf();
  return aclora::json::parse(text.str());
}

// The whole pipeline on the smoke plan, through the command as users run it (jobs in
// child processes, then the page): training lowers the loss on the training images below
// the base model's (on a fixed grid of noise levels and noise, so not luck of the draw; the
// resize and AC-LoRA arms are measured cut, and still fit better), AC-LoRA's RESTARTs happen after
// epochs 1, 3 and 5 with K in [1, R], every measure is computed, and the page and its
// pictures exist.
TEST(SmokeRun, PipelineRunsEndToEnd) {
#ifndef ACLORA_EVIDENCE_BINARY
  GTEST_SKIP() << "aclora-evidence is not built (ACLORA_BUILD_EXAMPLES off)";
#else
  const fs::path folder = evidence::default_fashion_mnist_folder();
  if (!fs::exists(folder / "t10k-labels-idx1-ubyte.gz"))
    GTEST_SKIP() << folder << " is absent (Debian package dataset-fashion-mnist)";
  const ScratchDir scratch;
  const fs::path run = scratch.path() / "run";
  const std::string command = std::string(ACLORA_EVIDENCE_BINARY) + " run --plan smoke -o " +
                              run.string() + " --jobs 2 > " +
                              (scratch.path() / "out.txt").string() + " 2>&1";
  ASSERT_EQ(std::system(command.c_str()), 0) << std::ifstream(scratch.path() / "out.txt").rdbuf();

  const evidence::Plan plan = evidence::smoke_plan();
  const std::vector<evidence::JobResult> results = evidence::read_results(plan, run);
  ASSERT_EQ(results.size(), plan.arms.size());
  double base_loss = 0.0;
  for (const evidence::JobResult& result : results)
    if (result.arm == "base")
      base_loss = result.training_set_loss;
  ASSERT_GT(base_loss, 0.0);
  for (const evidence::JobResult& result : results) {
    SCOPED_TRACE(result.arm);
    EXPECT_TRUE(std::isfinite(result.frechet_distance));
    EXPECT_GE(result.content_accuracy, 0.0);
    EXPECT_LE(result.content_accuracy, 1.0);
    ASSERT_TRUE(result.style_accuracy.has_value());
    EXPECT_GE(*result.style_accuracy, 0.0);
    EXPECT_LE(*result.style_accuracy, 1.0);
    if (result.arm == "base") {
      EXPECT_EQ(result.parameters, 0);
      continue;
    }
    EXPECT_EQ(result.epoch_losses.size(), static_cast<std::size_t>(plan.epochs));
    EXPECT_LT(result.training_set_loss, base_loss);
    EXPECT_GT(result.held_out_loss, 0.0);
    EXPECT_GT(result.parameters, 0);
    EXPECT_GE(result.mean_rank, 1.0);
    EXPECT_LE(result.mean_rank, 8.0);
  }
  const evidence::JobResult& ac = results[3];
  ASSERT_EQ(ac.arm, "ac-8");
  ASSERT_EQ(ac.rank_history.size(), 3u);
  EXPECT_EQ(ac.rank_history[0].epoch, 1);
  EXPECT_EQ(ac.rank_history[2].epoch, 5);
  for (const evidence::RankPoint& point : ac.rank_history) {
    EXPECT_GE(point.mean_rank, 1.0);
    EXPECT_LE(point.mean_rank, 8.0);
  }
  EXPECT_TRUE(fs::exists(run / "evidence.md"));
  EXPECT_TRUE(fs::exists(run / "images" / "evidence-smoke" / "style-15.samples.png"));
  EXPECT_TRUE(fs::exists(run / "images" / "evidence-smoke" / "style-15.held_out_loss.png"));
  EXPECT_TRUE(fs::exists(run / "images" / "evidence-smoke" / "style-15.ranks.png"));
  EXPECT_EQ(read_json(run / "run.json").find("plan")->as_string(), "smoke");
#endif
}

// A run never deletes what it did not write: a folder holding another file is refused
// before any job starts (exit status 1, the file named), and the file stays.
TEST(SmokeRun, RefusesAFolderHoldingOtherFiles) {
#ifndef ACLORA_EVIDENCE_BINARY
  GTEST_SKIP() << "aclora-evidence is not built (ACLORA_BUILD_EXAMPLES off)";
#else
  const ScratchDir scratch;
  const fs::path run = scratch.path() / "run";
  fs::create_directories(run / "results");
  std::ofstream(run / "notes.txt") << "mine";
  const fs::path out = scratch.path() / "out.txt";
  const std::string command = std::string(ACLORA_EVIDENCE_BINARY) + " run --plan smoke -o " +
                              run.string() + " > " + out.string() + " 2>&1";
  const int status = std::system(command.c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  std::stringstream message;
  message << std::ifstream(out).rdbuf();
  EXPECT_NE(message.str().find("holds other files (notes.txt)"), std::string::npos)
      << message.str();
  std::stringstream kept;
  kept << std::ifstream(run / "notes.txt").rdbuf();
  EXPECT_EQ(kept.str(), "mine");
  EXPECT_TRUE(fs::exists(run / "results"));
#endif
}

}  // namespace
