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
#include "aclora/backends/torch/noise.hpp"
#include "aclora/layer.hpp"

namespace aclora::backends::torch {

/// Computes the new values of a chunk's layers (G x R x n, storage dtype, on the chunk's
/// device) without writing anything: X' = P (X - c Z) + Z with P = U_K U_K^T per layer,
/// Z the layer's noise (zero for policy none) and c = 1 for policy discarded, else 0.
inline at::Tensor compute_chunk(std::span<const Layer<at::Tensor>> layers, const Chunk& chunk,
                                std::span<const LayerPlan> plans) {
  const std::int64_t count = static_cast<std::int64_t>(chunk.layers.size());
  const std::int64_t q = std::min(chunk.rank, chunk.length);
  const at::Tensor& first = layers[chunk.layers.front()].matrix;
  const at::Device device = first.device();
  const auto host_doubles = at::TensorOptions().dtype(at::kDouble).device(at::kCPU);

  at::Tensor kept = at::empty({count, 1}, host_doubles);
  at::Tensor discarded = at::empty({count, 1, 1}, host_doubles);
  std::vector<NoiseTarget> noise(count);
  bool any_noise = false;
  bool any_discarded = false;
  for (std::int64_t g = 0; g < count; ++g) {
    const std::size_t index = chunk.layers[g];
    const LayerPlan& plan = plans[index];
    const bool with_noise = plan.noise != NoisePolicy::none && plan.sigma > 0.0;
    kept[g][0] = static_cast<double>(std::min<std::int64_t>(plan.kept, q));
    discarded[g][0][0] = with_noise && plan.noise == NoisePolicy::discarded ? 1.0 : 0.0;
    noise[g] =
        NoiseTarget{plan.key, with_noise ? plan.sigma : 0.0, layers[index].axis == RankAxis::rows};
    any_noise = any_noise || with_noise;
    any_discarded = any_discarded || discarded[g][0][0].item<double>() > 0.0;
  }
  const at::Tensor columns =
      at::arange(chunk.rank, at::TensorOptions().dtype(at::kDouble).device(device));
  const at::Tensor mask = columns.unsqueeze(0).lt(kept.to(device));  // G x R
  const at::Tensor directions = chunk.basis * mask.unsqueeze(1).to(at::kDouble);
  const at::Tensor projector = at::bmm(directions, directions.transpose(1, 2));

  at::Tensor values = gather_rank_major(layers, chunk);
  if (any_noise) {
    at::Tensor draws = at::empty({count, chunk.rank, chunk.length}, host_doubles);
    fill_noise(draws, noise);
    if (!device.is_cpu())
      draws = draws.to(device);
    if (any_discarded)
      values.sub_(draws * discarded.to(device));
    values = at::baddbmm(draws, projector, values);
  } else {
    values = at::bmm(projector, values);
  }
  return values.to(first.scalar_type());
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
