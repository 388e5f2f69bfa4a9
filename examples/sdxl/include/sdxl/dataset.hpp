/// @file dataset.hpp
/// Training data as sd-scripts users lay it out: a folder of images with same-stem caption
/// files, `N_name/` sub-folders repeated N times, or a dataset TOML (`[general]`,
/// `[[datasets]]`, `[[datasets.subsets]]`; inner tables override outer ones). Every image is
/// opened and checked before training starts; problems name the file.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "sdxl/buckets.hpp"

namespace sdxl {

/// A data set problem (bad TOML with line and key, missing folder or caption, unreadable
/// image, empty data set...). The message names the file.
class DatasetError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// What to do when an image has no caption file.
enum class MissingCaption {
  error,  ///< refuse (default)
  empty,  ///< train with the empty caption
};

/// One folder of images and its options (sd-scripts' subset keys).
struct SubsetConfig {
  std::filesystem::path image_dir;         ///< the images (not recursive)
  int64_t num_repeats = 1;                 ///< each image counts this many times per epoch
  std::string caption_extension = ".txt";  ///< caption file = image stem + this
  bool shuffle_caption = false;            ///< shuffle the comma-separated tags (after keep_tokens)
  int64_t keep_tokens = 0;                 ///< leading tags that stay in place
  double caption_dropout_rate = 0.0;       ///< probability of training a sample with ""
  std::string class_tokens;  ///< caption for images without a caption file (when given)
};

/// One data set: its buckets, batch size and subsets.
struct DatasetConfig {
  BucketOptions buckets;              ///< resolution and bucket settings
  int64_t batch_size = 1;             ///< images per batch (one bucket per batch)
  std::vector<SubsetConfig> subsets;  ///< at least one
};

/// All data sets of a run.
struct DataConfig {
  std::vector<DatasetConfig> datasets;  ///< at least one
};

/// Reads a dataset TOML. Known keys: [general] and [[datasets]]: resolution (n or [w, h]),
/// enable_bucket, min_bucket_reso, max_bucket_reso, bucket_reso_steps, bucket_no_upscale,
/// batch_size, and the subset keys as defaults; [[datasets.subsets]]: image_dir (relative
/// to the TOML's folder), num_repeats, caption_extension, shuffle_caption, keep_tokens,
/// caption_dropout_rate, class_tokens. `defaults` gives the values nobody sets.
/// @throws DatasetError naming the file, the line and the key for syntax errors, unknown
/// keys, wrong types and out-of-range values.
DataConfig read_dataset_toml(const std::filesystem::path& path, const DatasetConfig& defaults);

/// A data set from a folder: each sub-folder named `N_name` is a subset repeated N times;
/// a folder with images and no such sub-folders is one subset repeated once.
/// @throws DatasetError when the folder is missing or holds neither.
DataConfig folder_dataset(const std::filesystem::path& folder, const DatasetConfig& defaults);

/// One training image, checked: where it is, its caption, size and bucket.
struct TrainImage {
  std::filesystem::path path;  ///< the image file
  std::string caption;         ///< the caption file's first line (trimmed), or class_tokens / ""
  std::size_t dataset = 0;     ///< index in DataConfig::datasets
  std::size_t subset = 0;      ///< index in the data set's subsets
  int64_t repeats = 1;         ///< num_repeats of its subset
  Resolution original;         ///< size of the image (after EXIF orientation)
  BucketChoice choice;         ///< bucket, resize, crop box
};

/// Opens every image of every subset (sorted by file name), reads its caption and chooses
/// its bucket. @throws DatasetError naming the file: unreadable or corrupt image, image
/// smaller than the smallest bucket, missing caption (unless `missing` is empty or the
/// subset has class_tokens), empty subset, empty data set.
std::vector<TrainImage> scan_dataset(const DataConfig& config, MissingCaption missing);

/// The caption of one sample: shuffle_caption / keep_tokens / caption_dropout_rate of its
/// subset applied with the random stream `key` (same key, same caption).
std::string sample_caption(const std::string& caption, const SubsetConfig& subset, uint64_t key);

}  // namespace sdxl
