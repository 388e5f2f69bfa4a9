/// @file backend.hpp
/// @brief aclora::backends::TorchBackend: RESTART over torch::Tensor parameters, on the CPU layer
/// by layer with our own kernels, on other devices in batches of same-shape layers.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "aclora/backend.hpp"
#include "aclora/backends/torch/blas_threads.hpp"
#include "aclora/backends/torch/cpu_route.hpp"
#include "aclora/backends/torch/device.hpp"
#include "aclora/backends/torch/matrix.hpp"
#include "aclora/backends/torch/tensor_route.hpp"
#include "aclora/error.hpp"
#include "aclora/layer.hpp"
#include "aclora/memory.hpp"
#include "aclora/precision.hpp"
#include "aclora/spectrum.hpp"

namespace aclora::backends {

/// The LibTorch backend. Matrices are 2-D tensors (parameters or views sharing their
/// storage; see torch/matrix.hpp) of float32, float64, float16 or bfloat16 on the CPU or a
/// device with float64 support. The arithmetic of the Gram and projection stages follows
/// Options::precision (aclora/precision.hpp); eigen-solves run in float64; new values are
/// rounded to the storage dtype once. Tensors keep their identity, storage, grad and
/// optimizer state.
///
/// - CPU tensors (torch/cpu_route.hpp): each layer is analysed and written by one of
///   at::get_num_threads() workers, panel by panel, straight from and to its memory with our own
///   kernels (torch/cpu_kernels.hpp); the write allocates nothing and cannot fail.
/// - Other devices, and CPU tensors with Options::cpu_kernels false
///   (torch/tensor_route.hpp): layers of equal rank-major shape R x n, dtype and device are
///   stacked (at most `chunk_elements` entries per batch) and processed with batched
///   matmuls and eigen-solves; noise is generated on the device (torch/tensor_noise.hpp);
///   the only host synchronisation of analyze is one transfer of all spectra per device.
///
/// Every layer's numbers are computed by the same operations whatever the batching and the
/// thread count, so results do not depend on them. Failures of the analysis (eigen-solver,
/// out of device memory, results beyond the float64 range) are reported per layer through
/// LayerSpectrum::failure, so the error names module and layer; apply computes every new
/// value of the tensor route before its first write, in buffers the analysis allocated.
class TorchBackend {
 public:
  using matrix_type = at::Tensor;  ///< 2-D view of a factor (writes go through it)

  /// What analyze keeps for apply.
  struct Analysis {
    std::vector<libtorch::Chunk> chunks;             ///< tensor-route batches
    std::vector<std::size_t> cpu_layers;             ///< layers of the CPU route, largest first
    std::vector<libtorch::CpuLayerBasis> cpu_bases;  ///< per layer (empty for other layers)
    std::shared_ptr<std::vector<libtorch::CpuWorkspace>> workspaces;  ///< one per CPU worker
    Precision cpu_precision = Precision::fp64;  ///< resolved precision of the CPU route
  };
  using analysis_type = Analysis;  ///< kept from analyze to apply

  /// Backend settings.
  struct Options {
    /// Largest batch of the tensor route, in matrix entries (float64 working copies of this
    /// size are made). 0: automatic, 2^20 on the CPU and 2^26 on other devices (large
    /// batches fill the device). The CPU route works layer by layer and ignores it.
    std::int64_t chunk_elements = 0;
    /// Arithmetic of the Gram and projection stages (aclora/precision.hpp). automatic:
    /// fp64 on the CPU and on CUDA devices with full-rate float64 (compute capability 6.0,
    /// 7.0, 8.0, 9.0), fp32 on other devices. tf32 turns on TF32 products on CUDA devices;
    /// elsewhere it runs as fp32.
    Precision precision = Precision::automatic;
    /// CPU tensors take the CPU route (true, much faster) or the tensor route that other
    /// devices take (false: for comparisons, and to run the device code on the CPU).
    bool cpu_kernels = true;
  };

