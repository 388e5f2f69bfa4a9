// The conformance suite for the Eigen backend (float and double storage, three layouts,
// every precision setting: automatic and fp64 run float64, fp32 and tf32 float32).
#include <cstring>

#include "conformance_suite.hpp"

namespace aclora::conformance {
namespace {

// One matrix in a std::vector of float or double with explicit strides (padding is
// filled with a sentinel so a write outside the matrix would show in the bytes).
struct EigenHandle {
  Dtype dtype = Dtype::f64;
  std::size_t rows = 0, cols = 0;
  std::ptrdiff_t row_stride = 0, col_stride = 0;
  std::vector<float> f32;
  std::vector<double> f64;
};

struct EigenTraits {
  using backend_type = backends::EigenBackend;
  using handle_type = EigenHandle;

  static std::string skip_reason() { return {}; }
  static std::vector<Dtype> dtypes() { return {Dtype::f64, Dtype::f32}; }
  static std::vector<Layout> layouts() {
    return {Layout::row_major, Layout::col_major, Layout::padded};
  }
  static EigenHandle make(const HostMatrix& values, Dtype dtype, Layout layout) {
    EigenHandle h{dtype, values.rows, values.cols, 0, 0, {}, {}};
    std::size_t size = values.rows * values.cols;
    if (layout == Layout::row_major) {
      h.row_stride = static_cast<std::ptrdiff_t>(values.cols);
      h.col_stride = 1;
    } else if (layout == Layout::col_major) {
      h.row_stride = 1;
      h.col_stride = static_cast<std::ptrdiff_t>(values.rows);
    } else {
      h.row_stride = static_cast<std::ptrdiff_t>(values.cols + 3);
      h.col_stride = 1;
      size = values.rows * (values.cols + 3);
    }
    auto fill = [&](auto& buffer) {
      buffer.assign(size, 7.5);
      for (std::size_t i = 0; i < values.rows; ++i)
        for (std::size_t j = 0; j < values.cols; ++j)
          buffer[i * h.row_stride + j * h.col_stride] = values.at(i, j);
    };
    if (dtype == Dtype::f32)
      fill(h.f32);
    else
      fill(h.f64);
    return h;
  }
  static backends::eigen::MatrixView view(EigenHandle& h) {
    const auto rows = static_cast<std::ptrdiff_t>(h.rows);
    const auto cols = static_cast<std::ptrdiff_t>(h.cols);
    if (h.dtype == Dtype::f32)
      return {h.f32.data(), rows, cols, h.row_stride, h.col_stride};
    return {h.f64.data(), rows, cols, h.row_stride, h.col_stride};
  }
  static HostMatrix read(const EigenHandle& h) {
    HostMatrix m{h.rows, h.cols, std::vector<double>(h.rows * h.cols)};
    for (std::size_t i = 0; i < h.rows; ++i)
      for (std::size_t j = 0; j < h.cols; ++j) {
        const std::size_t at = i * h.row_stride + j * h.col_stride;
        m.at(i, j) = h.dtype == Dtype::f32 ? h.f32[at] : h.f64[at];
      }
    return m;
  }
  static std::vector<unsigned char> bytes(const EigenHandle& h) {
    const auto* begin = h.dtype == Dtype::f32
                            ? reinterpret_cast<const unsigned char*>(h.f32.data())
                            : reinterpret_cast<const unsigned char*>(h.f64.data());
    const std::size_t size = h.dtype == Dtype::f32 ? h.f32.size() * 4 : h.f64.size() * 8;
    return {begin, begin + size};
  }
  static std::optional<EigenHandle> make_unsupported(std::size_t, std::size_t) {
    return std::nullopt;  // the view's constructor only accepts float and double
  }
  static bool same_noise_as_reference() { return true; }
  static std::vector<Precision> precisions() {
    return {Precision::automatic, Precision::fp64, Precision::fp32, Precision::tf32};
  }
  static backends::EigenBackend backend(Precision precision) {
    return backends::EigenBackend({.threads = 2, .precision = precision});
  }
  static Precision resolved(Precision precision) { return backend(precision).resolved_precision(); }
};

using EigenBackends = ::testing::Types<EigenTraits>;
INSTANTIATE_TYPED_TEST_SUITE_P(Eigen, Conformance, EigenBackends);

}  // namespace
}  // namespace aclora::conformance
