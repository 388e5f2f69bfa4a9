// The conformance suite for the raw CUDA backend (fp64, fp32, fp16 and bf16 storage in device
// memory; row-major, column-major and padded views) at each precision setting: automatic (as
// this device resolves it), fp64, fp32 and tf32. Every test skips without a GPU.
// Built by tests/cuda/CMakeLists.txt when both aclora::cuda and aclora::eigen exist.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <memory>
#include <stdexcept>
#include <string>

#include "aclora/backends/cuda.cuh"
#include "conformance_suite.hpp"

namespace aclora::conformance {
namespace {

namespace cu = backends::cuda;

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess)
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
}

// One matrix in device memory (or, for the unsupported case, in host memory) with explicit
// strides; padding holds a sentinel so writes outside the matrix show in the bytes.
struct CudaHandle {
  cu::DType dtype = cu::DType::f32;
  std::int64_t rows = 0, cols = 0, row_stride = 0, col_stride = 0;
  std::size_t bytes = 0;
  std::shared_ptr<void> device;              // cudaFree on release
  std::shared_ptr<std::vector<float>> host;  // only for make_unsupported
  void* data() const { return device ? device.get() : host->data(); }
};

cu::DType storage(Dtype dtype) {
  switch (dtype) {
    case Dtype::f16:
      return cu::DType::f16;
    case Dtype::bf16:
      return cu::DType::bf16;
    case Dtype::f64:
      return cu::DType::f64;
    default:
      return cu::DType::f32;
  }
}

std::vector<unsigned char> encode(const std::vector<double>& values, cu::DType dtype) {
  std::vector<unsigned char> out(values.size() * cu::dtype_bytes(dtype));
  for (std::size_t i = 0; i < values.size(); ++i) {
    const auto f = static_cast<float>(values[i]);
    if (dtype == cu::DType::f64)
      reinterpret_cast<double*>(out.data())[i] = values[i];
    else if (dtype == cu::DType::f32)
      reinterpret_cast<float*>(out.data())[i] = f;
    else if (dtype == cu::DType::f16)
      reinterpret_cast<__half*>(out.data())[i] = __float2half_rn(f);
    else
      reinterpret_cast<__nv_bfloat16*>(out.data())[i] = __float2bfloat16_rn(f);
  }
  return out;
}

double decode(const unsigned char* bytes, cu::DType dtype, std::size_t i) {
  if (dtype == cu::DType::f64)
    return reinterpret_cast<const double*>(bytes)[i];
  if (dtype == cu::DType::f32)
    return reinterpret_cast<const float*>(bytes)[i];
  if (dtype == cu::DType::f16)
    return __half2float(reinterpret_cast<const __half*>(bytes)[i]);
  return __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(bytes)[i]);
}

struct CudaTraits {
  using backend_type = backends::CudaBackend;
  using handle_type = CudaHandle;

  static std::string skip_reason() {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
      cudaGetLastError();
      return "no CUDA device";
    }
    return {};
  }
  static std::vector<Dtype> dtypes() { return {Dtype::f32, Dtype::f64, Dtype::f16, Dtype::bf16}; }
  static std::vector<Precision> precisions() {
    return {Precision::automatic, Precision::fp64, Precision::fp32, Precision::tf32};
  }
  // What a setting runs at on this device (automatic: fp64 with full-rate float64, else fp32).
  static Precision resolved(Precision requested) { return cu::device_precision(requested); }
  static backends::CudaBackend backend(Precision precision) {
    backends::CudaBackend::Options options;
    options.precision = precision;
    return backends::CudaBackend(options);
  }
  static std::vector<Layout> layouts() {
    return {Layout::row_major, Layout::col_major, Layout::padded};
  }
  static CudaHandle make(const HostMatrix& values, Dtype dtype, Layout layout) {
    CudaHandle h;
    h.dtype = storage(dtype);
    h.rows = static_cast<std::int64_t>(values.rows);
    h.cols = static_cast<std::int64_t>(values.cols);
    std::size_t elements = values.rows * values.cols;
    if (layout == Layout::row_major) {
      h.row_stride = h.cols, h.col_stride = 1;
    } else if (layout == Layout::col_major) {
      h.row_stride = 1, h.col_stride = h.rows;
    } else {
      h.row_stride = h.cols + 3, h.col_stride = 1;
      elements = values.rows * (values.cols + 3);
    }
    std::vector<double> full(elements, 7.5);
    for (std::int64_t i = 0; i < h.rows; ++i)
      for (std::int64_t j = 0; j < h.cols; ++j)
        full[i * h.row_stride + j * h.col_stride] = values.at(i, j);
    const std::vector<unsigned char> encoded = encode(full, h.dtype);
    h.bytes = encoded.size();
    void* data = nullptr;
    check(cudaMalloc(&data, h.bytes), "cudaMalloc");
    h.device = std::shared_ptr<void>(data, [](void* p) { cudaFree(p); });
    check(cudaMemcpy(data, encoded.data(), h.bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
    return h;
  }
  static cu::DeviceMatrix view(CudaHandle& h) {
    return cu::DeviceMatrix(h.data(), h.dtype, h.rows, h.cols, h.row_stride, h.col_stride);
  }
  static std::vector<unsigned char> bytes(const CudaHandle& h) {
    std::vector<unsigned char> out(h.bytes);
    if (h.device) {
      check(cudaMemcpy(out.data(), h.device.get(), h.bytes, cudaMemcpyDeviceToHost), "cudaMemcpy");
    } else {
      std::memcpy(out.data(), h.host->data(), h.bytes);
    }
    return out;
  }
  static HostMatrix read(const CudaHandle& h) {
    const std::vector<unsigned char> raw = bytes(h);
    HostMatrix m{static_cast<std::size_t>(h.rows), static_cast<std::size_t>(h.cols), {}};
    m.values.resize(m.rows * m.cols);
    for (std::int64_t i = 0; i < h.rows; ++i)
      for (std::int64_t j = 0; j < h.cols; ++j)
        m.at(i, j) = decode(raw.data(), h.dtype, i * h.row_stride + j * h.col_stride);
    return m;
  }
  // Host memory: check() rejects it ("host memory").
  static std::optional<CudaHandle> make_unsupported(std::size_t rows, std::size_t cols) {
    CudaHandle h;
    h.rows = static_cast<std::int64_t>(rows);
    h.cols = static_cast<std::int64_t>(cols);
    h.row_stride = h.cols;
    h.col_stride = 1;
    h.host = std::make_shared<std::vector<float>>(rows * cols, 1.0f);
    h.bytes = rows * cols * sizeof(float);
    return h;
  }
  // The contract's Philox stream (the float transform for fp32 and tf32, the double one for
  // fp64).
  static bool same_noise_as_reference() { return true; }
};

using CudaBackends = ::testing::Types<CudaTraits>;
INSTANTIATE_TYPED_TEST_SUITE_P(Cuda, Conformance, CudaBackends);

}  // namespace
}  // namespace aclora::conformance
