/// @file backend.hpp
/// @brief The Backend concept: the few primitives a backend supplies to Restart.
///
/// A backend holds no selection or schedule logic. For a batch of layers it
/// (1) analyses each one: singular values, the sums needed for residual statistics,
///     and a private decomposition kept until the write (`analysis_type`);
/// (2) writes each one: truncation to its first K components along the rank axis plus
///     Gaussian noise of a given sigma and key, placed by a NoisePolicy.
/// Step (1) must not modify any matrix; step (2) must not fail (all validation and
/// allocation that can fail happens before its first write).
#pragma once

#include <concepts>
#include <cstddef>
#include <span>
#include <string>

#include "aclora/layer.hpp"
#include "aclora/memory.hpp"
#include "aclora/noise.hpp"
#include "aclora/spectrum.hpp"

namespace aclora {

/// What the driver asks a backend to write for one layer.
struct LayerPlan {
  std::size_t kept = 0;                    ///< K: components kept along the rank axis
  double sigma = 0.0;                      ///< standard deviation of the noise
  NoisePolicy noise = NoisePolicy::whole;  ///< where the noise goes
  NoiseKey key;                            ///< the layer's noise stream
};

/// A backend B provides:
/// - `B::matrix_type`: a cheap, copyable view of one matrix (writes go through it);
/// - `B::analysis_type`: what `analyze` keeps for `apply`;
/// - `B::shape(m)`: rows and columns;
/// - `B::check(m)`: an empty string when the backend can process m, else the reason
///   (unsupported dtype, device, layout...);
/// - `b.analyze(layers, spectra)`: fills spectra[i] for layers[i], modifies nothing;
/// - `b.apply(layers, analysis, plans)`: writes every layer in place.
/// A backend should also model DescribesMemory, so that the driver refuses layers that share
/// memory (see there).
template <class B>
concept Backend = requires(B& backend, const typename B::matrix_type& matrix,
                           std::span<const Layer<typename B::matrix_type>> layers,
                           std::span<LayerSpectrum> spectra, typename B::analysis_type& analysis,
                           std::span<const LayerPlan> plans) {
  { B::shape(matrix) } -> std::same_as<MatrixShape>;
  { B::check(matrix) } -> std::convertible_to<std::string>;
  { backend.analyze(layers, spectra) } -> std::same_as<typename B::analysis_type>;
  { backend.apply(layers, analysis, plans) } -> std::same_as<void>;
};

/// A backend that says where each matrix's entries lie: `B::memory(m)` returns its
/// MemoryRegion. The Restart driver then refuses, before any work, a matrix whose entries overlap
/// each other and two layers that share an entry (RESTART writes in place: shared entries would be
/// written twice, or raced by parallel writers). Every backend of aclora models it; the
/// driver skips the check for a backend that does not.
template <class B>
concept DescribesMemory = requires(const typename B::matrix_type& matrix) {
  { B::memory(matrix) } -> std::same_as<MemoryRegion>;
};

}  // namespace aclora
