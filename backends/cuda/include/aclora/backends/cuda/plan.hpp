/// @file plan.hpp
/// @brief Host-side planning of the CUDA backend: rank-major views, shape groups, Gram
/// chunks, units, rounds and batches, workspace layout and launch shapes. Plain C++ (no CUDA
/// header), so every rule here is unit-tested on machines without a GPU.
///
/// Determinism: everything that decides how a number is computed (the chunk boundaries of
/// each layer, the Gram units and their cuBLAS calls, the eigen-solver runs, the tile width
/// of each projection) follows from the layer list and the precision alone. The workspace
/// limit only decides which units share a round and which layers share a write batch, so a
/// RESTART gives the same bits whatever the limit.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "aclora/backend.hpp"
#include "aclora/config.hpp"
#include "aclora/error.hpp"
#include "aclora/layer.hpp"
#include "aclora/noise.hpp"
#include "aclora/precision.hpp"
#include "aclora/spectrum.hpp"

namespace aclora::backends::cuda {

/// Storage type of a device matrix.
enum class DType : std::int32_t {
  f32 = 0,   ///< IEEE float
  f16 = 1,   ///< IEEE half (__half)
  bf16 = 2,  ///< bfloat16 (__nv_bfloat16)
  f64 = 3,   ///< IEEE double
};

/// True for the four supported storage types.
constexpr bool dtype_valid(DType dtype) {
  return dtype == DType::f32 || dtype == DType::f16 || dtype == DType::bf16 || dtype == DType::f64;
}
/// Bytes per element.
constexpr std::size_t dtype_bytes(DType dtype) {
  return dtype == DType::f64 ? 8 : dtype == DType::f32 ? 4 : 2;
}
/// Name for messages.
constexpr const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return "fp32";
    case DType::f16:
      return "fp16";
    case DType::bf16:
      return "bf16";
    case DType::f64:
      return "fp64";
  }
  return "?";
}

/// Largest rank axis the backend handles (the projection keeps an R-row strip of each
/// column tile in shared memory; LoRA ranks are far below).
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

/// How cuBLAS would read a layer (used by the TF32 Gram products).
enum class GramSource : std::int32_t {
  length_contiguous = 0,  ///< rows of the view contiguous: cuBLAS A^T A on (n x R, lda)
  rank_contiguous = 1,    ///< columns of the view contiguous: cuBLAS A A^T on (R x n, lda)
  strided = 2,            ///< other strides: not readable by cuBLAS
};

/// The Gram source of a view.
inline GramSource gram_source(const RankMajorView& view) {
  constexpr std::int64_t int_max = 2147483647;
  if (view.length_stride == 1 && view.rank_stride >= view.length && view.rank_stride <= int_max)
    return GramSource::length_contiguous;
  if (view.rank_stride == 1 && view.length_stride >= view.rank && view.length_stride <= int_max)
    return GramSource::rank_contiguous;
  return GramSource::strided;
}

/// Who computes a layer's partial Gram matrices.
enum class GramPath : std::int32_t {
  kernel = 0,  ///< the backend's own kernel (fp64 or fp32 arithmetic, fixed summation order)
  cublas = 1,  ///< cuBLAS on TF32 tensor cores (precision tf32, cuBLAS-readable fp32 / fp16 /
               ///< bf16 layers whose entries lie in a safe exponent range)
};

/// The Gram path of a layer: cuBLAS for tf32 precision when cuBLAS can read the layer
/// directly (fp32, fp16 or bf16 storage, rows or columns contiguous), else the own kernel.
inline GramPath gram_path(Precision precision, DType dtype, GramSource source) {
  if (precision == Precision::tf32 && dtype != DType::f64 && source != GramSource::strided)
    return GramPath::cublas;
  return GramPath::kernel;
}

