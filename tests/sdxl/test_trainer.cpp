// The SDXL trainer (sdxl/trainer.hpp) end to end on the tiny model and the tiny training set
// (tests/fixtures/sdxl/train_data, made by make_train_data.py): restarts on schedule, the fit
// improves, the exported file holds the last RESTART's ranks, caches are reused, resume.
#include <gtest/gtest.h>

#include <signal.h>
#include <aclora/adapters/json/parse.hpp>
#include <aclora/adapters/lora/open.hpp>
#include <aclora/adapters/safetensors.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

#include "child_process.hpp"
#include "metrics_records.hpp"
#include "reference_fixtures.hpp"
#include "scratch_dir.hpp"
#include "sdxl/trainer.hpp"
#include "trainer_fixture.hpp"

namespace {

namespace fs = std::filesystem;
using aclora::json::Value;

std::vector<Value> records(const fs::path& path) {
  return aclora::test::metrics_records(path);
}

// A LoRA file's metadata without the run's dates (a resumed run has its own).
std::map<std::string, std::string> metadata_of(const fs::path& path) {
  auto metadata = aclora::safetensors::Reader::open(path).metadata();
  metadata.erase("ss_training_started_at");
  metadata.erase("ss_training_finished_at");
  return metadata;
}

// The LoRA tensors of a kohya file, by name (the metadata holds dates and differs).
std::map<std::string, std::string> tensors_of(const fs::path& path) {
  const auto reader = aclora::safetensors::Reader::open(path);
  std::map<std::string, std::string> out;
  for (const auto& view : reader.tensors())
    out[view.name] =
        std::string(reinterpret_cast<const char*>(view.bytes.data()), view.bytes.size());
  return out;
}

}  // namespace

// Four epochs, a RESTART every 2: RESTARTs after epochs 0 and 2, the validation loss (fixed
// noise and timesteps) falls, the kohya file holds every module at the last RESTART's K with
// sd-scripts' metadata, and the rank picture and TensorBoard files exist. A second start
// resumes the finished run and writes the same LoRA.
TEST(Trainer, ShortRunRestartsAndExportsAtTheChosenRanks) {
  const aclora::test::ScratchDir scratch;
  const auto options = sdxl_test::tiny_train_options(scratch.path());
  std::vector<std::string> lines;
  const sdxl::TrainResult result =
      sdxl::train(options, [&](const std::string& line) { lines.push_back(line); });
  EXPECT_EQ(result.epochs, 4);
  EXPECT_EQ(result.steps, 4 * 8);  // 8 images x 4 repeats / batch 4
  EXPECT_EQ(result.modules, 132u);

  std::vector<int64_t> restart_epochs;
  std::vector<double> validation;
  std::map<std::string, int64_t> last_ranks;
  for (const Value& record : records(scratch / "metrics.jsonl")) {
    const std::string type = record.find("type")->as_string();
    if (type == "restart") {
      restart_epochs.push_back(record.find("epoch")->as_int());
      last_ranks.clear();
      for (const Value& module : record.find("modules")->as_array())
        last_ranks[module.find("name")->as_string()] = module.find("K")->as_int();
    } else if (type == "epoch") {
      validation.push_back(record.find("validation_loss")->as_double());
    }
  }
  EXPECT_EQ(restart_epochs, (std::vector<int64_t>{0, 2}));
  ASSERT_EQ(validation.size(), 4u);
  EXPECT_LT(validation.back(), validation.front());

  const auto file = aclora::lora::open_lora(result.lora);
  ASSERT_EQ(file.modules.size(), 132u);
  for (const auto& module : file.modules)
    EXPECT_EQ(static_cast<int64_t>(module.rank), last_ranks.at(module.name)) << module.name;
  EXPECT_EQ(file.metadata.at("ss_base_model_version"), "sdxl_base_v1-0");
  EXPECT_EQ(file.metadata.at("ss_num_epochs"), "4");
  EXPECT_EQ(file.metadata.at("ss_steps"), "32");
  EXPECT_NE(file.metadata.at("ss_tag_frequency").find("shapestyle"), std::string::npos);
  EXPECT_TRUE(fs::exists(scratch / "ranks.png"));
  EXPECT_FALSE(fs::is_empty(scratch / "tensorboard"));

  const auto tensors = tensors_of(result.lora);
  const auto metadata = metadata_of(result.lora);
  auto again = options;
  again.resume = true;
  const auto resumed = sdxl::train(again, [](const std::string&) {});
  EXPECT_EQ(resumed.steps, result.steps);
  EXPECT_EQ(resumed.ranks, result.ranks);
  EXPECT_TRUE(tensors_of(resumed.lora) == tensors) << "the resumed run's LoRA tensors differ";
  EXPECT_EQ(metadata_of(resumed.lora), metadata);
}

