/// @file lora_cut.hpp
/// Cutting trained LoRAs to a rank per module in place: how AC-LoRA's LoRA is exported (at
/// the rank each module kept) and how train-then-resize cuts by energy.
#pragma once

#include <aclora/adapters/train/network.hpp>
#include <aclora/error.hpp>

#include <cstddef>
#include <vector>

namespace evidence {

/// Replaces each module's update up @ down by its best rank-K approximation (the leading K
/// singular components of the product), K = ranks[i], stored in the first K rows of down and
/// columns of up with zeros after them, so the module computes exactly the cut update: the
/// update of the LoRA file aclora::train::write_lora writes at these ranks (the same
/// aclora::train::module_at_rank). Every module is analysed before any is written.
/// @throws aclora::Error when ranks has another size than the network or a K is outside
/// [1, R]; aclora::train::Error when a module holds NaN or Inf (then nothing was changed).
void cut_to_ranks(aclora::train::LoraNetwork& network, const std::vector<std::size_t>& ranks);

/// The smallest K per module whose leading singular values of up @ down hold `fraction` of
/// the update's energy (sum of squares), as aclora-lora resize --energy chooses it.
/// @throws aclora::Error for a fraction outside (0, 1]; aclora::train::Error for a module
/// holding NaN or Inf.
std::vector<std::size_t> ranks_for_energy(const aclora::train::LoraNetwork& network,
                                          double fraction);

}  // namespace evidence
