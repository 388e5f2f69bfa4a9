#include "evidence/frechet.hpp"

#include <stdexcept>
#include <string>
#include <tuple>

namespace evidence {
namespace {

// The sample covariance (divided by N - 1) of the rows of `x` about their mean `mean`.
torch::Tensor covariance(const torch::Tensor& x, const torch::Tensor& mean) {
  const torch::Tensor centred = x - mean;
  return centred.t().matmul(centred) / static_cast<double>(x.size(0) - 1);
}

// The eigenvalues and eigenvectors of the symmetric part of `matrix`, eigenvalues below 0
// (rounding of a positive semi-definite matrix) set to 0.
std::tuple<torch::Tensor, torch::Tensor> eigen_psd(const torch::Tensor& matrix) {
  auto [values, vectors] = torch::linalg_eigh((matrix + matrix.t()) / 2.0);
  return {values.clamp_min(0.0), vectors};
}

// The symmetric positive semi-definite square root of a covariance matrix.
torch::Tensor sqrt_psd(const torch::Tensor& matrix) {
  const auto [values, vectors] = eigen_psd(matrix);
  return (vectors * values.sqrt()).matmul(vectors.t());
}

}  // namespace

double frechet_distance(const torch::Tensor& features_a, const torch::Tensor& features_b) {
  if (features_a.dim() != 2 || features_b.dim() != 2 || features_a.size(1) != features_b.size(1) ||
      features_a.size(1) == 0 || features_a.size(0) < 2 || features_b.size(0) < 2)
    throw std::invalid_argument(
        "frechet_distance: expected two sets of feature rows [N, D] of the same width D > 0, "
        "each with N >= 2, got " +
        c10::str(features_a.sizes()) + " and " + c10::str(features_b.sizes()));
  const torch::Tensor a = features_a.detach().to(torch::kCPU, torch::kFloat64);
  const torch::Tensor b = features_b.detach().to(torch::kCPU, torch::kFloat64);
  const torch::Tensor mean_a = a.mean(0);
  const torch::Tensor mean_b = b.mean(0);
  const torch::Tensor cov_a = covariance(a, mean_a);
  const torch::Tensor cov_b = covariance(b, mean_b);
  const torch::Tensor root_a = sqrt_psd(cov_a);
  // Tr((C_a^(1/2) C_b C_a^(1/2))^(1/2)): the sum of the square roots of its eigenvalues.
  const torch::Tensor values = std::get<0>(eigen_psd(root_a.matmul(cov_b).matmul(root_a)));
  const double mean_term = (mean_a - mean_b).square().sum().item<double>();
  const double trace_term =
      (cov_a.trace() + cov_b.trace() - 2.0 * values.sqrt().sum()).item<double>();
  return mean_term + trace_term;
}

}  // namespace evidence
