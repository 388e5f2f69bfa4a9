/// @file buckets.hpp
/// Aspect-ratio buckets as sd-scripts makes them (library/model_util.make_bucket_resolutions
/// and train_util.BucketManager): every image goes to the bucket whose aspect ratio is
/// nearest, is resized to cover it and cropped; batches never mix buckets.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace sdxl {

/// Width and height in pixels.
struct Resolution {
  int64_t width = 0;   ///< pixels
  int64_t height = 0;  ///< pixels
  /// Lexicographic order (width, then height), as sd-scripts sorts its buckets.
  auto operator<=>(const Resolution&) const = default;
};

/// The bucket settings of a data set (sd-scripts' names).
struct BucketOptions {
  int64_t resolution_width = 1024;   ///< `resolution`: max area = width x height
  int64_t resolution_height = 1024;  ///< (a single number means a square)
  int64_t min_bucket_reso = 256;     ///< smallest bucket side
  int64_t max_bucket_reso = 2048;    ///< largest bucket side (>= both resolution sides)
  int64_t bucket_reso_steps = 64;    ///< sides are multiples of this
  bool bucket_no_upscale = false;    ///< per-image buckets, images never enlarged
  bool enable_bucket = true;  ///< false: every image is resized and cropped to the resolution
};

/// The bucket resolutions of make_bucket_resolutions: the square of the max area's side
/// (rounded down to the step) and, for each width from min to max in steps, the largest
/// height in steps with width x height <= max area (capped at max), both orientations;
/// sorted. @throws std::invalid_argument for inconsistent options (the message names them).
std::vector<Resolution> bucket_resolutions(const BucketOptions& options);

/// Where one image goes: its bucket, the size it is resized to (covering the bucket), and
/// sd-scripts' crop box (left, top, right, bottom in bucket pixels: where the image would sit
/// if fitted inside the bucket, SAI's convention for the crop time ids).
struct BucketChoice {
  Resolution bucket;          ///< the training size
  Resolution resized;         ///< size after resizing (>= bucket in both sides)
  double crop_left = 0.0;     ///< crop box, left
  double crop_top = 0.0;      ///< crop box, top
  double crop_right = 0.0;    ///< crop box, right
  double crop_bottom = 0.0;   ///< crop box, bottom
  double aspect_error = 0.0;  ///< bucket aspect ratio minus image aspect ratio
};

/// Chooses buckets for images the way sd-scripts' BucketManager.select_bucket does.
class BucketPlanner {
 public:
  /// @throws std::invalid_argument for inconsistent options.
  explicit BucketPlanner(const BucketOptions& options);

  /// The bucket, resize and crop box of an image of `width` x `height` pixels.
  /// @throws std::invalid_argument for a non-positive size or an image smaller than the
  /// smallest bucket it could go to (no-upscale mode: a side below the step).
  BucketChoice choose(int64_t width, int64_t height) const;

  /// The predefined resolutions (empty in no-upscale mode, whose buckets are per image).
  const std::vector<Resolution>& resolutions() const { return resolutions_; }
  /// The options.
  const BucketOptions& options() const { return options_; }

 private:
  BucketOptions options_;
  std::vector<Resolution> resolutions_;
};

/// The crop box of sd-scripts' BucketManager.get_crop_ltrb for an image of `image` size
/// in `bucket`: (left, top, right, bottom).
std::vector<double> crop_box(const Resolution& bucket, const Resolution& image);

}  // namespace sdxl
