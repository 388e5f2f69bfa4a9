// The backend conformance suite (tests/conformance) run against the CUDA backend's plan,
// passes and kernels executed on the host (emulated_backend.hpp), once per precision setting
// (fp64, fp32, tf32): the full RESTART path through the core driver, compared with the Eigen
// reference, on machines without a GPU. The real device run is test_conformance_cuda.
#include "emulated_backend.hpp"
// (the emulation header must precede everything that might include CUDA kernels)

#include <cstring>
#include <memory>
#include <span>
#include <string>

#include "aclora/backends/cuda/matrix.cuh"
#include "conformance_suite.hpp"

namespace aclora::conformance {
namespace {

namespace cu = backends::cuda;
using cuda_test::EmulatedBackend;

// A Backend over host memory that runs the CUDA backend's planning, passes and kernels in
// a resolved precision (fp64, fp32 or tf32).
class EmulatedCuda {
 public:
  explicit EmulatedCuda(Precision precision = Precision::fp32) : precision_(precision) {}
  using matrix_type = cu::DeviceMatrix;
  struct Analysis {
    std::shared_ptr<EmulatedBackend> state;
  };
  using analysis_type = Analysis;

  static MatrixShape shape(const matrix_type& m) {
    return {static_cast<std::size_t>(m.rows()), static_cast<std::size_t>(m.cols())};
  }
  static std::string check(const matrix_type& m) { return cu::check_view(m); }
  static std::string check(const Layer<matrix_type>& layer) {
    return cu::check_layer_view(layer.matrix, layer.axis);
  }
  static MemoryRegion memory(const matrix_type& m) {
    MemoryRegion region = cu::memory_region(m);
    region.space = 0;  // host memory stands in for the device's
    return region;
  }

  Analysis analyze(std::span<const Layer<matrix_type>> layers, std::span<LayerSpectrum> spectra) {
    std::vector<cu::PlanInput> inputs;
    for (const auto& layer : layers) {
      const matrix_type& m = layer.matrix;
      inputs.push_back(
          {m.data(), m.dtype(),
           cu::rank_major_view(m.rows(), m.cols(), m.row_stride(), m.col_stride(), layer.axis)});
    }
    auto state = std::make_shared<EmulatedBackend>(inputs, std::size_t{1} << 30, precision_);
    const std::vector<LayerSpectrum> result = state->analyze();
    std::copy(result.begin(), result.end(), spectra.begin());
    return {state};
  }
  void apply(std::span<const Layer<matrix_type>>, Analysis& analysis,
             std::span<const LayerPlan> plans) {
    analysis.state->apply(std::vector<LayerPlan>(plans.begin(), plans.end()));
  }

 private:
  Precision precision_;
};
static_assert(Backend<EmulatedCuda>);
static_assert(DescribesMemory<EmulatedCuda>);

// A matrix in host memory with explicit strides; padding holds a sentinel.
struct HostHandle {
  cu::DType dtype = cu::DType::f32;
  std::int64_t rows = 0, cols = 0, row_stride = 0, col_stride = 0;
  std::shared_ptr<std::vector<unsigned char>> bytes;  // null: an unsupported (null) view
};

cu::DType storage(Dtype dtype) {
  return dtype == Dtype::f16    ? cu::DType::f16
         : dtype == Dtype::bf16 ? cu::DType::bf16
         : dtype == Dtype::f64  ? cu::DType::f64
                                : cu::DType::f32;
}

struct EmulatedTraits {
  using backend_type = EmulatedCuda;
  using handle_type = HostHandle;

  static std::string skip_reason() { return {}; }
  // `automatic` resolves to fp32 as on a GPU without full-rate float64 (GeForce and the like);
  // on full-rate GPUs it is the fp64 setting, tested here as such.
  static std::vector<Precision> precisions() {
    return {Precision::automatic, Precision::fp64, Precision::tf32};
  }
  static Precision resolved(Precision requested) { return resolve_precision(requested, false); }
  static EmulatedCuda backend(Precision requested) { return EmulatedCuda(resolved(requested)); }
  static std::vector<Dtype> dtypes() { return {Dtype::f32, Dtype::f64, Dtype::f16, Dtype::bf16}; }
  static std::vector<Layout> layouts() {
    return {Layout::row_major, Layout::col_major, Layout::padded};
  }
  static HostHandle make(const HostMatrix& values, Dtype dtype, Layout layout) {
    const auto rows = static_cast<std::int64_t>(values.rows);
    const auto cols = static_cast<std::int64_t>(values.cols);
    const cuda_test::Layout host_layout = layout == Layout::row_major ? cuda_test::Layout::row_major
                                          : layout == Layout::col_major
                                              ? cuda_test::Layout::col_major
                                              : cuda_test::Layout::padded;
    cuda_test::HostStorage storage_(values.values, rows, cols, storage(dtype), host_layout);
    // Sentinel in the padding, as the other backends' handles do.
    if (layout == Layout::padded) {
      for (std::int64_t i = 0; i < rows; ++i)
        for (std::int64_t j = cols; j < cols + 3; ++j)
          storage_.set(i * storage_.row_stride + j, 7.5);
    }
    HostHandle h{storage(dtype),
                 rows,
                 cols,
                 storage_.row_stride,
                 storage_.col_stride,
                 std::make_shared<std::vector<unsigned char>>(std::move(storage_.bytes))};
    return h;
  }
  static cu::DeviceMatrix view(HostHandle& h) {
    return cu::DeviceMatrix(h.bytes ? h.bytes->data() : nullptr, h.dtype, h.rows, h.cols,
                            h.row_stride, h.col_stride);
  }
  static HostMatrix read(const HostHandle& h) {
    HostMatrix m{static_cast<std::size_t>(h.rows), static_cast<std::size_t>(h.cols), {}};
    m.values.resize(m.rows * m.cols);
    for (std::int64_t i = 0; i < h.rows; ++i)
      for (std::int64_t j = 0; j < h.cols; ++j) {
        const std::int64_t at = i * h.row_stride + j * h.col_stride;
        const unsigned char* p = h.bytes->data();
        m.at(i, j) = h.dtype == cu::DType::f64   ? reinterpret_cast<const double*>(p)[at]
                     : h.dtype == cu::DType::f32 ? reinterpret_cast<const float*>(p)[at]
                     : h.dtype == cu::DType::f16
                         ? __half2float(reinterpret_cast<const __half*>(p)[at])
                         : __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(p)[at]);
      }
    return m;
  }
  static std::vector<unsigned char> bytes(const HostHandle& h) {
    return h.bytes ? *h.bytes : std::vector<unsigned char>{};
  }
  // A null view: check() rejects it.
  static std::optional<HostHandle> make_unsupported(std::size_t rows, std::size_t cols) {
    return HostHandle{cu::DType::f32,
                      static_cast<std::int64_t>(rows),
                      static_cast<std::int64_t>(cols),
                      static_cast<std::int64_t>(cols),
                      1,
                      nullptr};
  }
  static bool same_noise_as_reference() { return true; }
};

using EmulatedBackends = ::testing::Types<EmulatedTraits>;
INSTANTIATE_TYPED_TEST_SUITE_P(CudaEmulated, Conformance, EmulatedBackends);

}  // namespace
}  // namespace aclora::conformance
