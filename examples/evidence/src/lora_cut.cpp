#include "evidence/lora_cut.hpp"

#include <aclora/adapters/train/export.hpp>
#include <aclora/product.hpp>

#include <string>

namespace evidence {

void cut_to_ranks(aclora::train::LoraNetwork& network, const std::vector<std::size_t>& ranks) {
  if (ranks.size() != network.size())
    throw aclora::Error("cut_to_ranks: " + std::to_string(ranks.size()) + " ranks for " +
                        std::to_string(network.size()) + " modules");
  for (std::size_t i = 0; i < network.size(); ++i) {
    const auto& entry = network.modules()[i];
    const auto rank = static_cast<std::size_t>(entry.adapter->rank());
    if (ranks[i] < 1 || ranks[i] > rank)
      throw aclora::Error("cut_to_ranks: module '" + entry.name + "': rank " +
                          std::to_string(ranks[i]) + " outside [1, " + std::to_string(rank) + "]");
  }
  // The refactor of export.hpp, the one a LoRA file at these ranks holds; every module is
  // refactored before any is written.
  std::vector<aclora::ProductFactors> cut(network.size());
  for (std::size_t i = 0; i < network.size(); ++i)
    cut[i] = aclora::train::module_at_rank(network.modules()[i], ranks[i]);
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
  for (const auto& entry : network.modules()) {
    const aclora::ProductDecomposition product = aclora::train::module_product(entry);
    ranks.push_back(aclora::rank_for_energy(product.spectrum.singular_values, fraction));
  }
  return ranks;
}

}  // namespace evidence
