#include "sdxl/buckets.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

namespace sdxl {
namespace {

void validate(const BucketOptions& o) {
  const auto positive = [](int64_t value, const char* name) {
    if (value <= 0)
      throw std::invalid_argument(std::string(name) + " must be > 0, got " + std::to_string(value));
  };
  positive(o.resolution_width, "resolution (width)");
  positive(o.resolution_height, "resolution (height)");
  if (!o.enable_bucket)
    return;
  positive(o.min_bucket_reso, "min_bucket_reso");
  positive(o.max_bucket_reso, "max_bucket_reso");
  positive(o.bucket_reso_steps, "bucket_reso_steps");
  if (o.max_bucket_reso < o.resolution_width || o.max_bucket_reso < o.resolution_height) {
    throw std::invalid_argument("max_bucket_reso (" + std::to_string(o.max_bucket_reso) +
                                ") must be at least the resolution's sides (" +
                                std::to_string(o.resolution_width) + "x" +
                                std::to_string(o.resolution_height) + ")");
  }
  if (o.max_bucket_reso < o.min_bucket_reso) {
    throw std::invalid_argument("max_bucket_reso (" + std::to_string(o.max_bucket_reso) +
                                ") must be at least min_bucket_reso (" +
                                std::to_string(o.min_bucket_reso) + ")");
  }
}

// sd-scripts' round_to_steps: round half up to an integer, then down to a multiple.
int64_t round_to_steps(double x, int64_t steps) {
  const auto rounded = static_cast<int64_t>(x + 0.5);
  return rounded - rounded % steps;
}

}  // namespace

std::vector<Resolution> bucket_resolutions(const BucketOptions& options) {
  validate(options);
  if (!options.enable_bucket)
    return {Resolution{options.resolution_width, options.resolution_height}};
  const int64_t area = options.resolution_width * options.resolution_height;
  const int64_t step = options.bucket_reso_steps;
  std::set<Resolution> resolutions;
  const auto square = static_cast<int64_t>(std::floor(std::sqrt(static_cast<double>(area)) /
                                                      static_cast<double>(step))) *
                      step;
  resolutions.insert({square, square});
  for (int64_t width = options.min_bucket_reso; width <= options.max_bucket_reso; width += step) {
    const int64_t height = std::min(options.max_bucket_reso, area / width / step * step);
    if (height >= options.min_bucket_reso) {
      resolutions.insert({width, height});
      resolutions.insert({height, width});
    }
  }
  return {resolutions.begin(), resolutions.end()};
}

std::vector<double> crop_box(const Resolution& bucket, const Resolution& image) {
  const double bucket_ratio =
      static_cast<double>(bucket.width) / static_cast<double>(bucket.height);
  const double image_ratio = static_cast<double>(image.width) / static_cast<double>(image.height);
  double width = 0.0;
  double height = 0.0;
  if (bucket_ratio > image_ratio) {  // the bucket is wider: fit the height
    width = static_cast<double>(bucket.height) * image_ratio;
    height = static_cast<double>(bucket.height);
  } else {
    width = static_cast<double>(bucket.width);
    height = static_cast<double>(bucket.width) / image_ratio;
  }
  // Python's // on floats: floor division.
  const double left = std::floor((static_cast<double>(bucket.width) - width) / 2.0);
  const double top = std::floor((static_cast<double>(bucket.height) - height) / 2.0);
  return {left, top, left + width, top + height};
}

BucketPlanner::BucketPlanner(const BucketOptions& options)
    : options_(options),
      resolutions_(options.bucket_no_upscale && options.enable_bucket
                       ? std::vector<Resolution>{}
                       : bucket_resolutions(options)) {
  validate(options);
}

BucketChoice BucketPlanner::choose(int64_t width, int64_t height) const {
  if (width <= 0 || height <= 0) {
    throw std::invalid_argument("image size " + std::to_string(width) + "x" +
                                std::to_string(height) + " is not positive");
  }
  const double ratio = static_cast<double>(width) / static_cast<double>(height);
  BucketChoice choice;
  if (!options_.bucket_no_upscale || !options_.enable_bucket) {
    const int64_t smallest_width =
        std::min_element(resolutions_.begin(), resolutions_.end(), [](auto& a, auto& b) {
          return a.width < b.width;
        })->width;
    const int64_t smallest_height =
        std::min_element(resolutions_.begin(), resolutions_.end(), [](auto& a, auto& b) {
          return a.height < b.height;
        })->height;
    if (width < smallest_width && height < smallest_height) {
      throw std::invalid_argument(
          "image of " + std::to_string(width) + "x" + std::to_string(height) +
          " is smaller than the smallest bucket (" + std::to_string(smallest_width) + "x" +
          std::to_string(smallest_height) + ")");
    }
    const Resolution own{width, height};
    Resolution bucket = own;
    if (std::find(resolutions_.begin(), resolutions_.end(), own) == resolutions_.end()) {
      // The first resolution (in sorted order) of least |aspect ratio error| (numpy argmin).
      double best = std::numeric_limits<double>::infinity();
      for (const Resolution& candidate : resolutions_) {
        const double error = std::abs(
            static_cast<double>(candidate.width) / static_cast<double>(candidate.height) - ratio);
        if (error < best) {
          best = error;
          bucket = candidate;
        }
      }
    }
    const double bucket_ratio =
        static_cast<double>(bucket.width) / static_cast<double>(bucket.height);
    const double scale = ratio > bucket_ratio
                             ? static_cast<double>(bucket.height) / static_cast<double>(height)
                             : static_cast<double>(bucket.width) / static_cast<double>(width);
    choice.bucket = bucket;
    choice.resized = {static_cast<int64_t>(static_cast<double>(width) * scale + 0.5),
                      static_cast<int64_t>(static_cast<double>(height) * scale + 0.5)};
  } else {
    const int64_t step = options_.bucket_reso_steps;
    const double max_area = static_cast<double>(options_.resolution_width) *
                            static_cast<double>(options_.resolution_height);
    Resolution resized{width, height};
    if (static_cast<double>(width) * static_cast<double>(height) > max_area) {
      // Shrink to the max area keeping the aspect ratio; round the side whose rounding
      // changes the aspect ratio least to the step.
      const double resized_width = std::sqrt(max_area * ratio);
      const double resized_height = max_area / resized_width;
      const int64_t width_rounded = round_to_steps(resized_width, step);
      const int64_t height_for_width =
          round_to_steps(static_cast<double>(width_rounded) / ratio, step);
      const double ratio_width_rounded =
          static_cast<double>(width_rounded) / static_cast<double>(height_for_width);
      const int64_t height_rounded = round_to_steps(resized_height, step);
      const int64_t width_for_height =
          round_to_steps(static_cast<double>(height_rounded) * ratio, step);
      const double ratio_height_rounded =
          static_cast<double>(width_for_height) / static_cast<double>(height_rounded);
      if (std::abs(ratio_width_rounded - ratio) < std::abs(ratio_height_rounded - ratio)) {
        resized = {width_rounded,
                   static_cast<int64_t>(static_cast<double>(width_rounded) / ratio + 0.5)};
      } else {
        resized = {static_cast<int64_t>(static_cast<double>(height_rounded) * ratio + 0.5),
                   height_rounded};
      }
    }
    choice.bucket = {resized.width - resized.width % step, resized.height - resized.height % step};
    if (choice.bucket.width == 0 || choice.bucket.height == 0) {
      throw std::invalid_argument("image of " + std::to_string(width) + "x" +
                                  std::to_string(height) +
                                  " is smaller than the smallest bucket (a side below " +
                                  std::to_string(step) + " pixels, bucket_no_upscale)");
    }
    choice.resized = resized;
  }
  const std::vector<double> box = crop_box(choice.bucket, {width, height});
  choice.crop_left = box[0];
  choice.crop_top = box[1];
  choice.crop_right = box[2];
  choice.crop_bottom = box[3];
  choice.aspect_error =
      static_cast<double>(choice.bucket.width) / static_cast<double>(choice.bucket.height) - ratio;
  return choice;
}

}  // namespace sdxl