/// Columns of the R x n view per Gram chunk: each chunk's partial Gram is a sum of at most
/// this many products in the product precision; the partials are summed in fp64. Wider
/// for larger R so the partials stay a quarter of the layer's size or less. Depends on R
/// alone: the chunk boundaries of a layer never depend on the workspace limit.
inline std::int64_t gram_chunk_width(std::int64_t rank) {
  const std::int64_t wide = (4 * rank + 63) / 64 * 64;
  return std::max<std::int64_t>(256, wide);
}

/// ceil(a / b) for positive b.
constexpr std::int64_t ceil_div(std::int64_t a, std::int64_t b) {
  return (a + b - 1) / b;
}

/// Threads per block of every kernel of the backend.
inline constexpr int block_threads = 256;

/// Side of the square Gram tile one block of the own Gram kernel computes for rank R
/// (16, 32 or 64; each of the 256 threads holds (tile / 16)^2 sums).
constexpr int gram_tile(std::int64_t rank) {
  return rank <= 16 ? 16 : rank <= 32 ? 32 : 64;
}
/// Blocks per chunk of the own Gram kernel: the tiles on and below the diagonal.
constexpr std::int64_t gram_tiles(std::int64_t rank) {
  const std::int64_t side = ceil_div(rank, gram_tile(rank));
  return side * (side + 1) / 2;
}
/// Columns of a chunk staged in shared memory at a time by the own Gram kernel.
inline constexpr int gram_panel = 32;

/// Largest |exponent| (entries up to 2^40 in magnitude, down to 2^-40) for which cuBLAS
/// reads a layer unscaled in TF32 products: the fp32 partial sums then neither overflow nor
/// lose the leading entries to underflow. Layers outside get the own fp32 kernel on
/// power-of-two scaled entries instead.
inline constexpr int tf32_exponent_limit = 40;

/// Rank entries summed in float32 before a float64 sum, in the fp32 projection.
inline constexpr int projection_sum_chunk = 64;

/// Launch shape of the projection kernel: one block per tile of tile_cols columns of the
/// R x n view, all R rows.
struct ProjectionShape {
  int config = 0;      ///< 0..3, selects the kernel instantiation (with the precision)
  int tile_cols = 64;  ///< columns of the view per block
};

/// The projection launch shape for rank R with `real_bytes`-byte arithmetic (4: fp32 and
/// tf32, 8: fp64): narrower tiles for larger R keep the strip and its coefficients within
/// the 48 KiB of shared memory every CUDA device grants a block without opt-in.
constexpr ProjectionShape projection_shape(std::int64_t rank, std::size_t real_bytes = 4) {
  const int config = rank <= 64 ? 0 : rank <= 128 ? 1 : rank <= 256 ? 2 : 3;
  constexpr int single[4] = {64, 32, 16, 4};
  constexpr int twice[4] = {32, 16, 8, 2};
  return {config, real_bytes == 8 ? twice[config] : single[config]};
}

/// Dynamic shared memory of the projection kernel for rank R: the R x tile_cols strip and
/// up to R x tile_cols coefficients (K <= R), rows padded by one element.
constexpr std::size_t projection_shared_bytes(std::int64_t rank, std::size_t real_bytes = 4) {
  const ProjectionShape shape = projection_shape(rank, real_bytes);
  return static_cast<std::size_t>(2 * rank * (shape.tile_cols + 1)) * real_bytes;
}

/// Shared memory every CUDA device grants a block without opt-in.
inline constexpr std::size_t default_shared_bytes = 48 * 1024;