  TorchBackend() = default;
  /// A backend with the given settings. @throws Error for a negative chunk_elements.
  explicit TorchBackend(Options options) : options_(options) {
    if (options_.chunk_elements < 0)
      throw Error("Torch backend: chunk_elements must be >= 0 (0: automatic)");
  }

  /// The settings.
  const Options& options() const { return options_; }

  /// What Options::precision runs at on `device`: fp64, fp32 or tf32 (never automatic).
  Precision resolved_precision(const at::Device& device) const {
    return libtorch::resolve_precision_on(options_.precision, device);
  }

  /// Rows and columns of a 2-D tensor.
  static MatrixShape shape(const matrix_type& matrix) { return libtorch::matrix_shape(matrix); }

  /// Empty when usable, else the reason (not 2-D, unsupported dtype, sparse, overlapping
  /// entries, no storage, inference tensor outside InferenceMode, meta or MPS device).
  /// Tensors that require grad are fine.
  static std::string check(const matrix_type& matrix) { return libtorch::check_matrix(matrix); }

  /// Where the tensor's entries lie (the driver refuses layers that share memory).
  static MemoryRegion memory(const matrix_type& matrix) { return libtorch::memory_region(matrix); }

  /// Analyses every layer; modifies nothing.
  Analysis analyze(std::span<const Layer<matrix_type>> layers,
                   std::span<LayerSpectrum> spectra) const {
    ::torch::NoGradGuard no_grad;
    Analysis analysis;
    std::vector<std::size_t> tensor_layers;
    for (std::size_t i = 0; i < layers.size(); ++i) {
      const bool cpu_route = options_.cpu_kernels && layers[i].matrix.device().is_cpu();
      (cpu_route ? analysis.cpu_layers : tensor_layers).push_back(i);
    }
    analyze_cpu(layers, spectra, analysis);
    analysis.chunks = plan_chunks(layers, tensor_layers);
    analyze_chunks(layers, spectra, analysis.chunks);
    return analysis;
  }

  /// Writes every layer: first K basis directions kept, noise added per the plan. The
  /// tensor route's values are all computed before the first write.
  void apply(std::span<const Layer<matrix_type>> layers, const Analysis& analysis,
             std::span<const LayerPlan> plans) const {
    ::torch::NoGradGuard no_grad;
    for (const libtorch::Chunk& chunk : analysis.chunks)
      libtorch::compute_chunk(layers, chunk, plans);
    if (!analysis.cpu_layers.empty()) {
      const bool single = analysis.cpu_precision != Precision::fp64;
      auto& workspaces = *analysis.workspaces;
      libtorch::for_each_item(analysis.cpu_layers, workspaces.size(),
                              [&](std::size_t i, std::size_t worker) {
                                libtorch::apply_layer_cpu(layers[i], analysis.cpu_bases[i],
                                                          plans[i], single, workspaces[worker]);
                              });
      for (std::size_t i : analysis.cpu_layers)  // in-place writes: autograd must know
        layers[i].matrix.unsafeGetTensorImpl()->bump_version();
    }
    for (const libtorch::Chunk& chunk : analysis.chunks)
      libtorch::write_chunk(layers, chunk);
  }

