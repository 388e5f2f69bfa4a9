// Training data (sdxl/dataset.hpp, batches.hpp, sample_prompts.hpp): sd-scripts' folder
// layout and dataset TOML, captions and repeats, the checks before training, epoch batches,
// caption shuffling, sample prompt files.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>

#include "scratch_dir.hpp"
#include "sdxl/batches.hpp"
#include "sdxl/dataset.hpp"
#include "sdxl/sample_prompts.hpp"

namespace {

namespace fs = std::filesystem;

fs::path images() {
  return fs::path(ACLORA_FIXTURES_DIR) / "images";
}

void write(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path) << text;
}

// A data folder: 3_style/ with two captioned images, 1_extra/ with one.
fs::path make_folder(const aclora::test::ScratchDir& scratch) {
  const fs::path root = scratch / "data";
  fs::create_directories(root / "3_style");
  fs::create_directories(root / "1_extra");
  fs::copy_file(images() / "rgb.png", root / "3_style" / "a.png");
  fs::copy_file(images() / "plain.jpg", root / "3_style" / "b.jpg");
  fs::copy_file(images() / "lossless.webp", root / "1_extra" / "c.webp");
  write(root / "3_style" / "a.txt", "  red, square , gradient\n");
  write(root / "3_style" / "b.txt", "blue photo");
  write(root / "1_extra" / "c.txt", "extra");
  write(root / "3_style" / "notes.md", "not an image");
  return root;
}

sdxl::DatasetConfig small_defaults() {
  sdxl::DatasetConfig defaults;
  defaults.buckets.resolution_width = defaults.buckets.resolution_height = 64;
  defaults.buckets.min_bucket_reso = 32;
  defaults.buckets.max_bucket_reso = 128;
  defaults.buckets.bucket_reso_steps = 32;
  return defaults;
}

std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const std::exception& error) {
    return error.what();
  }
  return "no error";
}

}  // namespace

// A caption file's caption is its first line only (sd-scripts): later lines (notes, a second
// caption) are not trained, whichever of \n, \r\n or \r ends the line.
TEST(Dataset, CaptionIsTheFirstLineOfTheFile) {
  const aclora::test::ScratchDir scratch;
  const fs::path root = scratch / "data";
  const std::map<std::string, std::string> files = {{"a", " red, square \nnotes: not a caption\n"},
                                                    {"b", "blue photo\r\nsecond line"},
                                                    {"c", "old mac\rline"},
                                                    {"d", "one line, no newline"}};
  for (const auto& [stem, text] : files) {
    fs::create_directories(root);
    fs::copy_file(images() / "rgb.png", root / (stem + ".png"));
    write(root / (stem + ".txt"), text);
  }
  std::map<std::string, std::string> captions;
  for (const auto& image : sdxl::scan_dataset(sdxl::folder_dataset(root, small_defaults()),
                                              sdxl::MissingCaption::error))
    captions[image.path.stem().string()] = image.caption;
  EXPECT_EQ(captions, (std::map<std::string, std::string>{{"a", "red, square"},
                                                          {"b", "blue photo"},
                                                          {"c", "old mac"},
                                                          {"d", "one line, no newline"}}));
}

// N_name sub-folders are subsets repeated N times; captions come from same-stem .txt files
// (trimmed); files that are not images are ignored; every image gets a bucket.
TEST(Dataset, FolderLayoutCaptionsAndRepeats) {
  const aclora::test::ScratchDir scratch;
  const fs::path root = make_folder(scratch);
  const sdxl::DataConfig config = sdxl::folder_dataset(root, small_defaults());
  ASSERT_EQ(config.datasets.size(), 1u);
  ASSERT_EQ(config.datasets[0].subsets.size(), 2u);
  EXPECT_EQ(config.datasets[0].subsets[0].num_repeats, 1);  // 1_extra sorts first
  EXPECT_EQ(config.datasets[0].subsets[1].num_repeats, 3);
  const auto scanned = sdxl::scan_dataset(config, sdxl::MissingCaption::error);
  ASSERT_EQ(scanned.size(), 3u);
  std::map<std::string, sdxl::TrainImage> by_name;
  for (const auto& image : scanned)
    by_name[image.path.filename().string()] = image;
  EXPECT_EQ(by_name.at("a.png").caption, "red, square , gradient");
  EXPECT_EQ(by_name.at("b.jpg").repeats, 3);
  EXPECT_EQ(by_name.at("c.webp").caption, "extra");
  EXPECT_EQ(by_name.at("a.png").original, (sdxl::Resolution{40, 30}));
  EXPECT_EQ(by_name.at("a.png").choice.bucket.width % 32, 0);
  // A flat folder of images is one subset repeated once.
  const auto flat = sdxl::folder_dataset(root / "3_style", small_defaults());
  EXPECT_EQ(flat.datasets[0].subsets.size(), 1u);
  EXPECT_EQ(flat.datasets[0].subsets[0].num_repeats, 1);
}

