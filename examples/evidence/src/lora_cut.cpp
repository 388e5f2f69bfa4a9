#include "evidence/lora_cut.hpp"

#include <aclora/backends/torch/product.hpp>
#include <aclora/product.hpp>

#include <string>

namespace evidence {
namespace {

using aclora::Layer;
using aclora::RankAxis;

aclora::ProductDecomposition analyse(const aclora::train::LoraModuleEntry& entry) {
  aclora::backends::libtorch::ProductPrimitives primitives;
  const auto& adapter = *entry.adapter;
  const Layer<torch::Tensor> down{adapter.down_matrix().detach(), RankAxis::rows};
  const Layer<torch::Tensor> up{adapter.up_matrix().detach(), RankAxis::cols};
  aclora::ProductDecomposition decomposition =
      aclora::product_analyze(primitives, down, up, static_cast<std::size_t>(adapter.rank()));
  if (!decomposition.spectrum.finite)
    throw aclora::Error("module '" + entry.name + "' holds NaN or Inf");
  return decomposition;
}

}  // namespace

void cut_to_ranks(aclora::train::LoraNetwork& network, const std::vector<std::size_t>& ranks) {
  if (ranks.size() != network.size())
    throw aclora::Error("cut_to_ranks: " + std::to_string(ranks.size()) + " ranks for " +
                        std::to_string(network.size()) + " modules");
  aclora::backends::libtorch::ProductPrimitives primitives;
  std::vector<aclora::ProductFactors> cut(network.size());
  for (std::size_t i = 0; i < network.size(); ++i) {
    const auto& entry = network.modules()[i];
    const auto& adapter = *entry.adapter;
    const auto rank = static_cast<std::size_t>(adapter.rank());
    if (ranks[i] < 1 || ranks[i] > rank)
      throw aclora::Error("cut_to_ranks: module '" + entry.name + "': rank " +
                          std::to_string(ranks[i]) + " outside [1, " + std::to_string(rank) + "]");
    const Layer<torch::Tensor> down{adapter.down_matrix().detach(), RankAxis::rows};
    const Layer<torch::Tensor> up{adapter.up_matrix().detach(), RankAxis::cols};
    cut[i] = aclora::product_refactor(primitives, analyse(entry), down, up, ranks[i]);
  }
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < network.size(); ++i) {
    const auto& adapter = *network.modules()[i].adapter;
    const auto k = static_cast<int64_t>(cut[i].rank);
    torch::Tensor down = adapter.down_matrix();
    torch::Tensor up = adapter.up_matrix();
    const auto as_tensor = [](std::vector<float>& values, int64_t rows, int64_t columns) {
      return torch::from_blob(values.data(), {rows, columns}, torch::kFloat32);
    };
    down.zero_();
    up.zero_();
    down.slice(0, 0, k).copy_(as_tensor(cut[i].down, k, static_cast<int64_t>(cut[i].columns)));
    up.slice(1, 0, k).copy_(as_tensor(cut[i].up, static_cast<int64_t>(cut[i].rows), k));
  }
  network.refresh();
}

std::vector<std::size_t> ranks_for_energy(const aclora::train::LoraNetwork& network,
                                          double fraction) {
  if (!(fraction > 0.0 && fraction <= 1.0))
    throw aclora::Error("ranks_for_energy: the fraction must lie in (0, 1]");
  std::vector<std::size_t> ranks;
  for (const auto& entry : network.modules())
    ranks.push_back(aclora::rank_for_energy(analyse(entry).spectrum.singular_values, fraction));
  return ranks;
}

}  // namespace evidence
