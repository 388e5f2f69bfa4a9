/// @file backend.hpp
/// @brief aclora::backends::Torch: RESTART over torch::Tensor parameters, batched by shape.
#pragma once

#include <ATen/ATen.h>
#include <torch/torch.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "aclora/backend.hpp"
#include "aclora/backends/torch/analyze.hpp"
#include "aclora/backends/torch/apply.hpp"
#include "aclora/backends/torch/matrix.hpp"
#include "aclora/backends/torch/noise.hpp"
#include "aclora/layer.hpp"
#include "aclora/spectrum.hpp"

namespace aclora::backends {

/// The LibTorch backend. Matrices are 2-D tensors (parameters or views sharing their
/// storage; see torch/matrix.hpp) of float32, float64, float16 or bfloat16 on any device
/// with float64 support. The whole model is processed in batches: layers of equal
/// rank-major shape R x n, dtype and device are stacked (at most `chunk_elements` entries
/// per batch) and analysed with batched matmuls and eigen-solves in float64; the new
/// values are rounded to the storage dtype once and written with copy_ under
/// torch::NoGradGuard, so tensors keep their identity, storage, grad and optimizer state.
/// The only host synchronisation of analyze is one transfer of all spectra per device.
/// apply computes every new value before its first write (all allocation happens first).
class Torch {
 public:
  using matrix_type = at::Tensor;  ///< 2-D view of a factor (writes go through it)

  /// What analyze keeps for apply: the batches and their rank-axis bases.
  struct Analysis {
    std::vector<torch::Chunk> chunks;  ///< every layer is in exactly one chunk
  };
  using analysis_type = Analysis;  ///< kept from analyze to apply

  /// Backend settings.
  struct Options {
    /// Largest batch, in matrix entries (float64 working copies of this size are made).
    /// 0: automatic, 2^20 on the CPU (working copies stay in the allocator's reused heap
    /// and near the caches) and 2^26 on other devices (large batches fill the device).
    std::int64_t chunk_elements = 0;
  };

  Torch() = default;
  /// A backend with the given settings.
  explicit Torch(Options options) : options_(options) {}

  /// The settings.
  const Options& options() const { return options_; }

  /// Rows and columns of a 2-D tensor.
  static MatrixShape shape(const matrix_type& matrix) { return torch::matrix_shape(matrix); }

  /// Empty when usable, else the reason (not 2-D, unsupported dtype, sparse, overlapping
  /// entries, meta or MPS device). Tensors that require grad are fine.
  static std::string check(const matrix_type& matrix) { return torch::check_matrix(matrix); }

  /// Analyses every layer (batched per shape group); modifies nothing.
  Analysis analyze(std::span<const Layer<matrix_type>> layers,
                   std::span<LayerSpectrum> spectra) const {
    ::torch::NoGradGuard no_grad;
    Analysis analysis{plan_chunks(layers)};
    std::map<std::pair<int, int>, std::vector<std::size_t>> chunks_by_device;
    std::vector<at::Tensor> packed(analysis.chunks.size());
    for (std::size_t c = 0; c < analysis.chunks.size(); ++c) {
      packed[c] = torch::analyze_chunk(layers, analysis.chunks[c]);
      const at::Device device = packed[c].device();
      chunks_by_device[{static_cast<int>(device.type()), static_cast<int>(device.index())}]
          .push_back(c);
    }
    for (const auto& [device, chunk_ids] : chunks_by_device) {
      std::vector<at::Tensor> flat;
      for (std::size_t c : chunk_ids)
        flat.push_back(packed[c].flatten());
      const at::Tensor host = at::cat(flat).to(at::kCPU).contiguous();  // one transfer
      const double* values = host.data_ptr<double>();
      for (std::size_t c : chunk_ids) {
        const torch::Chunk& chunk = analysis.chunks[c];
        const std::int64_t rank = chunk.rank;
        const std::size_t q = static_cast<std::size_t>(std::min(rank, chunk.length));
        for (std::size_t layer : chunk.layers) {
          LayerSpectrum& spectrum = spectra[layer];
          spectrum.singular_values.assign(values, values + q);
          spectrum.component_sums.assign(values + rank, values + rank + q);
          spectrum.entry_sum = values[2 * rank];
          spectrum.finite = values[2 * rank + 1] > 0.5;
          values += 2 * rank + 2;
        }
      }
    }
    return analysis;
  }

  /// Writes every layer: first K basis directions kept, noise added per the plan.
  /// All new values are computed (and all memory allocated) before the first write.
  void apply(std::span<const Layer<matrix_type>> layers, const Analysis& analysis,
             std::span<const LayerPlan> plans) const {
    ::torch::NoGradGuard no_grad;
    std::vector<at::Tensor> values;
    values.reserve(analysis.chunks.size());
    for (const torch::Chunk& chunk : analysis.chunks)
      values.push_back(torch::compute_chunk(layers, chunk, plans));
    for (std::size_t c = 0; c < analysis.chunks.size(); ++c)
      torch::write_chunk(layers, analysis.chunks[c], values[c]);
  }

 private:
  // Groups layers by GroupKey (in order of first appearance within each key) and cuts
  // each group into chunks of at most chunk_elements entries (at least one layer each).
  std::vector<torch::Chunk> plan_chunks(std::span<const Layer<matrix_type>> layers) const {
    std::map<torch::GroupKey, std::vector<std::size_t>> groups;
    for (std::size_t i = 0; i < layers.size(); ++i)
      groups[torch::GroupKey::of(layers[i].matrix, layers[i].axis)].push_back(i);
    std::vector<torch::Chunk> chunks;
    for (const auto& [key, members] : groups) {
      const bool cpu = key.device_type == static_cast<std::int32_t>(c10::DeviceType::CPU);
      const std::int64_t budget = options_.chunk_elements > 0 ? options_.chunk_elements
                                  : cpu                       ? std::int64_t{1} << 20
                                                              : std::int64_t{1} << 26;
      const std::int64_t per_layer = key.rank * key.length;
      const std::int64_t per_chunk =
          std::max<std::int64_t>(1, budget / std::max<std::int64_t>(1, per_layer));
      for (std::size_t first = 0; first < members.size();
           first += static_cast<std::size_t>(per_chunk)) {
        const std::size_t last =
            std::min(members.size(), first + static_cast<std::size_t>(per_chunk));
        chunks.push_back(
            torch::Chunk{std::vector<std::size_t>(members.begin() + first, members.begin() + last),
                         key.rank, key.length, at::Tensor()});
      }
    }
    return chunks;
  }

  Options options_{};
};

}  // namespace aclora::backends
