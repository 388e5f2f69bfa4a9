/// @file plan.hpp
/// @brief Host-side planning of the CUDA backend: rank-major views, shape groups, Gram
/// chunking, workspace layout and bounds, batches and launch shapes. Plain C++ (no CUDA
/// header), so every rule here is unit-tested on machines without a GPU.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "aclora/backend.hpp"
#include "aclora/error.hpp"
#include "aclora/layer.hpp"
#include "aclora/noise.hpp"

namespace aclora::backends::cuda {

/// Storage type of a device matrix.
enum class DType : std::int32_t {
  f32 = 0,   ///< IEEE float
  f16 = 1,   ///< IEEE half (__half)
  bf16 = 2,  ///< bfloat16 (__nv_bfloat16)
};

/// True for the three supported storage types.
constexpr bool dtype_valid(DType dtype) {
  return dtype == DType::f32 || dtype == DType::f16 || dtype == DType::bf16;
}
/// Bytes per element.
constexpr std::size_t dtype_bytes(DType dtype) {
  return dtype == DType::f32 ? 4 : 2;
}
/// Name for messages.
constexpr const char* dtype_name(DType dtype) {
  return dtype == DType::f32 ? "fp32" : dtype == DType::f16 ? "fp16" : "bf16";
}

/// Largest rank axis the backend handles (the projection keeps R x tile outputs in shared
/// memory; LoRA ranks are far below).
inline constexpr std::int64_t max_rank = 1024;

/// A layer seen as R x n along its rank axis: entry (r, c) lives at
/// r * rank_stride + c * length_stride (elements), and its noise is draw
/// r * noise_rank_step + c * noise_length_step of the layer's stream (the core's logical
/// row-major numbering of the original rows x cols matrix).
struct RankMajorView {
  std::int64_t rank = 0;               ///< R: length of the rank axis
  std::int64_t length = 0;             ///< n: length of the other axis
  std::int64_t rank_stride = 0;        ///< elements between consecutive rows of the view
  std::int64_t length_stride = 0;      ///< elements between consecutive columns of the view
  std::int64_t noise_rank_step = 0;    ///< draw-index step along the rank axis
  std::int64_t noise_length_step = 0;  ///< draw-index step along the other axis
  /// Field-wise equality.
  friend bool operator==(const RankMajorView&, const RankMajorView&) = default;
};

/// The rank-major view of a rows x cols matrix with the given element strides. Strides
/// of axes of length 1 are normalised (they are never used) so that contiguous rows or
/// columns are recognised.
inline RankMajorView rank_major_view(std::int64_t rows, std::int64_t cols, std::int64_t row_stride,
                                     std::int64_t col_stride, RankAxis axis) {
  RankMajorView view;
  if (axis == RankAxis::rows) {
    view = {rows, cols, row_stride, col_stride, cols, 1};
  } else {
    view = {cols, rows, col_stride, row_stride, 1, cols};
  }
  if (view.rank == 1)
    view.rank_stride = view.length_stride == 1 ? view.length : 1;
  if (view.length == 1)
    view.length_stride = view.rank_stride == 1 ? view.rank : 1;
  return view;
}

/// How the Gram products read a layer.
enum class GramSource : std::int32_t {
  length_contiguous = 0,  ///< rows of the view contiguous: cuBLAS A^T A on (n x R, lda)
  rank_contiguous = 1,    ///< columns of the view contiguous: cuBLAS A A^T on (R x n, lda)
  packed = 2,             ///< other strides: first copied to a contiguous fp32 R x n buffer
};

/// The Gram source of a view (a packed copy is column-contiguous with lda = R).
inline GramSource gram_source(const RankMajorView& view) {
  constexpr std::int64_t int_max = 2147483647;
  if (view.length_stride == 1 && view.rank_stride >= view.length && view.rank_stride <= int_max)
    return GramSource::length_contiguous;
  if (view.rank_stride == 1 && view.length_stride >= view.rank && view.length_stride <= int_max)
    return GramSource::rank_contiguous;
  return GramSource::packed;
}

/// Columns of the R x n view per Gram partial product: each partial sums at most this many
/// fp32 products (cuBLAS), the partials are summed in fp64. Wider for larger R so the
/// partials stay a quarter of the layer's size or less.
inline std::int64_t gram_chunk_width(std::int64_t rank) {
  const std::int64_t wide = (4 * rank + 63) / 64 * 64;
  return std::max<std::int64_t>(256, wide);
}

/// ceil(a / b) for positive b.
constexpr std::int64_t ceil_div(std::int64_t a, std::int64_t b) {
  return (a + b - 1) / b;
}

/// Launch shape of the projection kernel for a rank class: one block per tile of
/// tile_cols columns of the R x n view, all R rows.
struct ProjectionShape {
  int config = 0;      ///< 0..2, selects the kernel instantiation
  int tile_cols = 64;  ///< columns of the view per block
};

/// Threads per block of every kernel of the backend.
inline constexpr int block_threads = 256;

/// The projection launch shape for rank R: narrower tiles for larger R keep the staged
/// strip and its coefficients in shared memory.
constexpr ProjectionShape projection_shape(std::int64_t rank) {
  if (rank <= 64)
    return {0, 64};
  if (rank <= 256)
    return {1, 32};
  return {2, 8};
}

/// Dynamic shared memory of the projection kernel for rank R: the R x tile_cols strip and
/// up to R x tile_cols coefficients (K <= R), rows padded by one float.
constexpr std::size_t projection_shared_bytes(std::int64_t rank) {
  const ProjectionShape shape = projection_shape(rank);
  return static_cast<std::size_t>(2 * rank * (shape.tile_cols + 1)) * sizeof(float);
}

/// One layer in planning order, shared verbatim by host and device code (plain data).
/// Offsets count elements of the named array.
struct LayerSlot {
  void* data = nullptr;                 ///< first entry of the user's matrix
  std::int32_t dtype = 0;               ///< DType
  std::int32_t rank = 0;                ///< R
  std::int64_t length = 0;              ///< n
  std::int64_t rank_stride = 0;         ///< view stride along R (elements)
  std::int64_t length_stride = 0;       ///< view stride along n (elements)
  std::int64_t noise_rank_step = 0;     ///< draw-index step along R
  std::int64_t noise_length_step = 0;   ///< draw-index step along n
  std::int64_t chunk_width = 0;         ///< Gram columns per partial
  std::int32_t chunks = 0;              ///< partials: ceil(n / chunk_width)
  std::int32_t source = 0;              ///< GramSource
  std::int32_t layer = 0;               ///< index in the caller's layer list
  std::int32_t padding = 0;             ///< unused (alignment)
  std::uint64_t basis_offset = 0;       ///< doubles: Gram, then eigenvectors (R x R, col-major)
  std::uint64_t vector_offset = 0;      ///< doubles: eigenvalues and row sums (R each)
  std::uint64_t record_offset = 0;      ///< doubles: spectrum record (2R + 2)
  std::uint64_t partial_offset = 0;     ///< floats in the batch's partial Grams (chunks R^2)
  std::uint64_t row_sum_offset = 0;     ///< doubles in the batch's partial row sums (chunks R)
  std::uint64_t packed_offset = 0;      ///< floats in the batch's packed copies (R n)
  std::uint64_t kept_basis_offset = 0;  ///< floats in the apply batch's fp32 U_K (R x K <= R^2)
};

/// What apply writes for one slot (uploaded once per apply).
struct WriteSlot {
  NoiseKey key;              ///< noise stream
  float sigma = 0.0f;        ///< noise standard deviation
  std::int32_t kept = 0;     ///< min(K, q) directions kept
  std::int32_t policy = 0;   ///< NoisePolicy
  std::int32_t padding = 0;  ///< unused (alignment)
};

/// A block's work: a slot and a Gram chunk (analysis) or a column tile (apply).
struct WorkItem {
  std::int32_t slot = 0;   ///< index into Plan::slots
  std::int32_t index = 0;  ///< chunk or column tile of that slot
};

/// Spectrum record layout: R singular values, R component sums, entry sum, status.
constexpr std::size_t record_doubles(std::int64_t rank) {
  return 2 * rank + 2;
}

/// Status values in a spectrum record.
enum class SlotStatus : int {
  ok = 0,
  non_finite = 1,     ///< a NaN or Inf entry
  solver_failed = 2,  ///< the eigen-solver did not converge
  gram_overflow = 3,  ///< finite entries whose fp32 Gram products overflow
};

/// One batched cuBLAS call over Gram chunks that share (dtype, source, R, k, lda).
struct GemmCall {
  DType dtype = DType::f32;      ///< type of the operands (fp32 for packed copies)
  bool rank_contiguous = false;  ///< A A^T (true) or A^T A (false)
  std::int32_t rank = 0;         ///< R
  std::int32_t depth = 0;        ///< k: columns in each chunk
  std::int64_t lda = 0;          ///< leading dimension of the operands
  std::size_t first_item = 0;    ///< into Plan::items
  std::size_t count = 0;         ///< products in the call
};

/// Most products per batched cuBLAS call (kept below the 65535 grid limit).
inline constexpr std::size_t max_gemm_batch = 65535;

/// Consecutive slots of one rank: one batched eigen-solve.
struct EigenRun {
  std::int32_t rank = 0;       ///< R
  std::size_t first_slot = 0;  ///< first slot of the run
  std::size_t count = 0;       ///< matrices in the run
};

/// Largest R * R * count of one batched eigen-solve (cuSOLVER's 32-bit indexing).
inline constexpr std::size_t max_eigen_batch_entries = 2147483647;

/// Solver workspace (device and host bytes) for `count` matrices of rank R.
struct SolverBytes {
  std::size_t device = 0;  ///< device workspace bytes
  std::size_t host = 0;    ///< host workspace bytes
};
/// Asks the eigen-solver for its workspace (the CUDA backend queries cuSOLVER).
using SolverQuery = std::function<SolverBytes(std::int32_t rank, std::size_t count)>;

/// Alignment of every region of the workspace.
inline constexpr std::size_t workspace_alignment = 256;
/// Rounds bytes up to the alignment.
constexpr std::size_t align_bytes(std::size_t bytes) {
  return (bytes + workspace_alignment - 1) / workspace_alignment * workspace_alignment;
}

/// Analysis work over consecutive slots whose scratch fits the limit.
struct AnalysisBatch {
  std::size_t first_slot = 0;         ///< first slot of the batch
  std::size_t slot_count = 0;         ///< slots in the batch
  std::size_t first_item = 0;         ///< first Gram chunk (Plan::items)
  std::size_t item_count = 0;         ///< Gram chunks in the batch
  std::size_t row_sums_at = 0;        ///< scratch byte offset of the partial row sums
  std::size_t packed_at = 0;          ///< scratch byte offset of the packed copies
  std::size_t solver_at = 0;          ///< scratch byte offset of the solver workspace
  std::size_t solver_bytes = 0;       ///< device bytes for the solver (largest run)
  std::size_t solver_host_bytes = 0;  ///< host bytes for the solver (largest run)
  std::size_t scratch_bytes = 0;      ///< all of the above
  std::vector<GemmCall> gemms;        ///< batched Gram products
  std::vector<EigenRun> eigen_runs;   ///< batched eigen-solves
};

/// One projection launch: consecutive tiles of one rank class.
struct ProjectionLaunch {
  ProjectionShape shape;       ///< kernel instantiation and tile width
  std::int64_t max_rank = 0;   ///< largest R among its slots (shared memory size)
  std::size_t first_tile = 0;  ///< into Plan::tiles
  std::size_t tile_count = 0;  ///< blocks of the launch
};

/// Apply work over consecutive slots whose kept directions fit the limit.
struct ApplyBatch {
  std::size_t first_slot = 0;              ///< first slot of the batch
  std::size_t slot_count = 0;              ///< slots in the batch
  std::int64_t max_rank = 0;               ///< largest R in the batch
  std::size_t scratch_bytes = 0;           ///< fp32 U_K copies of the batch
  std::vector<ProjectionLaunch> launches;  ///< one per rank class
};

/// The arguments of one batched cuBLAS call (column-major BLAS semantics): every product is
/// C (R x R, ldc = R) = op_a(A) op_b(A) over `depth` columns of the view, which is the chunk's
/// Gram X X^T. Rank-contiguous chunks are R x k matrices (lda >= R): C = A A^T. Length-
/// contiguous chunks are k x R matrices (lda >= k): C = A^T A.
struct GemmArguments {
  bool transpose_a = false;  ///< op_a = transpose
  bool transpose_b = false;  ///< op_b = transpose
  int m = 0;                 ///< rows of C
  int n = 0;                 ///< columns of C
  int k = 0;                 ///< inner dimension
  int lda = 0;               ///< leading dimension of A
  int ldb = 0;               ///< leading dimension of B
  int ldc = 0;               ///< leading dimension of C
};

/// The cuBLAS arguments of a Gram call.
inline GemmArguments gemm_arguments(const GemmCall& call) {
  GemmArguments args;
  args.transpose_a = !call.rank_contiguous;
  args.transpose_b = call.rank_contiguous;
  args.m = args.n = call.rank;
  args.k = call.depth;
  args.lda = args.ldb = static_cast<int>(call.lda);
  args.ldc = call.rank;
  return args;
}

/// Address of the first entry of a Gram chunk's operand: the chunk's first column in the
/// user's matrix, or in the packed copy for strided layers (`packed_base`: the batch's
/// packed region).
inline const void* gram_operand(const LayerSlot& slot, std::int32_t chunk,
                                const float* packed_base) {
  const std::int64_t first_column = static_cast<std::int64_t>(chunk) * slot.chunk_width;
  if (static_cast<GramSource>(slot.source) == GramSource::packed)
    return packed_base + slot.packed_offset + first_column * slot.rank;
  const auto* data = static_cast<const unsigned char*>(slot.data);
  return data + first_column * slot.length_stride *
                    static_cast<std::int64_t>(dtype_bytes(static_cast<DType>(slot.dtype)));
}

/// Address of a Gram chunk's fp32 partial product (`partials_base`: the batch scratch).
inline float* gram_partial(const LayerSlot& slot, std::int32_t chunk, float* partials_base) {
  const auto rank = static_cast<std::size_t>(slot.rank);
  return partials_base + slot.partial_offset + static_cast<std::size_t>(chunk) * rank * rank;
}

/// Byte offsets of the regions of the device workspace. The tables come first, in the same
/// order as in the pinned host copy, so one copy uploads them.
struct DeviceLayout {
  std::size_t slots = 0;        ///< LayerSlot table
  std::size_t items = 0;        ///< Gram chunk table
  std::size_t tiles = 0;        ///< projection tile table
  std::size_t gemm_a = 0;       ///< cuBLAS operand pointers
  std::size_t gemm_c = 0;       ///< cuBLAS result pointers
  std::size_t tables_end = 0;   ///< end of the tables uploaded together
  std::size_t writes = 0;       ///< WriteSlot table (uploaded by apply)
  std::size_t basis = 0;        ///< Grams, then eigenvectors (fp64)
  std::size_t eigenvalues = 0;  ///< eigenvalues (fp64)
  std::size_t row_sums = 0;     ///< row sums of the views (fp64)
  std::size_t records = 0;      ///< spectrum records (fp64)
  std::size_t flags = 0;        ///< Gram overflow flags (int)
  std::size_t infos = 0;        ///< solver infos (int)
  std::size_t scratch = 0;      ///< batch scratch
  std::size_t total = 0;        ///< bytes in all
};

/// Everything the backend needs to run analysis and apply for one list of layers.
struct Plan {
  std::vector<LayerSlot> slots;                 ///< planning order: sorted by group key
  std::vector<WorkItem> items;                  ///< Gram chunks, per batch, per gemm call
  std::vector<WorkItem> tiles;                  ///< projection tiles, per apply batch, per launch
  std::vector<AnalysisBatch> analysis_batches;  ///< analysis in batches
  std::vector<ApplyBatch> apply_batches;        ///< writes in batches
  std::size_t basis_doubles = 0;                ///< sum of R^2
  std::size_t vector_doubles = 0;               ///< sum of R
  std::size_t record_doubles = 0;               ///< sum of 2R + 2
  std::size_t scratch_bytes = 0;                ///< largest batch scratch (analysis or apply)
  std::size_t solver_host_bytes = 0;            ///< largest host workspace of the solver
  DeviceLayout layout;                          ///< regions of the device workspace
  /// Bytes of device memory the plan needs in all (tables, per-layer state, scratch).
  std::size_t device_bytes() const { return layout.total; }
};

/// The write parameters of every slot: K clipped to q = min(R, n), sigma, policy, key.
inline void stage_writes(const Plan& plan, std::span<const LayerPlan> plans, WriteSlot* writes) {
  for (std::size_t s = 0; s < plan.slots.size(); ++s) {
    const LayerSlot& slot = plan.slots[s];
    const LayerPlan& layer = plans[static_cast<std::size_t>(slot.layer)];
    const std::int64_t q = std::min<std::int64_t>(slot.rank, slot.length);
    WriteSlot write;
    write.key = layer.key;
    write.sigma = static_cast<float>(layer.sigma);
    write.kept = static_cast<std::int32_t>(std::min(layer.kept, static_cast<std::size_t>(q)));
    write.policy = static_cast<std::int32_t>(layer.noise);
    writes[s] = write;
  }
}

/// What the planner needs to know about one layer.
struct PlanInput {
  void* data = nullptr;      ///< first entry
  DType dtype = DType::f32;  ///< storage type
  RankMajorView view;        ///< rank-major view
  /// Field-wise equality (a plan is reused while the inputs compare equal).
  friend bool operator==(const PlanInput&, const PlanInput&) = default;
};

namespace detail {
using GroupKey = std::tuple<std::int64_t, std::int32_t, std::int32_t, std::int64_t, std::int64_t>;

inline GroupKey group_key(const PlanInput& input) {
  const GramSource source = gram_source(input.view);
  const std::int64_t lda = source == GramSource::length_contiguous ? input.view.rank_stride
                           : source == GramSource::rank_contiguous ? input.view.length_stride
                                                                   : input.view.rank;
  return {input.view.rank, static_cast<std::int32_t>(input.dtype),
          static_cast<std::int32_t>(source), lda, input.view.length};
}

inline std::size_t analysis_data_bytes(const LayerSlot& slot) {
  const auto rank = static_cast<std::size_t>(slot.rank);
  std::size_t bytes = static_cast<std::size_t>(slot.chunks) * rank * rank * sizeof(float) +
                      static_cast<std::size_t>(slot.chunks) * rank * sizeof(double);
  if (slot.source == static_cast<std::int32_t>(GramSource::packed))
    bytes += rank * static_cast<std::size_t>(slot.length) * sizeof(float);
  return bytes;
}

// Fills the batch's per-slot scratch offsets, items, gemm calls and eigen runs.
inline void finish_analysis_batch(Plan& plan, AnalysisBatch& batch, const SolverQuery& solver) {
  std::size_t partial_floats = 0, row_sum_doubles = 0, packed_floats = 0;
  std::map<std::tuple<std::int32_t, bool, std::int32_t, std::int32_t, std::int64_t>,
           std::vector<WorkItem>>
      calls;
  for (std::size_t s = batch.first_slot; s < batch.first_slot + batch.slot_count; ++s) {
    LayerSlot& slot = plan.slots[s];
    const auto rank = static_cast<std::size_t>(slot.rank);
    slot.partial_offset = partial_floats;
    slot.row_sum_offset = row_sum_doubles;
    partial_floats += static_cast<std::size_t>(slot.chunks) * rank * rank;
    row_sum_doubles += static_cast<std::size_t>(slot.chunks) * rank;
    const auto source = static_cast<GramSource>(slot.source);
    std::int64_t lda = slot.rank;
    DType dtype = static_cast<DType>(slot.dtype);
    if (source == GramSource::packed) {
      slot.packed_offset = packed_floats;
      packed_floats += rank * static_cast<std::size_t>(slot.length);
      dtype = DType::f32;
    } else {
      lda = source == GramSource::length_contiguous ? slot.rank_stride : slot.length_stride;
    }
    for (std::int32_t chunk = 0; chunk < slot.chunks; ++chunk) {
      const std::int64_t depth = std::min(
          slot.chunk_width, slot.length - static_cast<std::int64_t>(chunk) * slot.chunk_width);
      calls[{static_cast<std::int32_t>(dtype), source != GramSource::length_contiguous, slot.rank,
             static_cast<std::int32_t>(depth), lda}]
          .push_back(WorkItem{static_cast<std::int32_t>(s), chunk});
    }
    // cusolverDnXsyevBatched needs n * lda * batch <= 2^31 - 1: long runs are split.
    const std::size_t run_limit = std::max<std::size_t>(1, max_eigen_batch_entries / (rank * rank));
    if (batch.eigen_runs.empty() || batch.eigen_runs.back().rank != slot.rank ||
        batch.eigen_runs.back().count >= run_limit)
      batch.eigen_runs.push_back(EigenRun{slot.rank, s, 0});
    ++batch.eigen_runs.back().count;
  }
  batch.first_item = plan.items.size();
  for (const auto& [key, items] : calls) {
    GemmCall call;
    call.dtype = static_cast<DType>(std::get<0>(key));
    call.rank_contiguous = std::get<1>(key);
    call.rank = std::get<2>(key);
    call.depth = std::get<3>(key);
    call.lda = std::get<4>(key);
    plan.items.insert(plan.items.end(), items.begin(), items.end());
    for (std::size_t first = 0; first < items.size(); first += max_gemm_batch) {
      call.first_item = plan.items.size() - items.size() + first;
      call.count = std::min(max_gemm_batch, items.size() - first);
      batch.gemms.push_back(call);
    }
  }
  batch.item_count = plan.items.size() - batch.first_item;
  batch.solver_bytes = 0;
  batch.solver_host_bytes = 0;
  for (const EigenRun& run : batch.eigen_runs) {
    const SolverBytes bytes = solver(run.rank, run.count);
    batch.solver_bytes = std::max(batch.solver_bytes, bytes.device);
    batch.solver_host_bytes = std::max(batch.solver_host_bytes, bytes.host);
  }
  batch.row_sums_at = align_bytes(partial_floats * sizeof(float));
  batch.packed_at = batch.row_sums_at + align_bytes(row_sum_doubles * sizeof(double));
  batch.solver_at = batch.packed_at + align_bytes(packed_floats * sizeof(float));
  batch.scratch_bytes = batch.solver_at + align_bytes(batch.solver_bytes);
}

inline std::string describe(const LayerSlot& slot) {
  return "layer " + std::to_string(slot.layer) + " (R = " + std::to_string(slot.rank) +
         ", n = " + std::to_string(slot.length) + ")";
}

inline void add_region(std::size_t& cursor, std::size_t& at, std::size_t bytes) {
  at = cursor;
  cursor += align_bytes(bytes);
}
}  // namespace detail

/// Plans a RESTART over `inputs` (in the caller's order) with at most `scratch_limit`
/// bytes of batch scratch. Layers are sorted by (R, dtype, Gram source, lda, n) so equal
/// shapes sit together; analysis and apply proceed in batches of consecutive slots.
/// @throws Error when one layer alone needs more scratch than the limit, or R > max_rank.
inline Plan make_plan(const std::vector<PlanInput>& inputs, std::size_t scratch_limit,
                      const SolverQuery& solver) {
  Plan plan;
  std::vector<std::size_t> order(inputs.size());
  for (std::size_t i = 0; i < order.size(); ++i)
    order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return detail::group_key(inputs[a]) < detail::group_key(inputs[b]);
  });

  for (std::size_t index : order) {
    const PlanInput& input = inputs[index];
    const RankMajorView& view = input.view;
    if (view.rank < 1 || view.length < 1)
      throw Error("CUDA backend: layer " + std::to_string(index) + " is empty");
    if (view.rank > max_rank) {
      throw Error("CUDA backend: layer " + std::to_string(index) + " has rank axis " +
                  std::to_string(view.rank) + " > " + std::to_string(max_rank) +
                  " (largest supported)");
    }
    LayerSlot slot;
    slot.data = input.data;
    slot.dtype = static_cast<std::int32_t>(input.dtype);
    slot.rank = static_cast<std::int32_t>(view.rank);
    slot.length = view.length;
    slot.rank_stride = view.rank_stride;
    slot.length_stride = view.length_stride;
    slot.noise_rank_step = view.noise_rank_step;
    slot.noise_length_step = view.noise_length_step;
    slot.chunk_width = gram_chunk_width(view.rank);
    slot.chunks = static_cast<std::int32_t>(ceil_div(view.length, slot.chunk_width));
    slot.source = static_cast<std::int32_t>(gram_source(view));
    slot.layer = static_cast<std::int32_t>(index);
    const auto rank = static_cast<std::size_t>(view.rank);
    slot.basis_offset = plan.basis_doubles;
    slot.vector_offset = plan.vector_doubles;
    slot.record_offset = plan.record_doubles;
    plan.basis_doubles += rank * rank;
    plan.vector_doubles += rank;
    plan.record_doubles += record_doubles(view.rank);
    plan.slots.push_back(slot);
  }

  // Analysis batches: greedy over consecutive slots.
  std::size_t first = 0;
  while (first < plan.slots.size()) {
    AnalysisBatch batch;
    batch.first_slot = first;
    batch.slot_count = 1;
    detail::finish_analysis_batch(plan, batch, solver);
    if (batch.scratch_bytes > scratch_limit) {
      throw Error("CUDA backend: " + detail::describe(plan.slots[first]) + " needs " +
                  std::to_string(batch.scratch_bytes) +
                  " bytes of analysis scratch, more than the workspace limit of " +
                  std::to_string(scratch_limit));
    }
    // Grow while the scratch fits (data bytes estimated first, then confirmed).
    std::size_t count = 1;
    std::size_t data = detail::analysis_data_bytes(plan.slots[first]);
    while (first + count < plan.slots.size()) {
      const std::size_t next = detail::analysis_data_bytes(plan.slots[first + count]);
      if (data + next > scratch_limit)
        break;
      data += next;
      ++count;
    }
    // Shrink until the exact layout (alignment, solver workspace) fits.
    for (;;) {
      plan.items.resize(batch.first_item);
      AnalysisBatch trial;
      trial.first_slot = first;
      trial.slot_count = count;
      detail::finish_analysis_batch(plan, trial, solver);
      if (trial.scratch_bytes <= scratch_limit || count == 1) {
        batch = std::move(trial);
        break;
      }
      count = std::max<std::size_t>(1, count - std::max<std::size_t>(1, count / 8));
    }
    plan.scratch_bytes = std::max(plan.scratch_bytes, batch.scratch_bytes);
    plan.solver_host_bytes = std::max(plan.solver_host_bytes, batch.solver_host_bytes);
    plan.analysis_batches.push_back(std::move(batch));
    first += count;
  }

  // Apply batches: room for an fp32 copy of U_K (at most R x R) per slot.
  first = 0;
  while (first < plan.slots.size()) {
    ApplyBatch batch;
    batch.first_slot = first;
    std::size_t floats = 0;
    std::size_t s = first;
    for (; s < plan.slots.size(); ++s) {
      const auto rank = static_cast<std::size_t>(plan.slots[s].rank);
      if (s > first && align_bytes((floats + rank * rank) * sizeof(float)) > scratch_limit)
        break;
      plan.slots[s].kept_basis_offset = floats;
      floats += rank * rank;
    }
    batch.slot_count = s - first;
    batch.scratch_bytes = align_bytes(floats * sizeof(float));
    if (batch.scratch_bytes > scratch_limit) {
      throw Error("CUDA backend: " + detail::describe(plan.slots[first]) + " needs " +
                  std::to_string(batch.scratch_bytes) +
                  " bytes for its kept directions, more than the workspace limit of " +
                  std::to_string(scratch_limit));
    }
    for (s = first; s < first + batch.slot_count; ++s) {
      const LayerSlot& slot = plan.slots[s];
      const ProjectionShape shape = projection_shape(slot.rank);
      batch.max_rank = std::max<std::int64_t>(batch.max_rank, slot.rank);
      if (batch.launches.empty() || batch.launches.back().shape.config != shape.config) {
        ProjectionLaunch launch;
        launch.shape = shape;
        launch.first_tile = plan.tiles.size();
        batch.launches.push_back(launch);
      }
      ProjectionLaunch& launch = batch.launches.back();
      launch.max_rank = std::max<std::int64_t>(launch.max_rank, slot.rank);
      const std::int64_t tiles = ceil_div(slot.length, shape.tile_cols);
      for (std::int64_t t = 0; t < tiles; ++t)
        plan.tiles.push_back(WorkItem{static_cast<std::int32_t>(s), static_cast<std::int32_t>(t)});
      launch.tile_count = plan.tiles.size() - launch.first_tile;
    }
    plan.scratch_bytes = std::max(plan.scratch_bytes, batch.scratch_bytes);
    plan.apply_batches.push_back(std::move(batch));
    first += plan.apply_batches.back().slot_count;
  }

  // Device layout: tables (uploaded together), per-layer state, scratch.
  DeviceLayout& at = plan.layout;
  std::size_t cursor = 0;
  const std::size_t slot_count = plan.slots.size();
  detail::add_region(cursor, at.slots, slot_count * sizeof(LayerSlot));
  detail::add_region(cursor, at.items, plan.items.size() * sizeof(WorkItem));
  detail::add_region(cursor, at.tiles, plan.tiles.size() * sizeof(WorkItem));
  detail::add_region(cursor, at.gemm_a, plan.items.size() * sizeof(void*));
  detail::add_region(cursor, at.gemm_c, plan.items.size() * sizeof(void*));
  at.tables_end = cursor;
  detail::add_region(cursor, at.writes, slot_count * sizeof(WriteSlot));
  detail::add_region(cursor, at.basis, plan.basis_doubles * sizeof(double));
  detail::add_region(cursor, at.eigenvalues, plan.vector_doubles * sizeof(double));
  detail::add_region(cursor, at.row_sums, plan.vector_doubles * sizeof(double));
  detail::add_region(cursor, at.records, plan.record_doubles * sizeof(double));
  detail::add_region(cursor, at.flags, slot_count * sizeof(int));
  detail::add_region(cursor, at.infos, slot_count * sizeof(int));
  detail::add_region(cursor, at.scratch, plan.scratch_bytes);
  at.total = cursor;
  return plan;
}

}  // namespace aclora::backends::cuda
