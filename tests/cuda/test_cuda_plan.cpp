// Host-side rules of the CUDA backend (aclora/backends/cuda/plan.hpp): rank-major views, Gram
// sources and paths, chunking, units, rounds and batches under the workspace limit (and what
// the limit must not change), workspace layout, launch shapes and the reading of spectrum
// records. Plain C++: runs without a GPU.
#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <set>
#include <tuple>
#include <vector>

#include "aclora/backends/cuda/plan.hpp"

namespace cu = aclora::backends::cuda;
using aclora::Precision;
using aclora::RankAxis;

namespace {

cu::SolverBytes fake_solver(std::int32_t rank, std::size_t count) {
  return {static_cast<std::size_t>(rank) * rank * 8 * count, rank > 32 ? std::size_t{64} : 0};
}

cu::PlanInput input(std::int64_t rows, std::int64_t cols, RankAxis axis,
                    cu::DType dtype = cu::DType::f32, std::uintptr_t address = 0x10000) {
  return {reinterpret_cast<void*>(address), dtype, cu::rank_major_view(rows, cols, cols, 1, axis)};
}

cu::Plan plan(const std::vector<cu::PlanInput>& inputs, std::size_t limit = std::size_t{1} << 30,
              Precision precision = Precision::fp32) {
  return cu::make_plan(inputs, limit, precision, fake_solver);
}

// A down factor (R x n, row-major) is its own rank-major view; its noise numbering is the
// core's row-major numbering i * cols + j.
TEST(CudaPlan, RowsAxisViewOfRowMajorMatrix) {
  const cu::RankMajorView v = cu::rank_major_view(8, 100, 100, 1, RankAxis::rows);
  EXPECT_EQ(v.rank, 8);
  EXPECT_EQ(v.length, 100);
  EXPECT_EQ(v.rank_stride, 100);
  EXPECT_EQ(v.length_stride, 1);
  EXPECT_EQ(v.noise_rank_step, 100);
  EXPECT_EQ(v.noise_length_step, 1);
  EXPECT_EQ(cu::gram_source(v), cu::GramSource::length_contiguous);
}

// An up factor (n x R, row-major) is seen transposed: entry (r, c) of the view is entry
// (c, r) of the matrix, whose draw is c * R + r.
TEST(CudaPlan, ColsAxisViewOfRowMajorMatrixIsTransposed) {
  const cu::RankMajorView v = cu::rank_major_view(100, 8, 8, 1, RankAxis::cols);
  EXPECT_EQ(v.rank, 8);
  EXPECT_EQ(v.length, 100);
  EXPECT_EQ(v.rank_stride, 1);
  EXPECT_EQ(v.length_stride, 8);
  EXPECT_EQ(v.noise_rank_step, 1);
  EXPECT_EQ(v.noise_length_step, 8);
  EXPECT_EQ(cu::gram_source(v), cu::GramSource::rank_contiguous);
  // Draw of matrix entry (i, j) = (37, 5) is 37 * 8 + 5, at view entry (5, 37).
  EXPECT_EQ(5 * v.noise_rank_step + 37 * v.noise_length_step, 37 * 8 + 5);
  // Memory offset of matrix entry (37, 5) in row-major storage is 37 * 8 + 5.
  EXPECT_EQ(5 * v.rank_stride + 37 * v.length_stride, 37 * 8 + 5);
}

// Column-major storage of a down factor makes the view rank-contiguous; padded rows keep
// it length-contiguous with lda = the padded stride; other strides are not cuBLAS-readable.
TEST(CudaPlan, GramSourceFollowsStrides) {
  EXPECT_EQ(cu::gram_source(cu::rank_major_view(8, 100, 1, 8, RankAxis::rows)),
            cu::GramSource::rank_contiguous);
  EXPECT_EQ(cu::gram_source(cu::rank_major_view(8, 100, 103, 1, RankAxis::rows)),
            cu::GramSource::length_contiguous);
  EXPECT_EQ(cu::gram_source(cu::rank_major_view(8, 100, 200, 2, RankAxis::rows)),
            cu::GramSource::strided);
  // Overlapping rows (row stride below the row length) are not read by cuBLAS directly.
  EXPECT_EQ(cu::gram_source(cu::rank_major_view(8, 100, 50, 1, RankAxis::rows)),
            cu::GramSource::strided);
}

// Strides of length-1 axes are meaningless; they are normalised so single rows or columns
// still count as contiguous.
TEST(CudaPlan, UnitAxesAreNormalised) {
  const cu::RankMajorView one_row = cu::rank_major_view(1, 50, 0, 1, RankAxis::rows);
  EXPECT_EQ(one_row.rank_stride, 50);
  EXPECT_EQ(cu::gram_source(one_row), cu::GramSource::length_contiguous);
  const cu::RankMajorView one_col = cu::rank_major_view(6, 1, 1, 0, RankAxis::rows);
  EXPECT_EQ(one_col.length_stride, 6);
  EXPECT_EQ(cu::gram_source(one_col), cu::GramSource::rank_contiguous);
  const cu::RankMajorView scalar = cu::rank_major_view(1, 1, 0, 0, RankAxis::cols);
  EXPECT_NE(cu::gram_source(scalar), cu::GramSource::strided);
}

// cuBLAS computes the Gram products only for tf32 and only of layers it can read: fp32 /
// fp16 / bf16 storage with rows or columns contiguous. fp64 storage, strided views and the
// fp64 and fp32 settings use the own kernel.
TEST(CudaPlan, GramPathFollowsPrecision) {
  using cu::DType;
  using cu::GramPath;
  using cu::GramSource;
  for (DType dtype : {DType::f32, DType::f16, DType::bf16}) {
    EXPECT_EQ(cu::gram_path(Precision::tf32, dtype, GramSource::length_contiguous),
              GramPath::cublas);
    EXPECT_EQ(cu::gram_path(Precision::tf32, dtype, GramSource::rank_contiguous), GramPath::cublas);
    EXPECT_EQ(cu::gram_path(Precision::tf32, dtype, GramSource::strided), GramPath::kernel);
  }
  EXPECT_EQ(cu::gram_path(Precision::tf32, DType::f64, GramSource::length_contiguous),
            GramPath::kernel);
  for (Precision precision : {Precision::fp32, Precision::fp64})
    for (DType dtype : {DType::f32, DType::f16, DType::bf16, DType::f64})
      EXPECT_EQ(cu::gram_path(precision, dtype, GramSource::length_contiguous), GramPath::kernel);
}

// Chunks are at least 256 columns and grow with R so partial Grams stay small; the width
// depends on R alone.
TEST(CudaPlan, ChunkWidthGrowsWithRank) {
  EXPECT_EQ(cu::gram_chunk_width(1), 256);
  EXPECT_EQ(cu::gram_chunk_width(64), 256);
  EXPECT_EQ(cu::gram_chunk_width(65), 320);
  EXPECT_EQ(cu::gram_chunk_width(128), 512);
  EXPECT_EQ(cu::gram_chunk_width(1024), 4096);
  for (std::int64_t rank = 1; rank <= 1024; ++rank) {
    const std::int64_t w = cu::gram_chunk_width(rank);
    EXPECT_EQ(w % cu::gram_panel, 0);
    EXPECT_GE(w, 4 * rank);
  }
}

// The own Gram kernel's tiles: 16, 32 or 64 wide, enough to cover R, and as many blocks as
// tiles on and below the diagonal.
TEST(CudaPlan, GramTilesCoverTheLowerTriangle) {
  EXPECT_EQ(cu::gram_tile(1), 16);
  EXPECT_EQ(cu::gram_tile(16), 16);
  EXPECT_EQ(cu::gram_tile(17), 32);
  EXPECT_EQ(cu::gram_tile(33), 64);
  EXPECT_EQ(cu::gram_tiles(64), 1);
  EXPECT_EQ(cu::gram_tiles(65), 3);
  EXPECT_EQ(cu::gram_tiles(1024), 16 * 17 / 2);
  for (std::int64_t rank = 1; rank <= cu::max_rank; ++rank) {
    const std::int64_t side = cu::ceil_div(rank, cu::gram_tile(rank));
    EXPECT_GE(side * cu::gram_tile(rank), rank);
    EXPECT_EQ(cu::gram_tiles(rank), side * (side + 1) / 2);
  }
}

// Projection shapes: for every R up to max_rank and both arithmetic sizes, the strip and
// the coefficients fit the 48 KiB every device grants without opt-in; tile widths are
// multiples of 4 (or below 4), narrower for larger R and for fp64.
TEST(CudaPlan, ProjectionShapesFitDefaultSharedMemory) {
  for (std::size_t real : {std::size_t{4}, std::size_t{8}}) {
    int previous = 1 << 30;
    for (std::int64_t rank = 1; rank <= cu::max_rank; ++rank) {
      const cu::ProjectionShape s = cu::projection_shape(rank, real);
      EXPECT_TRUE(s.tile_cols % 4 == 0 || s.tile_cols < 4) << rank;
      EXPECT_LE(s.tile_cols, previous) << rank;
      previous = s.tile_cols;
      EXPECT_EQ(cu::projection_shared_bytes(rank, real), real * 2u * rank * (s.tile_cols + 1));
      EXPECT_LE(cu::projection_shared_bytes(rank, real), cu::default_shared_bytes) << rank;
    }
  }
  EXPECT_EQ(cu::projection_shape(64).config, 0);
  EXPECT_EQ(cu::projection_shape(65).config, 1);
  EXPECT_EQ(cu::projection_shape(129).config, 2);
  EXPECT_EQ(cu::projection_shape(257).config, 3);
  EXPECT_EQ(cu::projection_shape(64, 8).tile_cols, 32);
}

// Layers are sorted by (R, dtype, source, lda, n): equal shapes become consecutive slots,
// and every slot remembers its caller index.
TEST(CudaPlan, SlotsGroupEqualShapes) {
  const std::vector<cu::PlanInput> inputs = {
      input(16, 640, RankAxis::rows), input(640, 16, RankAxis::cols),
      input(8, 640, RankAxis::rows),  input(16, 640, RankAxis::rows),
      input(640, 16, RankAxis::cols), input(16, 640, RankAxis::rows, cu::DType::bf16)};
  const cu::Plan p = plan(inputs);
  ASSERT_EQ(p.slots.size(), inputs.size());
  std::vector<int> order;
  for (const auto& slot : p.slots)
    order.push_back(slot.layer);
  EXPECT_EQ(order, (std::vector<int>{2, 0, 3, 1, 4, 5}));
  std::set<int> seen(order.begin(), order.end());
  EXPECT_EQ(seen.size(), inputs.size());
  // Per-layer state is packed in slot order.
  std::size_t basis = 0, stats = 0;
  for (const auto& slot : p.slots) {
    EXPECT_EQ(slot.basis_offset, basis);
    EXPECT_EQ(slot.stats_offset, stats);
    basis += static_cast<std::size_t>(slot.rank) * slot.rank;
    stats += static_cast<std::size_t>(slot.chunks) * (slot.rank + 1);
  }
  EXPECT_EQ(p.basis_doubles, basis);
  EXPECT_EQ(p.stats_doubles, stats);
}

// fp32 / fp64: every chunk of every slot once, in slot and chunk order, covered by own-kernel
// launches of the slot's tile size; partials of a round are consecutive, one R x R block of
// the arithmetic type per chunk.
TEST(CudaPlan, KernelLaunchesCoverEveryChunkOnce) {
  const std::vector<cu::PlanInput> inputs = {
      input(16, 640, RankAxis::rows), input(40, 640, RankAxis::rows),
      input(640, 16, RankAxis::cols), input(130, 2048, RankAxis::rows, cu::DType::f64)};
  for (Precision precision : {Precision::fp32, Precision::fp64}) {
    const cu::Plan p = plan(inputs, std::size_t{1} << 30, precision);
    ASSERT_EQ(p.rounds.size(), 1u);
    const cu::GramRound& round = p.rounds[0];
    EXPECT_TRUE(round.gemms.empty());
    std::set<std::pair<int, int>> covered;
    for (const cu::GramLaunch& launch : round.launches) {
      EXPECT_FALSE(launch.scaled_only);
      for (std::size_t i = launch.first_item; i < launch.first_item + launch.count; ++i) {
        const cu::WorkItem item = p.items[i];
        const cu::LayerSlot& slot = p.slots[item.slot];
        EXPECT_EQ(launch.tile, cu::gram_tile(slot.rank));
        EXPECT_GE(launch.max_tiles, cu::gram_tiles(slot.rank));
        EXPECT_TRUE(covered.insert({item.slot, item.index}).second);
      }
    }
    std::size_t chunks = 0;
    for (const auto& slot : p.slots)
      chunks += static_cast<std::size_t>(slot.chunks);
    EXPECT_EQ(covered.size(), chunks);
    EXPECT_EQ(round.item_count, chunks);
    // Items in slot order, chunks ascending.
    for (std::size_t i = 1; i < p.items.size(); ++i)
      EXPECT_LT(std::pair(p.items[i - 1].slot, p.items[i - 1].index),
                std::pair(p.items[i].slot, p.items[i].index));
    std::size_t offset = 0;
    for (const auto& slot : p.slots) {
      EXPECT_EQ(slot.partial_offset, offset);
      offset += cu::align_bytes(static_cast<std::size_t>(slot.chunks) * slot.rank * slot.rank *
                                p.real_bytes());
      EXPECT_EQ(
          cu::gram_partial_offset(slot, 1, p.real_bytes()),
          slot.partial_offset + static_cast<std::size_t>(slot.rank) * slot.rank * p.real_bytes());
    }
    EXPECT_EQ(round.scratch_bytes, offset);
  }
}

// tf32: cuBLAS calls group the chunks of a unit by depth (full chunks, then the shorter last
// ones), carry the unit's shape, cover every chunk of the cuBLAS slots once, and are followed
// by a scaled-only own-kernel launch over the same chunks; strided and fp64 layers get the
// own kernel.
TEST(CudaPlan, Tf32CallsCoverEveryCublasChunkOnce) {
  std::vector<cu::PlanInput> inputs = {
      input(16, 640, RankAxis::rows), input(16, 640, RankAxis::rows),
      input(640, 16, RankAxis::cols), input(16, 2048, RankAxis::rows),
      input(16, 640, RankAxis::rows, cu::DType::f64)};
  inputs.push_back({reinterpret_cast<void*>(0x10000), cu::DType::f32,
                    cu::rank_major_view(16, 300, 600, 2, RankAxis::rows)});
  const cu::Plan p = plan(inputs, std::size_t{1} << 30, Precision::tf32);
  ASSERT_EQ(p.rounds.size(), 1u);
  const cu::GramRound& round = p.rounds[0];
  std::set<std::pair<int, int>> by_cublas;
  for (const cu::GemmCall& call : round.gemms) {
    for (std::size_t i = call.first_item; i < call.first_item + call.count; ++i) {
      const cu::WorkItem item = p.items[i];
      const cu::LayerSlot& slot = p.slots[item.slot];
      EXPECT_EQ(slot.path, static_cast<int>(cu::GramPath::cublas));
      EXPECT_EQ(call.rank, slot.rank);
      EXPECT_EQ(call.depth,
                std::min(slot.chunk_width, slot.length - item.index * slot.chunk_width));
      EXPECT_EQ(call.rank_contiguous,
                slot.source == static_cast<int>(cu::GramSource::rank_contiguous));
      EXPECT_EQ(call.lda, call.rank_contiguous ? slot.length_stride : slot.rank_stride);
      EXPECT_TRUE(by_cublas.insert({item.slot, item.index}).second);
    }
  }
  // 640 columns: chunks 256, 256, 128 (3 per slot, 4 slots of that shape); 2048: 8 chunks.
  EXPECT_EQ(by_cublas.size(), 3u + 3u + 3u + 8u);
  // Calls: rows-axis lda 640 (k 256, k 128), cols-axis lda 16 (k 256, k 128), lda 2048 (k 256).
  EXPECT_EQ(round.gemms.size(), 5u);
  std::set<std::pair<int, int>> by_kernel, scaled;
  for (const cu::GramLaunch& launch : round.launches) {
    for (std::size_t i = launch.first_item; i < launch.first_item + launch.count; ++i) {
      const cu::WorkItem item = p.items[i];
      (launch.scaled_only ? scaled : by_kernel).insert({item.slot, item.index});
    }
  }
  EXPECT_EQ(scaled, by_cublas);
  EXPECT_EQ(by_kernel.size(), 3u + 2u);  // the fp64 and the strided layer
  for (const auto& [slot, chunk] : by_kernel)
    EXPECT_EQ(p.slots[slot].path, static_cast<int>(cu::GramPath::kernel));
}

// Everything that decides how a number is computed follows from the layer list alone: the
// slots (order, chunks, paths, state offsets), the cuBLAS calls (shape and chunks), the
// eigen runs and the projection shapes are the same whatever the workspace limit; the limit
// only changes how rounds and write batches group them.
TEST(CudaPlan, TheLimitChangesOnlyTheGrouping) {
  std::vector<cu::PlanInput> inputs;
  for (int i = 0; i < 24; ++i) {
    inputs.push_back(input(i % 3 == 0 ? 64 : 16, 1000 + 100 * (i % 4), RankAxis::rows,
                           i % 5 == 0 ? cu::DType::bf16 : cu::DType::f32,
                           0x10000 + 0x100000 * static_cast<std::uintptr_t>(i)));
    inputs.push_back(input(700, i % 3 == 0 ? 64 : 16, RankAxis::cols, cu::DType::f32,
                           0x8000000 + 0x100000 * static_cast<std::uintptr_t>(i)));
  }
  for (Precision precision : {Precision::fp64, Precision::fp32, Precision::tf32}) {
    SCOPED_TRACE(aclora::precision_name(precision));
    using Call = std::tuple<int, bool, int, int, std::int64_t, std::vector<std::pair<int, int>>>;
    auto decided = [&](std::size_t limit, std::size_t* rounds, std::size_t* batches) {
      const cu::Plan p = plan(inputs, limit, precision);
      *rounds = p.rounds.size();
      *batches = p.apply_batches.size();
      std::vector<std::tuple<int, int, std::int64_t, int, int, std::uint64_t, std::uint64_t>> slots;
      for (const auto& s : p.slots)
        slots.emplace_back(s.layer, s.rank, s.chunk_width, s.chunks, s.path, s.basis_offset,
                           s.stats_offset);
      std::vector<Call> calls;
      for (const auto& round : p.rounds)
        for (const auto& call : round.gemms) {
          std::vector<std::pair<int, int>> chunks;
          for (std::size_t i = call.first_item; i < call.first_item + call.count; ++i)
            chunks.emplace_back(p.items[i].slot, p.items[i].index);
          calls.emplace_back(static_cast<int>(call.dtype), call.rank_contiguous, call.rank,
                             call.depth, call.lda, chunks);
        }
      std::vector<std::tuple<int, std::size_t, std::size_t>> runs;
      for (const auto& run : p.eigen_runs)
        runs.emplace_back(run.rank, run.first_slot, run.count);
      std::vector<int> widths;
      for (const auto& batch : p.apply_batches)
        for (const auto& launch : batch.launches)
          for (std::size_t t = launch.first_tile; t < launch.first_tile + launch.tile_count; ++t)
            widths.push_back(launch.shape.tile_cols * 10000 + p.tiles[t].slot);
      return std::tuple(slots, calls, runs, widths);
    };
    std::size_t rounds_large = 0, batches_large = 0, rounds_small = 0, batches_small = 0;
    const auto large = decided(std::size_t{1} << 30, &rounds_large, &batches_large);
    for (std::size_t limit : {std::size_t{1}, std::size_t{100000}, std::size_t{1} << 20}) {
      std::size_t rounds = 0, batches = 0;
      EXPECT_EQ(decided(limit, &rounds, &batches), large) << limit;
      if (limit == 1) {
        rounds_small = rounds;
        batches_small = batches;
      }
    }
    EXPECT_EQ(rounds_large, 1u);
    EXPECT_EQ(batches_large, 1u);
    EXPECT_GT(rounds_small, 4u);
    EXPECT_EQ(batches_small, inputs.size());
  }
}

// A small limit splits the Gram work into rounds and the writes into batches, each within
// the limit unless a single unit or layer exceeds it, covering all slots in order.
TEST(CudaPlan, RoundsAndBatchesRespectTheLimit) {
  std::vector<cu::PlanInput> inputs;
  for (int i = 0; i < 12; ++i)
    inputs.push_back(input(i % 2 ? 64 : 32, 1024, RankAxis::rows, cu::DType::f32,
                           0x10000 + 0x100000 * static_cast<std::uintptr_t>(i)));
  const std::size_t limit = 300 * 1024;
  const cu::Plan p = plan(inputs, limit);
  EXPECT_GT(p.rounds.size(), 1u);
  std::size_t next = 0;
  for (const auto& round : p.rounds) {
    EXPECT_EQ(round.first_slot, next);
    EXPECT_LE(round.scratch_bytes, limit);
    next += round.slot_count;
  }
  EXPECT_EQ(next, inputs.size());
  next = 0;
  for (const auto& batch : p.apply_batches) {
    EXPECT_EQ(batch.first_slot, next);
    EXPECT_LE(batch.scratch_bytes, limit);
    next += batch.slot_count;
  }
  EXPECT_EQ(next, inputs.size());
  for (const auto& run : p.eigen_runs)
    for (std::size_t s = run.first_slot; s < run.first_slot + run.count; ++s)
      EXPECT_EQ(p.slots[s].rank, run.rank);
}

// A layer whose own partials exceed the limit is no error: it runs alone, and the reported
// workspace covers it.
TEST(CudaPlan, LayerLargerThanTheLimitRunsAlone) {
  const std::vector<cu::PlanInput> inputs = {
      input(64, 4096, RankAxis::rows), input(64, 4096, RankAxis::rows, cu::DType::f32, 0x900000)};
  const cu::Plan p = plan(inputs, 4096);
  ASSERT_EQ(p.rounds.size(), 2u);
  ASSERT_EQ(p.apply_batches.size(), 2u);
  EXPECT_EQ(p.rounds[0].scratch_bytes, cu::align_bytes(16u * 64u * 64u * 4u));
  EXPECT_GE(p.scratch_bytes, p.rounds[0].scratch_bytes);
  EXPECT_GE(p.device_bytes(), p.layout.scratch + p.rounds[0].scratch_bytes);
}

// Ranks above max_rank and an unresolved precision are refused by the planner (the backend's
// check() refuses such layers earlier, with the module and layer).
TEST(CudaPlan, RankAboveMaximumIsAnError) {
  const std::vector<cu::PlanInput> inputs = {input(2000, 10, RankAxis::rows)};
  EXPECT_THROW((void)plan(inputs), aclora::Error);
  EXPECT_THROW((void)cu::make_plan({input(8, 10, RankAxis::rows)}, 1 << 20, Precision::automatic,
                                   fake_solver),
               aclora::Error);
}

// Eigen runs: one rank each, at most eigen_run_bytes of matrices and within cuSOLVER's
// 32-bit bound n * lda * batch <= 2^31 - 1, covering every slot in order.
TEST(CudaPlan, EigenRunsStayWithinTheirBounds) {
  std::vector<cu::PlanInput> inputs;
  for (int i = 0; i < 2100; ++i)
    inputs.push_back(input(1024, 1, RankAxis::rows));
  for (int i = 0; i < 5000; ++i)
    inputs.push_back(input(8, 100, RankAxis::rows));
  const cu::Plan p = plan(inputs, std::size_t{64} << 30);
  std::size_t next = 0;
  for (const auto& run : p.eigen_runs) {
    const std::size_t entries = static_cast<std::size_t>(run.rank) * run.rank;
    EXPECT_EQ(run.first_slot, next);
    EXPECT_LE(run.count * entries, cu::max_eigen_batch_entries);
    EXPECT_LE(run.count * entries * sizeof(double), std::max(cu::eigen_run_bytes, entries * 8));
    next += run.count;
  }
  EXPECT_EQ(next, inputs.size());
  EXPECT_EQ(p.eigen_runs.front().count, 5000u);  // R = 8: all in one run
}

// Batched cuBLAS calls carry at most max_gemm_batch products; larger groups are split.
TEST(CudaPlan, GemmCallsAreSplitAtTheBatchLimit) {
  const std::vector<cu::PlanInput> inputs = {input(1, 256 * 70000, RankAxis::rows)};
  const cu::Plan p = plan(inputs, std::size_t{1} << 32, Precision::tf32);
  const auto& gemms = p.rounds.at(0).gemms;
  ASSERT_EQ(gemms.size(), 2u);
  EXPECT_EQ(gemms[0].count, cu::max_gemm_batch);
  EXPECT_EQ(gemms[1].count, 70000 - cu::max_gemm_batch);
  EXPECT_EQ(gemms[1].first_item, gemms[0].first_item + cu::max_gemm_batch);
}

// Workspace size: the exact sum of the aligned regions (computed by hand for one layer).
TEST(CudaPlan, WorkspaceBytesForOneLayer) {
  const std::vector<cu::PlanInput> inputs = {input(8, 300, RankAxis::rows)};
  for (Precision precision : {Precision::fp32, Precision::fp64}) {
    const std::size_t real = precision == Precision::fp64 ? 8 : 4;
    const cu::Plan p = plan(inputs, std::size_t{1} << 30, precision);
    const auto a = [](std::size_t bytes) { return cu::align_bytes(bytes); };
    // 300 columns -> 2 chunks of width 256.
    EXPECT_EQ(p.rounds[0].scratch_bytes, a(2 * 8 * 8 * real));
    const std::size_t solver = a(8 * 8 * 8 * 1);
    const std::size_t write = a(8 * 8 * real);
    EXPECT_EQ(p.scratch_bytes, std::max({a(2 * 8 * 8 * real), solver, write}));
    const std::size_t tiles = 5;  // ceil(300 / 64) tiles for R <= 64 (fp32 and fp64 widths)
    const std::size_t tile_count = precision == Precision::fp64 ? 10 : tiles;
    const std::size_t expected = a(sizeof(cu::LayerSlot)) + a(2 * sizeof(cu::WorkItem)) +
                                 a(tile_count * sizeof(cu::WorkItem)) + a(2 * sizeof(void*)) * 2 +
                                 a(sizeof(cu::WriteSlot)) + a(64 * 8) + a(8 * 8) * 2 + a(19 * 8) +
                                 a(2 * 9 * 8) + a(4) * 3 + p.scratch_bytes;
    EXPECT_EQ(p.device_bytes(), expected);
  }
}

// Projection tiles: every column tile of every slot once, launches split by rank class.
TEST(CudaPlan, ProjectionTilesCoverEveryColumnOnce) {
  const std::vector<cu::PlanInput> inputs = {input(16, 100, RankAxis::rows),
                                             input(200, 128, RankAxis::cols),
                                             input(64, 64, RankAxis::rows)};
  const cu::Plan p = plan(inputs);
  ASSERT_EQ(p.apply_batches.size(), 1u);
  const auto& launches = p.apply_batches[0].launches;
  ASSERT_EQ(launches.size(), 2u);  // R = 16 and 64 share a class, R = 128 has its own
  std::size_t total = 0;
  for (const auto& launch : launches) {
    for (std::size_t t = launch.first_tile; t < launch.first_tile + launch.tile_count; ++t) {
      const cu::LayerSlot& slot = p.slots[p.tiles[t].slot];
      EXPECT_EQ(cu::projection_shape(slot.rank).config, launch.shape.config);
      EXPECT_LT(p.tiles[t].index * launch.shape.tile_cols, slot.length);
    }
    total += launch.tile_count;
  }
  // 100 columns / 64 -> 2 tiles; 64 / 64 -> 1; 200 / 32 -> 7 (R = 128).
  EXPECT_EQ(total, 2u + 1u + 7u);
}

// Spectrum records: values for ok slots, finite = false for non-finite ones, a failure
// message (which the driver reports with module and layer) for solver failures; each in
// the caller's order.
TEST(CudaPlan, SpectrumRecordsAreRead) {
  const std::vector<cu::PlanInput> inputs = {input(2, 5, RankAxis::rows),
                                             input(3, 1, RankAxis::rows),
                                             input(2, 5, RankAxis::rows, cu::DType::f16)};
  const cu::Plan p = plan(inputs);
  std::vector<double> records(p.record_doubles, 0.0);
  for (const auto& slot : p.slots) {
    double* r = records.data() + slot.record_offset;
    for (int k = 0; k < slot.rank; ++k) {
      r[k] = 10.0 * slot.layer + 2 - k;
      r[slot.rank + k] = 0.5 * k;
    }
    r[2 * slot.rank] = 7.0 + slot.layer;
    r[2 * slot.rank + 1] = slot.layer == 1 ? 1.0 : slot.layer == 2 ? 2.0 : 0.0;
  }
  std::vector<aclora::LayerSpectrum> spectra(3);
  cu::read_spectra(p, records.data(), spectra);
  EXPECT_EQ(spectra[0].singular_values, (std::vector<double>{2.0, 1.0}));
  EXPECT_EQ(spectra[0].component_sums, (std::vector<double>{0.0, 0.5}));
  EXPECT_EQ(spectra[0].entry_sum, 7.0);
  EXPECT_TRUE(spectra[0].finite);
  EXPECT_TRUE(spectra[0].failure.empty());
  EXPECT_FALSE(spectra[1].finite);
  EXPECT_NE(spectra[2].failure.find("did not converge"), std::string::npos);
}

}  // namespace