// Before training, every problem names its file: a missing caption (unless empty captions are
// allowed or the subset has class tokens), a corrupt image, an empty or missing folder.
TEST(Dataset, ChecksBeforeTraining) {
  const aclora::test::ScratchDir scratch;
  const fs::path root = make_folder(scratch);
  fs::remove(root / "3_style" / "b.txt");
  const auto config = sdxl::folder_dataset(root, small_defaults());
  EXPECT_NE(error_of([&] {
              sdxl::scan_dataset(config, sdxl::MissingCaption::error);
            }).find("b.jpg: no caption file b.txt"),
            std::string::npos);
  const auto scanned = sdxl::scan_dataset(config, sdxl::MissingCaption::empty);
  EXPECT_EQ(scanned.size(), 3u);
  auto with_class = config;
  with_class.datasets[0].subsets[1].class_tokens = "sks style";
  for (const auto& image : sdxl::scan_dataset(with_class, sdxl::MissingCaption::error))
    if (image.path.filename() == "b.jpg")
      EXPECT_EQ(image.caption, "sks style");
  fs::copy_file(images() / "truncated.png", root / "1_extra" / "broken.png");
  write(root / "1_extra" / "broken.txt", "x");
  EXPECT_NE(error_of([&] {
              sdxl::scan_dataset(config, sdxl::MissingCaption::empty);
            }).find("broken.png: corrupt PNG"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              sdxl::folder_dataset(scratch / "nowhere", small_defaults());
            }).find("no such data folder"),
            std::string::npos);
  fs::create_directories(scratch / "empty");
  EXPECT_NE(error_of([&] {
              sdxl::folder_dataset(scratch / "empty", small_defaults());
            }).find("no images and no N_name sub-folders"),
            std::string::npos);
}

// A dataset TOML: [general] values reach every data set, [[datasets]] override them, subsets
// override those; image_dir is relative to the TOML; errors name the file, line and key.
TEST(Dataset, TomlConfig) {
  const aclora::test::ScratchDir scratch;
  make_folder(scratch);
  write(scratch / "set.toml", R"([general]
shuffle_caption = true
keep_tokens = 1
caption_extension = ".txt"

[[datasets]]
resolution = 64
min_bucket_reso = 32
max_bucket_reso = 128
bucket_reso_steps = 32
batch_size = 2

  [[datasets.subsets]]
  image_dir = "data/3_style"
  num_repeats = 5

  [[datasets.subsets]]
  image_dir = "data/1_extra"
  shuffle_caption = false
  caption_dropout_rate = 0.25
)");
  const auto config = sdxl::read_dataset_toml(scratch / "set.toml", sdxl::DatasetConfig{});
  ASSERT_EQ(config.datasets.size(), 1u);
  const auto& dataset = config.datasets[0];
  EXPECT_EQ(dataset.batch_size, 2);
  EXPECT_EQ(dataset.buckets.resolution_width, 64);
  ASSERT_EQ(dataset.subsets.size(), 2u);
  EXPECT_EQ(dataset.subsets[0].num_repeats, 5);
  EXPECT_TRUE(dataset.subsets[0].shuffle_caption);
  EXPECT_EQ(dataset.subsets[0].keep_tokens, 1);
  EXPECT_FALSE(dataset.subsets[1].shuffle_caption);
  EXPECT_DOUBLE_EQ(dataset.subsets[1].caption_dropout_rate, 0.25);
  EXPECT_EQ(dataset.subsets[0].image_dir, scratch / "data/3_style");
  EXPECT_EQ(sdxl::scan_dataset(config, sdxl::MissingCaption::error).size(), 3u);

  const auto toml_error = [&](const std::string& text) {
    write(scratch / "bad.toml", text);
    return error_of([&] { sdxl::read_dataset_toml(scratch / "bad.toml", sdxl::DatasetConfig{}); });
  };
  EXPECT_NE(toml_error("[[datasets]]\nresolution = \n").find("bad.toml:2"), std::string::npos);
  EXPECT_NE(toml_error("[[datasets]]\nflip_aug = true\n[[datasets.subsets]]\nimage_dir = \"x\"\n")
                .find("bad.toml:2: key 'flip_aug' in [[datasets]] is not supported"),
            std::string::npos);
  EXPECT_NE(
      toml_error("[[datasets]]\nbatch_size = \"two\"\n[[datasets.subsets]]\nimage_dir = \"x\"\n")
          .find("key 'batch_size' must be an integer"),
      std::string::npos);
  EXPECT_NE(toml_error("[[datasets]]\n[[datasets.subsets]]\nnum_repeats = 2\n")
                .find("key 'image_dir' is missing"),
            std::string::npos);
  EXPECT_NE(toml_error("[general]\nbatch_size = 1\n").find("no [[datasets]]"), std::string::npos);
  EXPECT_NE(toml_error("[[datasets]]\nresolution = 1024\nmax_bucket_reso = 512\n"
                       "[[datasets.subsets]]\nimage_dir = \"x\"\n")
                .find("max_bucket_reso"),
            std::string::npos);
}

