/// @file batches.hpp
/// The batches of a training epoch, as sd-scripts forms them: every image counted
/// num_repeats times, grouped by bucket (a batch never mixes buckets), each bucket's samples
/// shuffled and cut into batches of the data set's batch size (the last one may be smaller),
/// the batches of all buckets shuffled. The shuffles are pure functions of (seed, epoch), so a
/// resumed run sees the same batches without any saved state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "sdxl/dataset.hpp"

namespace sdxl {

/// One batch: indices into the scanned images (an image appears once per repeat).
using Batch = std::vector<std::size_t>;

/// The batches of epoch `epoch` (0-based). Their number is the same in every epoch.
/// @throws DatasetError when an image's data set index is out of range.
std::vector<Batch> epoch_batches(const std::vector<TrainImage>& images, const DataConfig& config,
                                 uint64_t seed, int64_t epoch);

}  // namespace sdxl
