/// @file autocast.hpp
/// The autocast switches of CPU and CUDA as one value, and a scope that sets them (LibTorch
/// 2.4 replaced the per-device functions with ones taking the device type).
#pragma once

#include <ATen/autocast_mode.h>
#include <torch/version.h>

namespace sdxl {

/// The autocast switches and dtypes of CPU and CUDA.
struct AutocastState {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  /// The current switches.
  static AutocastState current() {
    return {at::autocast::is_autocast_enabled(at::kCPU), at::autocast::get_autocast_dtype(at::kCPU),
            at::autocast::is_autocast_enabled(at::kCUDA),
            at::autocast::get_autocast_dtype(at::kCUDA)};
  }
  /// Sets these switches.
  void apply() const {
    at::autocast::set_autocast_enabled(at::kCPU, cpu_enabled);
    at::autocast::set_autocast_dtype(at::kCPU, cpu_dtype);
    at::autocast::set_autocast_enabled(at::kCUDA, gpu_enabled);
    at::autocast::set_autocast_dtype(at::kCUDA, gpu_dtype);
  }
#else
  /// The current switches.
  static AutocastState current() {
    return {at::autocast::is_cpu_enabled(), at::autocast::get_autocast_cpu_dtype(),
            at::autocast::is_enabled(), at::autocast::get_autocast_gpu_dtype()};
  }
  /// Sets these switches.
  void apply() const {
    at::autocast::set_cpu_enabled(cpu_enabled);
    at::autocast::set_autocast_cpu_dtype(cpu_dtype);
    at::autocast::set_enabled(gpu_enabled);
    at::autocast::set_autocast_gpu_dtype(gpu_dtype);
  }
#endif
  /// Autocast on for `device` (CPU or CUDA) in `dtype`, off for the other.
  static AutocastState on(bool cuda, at::ScalarType dtype) {
    AutocastState state = current();
    state.cpu_enabled = !cuda;
    state.gpu_enabled = cuda;
    (cuda ? state.gpu_dtype : state.cpu_dtype) = dtype;
    return state;
  }

  bool cpu_enabled;          ///< CPU autocast on
  at::ScalarType cpu_dtype;  ///< its lower precision
  bool gpu_enabled;          ///< CUDA autocast on
  at::ScalarType gpu_dtype;  ///< its lower precision
};

/// Sets an autocast state until the end of the scope; then the previous one, and the cast
/// cache is cleared when autocast ends.
class AutocastScope {
 public:
  /// Sets `wanted`.
  explicit AutocastScope(const AutocastState& wanted) : saved_(AutocastState::current()) {
    wanted.apply();
  }
  ~AutocastScope() {
    saved_.apply();
    if (!saved_.cpu_enabled && !saved_.gpu_enabled)
      at::autocast::clear_cache();
  }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  AutocastState saved_;
};

}  // namespace sdxl
