/// @file factors.hpp
/// @brief aclora::train::distributed::agree_on_factors: after a RESTART, which every rank
/// runs on identical factors with the same loss and seed, checks that all ranks hold the same
/// factors, and makes them so (rank 0's) if not.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "aclora/adapters/io/checksum.hpp"
#include "aclora/adapters/train/distributed/process_group.hpp"
#include "aclora/adapters/train/network.hpp"

namespace aclora::train::distributed {

/// A checksum of every factor's bits, in the network's order, computed where the factors
/// live (no copy to the host): per factor, the sum of its elements' bit patterns times odd
/// position weights (mod 2^64), so that any changed bit changes it; the per-factor sums are
/// then hashed on the host.
inline std::uint64_t factor_checksum(const LoraNetwork& network) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> sums;
  for (const torch::Tensor& factor : network.parameters()) {
    const torch::Tensor flat = factor.detach().contiguous().reshape({-1});
    const torch::Dtype bits_type = flat.element_size() == 8   ? torch::kInt64
                                   : flat.element_size() == 4 ? torch::kInt32
                                   : flat.element_size() == 2 ? torch::kInt16
                                                              : torch::kUInt8;
    const torch::Tensor bits = flat.view(bits_type).to(torch::kInt64);
    const torch::Tensor weights =
        torch::arange(1, 2 * flat.numel(), 2, bits.options());  // 1, 3, 5, ...
    sums.push_back((bits * weights).sum());
  }
  if (sums.empty())
    return 0;
  const torch::Tensor host = torch::stack(sums).cpu();  // one copy, one sync
  return io::checksum(std::as_bytes(std::span(host.data_ptr<std::int64_t>(),
                                              static_cast<std::size_t>(host.numel()))),
                      io::checksum(std::string("aclora-factors")));
}

/// Whether every rank held the same factors (compared by checksum). When they did not, rank
/// 0's factors are broadcast to all and false is returned: the run goes on identical.
/// @throws DistributedError when a rank fails or the collective times out.
inline bool agree_on_factors(LoraNetwork& network, ProcessGroup& group, const std::string& when) {
  if (group.all_equal(factor_checksum(network), "the factor check " + when))
    return true;
  std::vector<torch::Tensor> factors;
  for (const torch::Tensor& factor : network.parameters())
    factors.push_back(factor.detach());
  torch::NoGradGuard no_grad;
  group.broadcast(factors, 0, "the factor broadcast " + when);
  network.refresh();
  return false;
}

}  // namespace aclora::train::distributed