// The caches: a second run reuses every latent and caption; a changed image is encoded again.
TEST(Trainer, CachesAreReusedAndInvalidated) {
  const aclora::test::ScratchDir scratch;
  fs::copy(sdxl_test::sdxl_fixtures() / "train_data", scratch / "data",
           fs::copy_options::recursive);
  auto options = sdxl_test::tiny_train_options(scratch / "run1");
  options.data = scratch / "data";
  options.validation_dir.reset();
  options.epochs = 1;
  options.cache_dir = scratch / "cache";
  std::vector<std::string> first, second, third;
  sdxl::train(options, [&](const std::string& line) { first.push_back(line); });
  options.output = scratch / "run2";
  sdxl::train(options, [&](const std::string& line) { second.push_back(line); });
  const auto line_with = [](const std::vector<std::string>& lines, const std::string& start) {
    for (const auto& line : lines)
      if (line.rfind(start, 0) == 0)
        return line;
    return std::string();
  };
  EXPECT_EQ(line_with(first, "latents:"), "latents: 0 reused, 8 computed");
  EXPECT_EQ(line_with(second, "latents:"), "latents: 8 reused, 0 computed");
  EXPECT_EQ(line_with(second, "text:"), "text: 9 reused, 0 computed");  // 8 captions and ""
  fs::copy_file(sdxl_test::sdxl_fixtures() / "train_data" / "4_shapes" / "01_blue_square.png",
                scratch / "data" / "4_shapes" / "00_red_circle.png",
                fs::copy_options::overwrite_existing);
  options.output = scratch / "run3";
  sdxl::train(options, [&](const std::string& line) { third.push_back(line); });
  EXPECT_EQ(line_with(third, "latents:"), "latents: 7 reused, 1 computed");
}

namespace {

pid_t start_child(const std::vector<std::string>& arguments) {
  return aclora::test::start_child(ACLORA_TRAIN_CHILD, arguments, /*quiet=*/true);
}

}  // namespace

