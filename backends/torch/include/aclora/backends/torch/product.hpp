/// @file product.hpp
/// @brief The LibTorch implementation of the product-analysis primitives (aclora/product.hpp).
#pragma once

#include <ATen/ATen.h>
#include <torch/torch.h>

#include <cstddef>
#include <cstdint>
#include <span>

#include "aclora/backends/torch/matrix.hpp"
#include "aclora/layer.hpp"
#include "aclora/product.hpp"

namespace aclora::backends::libtorch {

/// Product-analysis primitives over 2-D tensors on any device: Gram matrices and factor
/// transforms in float64 on the factor's device, the R x R eigen-decompositions and SVD in
/// float64 on the CPU (LibTorch's linalg_eigh / linalg_svd). Nothing is written to the factors.
class ProductPrimitives {
 public:
  using matrix_type = at::Tensor;  ///< 2-D view of one factor

  /// out = M M^T (R x R) of the factor seen along its rank axis; false on NaN or Inf.
  bool gram(const Layer<matrix_type>& layer, SmallMatrix& out) const {
    ::torch::NoGradGuard no_grad;
    const at::Tensor rank_major = libtorch::rank_major(layer.matrix, layer.axis).to(at::kDouble);
    if (!at::isfinite(rank_major).all().item<bool>())
      return false;
    out = from_tensor(at::matmul(rank_major, rank_major.t()));
    return true;
  }

  /// Symmetric eigen-decomposition with decreasing eigenvalues.
  SymmetricEigen eigen(const SmallMatrix& matrix) const {
    ::torch::NoGradGuard no_grad;
    const auto [values, vectors] = at::linalg_eigh(to_tensor(matrix));
    // linalg_eigh sorts increasingly: reverse both.
    SymmetricEigen result;
    result.vectors = from_tensor(vectors.flip({1}));
    const at::Tensor decreasing = values.flip({0}).contiguous();
    result.values.assign(decreasing.data_ptr<double>(),
                         decreasing.data_ptr<double>() + decreasing.numel());
    return result;
  }

  /// Full SVD of a square matrix, singular values decreasing.
  SmallSvd svd(const SmallMatrix& matrix) const {
    ::torch::NoGradGuard no_grad;
    const auto [u, s, vh] = at::linalg_svd(to_tensor(matrix), /*full_matrices=*/true);
    SmallSvd result;
    result.u = from_tensor(u);
    result.v = from_tensor(vh.t());
    const at::Tensor values = s.contiguous();
    result.s.assign(values.data_ptr<double>(), values.data_ptr<double>() + values.numel());
    return result;
  }

  /// The product a b.
  SmallMatrix multiply(const SmallMatrix& a, const SmallMatrix& b) const {
    ::torch::NoGradGuard no_grad;
    return from_tensor(at::matmul(to_tensor(a), to_tensor(b)));
  }

  /// Length of the factor's other (non-rank) axis.
  static std::size_t length(const Layer<matrix_type>& layer) {
    return static_cast<std::size_t>(libtorch::rank_major(layer.matrix, layer.axis).size(1));
  }

  /// Up (n x R): out = B m (n x K); down (R x n): out = m^T A (K x n); row-major float.
  void transform(const Layer<matrix_type>& layer, const SmallMatrix& map,
                 std::span<float> out) const {
    ::torch::NoGradGuard no_grad;
    const at::Tensor small = to_tensor(map).to(layer.matrix.device());
    const at::Tensor factor = layer.matrix.to(at::kDouble);
    const at::Tensor result =
        layer.axis == RankAxis::cols ? at::matmul(factor, small) : at::matmul(small.t(), factor);
    const at::Tensor host = result.to(at::kFloat).to(at::kCPU).contiguous();
    std::copy(host.data_ptr<float>(), host.data_ptr<float>() + host.numel(), out.begin());
  }

 private:
  // A column-major SmallMatrix as a CPU float64 tensor (rows x cols).
  static at::Tensor to_tensor(const SmallMatrix& matrix) {
    const auto rows = static_cast<std::int64_t>(matrix.rows);
    const auto cols = static_cast<std::int64_t>(matrix.cols);
    return at::from_blob(const_cast<double*>(matrix.data.data()), {cols, rows}, at::kDouble)
        .t()
        .clone();
  }

  // A 2-D tensor (any device, float64) as a column-major SmallMatrix.
  static SmallMatrix from_tensor(const at::Tensor& tensor) {
    const at::Tensor column_major = tensor.to(at::kCPU).t().contiguous();
    SmallMatrix out = SmallMatrix::zeros(static_cast<std::size_t>(tensor.size(0)),
                                         static_cast<std::size_t>(tensor.size(1)));
    std::copy(column_major.data_ptr<double>(),
              column_major.data_ptr<double>() + column_major.numel(), out.data.begin());
    return out;
  }
};

}  // namespace aclora::backends::libtorch
