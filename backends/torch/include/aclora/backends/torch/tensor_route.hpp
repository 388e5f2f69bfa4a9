/// @file tensor_route.hpp
/// @brief The tensor route: batches of same-shape layers (G x R x n) analysed and written
/// with batched LibTorch operations on the layers' device (CUDA, and the CPU on request).
///
/// Each layer is read into float64 and scaled by a power of two 2^-e with max |entry| < 2^e
/// (exact; finite entries of any size then neither overflow nor underflow the products).
/// Gram matrices: fp64 one batched float64 matmul; fp32 / tf32 float32 batched matmuls over
/// column chunks of at most float32_sum_limit(R) columns, the partial Gram matrices summed
/// in float64 (tf32: with at::globalContext()'s TF32 switch on for the products, on CUDA).
/// A batched float64 eigen-solve gives singular values and rank-axis directions. The write
/// projects on the kept directions (float64, or float32 for fp32 / tf32), adds noise that
/// tensor_noise.hpp generates on the device, and rounds to the storage dtype once. The new
/// values of every batch are computed into buffers allocated by the analysis before the
/// first layer is written.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "aclora/backend.hpp"
#include "aclora/backends/torch/matrix.hpp"
#include "aclora/backends/torch/tensor_noise.hpp"
#include "aclora/layer.hpp"
#include "aclora/precision.hpp"

namespace aclora::backends::libtorch {

/// A batch of layers of one GroupKey on the tensor route, and what analyze keeps for apply.
struct Chunk {
  std::vector<std::size_t> layers;        ///< positions in the layer list
  std::int64_t rank = 0;                  ///< R
  std::int64_t length = 0;                ///< n
  Precision precision = Precision::fp64;  ///< resolved: fp64, fp32 or tf32
  at::Tensor basis;       ///< G x R x R float64: rank-axis directions by decreasing singular value
  at::Tensor scale_down;  ///< G float64: 2^-e, the layer's scale for the products
  at::Tensor scale_up;    ///< G float64: 2^e
  at::Tensor values;      ///< G x R x n, storage dtype: the new values (filled by apply)
};

namespace detail {

// TF32 products in cuBLAS while it lives, when `on`; restores the previous setting.
class Tf32Products {
 public:
  explicit Tf32Products(bool on) : on_(on) {
    if (on_) {
      previous_ = at::globalContext().allowTF32CuBLAS();
      at::globalContext().setAllowTF32CuBLAS(true);
    }
  }
  ~Tf32Products() {
    if (on_)
      at::globalContext().setAllowTF32CuBLAS(previous_);
  }
  Tf32Products(const Tf32Products&) = delete;
  Tf32Products& operator=(const Tf32Products&) = delete;

