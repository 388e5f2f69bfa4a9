#pragma once
// Helpers shared by the LoRA format tests: fixture paths and merged updates.

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "aclora/adapters/lora.hpp"
#include "aclora/adapters/safetensors.hpp"

namespace aclora::test {

/// tests/fixtures/lora (made by tests/fixtures/make_lora_fixtures.py).
inline std::filesystem::path lora_fixtures() {
  return std::filesystem::path(ACLORA_TEST_DATA_DIR) / ".." / ".." / "fixtures" / "lora";
}

/// dW = alpha / r * up @ down in double, row-major [out, in * kh * kw].
inline std::vector<double> merged_update(const lora::LoraModule& module) {
  const auto down = safetensors::convert_to<double>(module.down);
  const auto up = safetensors::convert_to<double>(module.up);
  const std::size_t r = module.rank, in = module.in_features, out = module.out_features;
  std::vector<double> dw(out * in, 0.0);
  for (std::size_t i = 0; i < out; ++i)
    for (std::size_t k = 0; k < r; ++k) {
      const double u = up[i * r + k] * module.scale();
      for (std::size_t j = 0; j < in; ++j)
        dw[i * in + j] += u * down[k * in + j];
    }
  return dw;
}

/// ||a - b|| / ||b|| (Frobenius); a and b of equal size.
inline double relative_difference(const std::vector<double>& a, const std::vector<double>& b) {
  double diff = 0.0, norm = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff += (a[i] - b[i]) * (a[i] - b[i]);
    norm += b[i] * b[i];
  }
  return norm > 0.0 ? std::sqrt(diff / norm) : std::sqrt(diff);
}

}  // namespace aclora::test
