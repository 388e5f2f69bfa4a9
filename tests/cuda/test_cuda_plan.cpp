// Host-side rules of the CUDA backend (aclora/backends/cuda/plan.hpp): rank-major views,
// Gram sources, chunking, grouping, batching under the workspace limit, workspace layout
// and launch shapes. Plain C++: runs without a GPU.
#include <gtest/gtest.h>

#include <cstdint>
#include <set>
#include <vector>

#include "aclora/backends/cuda/plan.hpp"

namespace cu = aclora::backends::cuda;
using aclora::RankAxis;

namespace {

cu::SolverBytes fake_solver(std::int32_t rank, std::size_t count) {
  return {static_cast<std::size_t>(rank) * rank * 8 * count, rank > 32 ? std::size_t{64} : 0};
}

cu::PlanInput input(std::int64_t rows, std::int64_t cols, RankAxis axis,
                    cu::DType dtype = cu::DType::f32, std::uintptr_t address = 0x10000) {
  return {reinterpret_cast<void*>(address), dtype, cu::rank_major_view(rows, cols, cols, 1, axis)};
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
// it length-contiguous with lda = the padded stride; other strides need a packed copy.
TEST(CudaPlan, GramSourceFollowsStrides) {
  EXPECT_EQ(cu::gram_source(cu::rank_major_view(8, 100, 1, 8, RankAxis::rows)),
            cu::GramSource::rank_contiguous);
  EXPECT_EQ(cu::gram_source(cu::rank_major_view(8, 100, 103, 1, RankAxis::rows)),
            cu::GramSource::length_contiguous);
  EXPECT_EQ(cu::gram_source(cu::rank_major_view(8, 100, 200, 2, RankAxis::rows)),
            cu::GramSource::packed);
  // Overlapping rows (row stride below the row length) are not read by cuBLAS directly.
  EXPECT_EQ(cu::gram_source(cu::rank_major_view(8, 100, 50, 1, RankAxis::rows)),
            cu::GramSource::packed);
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
  EXPECT_NE(cu::gram_source(scalar), cu::GramSource::packed);
}

// Chunks are at least 256 columns and grow with R so partial Grams stay small.
TEST(CudaPlan, ChunkWidthGrowsWithRank) {
  EXPECT_EQ(cu::gram_chunk_width(1), 256);
  EXPECT_EQ(cu::gram_chunk_width(64), 256);
  EXPECT_EQ(cu::gram_chunk_width(65), 320);
  EXPECT_EQ(cu::gram_chunk_width(128), 512);
  EXPECT_EQ(cu::gram_chunk_width(1024), 4096);
  for (std::int64_t rank = 1; rank <= 1024; ++rank) {
    const std::int64_t w = cu::gram_chunk_width(rank);
    EXPECT_EQ(w % 64, 0);
    EXPECT_GE(w, 4 * rank);
  }
}

// Launch shapes: tile widths are multiples of 4 (stores run in fours), narrower for
// larger R, and the strip plus coefficients fit Hopper's opt-in shared memory up to max_rank.
TEST(CudaPlan, ProjectionShapesFitSharedMemory) {
  for (std::int64_t rank : {1, 16, 64, 65, 128, 256, 257, 1024}) {
    const cu::ProjectionShape s = cu::projection_shape(rank);
    EXPECT_EQ(s.tile_cols % 4, 0) << rank;
    EXPECT_EQ(cu::projection_shared_bytes(rank), 4u * 2u * rank * (s.tile_cols + 1)) << rank;
  }
  EXPECT_EQ(cu::projection_shape(64).config, 0);
  EXPECT_EQ(cu::projection_shape(65).config, 1);
  EXPECT_EQ(cu::projection_shape(257).config, 2);
  // Up to R = 128 the kernel needs no opt-in beyond the default 48 KiB.
  EXPECT_LE(cu::projection_shared_bytes(128), 48u * 1024u);
  EXPECT_LE(cu::projection_shared_bytes(cu::max_rank), 227u * 1024u);
}

// Layers are sorted by (R, dtype, source, lda, n): equal shapes become consecutive slots,
// and every slot remembers its caller index.
TEST(CudaPlan, SlotsGroupEqualShapes) {
  const std::vector<cu::PlanInput> inputs = {
      input(16, 640, RankAxis::rows), input(640, 16, RankAxis::cols),
      input(8, 640, RankAxis::rows),  input(16, 640, RankAxis::rows),
      input(640, 16, RankAxis::cols), input(16, 640, RankAxis::rows, cu::DType::bf16)};
  const cu::Plan plan = cu::make_plan(inputs, std::size_t{1} << 30, fake_solver);
  ASSERT_EQ(plan.slots.size(), inputs.size());
  std::vector<int> order;
  for (const auto& slot : plan.slots)
    order.push_back(slot.layer);
  EXPECT_EQ(order, (std::vector<int>{2, 0, 3, 1, 4, 5}));
  std::set<int> seen(order.begin(), order.end());
  EXPECT_EQ(seen.size(), inputs.size());
  // Per-layer state is packed in slot order.
  std::size_t basis = 0;
  for (const auto& slot : plan.slots) {
    EXPECT_EQ(slot.basis_offset, basis);
    basis += static_cast<std::size_t>(slot.rank) * slot.rank;
  }
  EXPECT_EQ(plan.basis_doubles, basis);
}

// One batch when everything fits: Gram items cover every chunk of every slot once, calls
// group items of equal (dtype, source, R, k, lda), and the last chunk of a layer has the
// remaining columns.
TEST(CudaPlan, GemmCallsCoverEveryChunkOnce) {
  const std::vector<cu::PlanInput> inputs = {
      input(16, 640, RankAxis::rows), input(16, 640, RankAxis::rows),
      input(640, 16, RankAxis::cols), input(16, 2048, RankAxis::rows)};
  const cu::Plan plan = cu::make_plan(inputs, std::size_t{1} << 30, fake_solver);
  ASSERT_EQ(plan.analysis_batches.size(), 1u);
  const cu::AnalysisBatch& batch = plan.analysis_batches[0];
  // chunks: 640 -> 256, 256, 128 (3 each); 2048 -> 8 chunks of 256.
  EXPECT_EQ(batch.item_count, 3u + 3u + 3u + 8u);
  std::set<std::pair<int, int>> covered;
  for (const cu::GemmCall& call : batch.gemms) {
    for (std::size_t i = call.first_item; i < call.first_item + call.count; ++i) {
      const cu::WorkItem item = plan.items[i];
      const cu::LayerSlot& slot = plan.slots[item.slot];
      EXPECT_EQ(call.rank, slot.rank);
      const std::int64_t depth =
          std::min(slot.chunk_width, slot.length - item.index * slot.chunk_width);
      EXPECT_EQ(call.depth, depth);
      EXPECT_EQ(call.rank_contiguous,
                slot.source == static_cast<int>(cu::GramSource::rank_contiguous));
      EXPECT_EQ(call.lda, call.rank_contiguous ? slot.length_stride : slot.rank_stride);
      EXPECT_TRUE(covered.insert({item.slot, item.index}).second);
    }
  }
  EXPECT_EQ(covered.size(), batch.item_count);
  // Calls: rows-axis lda 640 (k 256, k 128), cols-axis lda 16 (k 256, k 128), lda 2048 (k 256).
  EXPECT_EQ(batch.gemms.size(), 5u);
  // Partial Grams: one R x R block per chunk, consecutive per slot.
  for (std::size_t s = 1; s < plan.slots.size(); ++s) {
    const cu::LayerSlot& prev = plan.slots[s - 1];
    EXPECT_EQ(plan.slots[s].partial_offset,
              prev.partial_offset + static_cast<std::size_t>(prev.chunks) * prev.rank * prev.rank);
  }
  ASSERT_EQ(batch.eigen_runs.size(), 1u);
  EXPECT_EQ(batch.eigen_runs[0].count, 4u);
}

// A small limit splits analysis and apply into several batches, each within the limit,
// covering all slots in order; eigen runs never mix ranks.
TEST(CudaPlan, BatchesRespectTheWorkspaceLimit) {
  std::vector<cu::PlanInput> inputs;
  for (int i = 0; i < 12; ++i)
    inputs.push_back(input(i % 2 ? 64 : 32, 1024, RankAxis::rows));
  const std::size_t limit = 300 * 1024;
  const cu::Plan plan = cu::make_plan(inputs, limit, fake_solver);
  EXPECT_GT(plan.analysis_batches.size(), 1u);
  std::size_t next = 0;
  for (const auto& batch : plan.analysis_batches) {
    EXPECT_EQ(batch.first_slot, next);
    EXPECT_LE(batch.scratch_bytes, limit);
    next += batch.slot_count;
    for (const auto& run : batch.eigen_runs) {
      for (std::size_t s = run.first_slot; s < run.first_slot + run.count; ++s)
        EXPECT_EQ(plan.slots[s].rank, run.rank);
    }
  }
  EXPECT_EQ(next, inputs.size());
  next = 0;
  for (const auto& batch : plan.apply_batches) {
    EXPECT_EQ(batch.first_slot, next);
    EXPECT_LE(batch.scratch_bytes, limit);
    next += batch.slot_count;
  }
  EXPECT_EQ(next, inputs.size());
  EXPECT_LE(plan.scratch_bytes, limit);
}

// Eigen runs respect cuSOLVER's 32-bit bound n * lda * batch <= 2^31 - 1.
TEST(CudaPlan, EigenRunsStayWithinSolverIndexing) {
  std::vector<cu::PlanInput> inputs;
  for (int i = 0; i < 2100; ++i)
    inputs.push_back(input(1024, 1, RankAxis::rows));
  const cu::Plan plan = cu::make_plan(inputs, std::size_t{64} << 30, fake_solver);
  std::size_t covered = 0;
  for (const auto& batch : plan.analysis_batches) {
    for (const auto& run : batch.eigen_runs) {
      EXPECT_LE(run.count * 1024u * 1024u, cu::max_eigen_batch_entries);
      covered += run.count;
    }
  }
  EXPECT_EQ(covered, inputs.size());
}

// Batched cuBLAS calls carry at most max_gemm_batch products; larger groups are split.
TEST(CudaPlan, GemmCallsAreSplitAtTheBatchLimit) {
  const std::vector<cu::PlanInput> inputs = {input(1, 256 * 70000, RankAxis::rows)};
  const cu::Plan plan = cu::make_plan(inputs, std::size_t{1} << 32, fake_solver);
  const auto& gemms = plan.analysis_batches.at(0).gemms;
  ASSERT_EQ(gemms.size(), 2u);
  EXPECT_EQ(gemms[0].count, cu::max_gemm_batch);
  EXPECT_EQ(gemms[1].count, 70000 - cu::max_gemm_batch);
  EXPECT_EQ(gemms[1].first_item, gemms[0].first_item + cu::max_gemm_batch);
}

// A layer whose own scratch exceeds the limit is an error, naming the layer.
TEST(CudaPlan, LayerLargerThanLimitIsAnError) {
  const std::vector<cu::PlanInput> inputs = {input(64, 4096, RankAxis::rows)};
  try {
    (void)cu::make_plan(inputs, 4096, fake_solver);
    FAIL() << "expected an error";
  } catch (const aclora::Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer 0"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("workspace limit"), std::string::npos) << e.what();
  }
}

// Ranks above max_rank are rejected with the supported bound in the message.
TEST(CudaPlan, RankAboveMaximumIsAnError) {
  const std::vector<cu::PlanInput> inputs = {input(2000, 10, RankAxis::rows)};
  EXPECT_THROW((void)cu::make_plan(inputs, std::size_t{1} << 30, fake_solver), aclora::Error);
}

// Workspace size: the exact sum of the aligned regions (computed by hand for one layer).
TEST(CudaPlan, WorkspaceBytesForOneLayer) {
  const std::vector<cu::PlanInput> inputs = {input(8, 300, RankAxis::rows)};
  const cu::Plan plan = cu::make_plan(inputs, std::size_t{1} << 30, fake_solver);
  const auto a = [](std::size_t bytes) { return cu::align_bytes(bytes); };
  // 300 columns -> 2 chunks of width 256.
  const std::size_t partials = a(2 * 8 * 8 * 4);
  const std::size_t row_sums = a(2 * 8 * 8);
  const std::size_t solver = a(8 * 8 * 8 * 1);
  const std::size_t analysis_scratch = partials + row_sums + 0 + solver;
  EXPECT_EQ(plan.analysis_batches[0].scratch_bytes, analysis_scratch);
  const std::size_t apply_scratch = a(8 * 8 * 4);
  EXPECT_EQ(plan.scratch_bytes, std::max(analysis_scratch, apply_scratch));
  const std::size_t tiles = 5;  // ceil(300 / 64) tiles for R <= 16
  const std::size_t expected = a(sizeof(cu::LayerSlot)) + a(2 * sizeof(cu::WorkItem)) +
                               a(tiles * sizeof(cu::WorkItem)) + a(2 * sizeof(void*)) * 2 +
                               a(sizeof(cu::WriteSlot)) + a(64 * 8) + a(8 * 8) * 2 + a(18 * 8) +
                               a(4) * 2 + plan.scratch_bytes;
  EXPECT_EQ(plan.device_bytes(), expected);
  EXPECT_EQ(plan.layout.tables_end, a(sizeof(cu::LayerSlot)) + a(2 * sizeof(cu::WorkItem)) +
                                        a(tiles * sizeof(cu::WorkItem)) + 2 * a(2 * sizeof(void*)));
}

// Projection tiles: every column tile of every slot once, launches split by rank class.
TEST(CudaPlan, ProjectionTilesCoverEveryColumnOnce) {
  const std::vector<cu::PlanInput> inputs = {input(16, 100, RankAxis::rows),
                                             input(200, 128, RankAxis::cols),
                                             input(64, 64, RankAxis::rows)};
  const cu::Plan plan = cu::make_plan(inputs, std::size_t{1} << 30, fake_solver);
  ASSERT_EQ(plan.apply_batches.size(), 1u);
  const auto& launches = plan.apply_batches[0].launches;
  ASSERT_EQ(launches.size(), 2u);  // R = 16 and 64 share a class, R = 128 has its own
  std::size_t total = 0;
  for (const auto& launch : launches) {
    for (std::size_t t = launch.first_tile; t < launch.first_tile + launch.tile_count; ++t) {
      const cu::LayerSlot& slot = plan.slots[plan.tiles[t].slot];
      EXPECT_EQ(cu::projection_shape(slot.rank).config, launch.shape.config);
      EXPECT_LT(plan.tiles[t].index * launch.shape.tile_cols, slot.length);
    }
    total += launch.tile_count;
  }
  // 100 columns / 64 -> 2 tiles; 64 / 64 -> 1; 200 / 32 -> 7 (R = 128).
  EXPECT_EQ(total, 2u + 1u + 7u);
}

}  // namespace