// A run killed with SIGKILL after its first epoch's state was saved (somewhere in epoch 2)
// and resumed ends with a LoRA whose tensors equal an uninterrupted run's byte for byte, and
// with the same metrics records (timings aside).
TEST(Trainer, ResumeAfterSigkillIsBitIdentical) {
  const aclora::test::ScratchDir scratch;
  ASSERT_EQ(aclora::test::wait_for(start_child({(scratch / "straight").string()})), 0);
  const pid_t killed = start_child({(scratch / "killed").string()});
  const fs::path first_state = scratch / "killed" / "state" / "state-000000008";
  for (int i = 0; i < 6000 && !fs::exists(first_state / "manifest.json"); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(fs::exists(first_state / "manifest.json"));
  kill(killed, SIGKILL);
  const int status = aclora::test::wait_for(killed);
  ASSERT_TRUE(WIFSIGNALED(status));
  ASSERT_EQ(aclora::test::wait_for(start_child({(scratch / "killed").string(), "--resume"})), 0);
  const auto resumed = tensors_of(scratch / "killed" / "lora.safetensors");
  const auto straight = tensors_of(scratch / "straight" / "lora.safetensors");
  ASSERT_EQ(resumed.size(), straight.size());
  std::vector<std::string> differing;
  for (const auto& [name, bytes] : straight)
    if (!resumed.contains(name) || resumed.at(name) != bytes)
      differing.push_back(name);
  EXPECT_TRUE(differing.empty()) << differing.size() << " tensors differ, the first "
                                 << differing.front();
  const auto without_timings = [](const fs::path& path) {
    return aclora::test::metrics_records(path, /*drop_timings=*/true);
  };
  EXPECT_EQ(without_timings(scratch / "killed" / "metrics.jsonl"),
            without_timings(scratch / "straight" / "metrics.jsonl"));
}

namespace {

// Every file under `folder` with a checksum of its bytes (folders as "dir"): equal snapshots
// mean nothing was written, removed or changed.
std::map<std::string, std::string> snapshot(const fs::path& folder) {
  std::map<std::string, std::string> out;
  for (const auto& entry : fs::recursive_directory_iterator(folder)) {
    const std::string name = fs::relative(entry.path(), folder).string();
    if (entry.is_directory()) {
      out[name] = "dir";
    } else {
      std::ifstream in(entry.path(), std::ios::binary);
      const std::string bytes{std::istreambuf_iterator<char>(in), {}};
      out[name] =
          std::to_string(bytes.size()) + ":" + std::to_string(std::hash<std::string>{}(bytes));
    }
  }
  return out;
}

// A finished one-epoch run (RESTART after it) of a copy of the tiny model on a copy of the
// training data, made once; each test resumes its own copy of all three.
class TrainerResume : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    base_ = new aclora::test::ScratchDir();
    fs::copy(sdxl_test::sdxl_fixtures() / "tiny-sdxl", *base_ / "model",
             fs::copy_options::recursive);
    fs::copy(sdxl_test::sdxl_fixtures() / "train_data", *base_ / "data",
             fs::copy_options::recursive);
    sdxl::train(options_in(base_->path()), [](const std::string&) {});
  }
  static void TearDownTestSuite() {
    delete base_;
    base_ = nullptr;
  }

  // The base run's options with model, data and output in `root`.
  static sdxl::TrainOptions options_in(const fs::path& root) {
    auto options = sdxl_test::tiny_train_options(root / "run");
    options.model = root / "model";
    options.data = root / "data";
    options.validation_dir.reset();
    options.epochs = 1;
    return options;
  }

  void SetUp() override { fs::copy(base_->path(), scratch_.path(), fs::copy_options::recursive); }

  // The options to resume this test's copy with.
  sdxl::TrainOptions resume_options() const {
    auto options = options_in(scratch_.path());
    options.resume = true;
    options.data_defaults.subsets.resize(1);  // the subset defaults, as the command line has
    return options;
  }

  // Resuming with `options` is refused with an error that holds `expected` (the dotted key and
  // both values), and nothing in the run folder, the model or the data changed.
  void expect_refused(const sdxl::TrainOptions& options, const std::string& expected) const {
    const auto before = snapshot(scratch_.path());
    try {
      sdxl::train(options, [](const std::string&) {});
      ADD_FAILURE() << "the resume was accepted; expected an error with " << expected;
    } catch (const aclora::train::Error& error) {
      EXPECT_NE(std::string(error.what()).find(expected), std::string::npos) << error.what();
    }
    EXPECT_EQ(snapshot(scratch_.path()), before) << "a refused resume changed files";
  }

  static aclora::test::ScratchDir* base_;
  aclora::test::ScratchDir scratch_;
};

aclora::test::ScratchDir* TrainerResume::base_ = nullptr;

}  // namespace

TEST_F(TrainerResume, RefusesAnotherBatchSize) {
  auto options = resume_options();
  options.data_defaults.batch_size = 2;
  expect_refused(options, "trainer.data.datasets.0.batch_size (state: 4, now: 2)");
}

