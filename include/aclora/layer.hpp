/// @file layer.hpp
/// @brief Layers (LoRA factors with a rank axis) and modules (layers sharing that axis).
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

namespace aclora {

/// Which axis of a layer's matrix has the module's allocated rank R.
enum class RankAxis {
  rows,  ///< R x n, e.g. LoRA down / A (conv down [R, in, kh, kw] viewed as R x in*kh*kw)
  cols,  ///< n x R, e.g. LoRA up / B (conv up [out, R, 1, 1] viewed as out x R)
};

/// Rows and columns of a matrix (element counts).
struct MatrixShape {
  std::size_t rows = 0;  ///< number of rows
  std::size_t cols = 0;  ///< number of columns
  /// Length of the given axis.
  constexpr std::size_t along(RankAxis axis) const { return axis == RankAxis::rows ? rows : cols; }
  /// Number of entries.
  constexpr std::size_t size() const { return rows * cols; }
};

/// One matrix of a module together with its rank axis. `Matrix` is a backend's
/// matrix handle (a view onto the user's memory), cheap to copy.
template <class Matrix>
struct Layer {
  Matrix matrix;  ///< view of the factor; RESTART writes through it
  RankAxis axis;  ///< the axis of length R
};

/// The ordered layers that share one rank axis of length R (standard LoRA: down, up).
template <class Matrix>
struct Module {
  /// Identifies the module in errors and reports, and keys its noise: reordering
  /// a list of named modules leaves every module's noise unchanged. May be empty
  /// (the module's position is used instead); names must be unique when given.
  std::string name;
  std::vector<Layer<Matrix>> layers;  ///< at least one layer

  /// A standard LoRA module: down (R x in, rank axis rows) and up (out x R, rank axis cols).
  static Module lora(std::string name, Matrix down, Matrix up) {
    return Module{std::move(name),
                  {Layer<Matrix>{std::move(down), RankAxis::rows},
                   Layer<Matrix>{std::move(up), RankAxis::cols}}};
  }
};

}  // namespace aclora
