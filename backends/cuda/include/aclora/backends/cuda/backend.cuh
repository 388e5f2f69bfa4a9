/// @file backend.cuh
/// @brief aclora::backends::CudaBackend, the backend over raw device memory (own kernels, cuBLAS
/// for TF32 products, cuSOLVER), for `aclora::Restart<aclora::backends::CudaBackend>`.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "aclora/backend.hpp"
#include "aclora/backends/cuda/matrix.cuh"
#include "aclora/backends/cuda/passes.cuh"
#include "aclora/backends/cuda/plan.hpp"
#include "aclora/backends/cuda/stream_device.cuh"
#include "aclora/backends/cuda/workspace.cuh"
#include "aclora/error.hpp"
#include "aclora/layer.hpp"
#include "aclora/memory.hpp"
#include "aclora/precision.hpp"
#include "aclora/spectrum.hpp"

namespace aclora::backends {

/// The CUDA backend: fp64 / fp32 / fp16 / bf16 matrices in device memory with any positive
/// strides, processed as one stream-ordered pass per RESTART with one synchronisation.
///
/// Analysis: per layer, row sums and the largest entry (fp64), then the Gram matrix of the
/// entries scaled by a power of two (exact; nothing overflows) over fixed column chunks, in
/// the arithmetic of Options::precision (aclora::Precision): fp64 (own kernel, float64
/// products and sums), fp32 (own kernel, float32 products within a chunk, chunks summed in
/// float64) or tf32 (cuBLAS on TF32 tensor cores within a chunk, chunks summed in float64);
/// `automatic` picks fp64 on GPUs with full-rate float64 and fp32 on the others. Batched
/// float64 eigen-solves (cuSOLVER). Write: fused projection + Philox noise kernel in the
/// same arithmetic (fp32: float32 sums over up to 64 rank entries, summed in float64), one
/// rounding to the storage type.
///
/// Results are bit-identical for the same inputs, device and build whatever
/// Options::workspace_limit: chunks, cuBLAS calls and eigen-solver runs follow from the
/// layer list alone, and every sum of the own kernels runs in a fixed order.
///
/// The object keeps handles, its plan and its workspace between calls (reused while the layer
/// list is unchanged); it is movable, not copyable. Work runs on `Options::stream` of the
/// device that is current when the object is first used.
class CudaBackend {
 public:
  using matrix_type = cuda::DeviceMatrix;  ///< view of one factor in device memory

  /// Ties an apply to the analysis it follows.
  struct Analysis {
    std::uint64_t generation = 0;  ///< the backend's analysis count at that point
    std::size_t layer_count = 0;   ///< layers analysed
  };
  using analysis_type = Analysis;  ///< what analyze hands to apply

  /// Backend settings.
  struct Options {
    cudaStream_t stream = nullptr;  ///< stream for all work (nullptr: the default stream)
    /// Bound on the scratch of the Gram rounds (chunk partials) and of the write batches
    /// (kept directions), in bytes; larger models run in more rounds and batches, with the
    /// same results. A round holds at least one layer (with tf32, one unit of up to 16 MiB
    /// of partials of same-shape layers) and a batch one layer, even when that alone needs
    /// more. The per-layer state (an R x R fp64 basis, a few R-vectors and per-chunk sums per
    /// layer), the tables and the eigen-solver's workspace come on top: see
    /// workspace_bytes().
    std::size_t workspace_limit = std::size_t{1} << 30;
    /// Arithmetic of the Gram and projection stages (see aclora::Precision).
    Precision precision = Precision::automatic;
  };

  CudaBackend() : state_(std::make_unique<cuda::Workspace>()) {}
  /// A backend with the given settings (no CUDA call is made before the first use).
  explicit CudaBackend(Options options)
      : options_(options), state_(std::make_unique<cuda::Workspace>()) {}
  /// Takes over another backend's handles and workspace.
  CudaBackend(CudaBackend&&) noexcept = default;
  /// Takes over another backend's handles and workspace.
  CudaBackend& operator=(CudaBackend&&) noexcept = default;

  /// The settings.
  const Options& options() const { return options_; }

  /// The precision Options::precision means on the current device (never `automatic`).
  /// @throws Error without a usable device when the setting is `automatic`.
  Precision precision() const { return cuda::device_precision(options_.precision); }

  /// Rows and columns of a view.
  static MatrixShape shape(const matrix_type& matrix) {
    return MatrixShape{static_cast<std::size_t>(matrix.rows()),
                       static_cast<std::size_t>(matrix.cols())};
  }

  /// "" when the backend can process the view, else the reason: null pointer, unsupported
  /// storage type, non-positive strides, misaligned pointer, host memory, memory of another
  /// device, no CUDA device.
  static std::string check(const matrix_type& matrix) { return cuda::check_matrix(matrix); }

  /// Where the view's entries lie (aclora::DescribesMemory): the driver refuses views whose
  /// entries overlap and layers that share memory.
  static MemoryRegion memory(const matrix_type& matrix) { return cuda::memory_region(matrix); }

