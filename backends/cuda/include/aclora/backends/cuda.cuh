/// @file cuda.cuh
/// @brief The CUDA backend: `aclora::Restart<aclora::backends::CudaBackend>` over device memory
/// (aclora::backends::cuda::DeviceMatrix). Compile with nvcc (C++20) and link
/// aclora::cuda (cudart, cuBLAS, cuSOLVER).
#pragma once

#include "aclora/aclora.hpp"
#include "aclora/backends/cuda/backend.cuh"