 private:
  // The CPU route's analysis: workspaces for the largest R (kept for apply), then every
  // layer, largest first, on at::get_num_threads() workers.
  void analyze_cpu(std::span<const Layer<matrix_type>> layers, std::span<LayerSpectrum> spectra,
                   Analysis& analysis) const {
    if (analysis.cpu_layers.empty())
      return;
    analysis.cpu_precision = resolved_precision(at::Device(at::kCPU));
    std::int64_t largest_rank = 1;
    for (std::size_t i : analysis.cpu_layers)
      largest_rank = std::max(largest_rank, rank_major_size(layers[i]).first);
    auto area = [&](std::size_t i) {
      const auto [rank, length] = rank_major_size(layers[i]);
      return rank * length;
    };
    std::stable_sort(analysis.cpu_layers.begin(), analysis.cpu_layers.end(),
                     [&](std::size_t a, std::size_t b) { return area(a) > area(b); });
    const std::size_t workers = std::min<std::size_t>(
        analysis.cpu_layers.size(), static_cast<std::size_t>(std::max(1, at::get_num_threads())));
    analysis.workspaces = std::make_shared<std::vector<libtorch::CpuWorkspace>>();
    analysis.workspaces->reserve(workers);
    for (std::size_t w = 0; w < workers; ++w)
      analysis.workspaces->emplace_back(largest_rank);
    analysis.cpu_bases.resize(layers.size());
    const bool single = analysis.cpu_precision != Precision::fp64;
    auto& workspaces = *analysis.workspaces;
    const libtorch::SingleThreadedOpenBlas one_blas_thread_per_worker;
    libtorch::for_each_item(analysis.cpu_layers, workers, [&](std::size_t i, std::size_t worker) {
      analysis.cpu_bases[i] =
          libtorch::analyze_layer_cpu(layers[i], single, workspaces[worker], spectra[i]);
    });
  }

  // The tensor route's analysis, chunk by chunk; one transfer of all spectra per device.
  // A chunk that LibTorch cannot analyse (out of device memory...) fails its layers.
  void analyze_chunks(std::span<const Layer<matrix_type>> layers, std::span<LayerSpectrum> spectra,
                      std::vector<libtorch::Chunk>& chunks) const {
    std::map<std::pair<int, int>, std::vector<std::size_t>> chunks_by_device;
    std::vector<at::Tensor> packed(chunks.size());
    std::vector<std::vector<std::string>> failures(chunks.size());
    for (std::size_t c = 0; c < chunks.size(); ++c) {
      try {
        packed[c] = libtorch::analyze_chunk(layers, chunks[c], failures[c]);
      } catch (const c10::Error& error) {
        const at::Device device = layers[chunks[c].layers.front()].matrix.device();
        failures[c].assign(
            chunks[c].layers.size(),
            "the analysis of its batch of " + std::to_string(chunks[c].layers.size()) +
                " layers (" + std::to_string(chunks[c].rank) + " x " +
                std::to_string(chunks[c].length) + ") on " + device.str() +
                " failed: " + error.what_without_backtrace() +
                " (a smaller TorchBackend::Options::chunk_elements needs less memory)");
        continue;
      }
      const at::Device device = packed[c].device();
      chunks_by_device[{static_cast<int>(device.type()), static_cast<int>(device.index())}]
          .push_back(c);
    }
    reserve_write_memory(layers, chunks, failures);
    for (std::size_t c = 0; c < chunks.size(); ++c) {
      for (std::size_t g = 0; g < chunks[c].layers.size(); ++g)
        if (!failures[c][g].empty())
          spectra[chunks[c].layers[g]].failure = failures[c][g];
    }
    for (const auto& [device, chunk_ids] : chunks_by_device) {
      std::vector<at::Tensor> flat;
      for (std::size_t c : chunk_ids)
        flat.push_back(packed[c].flatten());
      const at::Tensor host = at::cat(flat).to(at::kCPU).contiguous();  // one transfer
      const double* values = host.data_ptr<double>();
      for (std::size_t c : chunk_ids) {
        const libtorch::Chunk& chunk = chunks[c];
        const std::int64_t rank = chunk.rank;
        const std::size_t q = static_cast<std::size_t>(std::min(rank, chunk.length));
        for (std::size_t layer : chunk.layers) {
          LayerSpectrum& spectrum = spectra[layer];
          spectrum.singular_values.assign(values, values + q);
          spectrum.component_sums.assign(values + rank, values + rank + q);
          spectrum.entry_sum = values[2 * rank];
          spectrum.finite = values[2 * rank + 1] > 0.5;
          if (spectrum.finite && spectrum.failure.empty())
            mark_out_of_range(spectrum);
          values += 2 * rank + 2;
        }
      }
    }
  }