/// One layer in planning order, shared verbatim by host and device code (plain data).
struct LayerSlot {
  void* data = nullptr;                 ///< first entry of the user's matrix
  std::int32_t dtype = 0;               ///< DType
  std::int32_t rank = 0;                ///< R
  std::int64_t length = 0;              ///< n
  std::int64_t rank_stride = 0;         ///< view stride along R (elements)
  std::int64_t length_stride = 0;       ///< view stride along n (elements)
  std::int64_t noise_rank_step = 0;     ///< draw-index step along R
  std::int64_t noise_length_step = 0;   ///< draw-index step along n
  std::int64_t chunk_width = 0;         ///< Gram columns per chunk
  std::int32_t chunks = 0;              ///< chunks: ceil(n / chunk_width)
  std::int32_t source = 0;              ///< GramSource
  std::int32_t layer = 0;               ///< index in the caller's layer list
  std::int32_t path = 0;                ///< GramPath
  std::uint64_t basis_offset = 0;       ///< doubles: Gram, then eigenvectors (R x R, col-major)
  std::uint64_t vector_offset = 0;      ///< doubles: eigenvalues, row sums (R each)
  std::uint64_t record_offset = 0;      ///< doubles: spectrum record (record_doubles(R))
  std::uint64_t stats_offset = 0;       ///< doubles: per chunk R row sums and the largest |x|
  std::uint64_t partial_offset = 0;     ///< bytes into the round scratch: the chunk partials
  std::uint64_t kept_basis_offset = 0;  ///< reals into the write scratch: U_K (R x K <= R^2)
};

/// What apply writes for one slot (uploaded once per apply).
struct WriteSlot {
  NoiseKey key;             ///< noise stream
  double sigma = 0.0;       ///< noise standard deviation
  std::int32_t kept = 0;    ///< min(K, q) directions kept
  std::int32_t policy = 0;  ///< NoisePolicy
};

/// A block's work: a slot and a Gram chunk (analysis) or a column tile (write).
struct WorkItem {
  std::int32_t slot = 0;   ///< index into Plan::slots
  std::int32_t index = 0;  ///< chunk or column tile of that slot
};

/// Spectrum record layout: R singular values, R component sums, entry sum, status, and the
/// binary exponent of the layer's largest |entry| (the Gram ran on entries times 2^-exponent).
constexpr std::size_t record_doubles(std::int64_t rank) {
  return 2 * rank + 3;
}

/// Per-slot status bits, set by the analysis.
enum SlotFlag : int {
  flag_non_finite = 1,     ///< a NaN or Inf entry
  flag_scaled_gram = 2,    ///< a cuBLAS layer whose Gram the own kernel computed on scaled
                           ///< entries (exponent outside tf32_exponent_limit)
  flag_gram_overflow = 4,  ///< a non-finite Gram sum (cannot happen with scaled entries)
};

/// Status values in a spectrum record.
enum class SlotStatus : int {
  ok = 0,
  non_finite = 1,     ///< a NaN or Inf entry
  solver_failed = 2,  ///< the eigen-solver did not converge
  gram_overflow = 3,  ///< the Gram sums overflowed
};

/// One batched cuBLAS call over Gram chunks that share (dtype, source, R, k, lda).
struct GemmCall {
  DType dtype = DType::f32;      ///< type of the operands
  bool rank_contiguous = false;  ///< A A^T (true) or A^T A (false)
  std::int32_t rank = 0;         ///< R
  std::int32_t depth = 0;        ///< k: columns in each chunk
  std::int64_t lda = 0;          ///< leading dimension of the operands
  std::size_t first_item = 0;    ///< into Plan::items
  std::size_t count = 0;         ///< products in the call
};

/// Most products per batched cuBLAS call (kept below the 65535 grid limit).
inline constexpr std::size_t max_gemm_batch = 65535;

/// Bytes of partial Grams in one cuBLAS unit (consecutive layers of one shape whose TF32
/// products are issued together): bounds the cuBLAS calls, which are made per unit so that
/// they never depend on the limit. A round may exceed the limit by less than one such unit.
inline constexpr std::size_t unit_partial_bytes = std::size_t{16} << 20;

/// One launch of the own Gram kernel over consecutive items of one tile size.
struct GramLaunch {
  int tile = 16;               ///< gram_tile of its slots
  bool scaled_only = false;    ///< only slots flagged flag_scaled_gram (after cuBLAS)
  std::size_t first_item = 0;  ///< into Plan::items
  std::size_t count = 0;       ///< blocks along x
  std::int64_t max_tiles = 0;  ///< blocks along y: gram_tiles of the largest R
};