 private:
  bool on_ = false;
  bool previous_ = false;
};

inline bool single_products(Precision precision) {
  return precision == Precision::fp32 || precision == Precision::tf32;
}

// The powers of two 2^(sign * e) for int64 exponents e with |sign e| <= 1022 (built from
// the bits, so exact on every device).
inline at::Tensor power_of_two(const at::Tensor& exponent, int sign) {
  return exponent.mul(sign).add(1023).bitwise_left_shift(52).view(at::kDouble);
}

// The chunk's layers as one G x R x n float64 tensor in rank-major order.
inline at::Tensor gather(std::span<const Layer<at::Tensor>> layers, const Chunk& chunk) {
  const at::Tensor& first = layers[chunk.layers.front()].matrix;
  const auto count = static_cast<std::int64_t>(chunk.layers.size());
  at::Tensor stacked =
      at::empty({count, chunk.rank, chunk.length}, first.options().dtype(at::kDouble));
  for (std::int64_t g = 0; g < count; ++g) {
    const Layer<at::Tensor>& layer = layers[chunk.layers[static_cast<std::size_t>(g)]];
    stacked.select(0, g).copy_(rank_major(layer.matrix, layer.axis));
  }
  return stacked;
}

// Gram matrices of the G x R x n scaled layers per the chunk's precision (float64 result).
inline at::Tensor gram_matrices(const at::Tensor& scaled, const Chunk& chunk) {
  if (!single_products(chunk.precision))
    return at::bmm(scaled, scaled.transpose(1, 2));
  const at::Tensor narrow = scaled.to(at::kFloat);
  const auto columns = std::min<std::int64_t>(
      chunk.length,
      static_cast<std::int64_t>(float32_sum_limit(static_cast<std::size_t>(chunk.rank))));
  const Tf32Products tf32(chunk.precision == Precision::tf32 && scaled.is_cuda());
  at::Tensor gram = at::zeros({scaled.size(0), chunk.rank, chunk.rank}, scaled.options());
  for (std::int64_t first = 0; first < chunk.length; first += columns) {
    const at::Tensor part = narrow.narrow(2, first, std::min(columns, chunk.length - first));
    gram.add_(at::bmm(part, part.transpose(1, 2)));
  }
  return gram;
}

}  // namespace detail

/// Analyses one chunk: sets chunk.basis, the scales and the (unfilled) value buffer, and
/// returns on the chunk's device a G x (2R + 2) float64 tensor, per layer [singular values
/// (R), component sums (R), entry sum, finite flag]. `failures` gets one entry per layer
/// (empty, or why the eigen-solve failed). No host synchronisation unless a solve fails.
/// @throws c10::Error when LibTorch fails (out of device memory...).
inline at::Tensor analyze_chunk(std::span<const Layer<at::Tensor>> layers, Chunk& chunk,
                                std::vector<std::string>& failures) {
  const at::Tensor& first = layers[chunk.layers.front()].matrix;
  const auto count = static_cast<std::int64_t>(chunk.layers.size());
  failures.assign(chunk.layers.size(), std::string());
  at::Tensor stacked = detail::gather(layers, chunk);
  const at::Tensor largest =
      at::linalg_vector_norm(stacked, std::numeric_limits<double>::infinity(), {1, 2});
  const at::Tensor finite = at::isfinite(largest);
  // frexp: largest = m 2^e with m in [1/2, 1), so 2^(e-1) <= largest < 2^e (e = 0 for 0)
  const at::Tensor exponent = std::get<1>(at::frexp(largest.masked_fill(finite.logical_not(), 0.0)))
                                  .to(at::kLong)
                                  .clamp(-1021, 1022);
  chunk.scale_down = detail::power_of_two(exponent, -1);
  chunk.scale_up = detail::power_of_two(exponent, 1);
  stacked.mul_(chunk.scale_down.view({count, 1, 1}));
  // Non-finite layers become zero so the eigen-solver never sees NaN; the driver rejects
  // them from the flag before anything is written.
  stacked.masked_fill_(finite.logical_not().view({count, 1, 1}), 0.0);
  const at::Tensor row_sums = stacked.sum(2);  // G x R
  const at::Tensor gram = detail::gram_matrices(stacked, chunk);
  stacked = at::Tensor();
  at::Tensor eigenvalues, eigenvectors;
  try {
    std::tie(eigenvalues, eigenvectors) = at::linalg_eigh(gram);  // increasing order
  } catch (const c10::Error&) {  // find the layers that fail, keep the others
    eigenvalues = at::zeros({count, chunk.rank}, gram.options());
    eigenvectors = at::zeros_like(gram);
    for (std::int64_t g = 0; g < count; ++g) {
      try {
        auto [values, vectors] = at::linalg_eigh(gram.select(0, g));
        eigenvalues.select(0, g).copy_(values);
        eigenvectors.select(0, g).copy_(vectors);
      } catch (const c10::Error& error) {
        failures[static_cast<std::size_t>(g)] =
            std::string("the symmetric eigen-solver failed on the Gram matrix (") +
            error.what_without_backtrace() + ")";
      }
    }
  }
  chunk.basis = eigenvectors.flip({-1});
  const at::Tensor up = chunk.scale_up.view({count, 1});
  // Component i (d_i u_i v_i^T) sums to (1^T u_i)(u_i^T s) with s = X 1, the row sums.
  const at::Tensor projected_sums =
      at::bmm(chunk.basis.transpose(1, 2), row_sums.unsqueeze(2)).squeeze(2);
  chunk.values = at::empty({count, chunk.rank, chunk.length}, first.options());
  return at::cat(
      {eigenvalues.flip({-1}).clamp_min(0.0).sqrt() * up, chunk.basis.sum(1) * projected_sums * up,
       row_sums.sum(1, true) * up, finite.to(at::kDouble).unsqueeze(1)},
      1);
}

/// Computes the new values of a chunk's layers into chunk.values without writing any layer:
/// X' = U_K (U_K^T (X - c Z)) + Z per layer, with U_K the first K basis directions (the
/// chunk uses the largest K; directions beyond a layer's own K are zeroed), Z the layer's
/// noise (zero for policy none or sigma 0) and c = 1 for policy discarded, else 0.
inline void compute_chunk(std::span<const Layer<at::Tensor>> layers, const Chunk& chunk,
                          std::span<const LayerPlan> plans) {
  const auto count = static_cast<std::int64_t>(chunk.layers.size());
  const std::int64_t q = std::min(chunk.rank, chunk.length);
  const at::Tensor& first = layers[chunk.layers.front()].matrix;
  const at::Device device = first.device();
  const auto host_doubles = at::TensorOptions().dtype(at::kDouble);
  const auto host_longs = at::TensorOptions().dtype(at::kLong);

  // Per-layer settings, built on the host and moved to the device in one copy each.
  std::vector<double> kept(count), discarded(count), sigma(count);
  std::vector<NoiseKey> keys(count);
  std::vector<std::int64_t> down_layers, up_layers;
  std::int64_t largest_kept = 0;
  bool any_noise = false, any_discarded = false;
  for (std::int64_t g = 0; g < count; ++g) {
    const std::size_t index = chunk.layers[static_cast<std::size_t>(g)];
    const LayerPlan& plan = plans[index];
    const bool with_noise = plan.noise != NoisePolicy::none && plan.sigma > 0.0;
    const std::int64_t k = std::min<std::int64_t>(static_cast<std::int64_t>(plan.kept), q);
    kept[g] = static_cast<double>(k);
    largest_kept = std::max(largest_kept, k);
    sigma[g] = with_noise ? plan.sigma : 0.0;
    discarded[g] = with_noise && plan.noise == NoisePolicy::discarded ? 1.0 : 0.0;
    keys[g] = plan.key;
    (layers[index].axis == RankAxis::rows ? down_layers : up_layers).push_back(g);
    any_noise = any_noise || with_noise;
    any_discarded = any_discarded || discarded[g] > 0.0;
  }
  auto to_device = [&](std::vector<double>& values, at::IntArrayRef shape) {
    return at::from_blob(values.data(), shape, host_doubles).to(device);
  };
  const std::int64_t width = std::max<std::int64_t>(largest_kept, 1);
  const at::Tensor mask = at::arange(width, host_doubles.device(device))
                              .unsqueeze(0)
                              .lt(to_device(kept, {count, 1}))
                              .to(at::kDouble);  // G x width
  const at::Tensor directions = chunk.basis.narrow(2, 0, width) * mask.unsqueeze(1);

  at::Tensor values = detail::gather(layers, chunk);
  at::Tensor noise;
  if (any_noise) {
    const c10::ScalarType real = first.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    const at::Tensor draws = gaussian_tensor(keys, chunk.rank * chunk.length, real, device)
                                 .to(at::kDouble)
                                 .mul_(to_device(sigma, {count, 1}));
    // Stored entry (i, j) takes draw i * cols + j: a down layer is stored R x n, an up
    // layer n x R (its rank-major view is the transpose).
    noise = at::empty_like(values);
    auto place = [&](const std::vector<std::int64_t>& members, bool rows_axis) {
      if (members.empty())
        return;
      const auto size = static_cast<std::int64_t>(members.size());
      const at::Tensor index =
          at::from_blob(const_cast<std::int64_t*>(members.data()), {size}, host_longs).to(device);
      const at::Tensor selected = draws.index_select(0, index);
      noise.index_copy_(0, index,
                        rows_axis
                            ? selected.view({size, chunk.rank, chunk.length})
                            : selected.view({size, chunk.length, chunk.rank}).transpose(1, 2));
    };
    place(down_layers, true);
    place(up_layers, false);
    if (any_discarded)
      values.sub_(noise * to_device(discarded, {count, 1, 1}));
  }
  values.mul_(chunk.scale_down.view({count, 1, 1}));
  if (detail::single_products(chunk.precision)) {
    const detail::Tf32Products tf32(chunk.precision == Precision::tf32 && device.is_cuda());
    const at::Tensor narrow_directions = directions.to(at::kFloat);
    const at::Tensor coefficients =
        at::bmm(narrow_directions.transpose(1, 2), values.to(at::kFloat));
    values = at::bmm(narrow_directions, coefficients).to(at::kDouble);
  } else {
    values = at::bmm(directions, at::bmm(directions.transpose(1, 2), values));
  }
  values.mul_(chunk.scale_up.view({count, 1, 1}));
  if (any_noise)
    values.add_(noise);
  chunk.values.copy_(values);  // the one rounding to the storage dtype
}

/// Bytes of device memory compute_chunk may hold at once for `chunk` beyond its value
/// buffer (a bound: float64 copies, noise words and draws, products).
inline std::int64_t write_scratch_bytes(const Chunk& chunk) {
  const auto layers = static_cast<std::int64_t>(chunk.layers.size());
  const std::int64_t entries = layers * chunk.rank * chunk.length;
  const std::int64_t blocks =
      std::min<std::int64_t>(layers * ((chunk.rank * chunk.length + 3) / 4), std::int64_t{1} << 22);
  // values, noise, draws (float64 and float), two products; Philox: about 16 word tensors
  return entries * (5 * 8 + 4) + blocks * 16 * 8 + layers * chunk.rank * chunk.rank * 8;
}

/// Writes a computed chunk into the layers (copy_ into the user's tensors or views).
inline void write_chunk(std::span<const Layer<at::Tensor>> layers, const Chunk& chunk) {
  for (std::size_t g = 0; g < chunk.layers.size(); ++g) {
    const Layer<at::Tensor>& layer = layers[chunk.layers[g]];
    rank_major(layer.matrix, layer.axis)
        .copy_(chunk.values.select(0, static_cast<std::int64_t>(g)));
  }
}

}  // namespace aclora::backends::libtorch
