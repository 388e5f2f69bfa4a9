#include "evidence/module_file.hpp"

#include <aclora/adapters/safetensors.hpp>
#include <aclora/adapters/train/tensor_io.hpp>

#include <set>
#include <stdexcept>
#include <vector>

namespace evidence {
namespace {

namespace st = aclora::safetensors;

// Parameters and buffers by qualified name.
std::vector<std::pair<std::string, torch::Tensor>> named_tensors(const torch::nn::Module& module) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : module.named_parameters())
    out.emplace_back(item.key(), item.value());
  for (const auto& item : module.named_buffers())
    out.emplace_back(item.key(), item.value());
  return out;
}

}  // namespace

void save_module(const torch::nn::Module& module, const std::filesystem::path& file,
                 const std::map<std::string, std::string>& metadata) {
  st::Writer writer;
  for (const auto& [key, value] : metadata)
    writer.set_metadata(key, value);
  try {
    for (const auto& [name, tensor] : named_tensors(module))
      aclora::train::add_tensor(writer, name, tensor.detach().to(torch::kCPU, torch::kFloat32));
    writer.write(file);
  } catch (const st::Error& error) {
    throw std::runtime_error(file.string() + ": " + error.what());
  }
}

std::map<std::string, std::string> load_module(torch::nn::Module& module,
                                               const std::filesystem::path& file,
                                               const std::string& expected) {
  const std::string where = file.string() + ": ";
  try {
    const st::Reader reader = st::Reader::open(file);
    std::set<std::string> known;
    std::vector<std::pair<torch::Tensor, torch::Tensor>> copies;
    for (auto& [key, target] : named_tensors(module)) {
      known.insert(key);
      if (!reader.contains(key))
        throw std::runtime_error(where + "no tensor '" + key + "' (not " + expected + "?)");
      const st::TensorView& view = reader.tensor(key);
      if (view.dtype != st::Dtype::F32)
        throw std::runtime_error(where + "tensor '" + key + "' is " +
                                 std::string(st::dtype_name(view.dtype)) + ", expected F32");
      const std::vector<int64_t> shape(target.sizes().begin(), target.sizes().end());
      if (view.shape != shape)
        throw std::runtime_error(where + "tensor '" + key + "' has shape " +
                                 c10::str(c10::IntArrayRef(view.shape)) + ", expected " +
                                 c10::str(target.sizes()) + " (" + expected + ")");
      copies.emplace_back(target, aclora::train::tensor_from(view));
    }
    for (const std::string& name : reader.names())
      if (!known.count(name))
        throw std::runtime_error(where + "unexpected tensor '" + name + "' (not " + expected +
                                 "?)");
    torch::NoGradGuard no_grad;
    for (auto& [target, value] : copies)
      target.copy_(value);
    std::map<std::string, std::string> metadata;
    for (const auto& [key, value] : reader.metadata())
      metadata[key] = value;
    return metadata;
  } catch (const st::Error& error) {
    throw std::runtime_error(where + error.what());
  }
}

}  // namespace evidence
