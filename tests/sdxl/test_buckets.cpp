// Aspect-ratio buckets (sdxl/buckets.hpp) against what sd-scripts' own code computes
// (tests/sdxl/data/buckets.json, recorded by tests/fixtures/make_bucket_fixture.py).
#include <gtest/gtest.h>

#include <aclora/adapters/json/parse.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "sdxl/buckets.hpp"

namespace {

aclora::json::Value recorded_buckets() {
  std::ifstream in(std::filesystem::path(ACLORA_SDXL_TEST_DATA_DIR) / "buckets.json");
  std::stringstream text;
  text << in.rdbuf();
  return aclora::json::parse(text.str());
}

sdxl::BucketOptions options_of(const aclora::json::Value& set) {
  sdxl::BucketOptions options;
  options.resolution_width = set.find("resolution")->as_array()[0].as_int();
  options.resolution_height = set.find("resolution")->as_array()[1].as_int();
  options.min_bucket_reso = set.find("min_bucket_reso")->as_int();
  options.max_bucket_reso = set.find("max_bucket_reso")->as_int();
  options.bucket_reso_steps = set.find("bucket_reso_steps")->as_int();
  options.bucket_no_upscale = set.find("no_upscale")->as_bool();
  return options;
}

}  // namespace

// For every recorded option set (SDXL 1024 with max 1024 and 2048, 1024x768 in steps of 32,
// SD 512, and two no-upscale sets) the bucket list equals sd-scripts' make_bucket_resolutions,
// and for 24 image sizes the chosen bucket, the resized size and the crop box equal
// BucketManager.select_bucket / get_crop_ltrb. Images smaller than every bucket side are
// refused (sd-scripts would upscale them from a few pixels).
TEST(Buckets, EqualSdScripts) {
  const auto recorded = recorded_buckets();
  const auto& sets = recorded.find("option_sets")->as_array();
  ASSERT_EQ(sets.size(), 6u);
  std::size_t compared = 0;
  for (const auto& set : sets) {
    const std::string name = set.find("name")->as_string();
    const sdxl::BucketPlanner planner(options_of(set));
    const auto& buckets = set.find("buckets")->as_array();
    ASSERT_EQ(planner.resolutions().size(), buckets.size()) << name;
    for (std::size_t i = 0; i < buckets.size(); ++i) {
      EXPECT_EQ(planner.resolutions()[i].width, buckets[i].as_array()[0].as_int()) << name << i;
      EXPECT_EQ(planner.resolutions()[i].height, buckets[i].as_array()[1].as_int()) << name << i;
    }
    int64_t smallest_width = 1 << 30, smallest_height = 1 << 30;
    for (const auto& bucket : buckets) {
      smallest_width = std::min(smallest_width, bucket.as_array()[0].as_int());
      smallest_height = std::min(smallest_height, bucket.as_array()[1].as_int());
    }
    for (const auto& image : set.find("images")->as_array()) {
      const auto& size = image.find("size")->as_array();
      const int64_t width = size[0].as_int();
      const int64_t height = size[1].as_int();
      const std::string where = name + " " + std::to_string(width) + "x" + std::to_string(height);
      if (!planner.options().bucket_no_upscale && width < smallest_width &&
          height < smallest_height) {
        EXPECT_THROW(planner.choose(width, height), std::invalid_argument) << where;
        continue;
      }
      const sdxl::BucketChoice choice = planner.choose(width, height);
      const auto& bucket = image.find("bucket")->as_array();
      const auto& resized = image.find("resized")->as_array();
      const auto& crop = image.find("crop_ltrb")->as_array();
      EXPECT_EQ(choice.bucket.width, bucket[0].as_int()) << where;
      EXPECT_EQ(choice.bucket.height, bucket[1].as_int()) << where;
      EXPECT_EQ(choice.resized.width, resized[0].as_int()) << where;
      EXPECT_EQ(choice.resized.height, resized[1].as_int()) << where;
      EXPECT_DOUBLE_EQ(choice.crop_left, crop[0].as_double()) << where;
      EXPECT_DOUBLE_EQ(choice.crop_top, crop[1].as_double()) << where;
      EXPECT_DOUBLE_EQ(choice.crop_right, crop[2].as_double()) << where;
      EXPECT_DOUBLE_EQ(choice.crop_bottom, crop[3].as_double()) << where;
      EXPECT_GE(choice.resized.width, choice.bucket.width) << where;
      EXPECT_GE(choice.resized.height, choice.bucket.height) << where;
      ++compared;
    }
  }
  EXPECT_GT(compared, 130u);
}

// Without buckets every image goes to the resolution itself; bad options name the option.
TEST(Buckets, DisabledBucketsAndBadOptions) {
  sdxl::BucketOptions options;
  options.enable_bucket = false;
  const sdxl::BucketPlanner single(options);
  ASSERT_EQ(single.resolutions().size(), 1u);
  EXPECT_EQ(single.choose(1536, 1024).bucket, (sdxl::Resolution{1024, 1024}));
  EXPECT_EQ(single.choose(1536, 1024).resized, (sdxl::Resolution{1536, 1024}));

  sdxl::BucketOptions bad;
  bad.max_bucket_reso = 512;  // below the resolution
  try {
    sdxl::BucketPlanner planner(bad);
    ADD_FAILURE() << "accepted";
  } catch (const std::invalid_argument& error) {
    EXPECT_NE(std::string(error.what()).find("max_bucket_reso"), std::string::npos);
  }
  bad = {};
  bad.bucket_reso_steps = 0;
  EXPECT_THROW(sdxl::BucketPlanner{bad}, std::invalid_argument);
  EXPECT_THROW(sdxl::BucketPlanner(sdxl::BucketOptions{}).choose(0, 10), std::invalid_argument);
}
