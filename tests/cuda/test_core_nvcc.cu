// The core headers compile under nvcc (C++20), and the noise generator called from device
// code (as the CUDA backend's writing kernel does) yields the host's draws.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "aclora/aclora.hpp"

namespace {

static_assert(aclora::mix64(0) != 0, "constexpr core functions evaluate under nvcc");
static_assert(aclora::module_identity("a", 0) != aclora::module_identity("b", 0));

__global__ void draw_kernel(aclora::NoiseKey key, std::uint64_t first_block, int blocks, float* f32,
                            double* f64) {
  const int b = blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= blocks)
    return;
  aclora::gaussian_block<float>(key, first_block + b, f32 + 4 * b);
  aclora::gaussian_block<double>(key, first_block + b, f64 + 4 * b);
}

bool gpu_available() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return count > 0;
}

// Philox is bit-exact on both sides; Box-Muller differs only by the device's libm rounding.
TEST(CoreUnderNvcc, DeviceDrawsMatchHostDraws) {
  if (!gpu_available())
    GTEST_SKIP() << "no CUDA device: device test skipped";
  const aclora::NoiseKey key = aclora::noise_key(1234, 2, aclora::module_identity("m", 0), 1);
  const int blocks = 4096;
  const std::uint64_t first = (std::uint64_t{1} << 32) - 100;  // crosses the 32-bit word
  float* f32 = nullptr;
  double* f64 = nullptr;
  ASSERT_EQ(cudaMalloc(&f32, blocks * 4 * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&f64, blocks * 4 * sizeof(double)), cudaSuccess);
  draw_kernel<<<(blocks + 255) / 256, 256>>>(key, first, blocks, f32, f64);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<float> device32(blocks * 4);
  std::vector<double> device64(blocks * 4);
  ASSERT_EQ(cudaMemcpy(device32.data(), f32, device32.size() * 4, cudaMemcpyDeviceToHost),
            cudaSuccess);
  ASSERT_EQ(cudaMemcpy(device64.data(), f64, device64.size() * 8, cudaMemcpyDeviceToHost),
            cudaSuccess);
  cudaFree(f32);
  cudaFree(f64);
  double worst32 = 0.0, worst64 = 0.0;
  for (int b = 0; b < blocks; ++b) {
    float h32[4];
    double h64[4];
    aclora::gaussian_block<float>(key, first + b, h32);
    aclora::gaussian_block<double>(key, first + b, h64);
    for (int l = 0; l < 4; ++l) {
      worst32 = std::max(worst32, static_cast<double>(std::abs(h32[l] - device32[4 * b + l])));
      worst64 = std::max(worst64, std::abs(h64[l] - device64[4 * b + l]));
    }
  }
  EXPECT_LT(worst32, 1e-5);
  EXPECT_LT(worst64, 1e-12);
}

}  // namespace
