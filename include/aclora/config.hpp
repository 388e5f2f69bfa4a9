/// @file config.hpp
/// @brief Portability macros shared by the core and the backends.
#pragma once

/// Marks functions callable from both host and CUDA device code (the generator, the
/// noise transform). Expands to nothing when not compiled by a CUDA compiler.
#if defined(__CUDACC__) || defined(__HIPCC__)
#define ACLORA_HOST_DEVICE __host__ __device__
#else
#define ACLORA_HOST_DEVICE
#endif