/// Gram work over consecutive slots whose partials fit the limit (at least one unit).
struct GramRound {
  std::size_t first_slot = 0;        ///< first slot of the round
  std::size_t slot_count = 0;        ///< slots in the round
  std::size_t first_item = 0;        ///< first chunk (Plan::items)
  std::size_t item_count = 0;        ///< chunks in the round
  std::size_t scratch_bytes = 0;     ///< partial Grams of the round
  std::int64_t max_rank = 0;         ///< largest R in the round
  std::vector<GemmCall> gemms;       ///< cuBLAS calls (tf32), before the launches
  std::vector<GramLaunch> launches;  ///< own-kernel launches
};

/// Consecutive slots of one rank: one batched eigen-solve.
struct EigenRun {
  std::int32_t rank = 0;       ///< R
  std::size_t first_slot = 0;  ///< first slot of the run
  std::size_t count = 0;       ///< matrices in the run
};

/// Largest R * R * count of one batched eigen-solve (cuSOLVER's 32-bit indexing).
inline constexpr std::size_t max_eigen_batch_entries = 2147483647;
/// Bytes of Gram matrices in one batched eigen-solve: runs are cut from the layer list
/// alone, never by the workspace limit.
inline constexpr std::size_t eigen_run_bytes = std::size_t{64} << 20;

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

/// One projection launch: consecutive tiles of one rank class.
struct ProjectionLaunch {
  ProjectionShape shape;       ///< kernel instantiation and tile width
  std::int64_t max_rank = 0;   ///< largest R among its slots (shared memory size)
  std::size_t first_tile = 0;  ///< into Plan::tiles
  std::size_t tile_count = 0;  ///< blocks of the launch
};

