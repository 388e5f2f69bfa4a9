/// @file memory.hpp
/// @brief Where a matrix's entries lie, and the exact test of whether two matrices (or two
/// entries of one matrix) share memory. The Restart driver refuses such input before any work:
/// RESTART writes every layer in place, so shared entries would be written twice or raced.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace aclora {

/// The memory of one strided matrix, as a backend describes it (B::memory).
struct MemoryRegion {
  std::uintptr_t space = 0;       ///< address space: 0 for host memory; equal values may overlap
  std::uintptr_t address = 0;     ///< byte address of entry (0, 0)
  std::size_t element_bytes = 0;  ///< bytes per entry
  std::size_t rows = 0;           ///< entries along the first axis
  std::size_t cols = 0;           ///< entries along the second axis
  std::ptrdiff_t row_stride = 0;  ///< entries from one row to the next (any sign, 0 allowed)
  std::ptrdiff_t col_stride = 0;  ///< entries from one column to the next (any sign, 0 allowed)
};

namespace detail {

// A region as `lines` lines of `cells` cells: cell (i, j) covers the bytes
// [first + i * line_step + j * cell_step, + width), with 0 <= cell_step <= line_step.
struct Lattice {
  std::int64_t first = 0;  // relative to the address origin of the comparison
  std::int64_t lines = 0, cells = 0;
  std::int64_t line_step = 0, cell_step = 0;
  std::int64_t width = 0;

  std::int64_t span_end() const {
    return first + (lines - 1) * line_step + (cells - 1) * cell_step + width;
  }
  // A line whose cells touch each other is one interval of (cells - 1) step + width bytes.
  bool contiguous_lines() const { return cells == 1 || cell_step == width; }
};

// floor(a / b) for b > 0.
inline std::int64_t floor_div(std::int64_t a, std::int64_t b) {
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}

// The lattice of a non-empty region, strides made non-negative (by moving the origin)
// and ordered so that the inner step is the smaller; offsets relative to `origin`.
inline Lattice lattice_of(const MemoryRegion& region, std::uintptr_t origin) {
  const auto e = static_cast<std::int64_t>(region.element_bytes);
  std::int64_t first = static_cast<std::int64_t>(region.address - origin);
  std::int64_t counts[2] = {static_cast<std::int64_t>(region.rows),
                            static_cast<std::int64_t>(region.cols)};
  std::int64_t steps[2] = {static_cast<std::int64_t>(region.row_stride) * e,
                           static_cast<std::int64_t>(region.col_stride) * e};
  for (int axis = 0; axis < 2; ++axis) {
    if (counts[axis] == 1)
      steps[axis] = 0;  // a single line: its stride means nothing
    if (steps[axis] < 0) {
      first += (counts[axis] - 1) * steps[axis];
      steps[axis] = -steps[axis];
    }
  }
  const int inner = steps[0] <= steps[1] ? 0 : 1;
  return Lattice{first, counts[1 - inner], counts[inner], steps[1 - inner], steps[inner], e};
}

// Lines [begin, end] of `l` whose interval (first cell to last cell) meets [x, y).
inline std::pair<std::int64_t, std::int64_t> lines_meeting(const Lattice& l, std::int64_t x,
                                                           std::int64_t y) {
  const std::int64_t length = (l.cells - 1) * l.cell_step + l.width;
  if (l.lines == 1 || l.line_step == 0) {
    const bool meets = l.first < y && l.first + length > x;
    return meets ? std::pair<std::int64_t, std::int64_t>{0, l.lines - 1}
                 : std::pair<std::int64_t, std::int64_t>{1, 0};
  }
  const std::int64_t begin =
      std::max<std::int64_t>(0, floor_div(x - l.first - length, l.line_step) + 1);
  const std::int64_t end =
      std::min<std::int64_t>(l.lines - 1, floor_div(y - 1 - l.first, l.line_step));
  return {begin, end};
}

// True when a cell of `l` meets the byte interval [x, y). `l` must not overlap itself.
inline bool meets(const Lattice& l, std::int64_t x, std::int64_t y) {
  auto [begin, end] = lines_meeting(l, x, y);
  if (begin > end)
    return false;
  if (l.contiguous_lines())
    return true;
  for (std::int64_t i = begin; i <= end; ++i) {
    const std::int64_t line_first = l.first + i * l.line_step;
    const std::int64_t j0 =
        std::max<std::int64_t>(0, floor_div(x - line_first - l.width, l.cell_step) + 1);
    const std::int64_t j1 =
        std::min<std::int64_t>(l.cells - 1, floor_div(y - 1 - line_first, l.cell_step));
    if (j0 <= j1)
      return true;
  }
  return false;
}

// Calls f(x, y) for every maximal contiguous byte interval of `l` (a whole line when its cells
// touch, else each cell) until f returns true; returns whether one did.
template <class F>
bool any_interval(const Lattice& l, F&& f) {
  const bool whole_lines = l.contiguous_lines();
  const std::int64_t length = whole_lines ? (l.cells - 1) * l.cell_step + l.width : l.width;
  for (std::int64_t i = 0; i < l.lines; ++i) {
    const std::int64_t line_first = l.first + i * l.line_step;
    if (whole_lines) {
      if (f(line_first, line_first + length))
        return true;
      continue;
    }
    for (std::int64_t j = 0; j < l.cells; ++j) {
      const std::int64_t x = line_first + j * l.cell_step;
      if (f(x, x + length))
        return true;
    }
  }
  return false;
}

inline bool is_empty(const MemoryRegion& region) {
  return region.rows == 0 || region.cols == 0 || region.element_bytes == 0;
}

}  // namespace detail

