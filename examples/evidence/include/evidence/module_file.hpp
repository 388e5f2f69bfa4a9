/// @file module_file.hpp
/// The parameters (and buffers) of a LibTorch module as a safetensors file: how the
/// experiment commits its classifier and its base model.
#pragma once

#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <string>

namespace evidence {

/// Writes every parameter and buffer of `module` as F32, keyed by its qualified name
/// ("conv1.weight"), with `metadata`, atomically (a temporary file renamed into place).
/// @throws std::runtime_error naming the file when it cannot be written.
void save_module(const torch::nn::Module& module, const std::filesystem::path& file,
                 const std::map<std::string, std::string>& metadata);

/// Copies the tensors of `file` into the parameters and buffers of `module` (same names,
/// shapes, F32), and returns the file's metadata. Every tensor is checked before any is
/// copied, so on an error `module` is unchanged.
/// @throws std::runtime_error "<file>: <problem>" for an unreadable file, a missing or
/// unexpected key, or a tensor of another shape or dtype (naming the key); `expected` is
/// said in those messages ("a classifier of 20 classes").
std::map<std::string, std::string> load_module(torch::nn::Module& module,
                                               const std::filesystem::path& file,
                                               const std::string& expected);

}  // namespace evidence
