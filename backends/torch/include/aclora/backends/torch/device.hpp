/// @file device.hpp
/// @brief What the precision policy needs to know of a device: does it run float64 at full
/// rate? Read from the CUDA driver, so it works with CPU-only and CUDA builds of LibTorch.
#pragma once

#include <ATen/ATen.h>
#include <ATen/detail/CUDAHooksInterface.h>

#if defined(__linux__)
#include <dlfcn.h>
#endif

#include <map>
#include <mutex>
#include <optional>
#include <utility>

#include "aclora/precision.hpp"

namespace aclora::backends::libtorch {

/// The compute capability (major, minor) of CUDA device `index`, asked of the CUDA driver
/// (libcuda.so.1, found at run time); nothing when the driver or the device cannot say.
inline std::optional<std::pair<int, int>> cuda_compute_capability(int index) {
#if defined(__linux__)
  static std::mutex mutex;
  static std::map<int, std::optional<std::pair<int, int>>> known;
  const std::lock_guard lock(mutex);
  if (const auto found = known.find(index); found != known.end())
    return found->second;
  std::optional<std::pair<int, int>> result;
  // LibTorch has loaded the driver when it holds CUDA tensors; RTLD_NOLOAD would refuse a
  // first load, so open it normally (a reference count, no second copy).
  if (void* driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL)) {
    using Init = int (*)(unsigned);
    using DeviceGet = int (*)(int*, int);
    using Attribute = int (*)(int*, int, int);
    const auto init = reinterpret_cast<Init>(dlsym(driver, "cuInit"));
    const auto device_get = reinterpret_cast<DeviceGet>(dlsym(driver, "cuDeviceGet"));
    const auto attribute = reinterpret_cast<Attribute>(dlsym(driver, "cuDeviceGetAttribute"));
    constexpr int major_attribute = 75;  // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
    constexpr int minor_attribute = 76;  // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR
    int device = 0, major = 0, minor = 0;
    if (init && device_get && attribute && init(0) == 0 && device_get(&device, index) == 0 &&
        attribute(&major, major_attribute, device) == 0 &&
        attribute(&minor, minor_attribute, device) == 0) {
      result = std::pair(major, minor);
    }
    dlclose(driver);
  }
  known[index] = result;
  return result;
#else
  (void)index;
  return std::nullopt;
#endif
}

/// True for CPUs and for CUDA devices whose float64 runs at full rate
/// (aclora::full_rate_float64 of their compute capability); false for every other device,
/// and for a CUDA device whose capability cannot be read.
inline bool full_rate_float64_device(const at::Device& device) {
  if (device.is_cpu())
    return true;
  if (device.is_cuda()) {
    const int index = device.index() >= 0
                          ? device.index()
                          : static_cast<int>(at::detail::getCUDAHooks().current_device());
    const auto capability = cuda_compute_capability(index);
    return capability && full_rate_float64(capability->first, capability->second);
  }
  return false;
}

/// What a precision request runs at on `device`: automatic resolved by the device's
/// float64 rate; tf32 only on CUDA devices (elsewhere fp32, which it equals there).
inline Precision resolve_precision_on(Precision requested, const at::Device& device) {
  const Precision resolved = resolve_precision(requested, full_rate_float64_device(device));
  return resolved == Precision::tf32 && !device.is_cuda() ? Precision::fp32 : resolved;
}

}  // namespace aclora::backends::libtorch