/// Write work over consecutive slots whose kept directions fit the limit (at least one).
struct ApplyBatch {
  std::size_t first_slot = 0;              ///< first slot of the batch
  std::size_t slot_count = 0;              ///< slots in the batch
  std::int64_t max_rank = 0;               ///< largest R in the batch
  std::size_t scratch_bytes = 0;           ///< U_K copies of the batch
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

/// Address of the first entry of a Gram chunk in the user's matrix (cuBLAS operand).
inline const void* gram_operand(const LayerSlot& slot, std::int32_t chunk) {
  const std::int64_t first_column = static_cast<std::int64_t>(chunk) * slot.chunk_width;
  const auto* data = static_cast<const unsigned char*>(slot.data);
  return data + first_column * slot.length_stride *
                    static_cast<std::int64_t>(dtype_bytes(static_cast<DType>(slot.dtype)));
}

/// Byte offset of a chunk's partial Gram (R x R, column-major) from the round scratch.
ACLORA_HOST_DEVICE inline std::size_t gram_partial_offset(const LayerSlot& slot, std::int32_t chunk,
                                                          std::size_t real_bytes) {
  const auto rank = static_cast<std::size_t>(slot.rank);
  return slot.partial_offset + static_cast<std::size_t>(chunk) * rank * rank * real_bytes;
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
  std::size_t stats = 0;        ///< per-chunk row sums and largest |x| (fp64)
  std::size_t flags = 0;        ///< SlotFlag bits (int)
  std::size_t exponents = 0;    ///< scale exponents (int)
  std::size_t infos = 0;        ///< solver infos (int)
  std::size_t scratch = 0;      ///< round, solver and write scratch
  std::size_t total = 0;        ///< bytes in all
};

/// Everything the backend needs to run analysis and apply for one list of layers.
struct Plan {
  Precision precision = Precision::fp64;  ///< resolved arithmetic (never automatic)
  std::vector<LayerSlot> slots;           ///< planning order: sorted by group key
  std::vector<WorkItem> items;            ///< Gram chunks, per round, per unit
  std::vector<WorkItem> tiles;            ///< projection tiles, per apply batch, per launch
  std::vector<GramRound> rounds;          ///< Gram products in rounds
  std::vector<EigenRun> eigen_runs;       ///< batched eigen-solves
  std::vector<ApplyBatch> apply_batches;  ///< writes in batches
  std::size_t basis_doubles = 0;          ///< sum of R^2
  std::size_t vector_doubles = 0;         ///< sum of R
  std::size_t record_doubles = 0;         ///< sum of record_doubles(R)
  std::size_t stats_doubles = 0;          ///< sum of chunks (R + 1)
  std::size_t solver_bytes = 0;           ///< largest device workspace of an eigen run
  std::size_t solver_host_bytes = 0;      ///< largest host workspace of an eigen run
  std::size_t scratch_bytes = 0;          ///< largest scratch (round, solver or write)
  DeviceLayout layout;                    ///< regions of the device workspace
  /// Bytes of device memory the plan needs in all (tables, per-layer state, scratch).
  std::size_t device_bytes() const { return layout.total; }
  /// Bytes of the arithmetic type of the Gram partials and the projection (8 for fp64).
  std::size_t real_bytes() const { return precision == Precision::fp64 ? 8 : 4; }
};

/// The write parameters of every slot: K clipped to q = min(R, n), sigma, policy, key.
inline void stage_writes(const Plan& plan, std::span<const LayerPlan> plans, WriteSlot* writes) {
  for (std::size_t s = 0; s < plan.slots.size(); ++s) {
    const LayerSlot& slot = plan.slots[s];
    const LayerPlan& layer = plans[static_cast<std::size_t>(slot.layer)];
    const std::int64_t q = std::min<std::int64_t>(slot.rank, slot.length);
    WriteSlot write;
    write.key = layer.key;
    write.sigma = layer.sigma;
    write.kept = static_cast<std::int32_t>(std::min(layer.kept, static_cast<std::size_t>(q)));
    write.policy = static_cast<std::int32_t>(layer.noise);
    writes[s] = write;
  }
}

/// Fills spectra[layer] for every slot from the downloaded spectrum records; a layer whose
/// eigen-solve did not converge (or whose Gram sums overflowed) gets a LayerSpectrum::failure,
/// which the driver reports with its module and layer.
inline void read_spectra(const Plan& plan, const double* records,
                         std::span<LayerSpectrum> spectra) {
  for (const LayerSlot& slot : plan.slots) {
    const double* record = records + slot.record_offset;
    const std::int64_t rank = slot.rank;
    const std::int64_t q = std::min<std::int64_t>(rank, slot.length);
    const auto status = static_cast<SlotStatus>(static_cast<int>(record[2 * rank + 1]));
    LayerSpectrum& spectrum = spectra[static_cast<std::size_t>(slot.layer)];
    spectrum = LayerSpectrum{};
    switch (status) {
      case SlotStatus::non_finite:
        spectrum.finite = false;
        continue;
      case SlotStatus::gram_overflow:
        spectrum.failure = "CUDA backend: the Gram sums overflowed";
        continue;
      case SlotStatus::solver_failed:
        spectrum.failure = "CUDA backend: the batched eigen-solver did not converge";
        continue;
      case SlotStatus::ok:
        break;
    }
    spectrum.singular_values.assign(record, record + q);
    spectrum.component_sums.assign(record + rank, record + rank + q);
    spectrum.entry_sum = record[2 * rank];
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

inline std::int64_t leading_dimension(const RankMajorView& view, GramSource source) {
  return source == GramSource::length_contiguous ? view.rank_stride
         : source == GramSource::rank_contiguous ? view.length_stride
                                                 : view.rank;
}

inline GroupKey group_key(const PlanInput& input) {
  const GramSource source = gram_source(input.view);
  return {input.view.rank, static_cast<std::int32_t>(input.dtype),
          static_cast<std::int32_t>(source), leading_dimension(input.view, source),
          input.view.length};
}

inline GroupKey group_key(const LayerSlot& slot) {
  const auto source = static_cast<GramSource>(slot.source);
  const std::int64_t lda = source == GramSource::length_contiguous ? slot.rank_stride
                           : source == GramSource::rank_contiguous ? slot.length_stride
                                                                   : slot.rank;
  return {slot.rank, slot.dtype, slot.source, lda, slot.length};
}

inline std::size_t partial_bytes(const LayerSlot& slot, std::size_t real_bytes) {
  const auto rank = static_cast<std::size_t>(slot.rank);
  return static_cast<std::size_t>(slot.chunks) * rank * rank * real_bytes;
}

// A unit: the slots whose Gram products are issued together. Own-kernel slots are units of
// their own (their results do not depend on what runs beside them); cuBLAS slots form units
// of consecutive slots of one group key whose partials fit unit_partial_bytes (at least one
// slot), so that the cuBLAS calls depend on the layer list alone.
struct Unit {
  std::size_t first_slot = 0;
  std::size_t slot_count = 0;
  std::size_t bytes = 0;  // partials, aligned per slot
};

inline std::vector<Unit> make_units(const Plan& plan) {
  std::vector<Unit> units;
  const std::size_t real = plan.real_bytes();
  for (std::size_t s = 0; s < plan.slots.size(); ++s) {
    const std::size_t bytes = align_bytes(partial_bytes(plan.slots[s], real));
    const bool cublas = static_cast<GramPath>(plan.slots[s].path) == GramPath::cublas;
    if (!cublas || units.empty() ||
        group_key(plan.slots[units.back().first_slot]) != group_key(plan.slots[s]) ||
        static_cast<GramPath>(plan.slots[units.back().first_slot].path) != GramPath::cublas ||
        units.back().bytes + bytes > unit_partial_bytes) {
      units.push_back(Unit{s, 0, 0});
    }
    ++units.back().slot_count;
    units.back().bytes += bytes;
  }
  return units;
}

// Appends the unit's chunks to plan.items (cuBLAS units: grouped by call, in the order of
// their keys) with its cuBLAS calls and own-kernel launches; sets the slots' partial offsets
// from `cursor` (bytes into the round scratch).
inline void add_unit(Plan& plan, GramRound& round, const Unit& unit, std::size_t& cursor) {
  const std::size_t real = plan.real_bytes();
  const std::size_t first_item = plan.items.size();
  std::int64_t max_rank = 0;
  for (std::size_t s = unit.first_slot; s < unit.first_slot + unit.slot_count; ++s) {
    LayerSlot& slot = plan.slots[s];
    slot.partial_offset = cursor;
    cursor += align_bytes(partial_bytes(slot, real));
    max_rank = std::max<std::int64_t>(max_rank, slot.rank);
  }
  const LayerSlot& first = plan.slots[unit.first_slot];
  const bool cublas = static_cast<GramPath>(first.path) == GramPath::cublas;
  if (cublas) {
    // All slots of a unit share the group key, hence the chunk depths: one call for the full
    // chunks and one for the last chunks when they are shorter.
    std::vector<std::pair<std::int32_t, WorkItem>> ordered;
    for (std::size_t s = unit.first_slot; s < unit.first_slot + unit.slot_count; ++s) {
      const LayerSlot& slot = plan.slots[s];
      for (std::int32_t chunk = 0; chunk < slot.chunks; ++chunk) {
        const auto depth = static_cast<std::int32_t>(std::min(
            slot.chunk_width, slot.length - static_cast<std::int64_t>(chunk) * slot.chunk_width));
        ordered.push_back({-depth, WorkItem{static_cast<std::int32_t>(s), chunk}});
      }
    }
    std::stable_sort(ordered.begin(), ordered.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    const auto source = static_cast<GramSource>(first.source);
    for (std::size_t i = 0; i < ordered.size();) {
      std::size_t end = i;
      while (end < ordered.size() && ordered[end].first == ordered[i].first &&
             end - i < max_gemm_batch)
        ++end;
      GemmCall call;
      call.dtype = static_cast<DType>(first.dtype);
      call.rank_contiguous = source == GramSource::rank_contiguous;
      call.rank = first.rank;
      call.depth = -ordered[i].first;
      call.lda = source == GramSource::length_contiguous ? first.rank_stride : first.length_stride;
      call.first_item = plan.items.size();
      call.count = end - i;
      for (std::size_t k = i; k < end; ++k)
        plan.items.push_back(ordered[k].second);
      round.gemms.push_back(call);
      i = end;
    }
  } else {
    for (std::size_t s = unit.first_slot; s < unit.first_slot + unit.slot_count; ++s)
      for (std::int32_t chunk = 0; chunk < plan.slots[s].chunks; ++chunk)
        plan.items.push_back(WorkItem{static_cast<std::int32_t>(s), chunk});
  }
  // Own-kernel launch over the unit's items (for cuBLAS units: only the slots the analysis
  // flags for scaled products), merged with the previous launch when it matches.
  const int tile = gram_tile(first.rank);
  const std::size_t count = plan.items.size() - first_item;
  if (!round.launches.empty() && round.launches.back().tile == tile &&
      round.launches.back().scaled_only == cublas &&
      round.launches.back().first_item + round.launches.back().count == first_item) {
    GramLaunch& launch = round.launches.back();
    launch.count += count;
    launch.max_tiles = std::max(launch.max_tiles, gram_tiles(max_rank));
  } else {
    round.launches.push_back(GramLaunch{tile, cublas, first_item, count, gram_tiles(max_rank)});
  }
  round.max_rank = std::max(round.max_rank, max_rank);
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

/// Plans a RESTART over `inputs` (in the caller's order) in the resolved `precision` (fp64,
/// fp32 or tf32) with at most `scratch_limit` bytes of round and write scratch, except that a
/// round always holds at least one unit (one layer, or for tf32 up to unit_partial_bytes of
/// layers of one shape) and a write batch at least one layer. The eigen-
/// solver's workspace for runs of up to eigen_run_bytes of Gram matrices comes on top.
/// Layers are sorted by (R, dtype, Gram source, lda, n) so equal shapes sit together.
/// @throws Error for an empty layer, R > max_rank or precision automatic (the backend's
/// check() refuses such layers before any work).
inline Plan make_plan(const std::vector<PlanInput>& inputs, std::size_t scratch_limit,
                      Precision precision, const SolverQuery& solver) {
  if (precision == Precision::automatic)
    throw Error("CUDA backend: the plan needs a resolved precision (fp64, fp32 or tf32)");
  Plan plan;
  plan.precision = precision;
  const std::size_t real = plan.real_bytes();
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
    const GramSource source = gram_source(view);
    slot.source = static_cast<std::int32_t>(source);
    slot.path = static_cast<std::int32_t>(gram_path(precision, input.dtype, source));
    slot.layer = static_cast<std::int32_t>(index);
    const auto rank = static_cast<std::size_t>(view.rank);
    slot.basis_offset = plan.basis_doubles;
    slot.vector_offset = plan.vector_doubles;
    slot.record_offset = plan.record_doubles;
    slot.stats_offset = plan.stats_doubles;
    plan.basis_doubles += rank * rank;
    plan.vector_doubles += rank;
    plan.record_doubles += record_doubles(view.rank);
    plan.stats_doubles += static_cast<std::size_t>(slot.chunks) * (rank + 1);
    plan.slots.push_back(slot);
  }

  // Gram rounds: consecutive units while their partials fit the limit (at least one unit).
  const std::vector<detail::Unit> units = detail::make_units(plan);
  for (std::size_t u = 0; u < units.size();) {
    GramRound round;
    round.first_slot = units[u].first_slot;
    round.first_item = plan.items.size();
    std::size_t cursor = 0;
    do {
      detail::add_unit(plan, round, units[u], cursor);
      round.slot_count += units[u].slot_count;
      ++u;
    } while (u < units.size() && cursor + units[u].bytes <= scratch_limit);
    round.item_count = plan.items.size() - round.first_item;
    round.scratch_bytes = cursor;
    plan.scratch_bytes = std::max(plan.scratch_bytes, round.scratch_bytes);
    plan.rounds.push_back(std::move(round));
  }

  // Eigen runs: consecutive slots of one rank, up to eigen_run_bytes of matrices (and
  // cuSOLVER's 32-bit bound), cut from the list alone.
  for (std::size_t s = 0; s < plan.slots.size(); ++s) {
    const auto rank = static_cast<std::size_t>(plan.slots[s].rank);
    const std::size_t run_limit =
        std::max<std::size_t>(1, std::min(max_eigen_batch_entries / (rank * rank),
                                          eigen_run_bytes / (rank * rank * sizeof(double))));
    if (plan.eigen_runs.empty() || plan.eigen_runs.back().rank != plan.slots[s].rank ||
        plan.eigen_runs.back().count >= run_limit)
      plan.eigen_runs.push_back(EigenRun{plan.slots[s].rank, s, 0});
    ++plan.eigen_runs.back().count;
  }
  for (const EigenRun& run : plan.eigen_runs) {
    const SolverBytes bytes = solver(run.rank, run.count);
    plan.solver_bytes = std::max(plan.solver_bytes, bytes.device);
    plan.solver_host_bytes = std::max(plan.solver_host_bytes, bytes.host);
  }
  plan.scratch_bytes = std::max(plan.scratch_bytes, align_bytes(plan.solver_bytes));

  // Write batches: room for U_K (at most R x R reals) per slot, at least one slot.
  for (std::size_t first = 0; first < plan.slots.size();) {
    ApplyBatch batch;
    batch.first_slot = first;
    std::size_t reals = 0;
    std::size_t s = first;
    for (; s < plan.slots.size(); ++s) {
      const auto rank = static_cast<std::size_t>(plan.slots[s].rank);
      if (s > first && align_bytes((reals + rank * rank) * real) > scratch_limit)
        break;
      plan.slots[s].kept_basis_offset = reals;
      reals += rank * rank;
    }
    batch.slot_count = s - first;
    batch.scratch_bytes = align_bytes(reals * real);
    for (s = first; s < first + batch.slot_count; ++s) {
      const LayerSlot& slot = plan.slots[s];
      const ProjectionShape shape = projection_shape(slot.rank, real);
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
    first += batch.slot_count;
    plan.apply_batches.push_back(std::move(batch));
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
  detail::add_region(cursor, at.stats, plan.stats_doubles * sizeof(double));
  detail::add_region(cursor, at.flags, slot_count * sizeof(int));
  detail::add_region(cursor, at.exponents, slot_count * sizeof(int));
  detail::add_region(cursor, at.infos, slot_count * sizeof(int));
  detail::add_region(cursor, at.scratch, plan.scratch_bytes);
  at.total = cursor;
  return plan;
}

/// Writes the plan's tables into `host` (at least layout.tables_end bytes) at the offsets
/// they will have in the device workspace starting at `device_base`: slots, items, tiles and
/// the cuBLAS operand and result pointers of every Gram chunk.
inline void stage_tables(const Plan& plan, unsigned char* host, unsigned char* device_base) {
  const DeviceLayout& at = plan.layout;
  std::copy_n(reinterpret_cast<const unsigned char*>(plan.slots.data()),
              plan.slots.size() * sizeof(LayerSlot), host + at.slots);
  std::copy_n(reinterpret_cast<const unsigned char*>(plan.items.data()),
              plan.items.size() * sizeof(WorkItem), host + at.items);
  std::copy_n(reinterpret_cast<const unsigned char*>(plan.tiles.data()),
              plan.tiles.size() * sizeof(WorkItem), host + at.tiles);
  auto* gemm_a = reinterpret_cast<const void**>(host + at.gemm_a);
  auto* gemm_c = reinterpret_cast<void**>(host + at.gemm_c);
  unsigned char* scratch = device_base + at.scratch;
  for (std::size_t i = 0; i < plan.items.size(); ++i) {
    const WorkItem item = plan.items[i];
    const LayerSlot& slot = plan.slots[static_cast<std::size_t>(item.slot)];
    gemm_a[i] = gram_operand(slot, item.index);
    gemm_c[i] = scratch + gram_partial_offset(slot, item.index, plan.real_bytes());
  }
}

}  // namespace aclora::backends::cuda
