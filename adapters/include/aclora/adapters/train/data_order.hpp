/// @file data_order.hpp
/// @brief The order of a data set in each epoch: a permutation that is a pure function of
/// (seed, epoch), so resuming a run needs no generator state for it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <numeric>
#include <vector>

#include "aclora/philox.hpp"

namespace aclora::train {

/// A uniformly random permutation of 0..count-1 for `epoch` (Fisher-Yates driven by
/// Philox-4x32-10 keyed by `seed`, counter (epoch, draw)). The same arguments give the same
/// order on every machine.
inline std::vector<std::size_t> epoch_order(std::uint64_t seed, std::uint64_t epoch,
                                            std::size_t count) {
  std::vector<std::size_t> order(count);
  std::iota(order.begin(), order.end(), std::size_t{0});
  const auto key0 = static_cast<std::uint32_t>(seed);
  const auto key1 = static_cast<std::uint32_t>(seed >> 32);
  for (std::size_t i = count; i > 1; --i) {
    // 64 random bits per draw; the modulo bias is below 2^-32 for any realistic count.
    const std::uint64_t draw = i - 1;
    const PhiloxBlock block = philox4x32_10(
        PhiloxBlock{{static_cast<std::uint32_t>(draw), static_cast<std::uint32_t>(draw >> 32),
                     static_cast<std::uint32_t>(epoch), static_cast<std::uint32_t>(epoch >> 32)}},
        key0, key1);
    const std::uint64_t bits = (static_cast<std::uint64_t>(block.word[1]) << 32) | block.word[0];
    const std::size_t j = static_cast<std::size_t>(bits % i);
    std::swap(order[i - 1], order[j]);
  }
  return order;
}

}  // namespace aclora::train