  // Makes sure, before anything is written, that each device (other than the CPU) can hold
  // the write's largest scratch: allocates that much once (LibTorch's caching allocator
  // keeps it for apply). When it cannot, that device's layers fail their analysis.
  static void reserve_write_memory(std::span<const Layer<matrix_type>> layers,
                                   const std::vector<libtorch::Chunk>& chunks,
                                   std::vector<std::vector<std::string>>& failures) {
    std::map<std::pair<int, int>, std::pair<std::int64_t, at::Device>> largest;
    for (const libtorch::Chunk& chunk : chunks) {
      const at::Device device = layers[chunk.layers.front()].matrix.device();
      if (device.is_cpu() || !chunk.values.defined())
        continue;
      const std::pair<int, int> key{static_cast<int>(device.type()),
                                    static_cast<int>(device.index())};
      const std::int64_t bytes = libtorch::write_scratch_bytes(chunk);
      auto [entry, added] = largest.try_emplace(key, bytes, device);
      entry->second.first = std::max(entry->second.first, bytes);
    }
    for (const auto& [key, need] : largest) {
      try {
        at::empty({need.first}, at::TensorOptions().dtype(at::kByte).device(need.second));
      } catch (const c10::Error& error) {
        for (std::size_t c = 0; c < chunks.size(); ++c) {
          if (layers[chunks[c].layers.front()].matrix.device() != need.second)
            continue;
          for (std::string& failure : failures[c]) {
            if (failure.empty()) {
              failure = "not enough memory on " + need.second.str() + " for the write (" +
                        std::to_string(need.first >> 20) +
                        " MiB of scratch): " + error.what_without_backtrace() +
                        " (a smaller TorchBackend::Options::chunk_elements needs less memory)";
            }
          }
        }
      }
    }
  }

  // R and n of a layer's rank-major view.
  static std::pair<std::int64_t, std::int64_t> rank_major_size(const Layer<matrix_type>& layer) {
    const bool rows = layer.axis == RankAxis::rows;
    return {layer.matrix.size(rows ? 0 : 1), layer.matrix.size(rows ? 1 : 0)};
  }

  // Groups the tensor route's layers by GroupKey (in order of first appearance within each
  // key) and cuts each group into chunks of at most chunk_elements entries (at least one
  // layer each).
  std::vector<libtorch::Chunk> plan_chunks(std::span<const Layer<matrix_type>> layers,
                                           const std::vector<std::size_t>& members_of_route) const {
    std::map<libtorch::GroupKey, std::vector<std::size_t>> groups;
    for (std::size_t i : members_of_route)
      groups[libtorch::GroupKey::of(layers[i].matrix, layers[i].axis)].push_back(i);
    std::vector<libtorch::Chunk> chunks;
    for (const auto& [key, members] : groups) {
      const bool cpu = key.device_type == static_cast<std::int32_t>(c10::DeviceType::CPU);
      const std::int64_t budget = options_.chunk_elements > 0 ? options_.chunk_elements
                                  : cpu                       ? std::int64_t{1} << 20
                                                              : std::int64_t{1} << 26;
      const std::int64_t per_layer = key.rank * key.length;
      const std::int64_t per_chunk =
          std::max<std::int64_t>(1, budget / std::max<std::int64_t>(1, per_layer));
      const Precision precision = resolved_precision(layers[members.front()].matrix.device());
      for (std::size_t first = 0; first < members.size();
           first += static_cast<std::size_t>(per_chunk)) {
        const std::size_t last =
            std::min(members.size(), first + static_cast<std::size_t>(per_chunk));
        libtorch::Chunk chunk;
        chunk.layers.assign(members.begin() + first, members.begin() + last);
        chunk.rank = key.rank;
        chunk.length = key.length;
        chunk.precision = precision;
        chunks.push_back(std::move(chunk));
      }
    }
    return chunks;
  }

  Options options_{};
};

}  // namespace aclora::backends
