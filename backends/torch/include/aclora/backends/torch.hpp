/// @file torch.hpp
/// @brief The LibTorch backend: `aclora::Restart<aclora::backends::TorchBackend>` over the
/// user's torch::Tensor parameters (CPU or CUDA; fp32, fp64, fp16, bf16 storage).
#pragma once

#include "aclora/aclora.hpp"
#include "aclora/backends/torch/backend.hpp"
