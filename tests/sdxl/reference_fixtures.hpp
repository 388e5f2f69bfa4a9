// Access to the tiny SDXL reference fixtures (tests/fixtures/sdxl, made by
// tests/fixtures/make_sdxl_fixtures.py) shared by the SDXL tests.
#pragma once

#include <torch/torch.h>

#include <aclora/adapters/safetensors.hpp>

#include <filesystem>
#include <string>
#include <vector>

namespace sdxl_test {

/// tests/fixtures/sdxl
inline std::filesystem::path sdxl_fixtures() {
  return std::filesystem::path(ACLORA_FIXTURES_DIR) / "sdxl";
}

/// A tensor of reference.safetensors as fp32.
inline torch::Tensor reference_tensor(const std::string& name) {
  static const auto file =
      aclora::safetensors::Reader::open(sdxl_fixtures() / "reference.safetensors");
  std::vector<float> values = file.to_f32(name);
  return torch::tensor(values).reshape(file.tensor(name).shape);
}

/// max |actual - expected| / max |expected|
inline double relative_error(const torch::Tensor& actual, const torch::Tensor& expected) {
  return ((actual.to(torch::kFloat32) - expected).abs().max() / expected.abs().max())
      .item<double>();
}

/// |actual - expected| / |expected| in the Frobenius norm, computed in fp64.
inline double relative_norm_error(const torch::Tensor& actual, const torch::Tensor& expected) {
  const torch::Tensor wanted = expected.to(torch::kFloat64);
  return ((actual.to(torch::kFloat64) - wanted).norm() / wanted.norm()).item<double>();
}

}  // namespace sdxl_test
