// The conformance suite for the Torch backend: on the CPU through its two routes (its own
// kernels, and the batched tensor operations that other devices run) and, when a GPU is
// present, on CUDA; fp64, fp32, fp16 and bf16 storage; row-major, column-major and padded
// views; every precision setting.
#include <torch/cuda.h>
#include <torch/torch.h>

#include <cstring>

#include "aclora/backends/torch.hpp"
#include "conformance_suite.hpp"

namespace aclora::conformance {
namespace {

c10::ScalarType scalar_type(Dtype dtype) {
  switch (dtype) {
    case Dtype::f64:
      return at::kDouble;
    case Dtype::f32:
      return at::kFloat;
    case Dtype::f16:
      return at::kHalf;
    case Dtype::bf16:
      return at::kBFloat16;
  }
  return at::kDouble;
}

// Where the suite runs the backend: CPU tensors through the kernels or the tensor route,
// CUDA tensors (tensor route).
enum class Target { cpu_kernels, cpu_tensor_ops, cuda };

template <Target Where>
struct TorchTraits {
  using backend_type = backends::TorchBackend;
  using handle_type = at::Tensor;  // the 2-D view RESTART writes through
  static constexpr bool Cuda = Where == Target::cuda;

  static at::Device device() { return Cuda ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU); }
  static std::string skip_reason() {
    if (Cuda && !::torch::cuda::is_available())
      return "no CUDA device";
    return {};
  }
  static std::vector<Dtype> dtypes() { return {Dtype::f64, Dtype::f32, Dtype::f16, Dtype::bf16}; }
  static std::vector<Layout> layouts() {
    return {Layout::row_major, Layout::col_major, Layout::padded};
  }
  static at::Tensor make(const HostMatrix& values, Dtype dtype, Layout layout) {
    const auto rows = static_cast<std::int64_t>(values.rows);
    const auto cols = static_cast<std::int64_t>(values.cols);
    const at::Tensor source =
        at::from_blob(const_cast<double*>(values.values.data()), {rows, cols}, at::kDouble);
    const auto options = at::TensorOptions().dtype(scalar_type(dtype)).device(device());
    at::Tensor view;
    if (layout == Layout::row_major)
      view = at::empty({rows, cols}, options);
    else if (layout == Layout::col_major)
      view = at::empty({cols, rows}, options).t();
    else
      view = at::full({rows, cols + 3}, 7.5, options).narrow(1, 0, cols);
    view.copy_(source);
    return view;
  }
  static at::Tensor view(at::Tensor& handle) { return handle; }
  static HostMatrix read(const at::Tensor& handle) {
    const at::Tensor host = handle.to(at::kCPU, at::kDouble).contiguous();
    const double* data = host.data_ptr<double>();
    return HostMatrix{static_cast<std::size_t>(handle.size(0)),
                      static_cast<std::size_t>(handle.size(1)),
                      std::vector<double>(data, data + host.numel())};
  }
  // Every byte of the tensor's storage (padding included).
  static std::vector<unsigned char> bytes(const at::Tensor& handle) {
    const auto size = static_cast<std::int64_t>(handle.storage().nbytes());
    at::Tensor whole = at::empty({0}, handle.options().dtype(at::kByte));
    whole.set_(handle.storage(), 0, {size}, {1});
    const at::Tensor host = whole.to(at::kCPU).contiguous();
    const auto* begin = host.data_ptr<std::uint8_t>();
    return {begin, begin + size};
  }
  static std::optional<at::Tensor> make_unsupported(std::size_t rows, std::size_t cols) {
    return at::zeros({static_cast<std::int64_t>(rows), static_cast<std::int64_t>(cols)},
                     at::TensorOptions().dtype(at::kInt).device(device()));
  }
  static bool same_noise_as_reference() { return true; }
  static std::vector<Precision> precisions() {
    return {Precision::automatic, Precision::fp64, Precision::fp32, Precision::tf32};
  }
  static backends::TorchBackend backend(Precision precision) {
    backends::TorchBackend::Options options;
    options.precision = precision;
    options.cpu_kernels = Where == Target::cpu_kernels;
    return backends::TorchBackend(options);
  }
  // What the backend runs a request at on the suite's device.
  static Precision resolved(Precision requested) {
    return backend(requested).resolved_precision(device());
  }
};

using TorchBackends =
    ::testing::Types<TorchTraits<Target::cpu_kernels>, TorchTraits<Target::cpu_tensor_ops>,
                     TorchTraits<Target::cuda>>;
INSTANTIATE_TYPED_TEST_SUITE_P(Torch, Conformance, TorchBackends);

}  // namespace
}  // namespace aclora::conformance
