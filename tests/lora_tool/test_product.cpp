// Product analysis (aclora/product.hpp with the Eigen primitives): the exact SVD of
// dW = B A from the factors, and refactoring to rank K.
#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <random>

#include "aclora/backends/eigen/product.hpp"

namespace {

using aclora::Layer;
using aclora::RankAxis;
using View = aclora::backends::eigen::MatrixView;
using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

struct Factors {
  RowMajor up;    // out x R
  RowMajor down;  // R x in
};

Factors random_factors(int out, int in, int rank, int true_rank, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal;
  Factors f{RowMajor(out, rank), RowMajor(rank, in)};
  for (int i = 0; i < f.up.size(); ++i)
    f.up.data()[i] = normal(gen);
  for (int i = 0; i < f.down.size(); ++i)
    f.down.data()[i] = normal(gen);
  // Columns past true_rank are combinations of the first ones: rank(B A) = true_rank.
  for (int k = true_rank; k < rank; ++k)
    f.up.col(k) = 0.5f * f.up.col(k % true_rank) - 0.25f * f.up.col((k + 1) % true_rank);
  return f;
}

Eigen::MatrixXd dense(const Factors& f) {
  return f.up.cast<double>() * f.down.cast<double>();
}

aclora::ProductDecomposition analyze(Factors& f) {
  aclora::backends::eigen::ProductPrimitives primitives;
  return aclora::product_analyze(primitives, Layer<View>{View(f.down), RankAxis::rows},
                                 Layer<View>{View(f.up), RankAxis::cols},
                                 static_cast<std::size_t>(f.down.rows()));
}

Eigen::MatrixXd refactored(Factors& f, const aclora::ProductDecomposition& d, std::size_t k) {
  aclora::backends::eigen::ProductPrimitives primitives;
  const auto result =
      aclora::product_refactor(primitives, d, Layer<View>{View(f.down), RankAxis::rows},
                               Layer<View>{View(f.up), RankAxis::cols}, k);
  EXPECT_EQ(result.rows, static_cast<std::size_t>(f.up.rows()));
  EXPECT_EQ(result.columns, static_cast<std::size_t>(f.down.cols()));
  Eigen::Map<const RowMajor> up(result.up.data(), f.up.rows(), static_cast<Eigen::Index>(k));
  Eigen::Map<const RowMajor> down(result.down.data(), static_cast<Eigen::Index>(k), f.down.cols());
  return up.cast<double>() * down.cast<double>();
}

// The singular values from the factors equal a dense SVD of B A (full rank and planted rank).
TEST(ProductAnalysis, SingularValuesMatchDenseSvd) {
  for (int true_rank : {8, 5, 1}) {
    Factors f = random_factors(70, 45, 8, true_rank, 11u + true_rank);
    const auto d = analyze(f);
    ASSERT_TRUE(d.spectrum.finite);
    const Eigen::JacobiSVD<Eigen::MatrixXd> svd(dense(f));
    ASSERT_EQ(d.spectrum.singular_values.size(), 8u);
    // Gram matrices square the condition number: values are exact to ~sqrt(eps) of the
    // largest (the zero values of a rank-deficient product come out ~1e-8 of the largest).
    const double largest = svd.singularValues()(0);
    for (int i = 0; i < 8; ++i)
      EXPECT_NEAR(d.spectrum.singular_values[i], svd.singularValues()(i), 1e-7 * largest) << i;
    EXPECT_EQ(aclora::numerical_rank(d.spectrum.singular_values),
              static_cast<std::size_t>(true_rank));
  }
}

// Refactoring to K gives the best rank-K approximation (the dense truncated SVD), and
// B' A' = B A when K >= rank(B A).
TEST(ProductAnalysis, RefactorIsTheTruncatedSvd) {
  Factors f = random_factors(60, 33, 8, 5, 3u);
  const auto d = analyze(f);
  const Eigen::MatrixXd w = dense(f);
  const Eigen::BDCSVD<Eigen::MatrixXd> svd(w, Eigen::ComputeThinU | Eigen::ComputeThinV);
  for (std::size_t k : {1u, 3u, 5u, 7u}) {
    const auto kk = static_cast<Eigen::Index>(k);
    const Eigen::MatrixXd truncated = svd.matrixU().leftCols(kk) *
                                      svd.singularValues().head(kk).asDiagonal() *
                                      svd.matrixV().leftCols(kk).transpose();
    EXPECT_LT((refactored(f, d, k) - truncated).norm() / w.norm(), 1e-6) << k;
  }
  EXPECT_LT((refactored(f, d, 5) - w).norm() / w.norm(), 1e-6);
}

// The analysis depends on B A only: B -> B T, A -> T^-1 A gives the same spectrum.
TEST(ProductAnalysis, InvariantToFactorGauge) {
  Factors f = random_factors(40, 30, 6, 6, 5u);
  const auto before = analyze(f);
  Eigen::MatrixXd t = Eigen::MatrixXd::Random(6, 6) + 3.0 * Eigen::MatrixXd::Identity(6, 6);
  Factors g{(f.up.cast<double>() * t).cast<float>(),
            (t.inverse() * f.down.cast<double>()).cast<float>()};
  const auto after = analyze(g);
  for (int i = 0; i < 6; ++i)
    EXPECT_NEAR(before.spectrum.singular_values[i], after.spectrum.singular_values[i],
                1e-4 * before.spectrum.singular_values[0]);
}

// B = 0 (a freshly initialised LoRA) gives zero singular values and zero refactored factors.
TEST(ProductAnalysis, ZeroUpFactorIsFine) {
  Factors f = random_factors(20, 10, 4, 4, 7u);
  f.up.setZero();
  const auto d = analyze(f);
  ASSERT_TRUE(d.spectrum.finite);
  for (double s : d.spectrum.singular_values)
    EXPECT_EQ(s, 0.0);
  EXPECT_EQ(refactored(f, d, 2).norm(), 0.0);
}

// NaN in a factor is reported (finite = false), and refactoring it is an error.
TEST(ProductAnalysis, NonFiniteFactorsAreReported) {
  Factors f = random_factors(20, 10, 4, 4, 9u);
  f.down(1, 2) = std::numeric_limits<float>::quiet_NaN();
  const auto d = analyze(f);
  EXPECT_FALSE(d.spectrum.finite);
  aclora::backends::eigen::ProductPrimitives primitives;
  EXPECT_THROW(aclora::product_refactor(primitives, d, Layer<View>{View(f.down), RankAxis::rows},
                                        Layer<View>{View(f.up), RankAxis::cols}, 1),
               aclora::Error);
}

// Energy rule: the smallest K whose cumulative energy reaches the fraction.
TEST(ProductAnalysis, RankForEnergy) {
  const std::vector<double> s = {3.0, 2.0, 1.0, 0.0};  // energies 9, 4, 1 of 14
  EXPECT_EQ(aclora::rank_for_energy(s, 0.5), 1u);
  EXPECT_EQ(aclora::rank_for_energy(s, 9.0 / 14.0), 1u);
  EXPECT_EQ(aclora::rank_for_energy(s, 0.9), 2u);
  EXPECT_EQ(aclora::rank_for_energy(s, 1.0), 3u);
  EXPECT_EQ(aclora::rank_for_energy(std::vector<double>{0.0, 0.0}, 0.9), 1u);
  EXPECT_EQ(aclora::numerical_rank(s), 3u);
}

}  // namespace
