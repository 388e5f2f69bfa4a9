// Resize of a full SDXL all-linear rank-64 LoRA (722 modules) by product analysis, against
// the sd-scripts method (form dW = up @ down, full SVD per module), in the same run.
//
// Usage: bench_resize [--threads T] [--dense-all] [--energy P]
// The dense method is timed on one module of every shape family and scaled by the family's
// module count (all 722 modules with --dense-all; hours on a small machine). Factors are
// random Gaussian, float32, rank 64 (full rank, the worst case for both methods).
#include <Eigen/Dense>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "aclora/backends/eigen/product.hpp"
#include "aclora/parallel.hpp"
#include "common/sdxl_shapes.hpp"

namespace {

using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using View = aclora::backends::eigen::MatrixView;
using clock_type = std::chrono::steady_clock;

struct Module {
  RowMajor up;    // out x R
  RowMajor down;  // R x in
  std::size_t family = 0;
};

double seconds_since(clock_type::time_point start) {
  return std::chrono::duration<double>(clock_type::now() - start).count();
}

// The product-analysis resize of one module: analysis, rank by energy, refactor.
std::size_t product_resize(Module& m, double energy) {
  aclora::backends::eigen::ProductPrimitives primitives;
  const aclora::Layer<View> down{View(m.down), aclora::RankAxis::rows};
  const aclora::Layer<View> up{View(m.up), aclora::RankAxis::cols};
  const auto d =
      aclora::product_analyze(primitives, down, up, static_cast<std::size_t>(m.down.rows()));
  const std::size_t k = aclora::rank_for_energy(d.spectrum.singular_values, energy);
  const auto factors = aclora::product_refactor(primitives, d, down, up, k);
  return factors.up.size() > 0 ? k : 0;
}

// sd-scripts' method: dW = up @ down in float32, full SVD, rank by energy, up' = U_k S_k,
// down' = V_k^T.
std::size_t dense_resize(const Module& m, double energy) {
  const Eigen::MatrixXf dw = m.up * m.down;
  Eigen::BDCSVD<Eigen::MatrixXf> svd(dw, Eigen::ComputeThinU | Eigen::ComputeThinV);
  std::vector<double> values(svd.singularValues().data(),
                             svd.singularValues().data() + svd.singularValues().size());
  const std::size_t k = aclora::rank_for_energy(values, energy);
  const auto kk = static_cast<Eigen::Index>(k);
  const RowMajor up = svd.matrixU().leftCols(kk) * svd.singularValues().head(kk).asDiagonal();
  const RowMajor down = svd.matrixV().leftCols(kk).transpose();
  return up.size() + down.size() > 0 ? k : 0;
}

}  // namespace

int main(int argc, char** argv) {
  unsigned threads = 1;
  bool dense_all = false;
  double energy = 0.99;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--threads") && i + 1 < argc)
      threads = static_cast<unsigned>(std::stoul(argv[++i]));
    else if (!std::strcmp(argv[i], "--dense-all"))
      dense_all = true;
    else if (!std::strcmp(argv[i], "--energy") && i + 1 < argc)
      energy = std::stod(argv[++i]);
    else {
      std::fprintf(stderr, "usage: bench_resize [--threads T] [--dense-all] [--energy P]\n");
      return 2;
    }
  }
  Eigen::setNbThreads(1);
  const auto families = aclora::workload::sdxl_unet_linears(false);
  const int rank = 64;
  std::mt19937 gen(1234);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<Module> modules;
  for (std::size_t f = 0; f < families.size(); ++f) {
    for (std::size_t c = 0; c < families[f].count; ++c) {
      Module m{RowMajor(families[f].out_features, rank), RowMajor(rank, families[f].in_features),
               f};
      for (Eigen::Index i = 0; i < m.up.size(); ++i)
        m.up.data()[i] = normal(gen);
      for (Eigen::Index i = 0; i < m.down.size(); ++i)
        m.down.data()[i] = normal(gen);
      modules.push_back(std::move(m));
    }
  }
  std::printf(
      "workload: SDXL UNet all linears, %zu modules, rank %d, float32, energy %.4g, "
      "%u thread(s)\n",
      modules.size(), rank, energy, threads);

  auto start = clock_type::now();
  std::vector<std::size_t> kept(modules.size());
  aclora::for_each_index(modules.size(), threads, [&](std::size_t i, unsigned) {
    kept[i] = product_resize(modules[i], energy);
  });
  const double product_seconds = seconds_since(start);
  std::size_t kept_total = 0;
  for (std::size_t k : kept)
    kept_total += k;
  std::printf("product analysis: %.3f s for all %zu modules (mean kept rank %.2f)\n",
              product_seconds, modules.size(), static_cast<double>(kept_total) / modules.size());

  double dense_seconds = 0.0;
  if (dense_all) {
    start = clock_type::now();
    aclora::for_each_index(modules.size(), threads,
                           [&](std::size_t i, unsigned) { dense_resize(modules[i], energy); });
    dense_seconds = seconds_since(start);
    std::printf("dense dW + full SVD: %.3f s for all %zu modules\n", dense_seconds, modules.size());
  } else {
    for (std::size_t f = 0; f < families.size(); ++f) {
      const Module* sample = nullptr;
      for (const auto& m : modules)
        if (m.family == f) {
          sample = &m;
          break;
        }
      start = clock_type::now();
      dense_resize(*sample, energy);
      const double one = seconds_since(start);
      dense_seconds += one * static_cast<double>(families[f].count);
      std::printf("  dense %-22s %5zu x %-5zu: %8.3f s per module x %3zu\n",
                  families[f].group.c_str(), families[f].out_features, families[f].in_features, one,
                  families[f].count);
    }
    dense_seconds /= static_cast<double>(threads);  // ideal scaling over the same threads
    std::printf(
        "dense dW + full SVD (sd-scripts method): %.3f s estimated for all %zu modules "
        "(one module per shape family timed, times its count%s)\n",
        dense_seconds, modules.size(), threads > 1 ? ", divided by the threads" : "");
  }
  std::printf("speed-up: %.1fx\n", dense_seconds / product_seconds);
  return 0;
}
