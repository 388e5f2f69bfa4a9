#include "sdxl/batches.hpp"

#include <aclora/adapters/train/data_order.hpp>

#include <map>
#include <utility>

namespace sdxl {

std::vector<Batch> epoch_batches(const std::vector<TrainImage>& images, const DataConfig& config,
                                 uint64_t seed, int64_t epoch) {
  // Samples per (data set, bucket), in image order, each image repeated.
  std::map<std::pair<std::size_t, Resolution>, std::vector<std::size_t>> buckets;
  for (std::size_t i = 0; i < images.size(); ++i) {
    const TrainImage& image = images[i];
    if (image.dataset >= config.datasets.size())
      throw DatasetError(image.path.string() + ": data set index out of range");
    auto& samples = buckets[{image.dataset, image.choice.bucket}];
    for (int64_t r = 0; r < image.repeats; ++r)
      samples.push_back(i);
  }
  std::vector<Batch> batches;
  uint64_t bucket_number = 0;
  for (auto& [key, samples] : buckets) {
    // Each bucket's own stream: (seed, bucket number) keys the shuffle of every epoch.
    const auto order = aclora::train::epoch_order(seed ^ (0x9E3779B97F4A7C15ull * ++bucket_number),
                                                  static_cast<uint64_t>(epoch), samples.size());
    const auto size = static_cast<std::size_t>(config.datasets[key.first].batch_size);
    for (std::size_t first = 0; first < order.size(); first += size) {
      Batch batch;
      for (std::size_t j = first; j < std::min(order.size(), first + size); ++j)
        batch.push_back(samples[order[j]]);
      batches.push_back(std::move(batch));
    }
  }
  const auto order = aclora::train::epoch_order(seed, static_cast<uint64_t>(epoch), batches.size());
  std::vector<Batch> shuffled;
  shuffled.reserve(batches.size());
  for (std::size_t index : order)
    shuffled.push_back(std::move(batches[index]));
  return shuffled;
}

}  // namespace sdxl
