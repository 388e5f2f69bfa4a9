/// @file frechet.hpp
/// The Frechet distance between two sets of feature vectors (the FID when the features are
/// those of an Inception network; here those of the experiment's classifier).
#pragma once

#include <torch/torch.h>

namespace evidence {

/// The Frechet distance between the Gaussians fitted to two sets of rows:
/// |mu_a - mu_b|^2 + Tr(C_a + C_b - 2 (C_a^(1/2) C_b C_a^(1/2))^(1/2)), with the means mu and
/// the sample covariances C (divided by N - 1) of each set. Computed in double precision on
/// the CPU; the symmetric square roots come from eigen-decompositions whose small negative
/// eigenvalues (rounding) are taken as 0. Rounding can leave a result slightly below 0 when
/// the sets have equal statistics.
/// @param features_a [N_a, D] (any floating dtype and device)
/// @param features_b [N_b, D]
/// @throws std::invalid_argument when an input is not 2-D, the widths D differ, D is 0, or
/// a set has fewer than 2 rows.
double frechet_distance(const torch::Tensor& features_a, const torch::Tensor& features_b);

}  // namespace evidence
