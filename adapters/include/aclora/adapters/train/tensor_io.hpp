/// @file tensor_io.hpp
/// @brief torch::Tensor <-> safetensors entries, bytes unchanged (exact round trips).
#pragma once

#include <torch/torch.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "aclora/adapters/safetensors/dtype.hpp"
#include "aclora/adapters/safetensors/tensor_view.hpp"
#include "aclora/adapters/safetensors/writer.hpp"
#include "aclora/adapters/train/network.hpp"

namespace aclora::train {

/// The safetensors dtype of a torch dtype. @throws Error for a dtype safetensors lacks.
inline safetensors::Dtype safetensors_dtype(c10::ScalarType type) {
  using safetensors::Dtype;
  switch (type) {
    case c10::ScalarType::Float:
      return Dtype::F32;
    case c10::ScalarType::Double:
      return Dtype::F64;
    case c10::ScalarType::Half:
      return Dtype::F16;
    case c10::ScalarType::BFloat16:
      return Dtype::BF16;
    case c10::ScalarType::Long:
      return Dtype::I64;
    case c10::ScalarType::Int:
      return Dtype::I32;
    case c10::ScalarType::Byte:
      return Dtype::U8;
    case c10::ScalarType::Bool:
      return Dtype::BOOL;
    default:
      throw Error(std::string("no safetensors dtype for ") + c10::toString(type));
  }
}

/// The torch dtype of a safetensors dtype. @throws Error for one LibTorch lacks here.
inline c10::ScalarType torch_dtype(safetensors::Dtype dtype) {
  using safetensors::Dtype;
  switch (dtype) {
    case Dtype::F32:
      return c10::ScalarType::Float;
    case Dtype::F64:
      return c10::ScalarType::Double;
    case Dtype::F16:
      return c10::ScalarType::Half;
    case Dtype::BF16:
      return c10::ScalarType::BFloat16;
    case Dtype::I64:
      return c10::ScalarType::Long;
    case Dtype::I32:
      return c10::ScalarType::Int;
    case Dtype::U8:
      return c10::ScalarType::Byte;
    case Dtype::BOOL:
      return c10::ScalarType::Bool;
    default:
      throw Error("tensor dtype " + std::string(safetensors::dtype_name(dtype)) +
                  " is not used in training states");
  }
}

namespace detail {

// `tensor` on the CPU, contiguous, with its bytes and shape (for the safetensors writer).
struct HostBytes {
  torch::Tensor host;
  std::span<const std::byte> bytes;
  std::vector<std::int64_t> shape;

  explicit HostBytes(const torch::Tensor& tensor)
      : host(tensor.detach().to(torch::kCPU).contiguous()),
        bytes(static_cast<const std::byte*>(host.data_ptr()),
              static_cast<std::size_t>(host.numel()) * host.element_size()),
        shape(host.sizes().begin(), host.sizes().end()) {}
};

}  // namespace detail

/// Adds `tensor` (any device; copied to the CPU, bytes as stored) to `writer` as `name`.
inline void add_tensor(safetensors::Writer& writer, const std::string& name,
                       const torch::Tensor& tensor) {
  detail::HostBytes data(tensor);
  writer.add(name, safetensors_dtype(data.host.scalar_type()), std::move(data.shape), data.bytes);
}

/// Adds `tensor` without copying when it is a contiguous CPU tensor: `keep` receives the
/// tensor whose bytes the writer refers to, and must hold it until the file is written.
inline void add_tensor_view(safetensors::Writer& writer, const std::string& name,
                            const torch::Tensor& tensor, std::vector<torch::Tensor>& keep) {
  detail::HostBytes data(tensor);
  keep.push_back(data.host);
  writer.add_view(name, safetensors_dtype(data.host.scalar_type()), std::move(data.shape),
                  data.bytes);
}

/// A CPU tensor holding a copy of `view`'s bytes, with its dtype and shape.
inline torch::Tensor tensor_from(const safetensors::TensorView& view) {
  torch::Tensor out =
      torch::empty(view.shape, torch::TensorOptions().dtype(torch_dtype(view.dtype)));
  if (!view.bytes.empty())
    std::memcpy(out.data_ptr(), view.bytes.data(), view.bytes.size());
  return out;
}

/// A CPU tensor over `view`'s bytes (no copy: valid while the file's Reader lives; read
/// only). Unaligned data is copied.
inline torch::Tensor tensor_view(const safetensors::TensorView& view) {
  const auto dtype = torch_dtype(view.dtype);
  const auto address = reinterpret_cast<std::uintptr_t>(view.bytes.data());
  if (view.bytes.empty() || address % c10::elementSize(dtype) != 0)
    return tensor_from(view);
  return torch::from_blob(const_cast<std::byte*>(view.bytes.data()), view.shape,
                          torch::TensorOptions().dtype(dtype));
}

}  // namespace aclora::train