TEST_F(TrainerResume, RefusesAnotherResolutionOrBucketSetting) {
  auto options = resume_options();
  options.data_defaults.buckets.resolution_width = 64;
  options.data_defaults.buckets.resolution_height = 64;
  expect_refused(options, "trainer.data.datasets.0.buckets.resolution_width (state: 32, now: 64)");
  options = resume_options();
  options.data_defaults.buckets.max_bucket_reso = 128;
  expect_refused(options, "trainer.data.datasets.0.buckets.max_bucket_reso (state: 64, now: 128)");
}

TEST_F(TrainerResume, RefusesAnotherPredictionTarget) {
  auto options = resume_options();
  options.prediction = sdxl::PredictionTarget::v;  // the model's scheduler says epsilon
  expect_refused(options, "trainer.loss.prediction (state: \"epsilon\", now: \"v\")");
}

TEST_F(TrainerResume, RefusesOtherCaptionOptions) {
  auto options = resume_options();
  options.data_defaults.subsets[0].shuffle_caption = true;
  expect_refused(options,
                 "trainer.data.datasets.0.subsets.0.shuffle_caption (state: false, now: true)");
  options = resume_options();
  options.data_defaults.subsets[0].keep_tokens = 1;
  expect_refused(options, "trainer.data.datasets.0.subsets.0.keep_tokens (state: 0, now: 1)");
  options = resume_options();
  options.data_defaults.subsets[0].caption_dropout_rate = 0.5;
  expect_refused(options, "trainer.data.datasets.0.subsets.0.caption_dropout_rate (state: 0");
  // A caption file's first line is the caption: another first line is another training.
  std::ofstream(scratch_ / "data" / "4_shapes" / "00_red_circle.txt") << "a blue circle\n";
  expect_refused(resume_options(),
                 "trainer.data.datasets.0.subsets.0.images.00_red_circle.png.caption");
}

// The same data through a dataset TOML resumes the folder run (settings are compared, not how
// they were given); another subset setting in the TOML is refused.
TEST_F(TrainerResume, ComparesTheDatasetTomlSettings) {
  const auto toml = [&](const std::string& extra) {
    std::ofstream(scratch_ / "set.toml")
        << "[[datasets]]\n\n  [[datasets.subsets]]\n  image_dir = \"data/4_shapes\"\n"
        << "  num_repeats = 4\n"
        << extra;
    auto options = resume_options();
    options.data.reset();
    options.dataset_config = scratch_ / "set.toml";
    return options;
  };
  expect_refused(toml("  caption_dropout_rate = 0.25\n"),
                 "trainer.data.datasets.0.subsets.0.caption_dropout_rate (state: 0");
  const auto resumed = sdxl::train(toml(""), [](const std::string&) {});
  EXPECT_EQ(resumed.steps, 8);
}

// The model is compared by the bytes of its weight files: changed at the same path, refused.
TEST_F(TrainerResume, RefusesAModelChangedAtTheSamePath) {
  const fs::path weights = scratch_ / "model" / "unet" / "diffusion_pytorch_model.safetensors";
  {
    std::fstream file(weights, std::ios::in | std::ios::out | std::ios::binary);
    file.seekg(-1, std::ios::end);
    const char last = static_cast<char>(file.get());
    file.seekp(-1, std::ios::end);
    file.put(static_cast<char>(last ^ 1));  // the lowest bit of the last value's top byte
  }
  expect_refused(resume_options(), "trainer.model.weights (state: \"");
}

// ... and the same bytes through another path (a copy elsewhere, a relative path) resume.
TEST_F(TrainerResume, AcceptsTheSameModelThroughAnotherPath) {
  fs::create_directories(scratch_ / "elsewhere");
  fs::copy(scratch_ / "model", scratch_ / "elsewhere" / "model", fs::copy_options::recursive);
  auto options = resume_options();
  options.model = scratch_ / "elsewhere" / "model";
  EXPECT_EQ(sdxl::train(options, [](const std::string&) {}).steps, 8);
  options.model = fs::relative(scratch_ / "model");
  EXPECT_EQ(sdxl::train(options, [](const std::string&) {}).steps, 8);
}