// Each epoch's batches hold every sample (image x repeats) once, never mix buckets, have the
// data set's batch size (the last of a bucket may be smaller), differ between epochs, and are
// the same for the same (seed, epoch).
TEST(Dataset, EpochBatches) {
  const aclora::test::ScratchDir scratch;
  make_folder(scratch);
  auto config = sdxl::folder_dataset(scratch / "data", small_defaults());
  config.datasets[0].batch_size = 2;
  const auto scanned = sdxl::scan_dataset(config, sdxl::MissingCaption::error);
  const auto first = sdxl::epoch_batches(scanned, config, 7, 0);
  std::map<std::size_t, int> counts;
  for (const auto& batch : first) {
    ASSERT_GE(batch.size(), 1u);
    ASSERT_LE(batch.size(), 2u);
    for (std::size_t index : batch) {
      ++counts[index];
      EXPECT_EQ(scanned[index].choice.bucket, scanned[batch[0]].choice.bucket);
    }
  }
  for (std::size_t i = 0; i < scanned.size(); ++i)
    EXPECT_EQ(counts[i], scanned[i].repeats);
  EXPECT_EQ(sdxl::epoch_batches(scanned, config, 7, 0), first);
  bool differs = false;
  for (int epoch = 1; epoch < 6 && !differs; ++epoch)
    differs = sdxl::epoch_batches(scanned, config, 7, epoch) != first;
  EXPECT_TRUE(differs);
  EXPECT_EQ(sdxl::epoch_batches(scanned, config, 7, 3).size(), first.size());
}

// shuffle_caption keeps the first keep_tokens tags in place and permutes the rest
// (deterministically per key); caption_dropout_rate 1 always gives "".
TEST(Dataset, CaptionShuffleAndDropout) {
  sdxl::SubsetConfig subset;
  subset.shuffle_caption = true;
  subset.keep_tokens = 1;
  const std::string caption = "sks, a, b, c, d, e";
  std::set<std::string> seen;
  for (uint64_t key = 0; key < 20; ++key) {
    const std::string shuffled = sdxl::sample_caption(caption, subset, key);
    EXPECT_EQ(shuffled.rfind("sks, ", 0), 0u) << shuffled;
    EXPECT_EQ(shuffled.size(), caption.size());
    EXPECT_EQ(shuffled, sdxl::sample_caption(caption, subset, key));
    seen.insert(shuffled);
  }
  EXPECT_GT(seen.size(), 5u);
  subset.caption_dropout_rate = 1.0;
  EXPECT_EQ(sdxl::sample_caption(caption, subset, 3), "");
}

// sd-scripts' prompt-file options; unknown options and bad numbers name the line.
TEST(Dataset, SamplePromptFiles) {
  const auto prompt = sdxl::parse_sample_prompt(
      "a lighthouse at dawn --n blurry, low quality --w 832 --h 1216 --d 42 --s 20 --l 6.5");
  EXPECT_EQ(prompt.prompt, "a lighthouse at dawn");
  EXPECT_EQ(prompt.negative, "blurry, low quality");
  EXPECT_EQ(prompt.width, 832);
  EXPECT_EQ(prompt.height, 1216);
  EXPECT_EQ(prompt.seed, 42u);
  EXPECT_EQ(prompt.steps, 20);
  EXPECT_DOUBLE_EQ(*prompt.guidance, 6.5);
  EXPECT_EQ(sdxl::parse_sample_prompt("x --s 5000").steps, 1000);
  const aclora::test::ScratchDir scratch;
  write(scratch / "prompts.txt", "# comment\n\nfirst prompt\nsecond --w abc\n");
  EXPECT_NE(error_of([&] {
              sdxl::read_sample_prompts(scratch / "prompts.txt");
            }).find("prompts.txt:4: --w: 'abc' is not a valid number"),
            std::string::npos);
  write(scratch / "prompts.txt", "first --cn image.png\n");
  EXPECT_NE(error_of([&] {
              sdxl::read_sample_prompts(scratch / "prompts.txt");
            }).find("--cn is not supported"),
            std::string::npos);
}
