// The exact overlap test behind the driver's refusal of layers that share memory: byte
// spans, self-overlapping (broadcast) views, disjoint and interleaved views of one buffer,
// negative strides, mixed element sizes, separate address spaces.
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>

#include "aclora/memory.hpp"

namespace {

using aclora::MemoryRegion;
using aclora::overlap;
using aclora::overlaps_itself;

constexpr std::uintptr_t base = 0x10000;

// rows x cols floats at base + offset (bytes) with the given strides (in entries).
MemoryRegion floats(std::size_t offset, std::size_t rows, std::size_t cols,
                    std::ptrdiff_t row_stride, std::ptrdiff_t col_stride) {
  return MemoryRegion{0, base + offset, 4, rows, cols, row_stride, col_stride};
}

// The byte span of a row-major, a padded and a reversed view.
TEST(Memory, ByteSpanCoversFirstToLastByte) {
  EXPECT_EQ(aclora::byte_span(floats(0, 3, 5, 5, 1)), std::make_pair(base, base + 60));
  EXPECT_EQ(aclora::byte_span(floats(0, 3, 5, 8, 1)), std::make_pair(base, base + 4 * (16 + 5)));
  // Rows walked backwards from the last row: the span starts two rows earlier.
  EXPECT_EQ(aclora::byte_span(floats(40, 3, 5, -5, 1)), std::make_pair(base, base + 60));
  EXPECT_EQ(aclora::byte_span(floats(0, 0, 5, 5, 1)), std::make_pair(base, base));
}

// Stride 0 along an axis of length > 1 (a broadcast) and equal strides overlap; row-major,
// column-major, padded and interleaved-but-distinct layouts do not.
TEST(Memory, SelfOverlapIsExact) {
  EXPECT_TRUE(overlaps_itself(floats(0, 4, 3, 0, 1)));
  EXPECT_TRUE(overlaps_itself(floats(0, 4, 3, 1, 1)));
  EXPECT_TRUE(overlaps_itself(floats(0, 4, 3, 2, 1)));  // row i + 1 starts inside row i
  EXPECT_FALSE(overlaps_itself(floats(0, 4, 3, 3, 1)));
  EXPECT_FALSE(overlaps_itself(floats(0, 4, 3, 1, 4)));
  EXPECT_FALSE(overlaps_itself(floats(0, 4, 3, 7, 1)));
  EXPECT_FALSE(overlaps_itself(floats(0, 1, 3, 0, 1)));  // one row: its stride means nothing
  // Columns 0, 2, 4 of rows starting 3 apart: entries 0 2 4 | 3 5 7 | 6 8 10 are distinct.
  EXPECT_FALSE(overlaps_itself(floats(0, 3, 3, 3, 2)));
  // Rows starting 2 apart: 0 2 4 | 2 ... collide.
  EXPECT_TRUE(overlaps_itself(floats(0, 3, 3, 2, 2)));
}

// Two blocks of one row-major 12 x 10 buffer: rows 0-7 and rows 4-11 overlap; rows 0-5 and
// 6-11 do not (they only touch); the same view overlaps itself as a pair.
TEST(Memory, RowBlocksOverlapOnlyWhenTheyShareRows) {
  EXPECT_TRUE(overlap(floats(0, 8, 10, 10, 1), floats(4 * 40, 8, 10, 10, 1)));
  EXPECT_FALSE(overlap(floats(0, 6, 10, 10, 1), floats(6 * 40, 6, 10, 10, 1)));
  EXPECT_TRUE(overlap(floats(0, 6, 10, 10, 1), floats(0, 6, 10, 10, 1)));
}

// Interleaved views of one buffer: the two column halves of a row-major matrix and its even
// and odd columns share no entry although their byte spans intersect; columns 0-5 and 4-9 do.
TEST(Memory, InterleavedViewsAreDisjointUnlessTheyShareAnEntry) {
  EXPECT_FALSE(overlap(floats(0, 8, 5, 10, 1), floats(5 * 4, 8, 5, 10, 1)));
  EXPECT_FALSE(overlap(floats(0, 8, 5, 10, 2), floats(4, 8, 5, 10, 2)));
  EXPECT_TRUE(overlap(floats(0, 8, 6, 10, 1), floats(4 * 4, 8, 6, 10, 1)));
  // A column-major view of the same memory as a row-major one.
  EXPECT_TRUE(overlap(floats(0, 10, 8, 1, 10), floats(0, 8, 10, 10, 1)));
  // Column 9 of a row-major 8 x 10 buffer against the last entry of the block before it.
  EXPECT_TRUE(overlap(floats(9 * 4, 8, 1, 10, 1), floats(7 * 40 + 9 * 4, 1, 1, 1, 1)));
  EXPECT_FALSE(overlap(floats(9 * 4, 8, 1, 10, 1), floats(7 * 40 + 8 * 4, 1, 1, 1, 1)));
}

// A float view inside a double buffer overlaps the doubles it covers by a byte or more,
// including a misaligned one straddling two doubles.
TEST(Memory, MixedElementSizesCompareBytes) {
  const MemoryRegion doubles{0, base, 8, 4, 4, 4, 1};  // 128 bytes
  EXPECT_TRUE(overlap(doubles, MemoryRegion{0, base + 126, 4, 1, 1, 1, 1}));
  EXPECT_FALSE(overlap(doubles, MemoryRegion{0, base + 128, 4, 1, 1, 1, 1}));
  EXPECT_TRUE(overlap(MemoryRegion{0, base + 4, 8, 1, 3, 1, 2}, doubles));
}

// Regions in different address spaces (host memory, a device) never overlap; empty ones
// neither.
TEST(Memory, SpacesAndEmptyRegionsAreSeparate) {
  MemoryRegion device = floats(0, 4, 4, 4, 1);
  device.space = 1;
  EXPECT_FALSE(overlap(floats(0, 4, 4, 4, 1), device));
  EXPECT_FALSE(overlap(floats(0, 0, 4, 4, 1), floats(0, 4, 4, 4, 1)));
}

// Negative strides (a view walking memory backwards) are normalised: a reversed view of a
// block overlaps the block; one of the next block does not.
TEST(Memory, NegativeStridesAreNormalised) {
  const MemoryRegion block = floats(0, 4, 4, 4, 1);
  EXPECT_TRUE(overlap(floats(60, 4, 4, -4, -1), block));
  EXPECT_FALSE(overlap(floats(124, 4, 4, -4, -1), block));
  EXPECT_FALSE(overlaps_itself(floats(60, 4, 4, -4, -1)));
}

}  // namespace