/// The bytes [first, last) spanned by a region (first == last when it is empty).
inline std::pair<std::uintptr_t, std::uintptr_t> byte_span(const MemoryRegion& region) {
  if (detail::is_empty(region))
    return {region.address, region.address};
  const detail::Lattice l = detail::lattice_of(region, region.address);
  const auto first =
      static_cast<std::uintptr_t>(static_cast<std::intptr_t>(region.address) + l.first);
  return {first, first + static_cast<std::uintptr_t>(l.span_end() - l.first)};
}

/// True when two different entries of the region share a byte (a stride-0 broadcast, an
/// expanded or otherwise self-overlapping view). Exact.
inline bool overlaps_itself(const MemoryRegion& region) {
  if (detail::is_empty(region))
    return false;
  const detail::Lattice l = detail::lattice_of(region, region.address);
  if (l.cells > 1 && l.cell_step < l.width)
    return true;
  if (l.lines == 1)
    return false;
  const std::int64_t line_length = (l.cells - 1) * l.cell_step + l.width;
  if (l.line_step >= line_length)
    return false;  // lines one after the other
  if (l.line_step < l.width)
    return true;
  // Interleaved lines: sort the cells' offsets and look at neighbours.
  std::vector<std::int64_t> offsets;
  offsets.reserve(static_cast<std::size_t>(l.lines * l.cells));
  for (std::int64_t i = 0; i < l.lines; ++i)
    for (std::int64_t j = 0; j < l.cells; ++j)
      offsets.push_back(i * l.line_step + j * l.cell_step);
  std::sort(offsets.begin(), offsets.end());
  for (std::size_t k = 1; k < offsets.size(); ++k)
    if (offsets[k] - offsets[k - 1] < l.width)
      return true;
  return false;
}

/// True when an entry of `a` and an entry of `b` share a byte. Exact for regions that do not
/// overlap themselves (so interleaved but disjoint views, e.g. the even and odd columns of one
/// buffer, do not overlap); cost proportional to the lines of the region with fewer of them
/// when the byte spans intersect, constant otherwise.
inline bool overlap(const MemoryRegion& a, const MemoryRegion& b) {
  if (a.space != b.space || detail::is_empty(a) || detail::is_empty(b))
    return false;
  const auto [a_first, a_last] = byte_span(a);
  const auto [b_first, b_last] = byte_span(b);
  if (a_last <= b_first || b_last <= a_first)
    return false;
  const std::uintptr_t origin = std::min(a_first, b_first);
  const detail::Lattice la = detail::lattice_of(a, origin);
  const detail::Lattice lb = detail::lattice_of(b, origin);
  auto count = [](const detail::Lattice& l) {
    return l.contiguous_lines() ? l.lines : l.lines * l.cells;
  };
  const detail::Lattice& walked = count(la) <= count(lb) ? la : lb;
  const detail::Lattice& tested = count(la) <= count(lb) ? lb : la;
  return detail::any_interval(
      walked, [&](std::int64_t x, std::int64_t y) { return detail::meets(tested, x, y); });
}

}  // namespace aclora
