/// @file backend.cuh
/// @brief aclora::backends::Cuda, the backend over raw device memory (cuBLAS, cuSOLVER and
/// own kernels), for `aclora::Restart<aclora::backends::Cuda>`.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "aclora/backend.hpp"
#include "aclora/backends/cuda/analyze.cuh"
#include "aclora/backends/cuda/apply.cuh"
#include "aclora/backends/cuda/matrix.cuh"
#include "aclora/backends/cuda/plan.hpp"
#include "aclora/backends/cuda/workspace.cuh"
#include "aclora/error.hpp"
#include "aclora/layer.hpp"
#include "aclora/spectrum.hpp"

namespace aclora::backends {

/// The CUDA backend: fp32 / fp16 / bf16 matrices in device memory with any positive
/// strides, processed as one stream-ordered pass per RESTART. Analysis: fp32 Gram products
/// (cuBLAS, tensor cores for 16-bit storage) summed over column chunks in fp64, batched fp64
/// eigen-solves, fp64 sums for energies and residual statistics; one synchronisation. Write:
/// fused projection + Philox noise kernel, one rounding to the storage type.
///
/// The object keeps handles, its plan and its workspace between calls (reused while the layer
/// list is unchanged); it is movable, not copyable. Work runs on `Options::stream` of the
/// device that is current when the object is first used.
class Cuda {
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
    /// Bound on the batch scratch in bytes (partial Grams, packed copies, solver workspace,
    /// kept directions); larger models run in several batches. The per-layer state (an R x R
    /// fp64 basis and a few R-vectors per layer) and the tables come on top: see
    /// workspace_bytes().
    std::size_t workspace_limit = std::size_t{1} << 30;
    /// Gram products of fp32 layers on TF32 tensor cores (inputs rounded to 10-bit
    /// mantissas, about 1e-3 relative error in the energies; faster). Off by default: the
    /// contract asks for fp32 products. 16-bit layers always use tensor cores exactly.
    bool tf32_gram = false;
  };

  Cuda() : state_(std::make_unique<cuda::Workspace>()) {}
  /// A backend with the given settings (no CUDA call is made before the first use).
  explicit Cuda(Options options) : options_(options), state_(std::make_unique<cuda::Workspace>()) {}
  /// Takes over another backend's handles and workspace.
  Cuda(Cuda&&) noexcept = default;
  /// Takes over another backend's handles and workspace.
  Cuda& operator=(Cuda&&) noexcept = default;

  /// The settings.
  const Options& options() const { return options_; }

  /// Rows and columns of a view.
  static MatrixShape shape(const matrix_type& matrix) {
    return MatrixShape{static_cast<std::size_t>(matrix.rows()),
                       static_cast<std::size_t>(matrix.cols())};
  }

  /// "" when the backend can process the view, else the reason: null pointer, unsupported
  /// storage type, bad strides, host memory, memory of another device, no CUDA device.
  static std::string check(const matrix_type& matrix) { return cuda::check_matrix(matrix); }

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

  /// Device bytes a RESTART of `layers` uses in all: tables, per-layer state and the batch
  /// scratch (at most Options::workspace_limit). Plans (and queries cuSOLVER) but allocates
  /// nothing new. @throws Error without a usable device or when a layer alone exceeds the limit.
  std::size_t workspace_bytes(std::span<const Layer<matrix_type>> layers) {
    state_->handles.bind(options_.stream);
    const cuda::Workspace& w = *state_;
    const cuda::Plan plan = cuda::make_plan(plan_inputs(layers), options_.workspace_limit,
                                            [&](std::int32_t rank, std::size_t count) {
                                              return cuda::solver_workspace(w.handles, rank, count);
                                            });
    return plan.device_bytes();
  }

  /// Analyses every layer (reads only) and fills spectra[i] for layers[i].
  analysis_type analyze(std::span<const Layer<matrix_type>> layers,
                        std::span<LayerSpectrum> spectra) {
    if (spectra.size() != layers.size())
      throw Error("CUDA backend: one spectrum per layer expected");
    if (layers.empty())
      return Analysis{state_->generation, 0};
    state_->prepare(plan_inputs(layers), options_.workspace_limit, options_.stream);
    cuda::analyze_plan(*state_, options_.stream, spectra, options_.tf32_gram);
    return Analysis{state_->generation, layers.size()};
  }

  /// Writes every layer (see aclora::Backend); `analysis` must come from the latest analyze
  /// of this object over the same layers.
  void apply(std::span<const Layer<matrix_type>> layers, analysis_type& analysis,
             std::span<const LayerPlan> plans) {
    if (layers.empty())
      return;
    if (analysis.generation != state_->generation || analysis.layer_count != layers.size() ||
        plans.size() != layers.size() || !state_->planned ||
        plan_inputs(layers) != state_->inputs) {
      throw Error("CUDA backend: apply needs the latest analysis of the same layers");
    }
    cuda::apply_plan(*state_, options_.stream, plans);
  }

 private:
  Options options_{};
  std::unique_ptr<cuda::Workspace> state_;
};

}  // namespace aclora::backends