  /// check() of the layer's view, and its rank axis must not exceed cuda::max_rank: every
  /// reason the backend could refuse the layer later. "" when usable.
  static std::string check(const Layer<matrix_type>& layer) {
    return cuda::check_layer(layer.matrix, layer.axis);
  }

  /// The planner's description of each layer (rank-major view, storage type, pointer).
  static std::vector<cuda::PlanInput> plan_inputs(std::span<const Layer<matrix_type>> layers) {
    std::vector<cuda::PlanInput> inputs;
    inputs.reserve(layers.size());
    for (const auto& layer : layers) {
      const matrix_type& m = layer.matrix;
      inputs.push_back(cuda::PlanInput{
          m.data(), m.dtype(),
          cuda::rank_major_view(m.rows(), m.cols(), m.row_stride(), m.col_stride(), layer.axis)});
    }
    return inputs;
  }

  /// Device bytes a RESTART of `layers` uses in all: tables, per-layer state, the eigen-
  /// solver's workspace and the round and write scratch (at most Options::workspace_limit,
  /// beyond it only by one unit or layer). Plans (and queries cuSOLVER) but allocates nothing
  /// new. @throws Error without a usable device.
  std::size_t workspace_bytes(std::span<const Layer<matrix_type>> layers) {
    state_->handles.bind(options_.stream);
    const cuda::Workspace& w = *state_;
    const cuda::Plan plan = cuda::make_plan(plan_inputs(layers), options_.workspace_limit,
                                            precision(), [&](std::int32_t rank, std::size_t count) {
                                              return cuda::solver_workspace(w.handles, rank, count);
                                            });
    return plan.device_bytes();
  }

  /// Analyses every layer (reads only) and fills spectra[i] for layers[i]. Sets
  /// spectrum.finite = false for layers with NaN or Inf entries and spectrum.failure for a
  /// layer whose eigen-solve did not converge. @throws Error on a CUDA failure.
  analysis_type analyze(std::span<const Layer<matrix_type>> layers,
                        std::span<LayerSpectrum> spectra) {
    if (spectra.size() != layers.size())
      throw Error("CUDA backend: one spectrum per layer expected");
    if (layers.empty())
      return Analysis{state_->generation, 0};
    cuda::Workspace& w = *state_;
    w.prepare(plan_inputs(layers), options_.workspace_limit, precision(), options_.stream);
    const cuda::Plan& plan = w.plan;
    const cuda::DeviceLayout& at = plan.layout;
    unsigned char* base = w.device.data();
    if (!w.tables_uploaded) {
      cuda::check_cuda(cudaMemcpyAsync(base, w.pinned.data(), at.tables_end, cudaMemcpyHostToDevice,
                                       options_.stream),
                       "upload of the plan tables");
      w.tables_uploaded = true;
    }
    cuda::StreamDevice device(w.handles, options_.stream, w.solver_host);
    cuda::run_analysis(device, plan, base);
    auto* records = reinterpret_cast<double*>(w.pinned.data() + w.pinned_records);
    cuda::check_cuda(
        cudaMemcpyAsync(records, base + at.records, plan.record_doubles * sizeof(double),
                        cudaMemcpyDeviceToHost, options_.stream),
        "download of the spectra");
    cuda::check_cuda(cudaStreamSynchronize(options_.stream), "analysis");
    ++w.generation;
    cuda::read_spectra(plan, records, spectra);
    return Analysis{w.generation, layers.size()};
  }

  /// Writes every layer (see aclora::Backend); `analysis` must come from the latest analyze
  /// of this object over the same layers. Launches kernels only (no allocation, no check
  /// that data could fail) and synchronises the stream at the end.
  void apply(std::span<const Layer<matrix_type>> layers, analysis_type& analysis,
             std::span<const LayerPlan> plans) {
    if (layers.empty())
      return;
    cuda::Workspace& w = *state_;
    if (analysis.generation != w.generation || analysis.layer_count != layers.size() ||
        plans.size() != layers.size() || !w.planned || plan_inputs(layers) != w.inputs) {
      throw Error("CUDA backend: apply needs the latest analysis of the same layers");
    }
    const cuda::Plan& plan = w.plan;
    unsigned char* base = w.device.data();
    auto* host_writes = reinterpret_cast<cuda::WriteSlot*>(w.pinned.data() + w.pinned_writes);
    cuda::stage_writes(plan, plans, host_writes);
    cuda::check_cuda(cudaMemcpyAsync(base + plan.layout.writes, host_writes,
                                     plan.slots.size() * sizeof(cuda::WriteSlot),
                                     cudaMemcpyHostToDevice, options_.stream),
                     "upload of the write parameters");
    cuda::StreamDevice device(w.handles, options_.stream, w.solver_host);
    cuda::run_write(device, plan, base);
    cuda::check_cuda(cudaStreamSynchronize(options_.stream), "write pass");
  }

 private:
  Options options_{};
  std::unique_ptr<cuda::Workspace> state_;
};

}  // namespace aclora::backends
