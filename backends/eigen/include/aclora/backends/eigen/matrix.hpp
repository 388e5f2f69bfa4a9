/// @file matrix.hpp
/// @brief aclora::backends::eigen::MatrixView: a view onto the user's Eigen memory.
#pragma once

#include <Eigen/Core>
#include <cstddef>
#include <type_traits>
#include <utility>

#include "aclora/layer.hpp"

namespace aclora::backends::eigen {

/// Storage scalar of a view.
enum class Scalar { f32, f64 };

namespace detail {
template <class Derived>
concept WritableDense = (std::is_same_v<typename Derived::Scalar, float> ||
                         std::is_same_v<typename Derived::Scalar,
                                        double>)&&(Derived::Flags& ::Eigen::DirectAccessBit) != 0 &&
                        (Derived::Flags & ::Eigen::LvalueBit) != 0;

template <class Derived>
concept PlainObject = std::is_base_of_v<::Eigen::PlainObjectBase<Derived>, Derived>;
}  // namespace detail

/// A writable float or double matrix anywhere in memory: rows, columns and element
/// strides. Built from any Eigen object with direct access (Matrix, Map, Ref, Block)
/// in row- or column-major order; RESTART writes into that memory, never copies it whole.
class MatrixView {
 public:
  /// View of an Eigen lvalue (a Matrix, or a Map / Ref / Block variable).
  template <class Derived>
  requires detail::WritableDense<Derived> MatrixView(
      ::Eigen::DenseBase<Derived>& matrix)  // NOLINT: implicit by design
      : MatrixView(matrix.derived().data(), matrix.rows(), matrix.cols(),
                   matrix.derived().rowStride(), matrix.derived().colStride()) {}

  /// View of a temporary Map / Ref / Block (not of a temporary Matrix, which would dangle).
  template <class Derived>
  requires(detail::WritableDense<Derived> && !detail::PlainObject<Derived>)
      MatrixView(::Eigen::DenseBase<Derived>&& view)  // NOLINT: implicit by design
      : MatrixView(view.derived().data(), view.rows(), view.cols(), view.derived().rowStride(),
                   view.derived().colStride()) {}

  /// View of raw memory: entry (i, j) at data[i * row_stride + j * col_stride].
  template <class T>
  requires(std::is_same_v<T, float> || std::is_same_v<T, double>)
      MatrixView(T* data, std::ptrdiff_t rows, std::ptrdiff_t cols, std::ptrdiff_t row_stride,
                 std::ptrdiff_t col_stride)
      : data_(data),
        scalar_(std::is_same_v<T, float> ? Scalar::f32 : Scalar::f64),
        rows_(rows),
        cols_(cols),
        row_stride_(row_stride),
        col_stride_(col_stride) {}

  std::ptrdiff_t rows() const { return rows_; }              ///< number of rows
  std::ptrdiff_t cols() const { return cols_; }              ///< number of columns
  Scalar scalar() const { return scalar_; }                  ///< storage scalar
  void* data() const { return data_; }                       ///< first entry
  std::ptrdiff_t row_stride() const { return row_stride_; }  ///< elements between rows
  std::ptrdiff_t col_stride() const { return col_stride_; }  ///< elements between columns

  /// Calls `f` with an Eigen::Map of the right scalar and storage order: an
  /// OuterStride map when rows or columns are contiguous, a general Stride map otherwise.
  template <class F>
  decltype(auto) visit(F&& f) const {
    if (scalar_ == Scalar::f32)
      return visit_as<float>(std::forward<F>(f));
    return visit_as<double>(std::forward<F>(f));
  }

 private:
  template <class T, class F>
  decltype(auto) visit_as(F&& f) const {
    using namespace ::Eigen;
    T* data = static_cast<T*>(data_);
    if (row_stride_ == 1 || rows_ == 1) {
      using ColMajor = Map<Matrix<T, Dynamic, Dynamic, ColMajor>, Unaligned, OuterStride<>>;
      return f(ColMajor(data, rows_, cols_, OuterStride<>(col_stride_)));
    }
    if (col_stride_ == 1 || cols_ == 1) {
      using RowMajor = Map<Matrix<T, Dynamic, Dynamic, RowMajor>, Unaligned, OuterStride<>>;
      return f(RowMajor(data, rows_, cols_, OuterStride<>(row_stride_)));
    }
    using Strided = Map<Matrix<T, Dynamic, Dynamic, ColMajor>, Unaligned, Stride<Dynamic, Dynamic>>;
    return f(Strided(data, rows_, cols_, Stride<Dynamic, Dynamic>(col_stride_, row_stride_)));
  }

  void* data_ = nullptr;
  Scalar scalar_ = Scalar::f32;
  std::ptrdiff_t rows_ = 0;
  std::ptrdiff_t cols_ = 0;
  std::ptrdiff_t row_stride_ = 0;
  std::ptrdiff_t col_stride_ = 0;
};

/// Calls `f` with the layer's matrix seen along its rank axis (R x n): the Eigen map
/// itself for RankAxis::rows, its transpose for RankAxis::cols.
template <class F>
void visit_rank_major(const Layer<MatrixView>& layer, F&& f) {
  layer.matrix.visit([&](auto map) {
    if (layer.axis == RankAxis::rows) {
      f(map);
    } else {
      f(map.transpose());
    }
  });
}

}  // namespace aclora::backends::eigen
