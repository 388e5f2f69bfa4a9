/// @file blas_threads.hpp
/// @brief aclora::backends::libtorch::SingleThreadedOpenBlas: OpenBLAS held to one thread
/// while the CPU route's workers call LAPACK.
///
/// Why: each CPU worker solves its layers' R x R eigenproblems with at::linalg_eigh, i.e.
/// LAPACK from the BLAS LibTorch was linked with. An OpenBLAS (Debian's default BLAS once
/// installed) then runs its own threads inside every worker: on 2 cores, one RESTART of the
/// SDXL LoRA at r = 64 took 6.2 s that way and 1.7 s with OpenBLAS held to one thread. The
/// setting is process-wide in OpenBLAS, so it is restored as soon as the analysis ends.
/// Without OpenBLAS in the process (the reference BLAS, MKL) this does nothing.
#pragma once

#if defined(__unix__) || defined(__APPLE__)
#include <dlfcn.h>
#endif

namespace aclora::backends::libtorch {

/// While alive, OpenBLAS (when the process has it) uses one thread; the previous count
/// comes back on destruction.
class SingleThreadedOpenBlas {
 public:
  SingleThreadedOpenBlas() {
#if defined(__unix__) || defined(__APPLE__)
    get_ = reinterpret_cast<GetThreads>(::dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
    set_ = reinterpret_cast<SetThreads>(::dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
#endif
    if (get_ != nullptr && set_ != nullptr) {
      previous_ = get_();
      if (previous_ > 1)
        set_(1);
    }
  }
  ~SingleThreadedOpenBlas() {
    if (set_ != nullptr && previous_ > 1)
      set_(previous_);
  }
  SingleThreadedOpenBlas(const SingleThreadedOpenBlas&) = delete;
  SingleThreadedOpenBlas& operator=(const SingleThreadedOpenBlas&) = delete;

  /// OpenBLAS's thread count before this guard (0 when the process has no OpenBLAS).
  int previous_threads() const {
    return previous_;
  }

 private:
  using GetThreads = int (*)();
  using SetThreads = void (*)(int);
  GetThreads get_ = nullptr;
  SetThreads set_ = nullptr;
  int previous_ = 0;
};

}  // namespace aclora::backends::libtorch
