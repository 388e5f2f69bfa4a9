/// @file apply.hpp
/// @brief Batched write of a chunk: projection onto the kept directions plus noise,
/// computed in float64 and rounded to the storage dtype once.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "aclora/backend.hpp"
#include "aclora/backends/torch/analyze.hpp"
#include "aclora/backends/torch/gram.hpp"
#include "aclora/backends/torch/noise.hpp"
#include "aclora/layer.hpp"

namespace aclora::backends::torch {

/// Computes the new values of a chunk's layers (G x R x n, storage dtype, on the chunk's
/// device) without writing any layer: X' = U_K (U_K^T (X - c Z)) + Z per layer, with U_K
/// the first K basis directions (the chunk uses the largest K; directions beyond a layer's
/// own K are zeroed), Z the layer's noise (zero for policy none or sigma 0) and c = 1 for
/// policy discarded, else 0.
inline at::Tensor compute_chunk(std::span<const Layer<at::Tensor>> layers, const Chunk& chunk,
                                std::span<const LayerPlan> plans) {
  const auto count = static_cast<std::int64_t>(chunk.layers.size());
  const std::int64_t q = std::min(chunk.rank, chunk.length);
  const at::Tensor& first = layers[chunk.layers.front()].matrix;
  const at::Device device = first.device();
  const auto host_doubles = at::TensorOptions().dtype(at::kDouble).device(at::kCPU);

  // Per-layer settings, built on the host (no device synchronisation).
  std::vector<double> kept(count), discarded(count);
  std::vector<NoiseTarget> noise(count);
  std::int64_t largest_kept = 0;
  bool any_noise = false, any_discarded = false;
  for (std::int64_t g = 0; g < count; ++g) {
    const std::size_t index = chunk.layers[static_cast<std::size_t>(g)];
    const LayerPlan& plan = plans[index];
    const bool with_noise = plan.noise != NoisePolicy::none && plan.sigma > 0.0;
    const std::int64_t k = std::min<std::int64_t>(static_cast<std::int64_t>(plan.kept), q);
    kept[g] = static_cast<double>(k);
    largest_kept = std::max(largest_kept, k);
    discarded[g] = with_noise && plan.noise == NoisePolicy::discarded ? 1.0 : 0.0;
    noise[g] =
        NoiseTarget{plan.key, with_noise ? plan.sigma : 0.0, layers[index].axis == RankAxis::rows,
                    layers[index].matrix.scalar_type() != at::kDouble};
    any_noise = any_noise || with_noise;
    any_discarded = any_discarded || discarded[g] > 0.0;
  }
  const at::Tensor kept_counts = at::from_blob(kept.data(), {count, 1}, host_doubles).to(device);
  const at::Tensor discarded_scale =
      at::from_blob(discarded.data(), {count, 1, 1}, host_doubles).to(device);
  const std::int64_t width = std::max<std::int64_t>(largest_kept, 1);
  const at::Tensor columns =
      at::arange(width, at::TensorOptions().dtype(at::kDouble).device(device));
  const at::Tensor mask = columns.unsqueeze(0).lt(kept_counts).to(at::kDouble);  // G x width
  const at::Tensor directions = chunk.basis.narrow(2, 0, width) * mask.unsqueeze(1);

  at::Tensor result = at::empty({count, chunk.rank, chunk.length}, first.options());
  for_each_slice(device, count, [&](std::int64_t begin, std::int64_t end) {
    const std::int64_t size = end - begin;
    at::Tensor values = gather_rank_major(layers, chunk, begin, end);
    const at::Tensor kept_directions = directions.narrow(0, begin, size);
    at::Tensor draws;
    if (any_noise) {
      draws = at::empty({size, chunk.rank, chunk.length}, host_doubles);
      fill_noise(draws, std::span<const NoiseTarget>(noise).subspan(begin, size));
      if (!device.is_cpu())
        draws = draws.to(device);
      if (any_discarded)
        values.sub_(draws * discarded_scale.narrow(0, begin, size));
    }
    if (device.is_cpu()) {
      const at::Tensor directions_cpu = kept_directions.contiguous();
      std::vector<double> coefficients(static_cast<std::size_t>(width * detail::kProjectBlock));
      std::vector<const double*> rows(static_cast<std::size_t>(chunk.rank));
      const std::int64_t entries = chunk.rank * chunk.length;
      for (std::int64_t g = 0; g < size; ++g) {
        detail::project_cpu(values.data_ptr<double>() + g * entries,
                            any_noise ? draws.data_ptr<double>() + g * entries : nullptr,
                            directions_cpu.data_ptr<double>() + g * chunk.rank * width, chunk.rank,
                            chunk.length, width, coefficients.data(), rows.data());
      }
    } else {
      const at::Tensor coefficients = at::bmm(kept_directions.transpose(1, 2), values);
      values = any_noise ? at::baddbmm(draws, kept_directions, coefficients)
                         : at::bmm(kept_directions, coefficients);
    }
    result.narrow(0, begin, size).copy_(values);  // the one rounding to the storage dtype
  });
  return result;
}

/// Writes a computed chunk into the layers (copy_ into the user's tensors or views).
inline void write_chunk(std::span<const Layer<at::Tensor>> layers, const Chunk& chunk,
                        const at::Tensor& values) {
  for (std::size_t g = 0; g < chunk.layers.size(); ++g) {
    const Layer<at::Tensor>& layer = layers[chunk.layers[g]];
    rank_major(layer.matrix, layer.axis).copy_(values.select(0, static_cast<std::int64_t>(g)));
  }
}

}  // namespace aclora::backends::torch
