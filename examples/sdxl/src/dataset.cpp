#include "sdxl/dataset.hpp"

#include <aclora/philox.hpp>

#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>

#include "sdxl/image_file.hpp"

namespace sdxl {
namespace {

namespace fs = std::filesystem;

const std::set<std::string> kBucketKeys = {
    "resolution",        "enable_bucket",     "min_bucket_reso", "max_bucket_reso",
    "bucket_reso_steps", "bucket_no_upscale", "batch_size"};
const std::set<std::string> kSubsetKeys = {"num_repeats", "caption_extension",    "shuffle_caption",
                                           "keep_tokens", "caption_dropout_rate", "class_tokens"};

std::string where(const fs::path& file, const toml::node& node, const std::string& key) {
  return file.string() + ":" + std::to_string(node.source().begin.line) + ": key '" + key + "'";
}

int64_t integer(const fs::path& file, const toml::node& node, const std::string& key,
                int64_t minimum) {
  const auto value = node.value<int64_t>();
  if (!node.is_integer() || !value)
    throw DatasetError(where(file, node, key) + " must be an integer");
  if (*value < minimum)
    throw DatasetError(where(file, node, key) + " must be >= " + std::to_string(minimum) +
                       ", got " + std::to_string(*value));
  return *value;
}

bool boolean(const fs::path& file, const toml::node& node, const std::string& key) {
  if (!node.is_boolean())
    throw DatasetError(where(file, node, key) + " must be true or false");
  return *node.value<bool>();
}

std::string text(const fs::path& file, const toml::node& node, const std::string& key) {
  if (!node.is_string())
    throw DatasetError(where(file, node, key) + " must be a string");
  return *node.value<std::string>();
}

// Applies the keys of `table` that belong to `allowed` to the data set / subset settings.
void apply(const fs::path& file, const toml::table& table, const std::set<std::string>& allowed,
           DatasetConfig* dataset, SubsetConfig* subset) {
  for (const auto& [key_view, node] : table) {
    const std::string key(key_view.str());
    if (!allowed.count(key))
      continue;
    if (key == "resolution") {
      if (node.is_array()) {
        const auto& array = *node.as_array();
        if (array.size() != 2)
          throw DatasetError(where(file, node, key) + " must be a number or [width, height]");
        dataset->buckets.resolution_width = integer(file, *array.get(0), key, 64);
        dataset->buckets.resolution_height = integer(file, *array.get(1), key, 64);
      } else {
        dataset->buckets.resolution_width = dataset->buckets.resolution_height =
            integer(file, node, key, 64);
      }
    } else if (key == "enable_bucket") {
      dataset->buckets.enable_bucket = boolean(file, node, key);
    } else if (key == "min_bucket_reso") {
      dataset->buckets.min_bucket_reso = integer(file, node, key, 1);
    } else if (key == "max_bucket_reso") {
      dataset->buckets.max_bucket_reso = integer(file, node, key, 1);
    } else if (key == "bucket_reso_steps") {
      dataset->buckets.bucket_reso_steps = integer(file, node, key, 1);
    } else if (key == "bucket_no_upscale") {
      dataset->buckets.bucket_no_upscale = boolean(file, node, key);
    } else if (key == "batch_size") {
      dataset->batch_size = integer(file, node, key, 1);
    } else if (key == "num_repeats") {
      subset->num_repeats = integer(file, node, key, 1);
    } else if (key == "caption_extension") {
      subset->caption_extension = text(file, node, key);
    } else if (key == "shuffle_caption") {
      subset->shuffle_caption = boolean(file, node, key);
    } else if (key == "keep_tokens") {
      subset->keep_tokens = integer(file, node, key, 0);
    } else if (key == "caption_dropout_rate") {
      const auto value = node.value<double>();
      if (!value || !(node.is_floating_point() || node.is_integer()) || *value < 0.0 ||
          *value > 1.0)
        throw DatasetError(where(file, node, key) + " must be a number in [0, 1]");
      subset->caption_dropout_rate = *value;
    } else if (key == "class_tokens") {
      subset->class_tokens = text(file, node, key);
    }
  }
}

// Refuses keys outside `allowed` (sd-scripts has more; better a clear error than an ignored
// setting).
void check_keys(const fs::path& file, const toml::table& table,
                const std::set<std::string>& allowed, const std::string& section) {
  for (const auto& [key_view, node] : table) {
    const std::string key(key_view.str());
    if (!allowed.count(key)) {
      throw DatasetError(where(file, node, key) + " in " + section +
                         " is not supported (known: resolution, enable_bucket, min_bucket_reso, "
                         "max_bucket_reso, bucket_reso_steps, bucket_no_upscale, batch_size, "
                         "image_dir, num_repeats, caption_extension, shuffle_caption, keep_tokens, "
                         "caption_dropout_rate, class_tokens)");
    }
  }
}

std::set<std::string> united(std::set<std::string> a, const std::set<std::string>& b) {
  a.insert(b.begin(), b.end());
  return a;
}

std::string trimmed(std::string text) {
  const auto not_space = [](unsigned char c) { return !std::isspace(c); };
  text.erase(text.begin(), std::find_if(text.begin(), text.end(), not_space));
  text.erase(std::find_if(text.rbegin(), text.rend(), not_space).base(), text.end());
  return text;
}

// A caption file's caption: its first line, trimmed (sd-scripts reads only that line; the
// rest of the file may hold notes). Lines end at \n, \r\n or \r, as in Python's text files.
std::string caption_line(const std::string& text) {
  return trimmed(text.substr(0, text.find_first_of("\r\n")));
}

std::vector<fs::path> images_in(const fs::path& folder) {
  std::vector<fs::path> images;
  for (const auto& item : fs::directory_iterator(folder)) {
    if (item.is_regular_file() && is_image_file(item.path()))
      images.push_back(item.path());
  }
  std::sort(images.begin(), images.end());
  return images;
}

// Philox draws of one caption's stream: uniform in [0, 1).
struct CaptionRandom {
  uint64_t key;
  uint32_t counter = 0;
  double next() {
    const aclora::PhiloxBlock block =
        aclora::philox4x32_10({{counter++, 0x63617074u /* "capt" */, 0, 0}},
                              static_cast<uint32_t>(key), static_cast<uint32_t>(key >> 32));
    return static_cast<double>((static_cast<uint64_t>(block.word[0]) << 21) ^ block.word[1]) *
           0x1p-53;
  }
};

}  // namespace

DataConfig read_dataset_toml(const fs::path& path, const DatasetConfig& defaults) {
  toml::table root;
  try {
    root = toml::parse_file(path.string());
  } catch (const toml::parse_error& error) {
    throw DatasetError(path.string() + ":" + std::to_string(error.source().begin.line) + ":" +
                       std::to_string(error.source().begin.column) + ": " +
                       std::string(error.description()));
  }
  const fs::path base = path.parent_path();
  for (const auto& [key_view, node] : root) {
    const std::string key(key_view.str());
    if (key != "general" && key != "datasets")
      throw DatasetError(where(path, node, key) + ": only [general] and [[datasets]] are known");
  }
  DatasetConfig general = defaults;
  SubsetConfig general_subset = defaults.subsets.empty() ? SubsetConfig{} : defaults.subsets[0];
  if (const toml::table* table = root["general"].as_table()) {
    check_keys(path, *table, united(kBucketKeys, kSubsetKeys), "[general]");
    apply(path, *table, united(kBucketKeys, kSubsetKeys), &general, &general_subset);
  }
  const toml::array* datasets = root["datasets"].as_array();
  if (!datasets || datasets->empty())
    throw DatasetError(path.string() + ": no [[datasets]] table");
  DataConfig config;
  for (const toml::node& dataset_node : *datasets) {
    const toml::table* table = dataset_node.as_table();
    if (!table)
      throw DatasetError(where(path, dataset_node, "datasets") + " must be a table");
    check_keys(path, *table, united(united(kBucketKeys, kSubsetKeys), {"subsets"}), "[[datasets]]");
    DatasetConfig dataset = general;
    dataset.subsets.clear();
    SubsetConfig dataset_subset = general_subset;
    apply(path, *table, united(kBucketKeys, kSubsetKeys), &dataset, &dataset_subset);
    const toml::array* subsets = (*table)["subsets"].as_array();
    if (!subsets || subsets->empty())
      throw DatasetError(where(path, dataset_node, "datasets") +
                         ": a data set needs [[datasets.subsets]]");
    for (const toml::node& subset_node : *subsets) {
      const toml::table* subset_table = subset_node.as_table();
      if (!subset_table)
        throw DatasetError(where(path, subset_node, "subsets") + " must be a table");
      check_keys(path, *subset_table, united(kSubsetKeys, {"image_dir"}), "[[datasets.subsets]]");
      SubsetConfig subset = dataset_subset;
      apply(path, *subset_table, kSubsetKeys, nullptr, &subset);
      const toml::node* image_dir = subset_table->get("image_dir");
      if (!image_dir)
        throw DatasetError(where(path, subset_node, "image_dir") + " is missing in a subset");
      subset.image_dir = fs::path(text(path, *image_dir, "image_dir"));
      if (subset.image_dir.is_relative())
        subset.image_dir = base / subset.image_dir;
      dataset.subsets.push_back(subset);
    }
    try {
      BucketPlanner check(dataset.buckets);
    } catch (const std::invalid_argument& error) {
      throw DatasetError(where(path, dataset_node, "datasets") + ": " + error.what());
    }
    config.datasets.push_back(std::move(dataset));
  }
  return config;
}

DataConfig folder_dataset(const fs::path& folder, const DatasetConfig& defaults) {
  if (!fs::is_directory(folder))
    throw DatasetError(folder.string() + ": no such data folder");
  DatasetConfig dataset = defaults;
  const SubsetConfig base = defaults.subsets.empty() ? SubsetConfig{} : defaults.subsets[0];
  dataset.subsets.clear();
  std::vector<fs::path> children;
  for (const auto& item : fs::directory_iterator(folder))
    if (item.is_directory())
      children.push_back(item.path());
  std::sort(children.begin(), children.end());
  for (const fs::path& child : children) {
    const std::string name = child.filename().string();
    const std::size_t underscore = name.find('_');
    if (underscore == std::string::npos || underscore == 0 ||
        !std::all_of(name.begin(), name.begin() + static_cast<std::ptrdiff_t>(underscore),
                     [](unsigned char c) { return std::isdigit(c); }))
      continue;
    SubsetConfig subset = base;
    subset.image_dir = child;
    subset.num_repeats = std::stoll(name.substr(0, underscore));
    if (subset.num_repeats < 1)
      throw DatasetError(child.string() + ": the repeat count must be >= 1");
    dataset.subsets.push_back(subset);
  }
  if (dataset.subsets.empty()) {
    if (images_in(folder).empty())
      throw DatasetError(folder.string() +
                         ": no images and no N_name sub-folders (N = repeats, e.g. 10_style)");
    SubsetConfig subset = base;
    subset.image_dir = folder;
    dataset.subsets.push_back(subset);
  }
  return DataConfig{{dataset}};
}

std::vector<TrainImage> scan_dataset(const DataConfig& config, MissingCaption missing) {
  std::vector<TrainImage> images;
  if (config.datasets.empty())
    throw DatasetError("the data set is empty (no data sets)");
  for (std::size_t d = 0; d < config.datasets.size(); ++d) {
    const DatasetConfig& dataset = config.datasets[d];
    BucketPlanner planner(dataset.buckets);
    for (std::size_t s = 0; s < dataset.subsets.size(); ++s) {
      const SubsetConfig& subset = dataset.subsets[s];
      if (!fs::is_directory(subset.image_dir))
        throw DatasetError(subset.image_dir.string() + ": no such image folder");
      const std::vector<fs::path> files = images_in(subset.image_dir);
      if (files.empty())
        throw DatasetError(subset.image_dir.string() + ": no PNG, JPEG or WebP images");
      for (const fs::path& file : files) {
        TrainImage image;
        image.path = file;
        image.dataset = d;
        image.subset = s;
        image.repeats = subset.num_repeats;
        fs::path caption_file = file;
        caption_file.replace_extension(subset.caption_extension);
        if (fs::exists(caption_file)) {
          std::ifstream in(caption_file, std::ios::binary);
          if (!in)
            throw DatasetError(caption_file.string() + ": cannot read the caption");
          image.caption = caption_line(std::string(std::istreambuf_iterator<char>(in), {}));
        } else if (!subset.class_tokens.empty()) {
          image.caption = subset.class_tokens;
        } else if (missing == MissingCaption::error) {
          throw DatasetError(file.string() + ": no caption file " +
                             caption_file.filename().string() +
                             " (write one, or train with --caption-missing empty)");
        }
        try {
          const RgbImage pixels = read_image(file);
          image.original = {pixels.width, pixels.height};
          image.choice = planner.choose(pixels.width, pixels.height);
        } catch (const ImageError& error) {
          throw DatasetError(error.what());
        } catch (const std::invalid_argument& error) {
          throw DatasetError(file.string() + ": " + error.what());
        }
        images.push_back(std::move(image));
      }
    }
  }
  if (images.empty())
    throw DatasetError("the data set is empty (no images)");
  return images;
}

std::string sample_caption(const std::string& caption, const SubsetConfig& subset, uint64_t key) {
  CaptionRandom random{key};
  if (subset.caption_dropout_rate > 0.0 && random.next() < subset.caption_dropout_rate)
    return "";
  if (!subset.shuffle_caption)
    return caption;
  std::vector<std::string> tags;
  std::stringstream stream(caption);
  for (std::string tag; std::getline(stream, tag, ',');) {
    tag = trimmed(tag);
    if (!tag.empty())
      tags.push_back(tag);
  }
  const auto fixed = static_cast<std::size_t>(
      std::min<int64_t>(subset.keep_tokens, static_cast<int64_t>(tags.size())));
  for (std::size_t i = tags.size(); i > fixed + 1; --i) {
    const std::size_t j =
        fixed + static_cast<std::size_t>(random.next() * static_cast<double>(i - fixed));
    std::swap(tags[i - 1], tags[j]);
  }
  std::string out;
  for (std::size_t i = 0; i < tags.size(); ++i)
    out += (i ? ", " : "") + tags[i];
  return out;
}

}  // namespace sdxl
