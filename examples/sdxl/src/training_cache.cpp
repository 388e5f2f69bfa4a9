#include "sdxl/training_cache.hpp"

#include <aclora/adapters/io/checksum.hpp>
#include <aclora/adapters/safetensors.hpp>
#include <aclora/adapters/train/tensor_io.hpp>

#include <stdexcept>

#include "sdxl/image_file.hpp"

namespace sdxl {
namespace {

namespace fs = std::filesystem;
namespace st = aclora::safetensors;

constexpr const char* kKeyField = "aclora_cache_key";
constexpr int kCacheVersion = 1;

// The stored tensors of `path` when its key equals `key`, else empty.
std::map<std::string, torch::Tensor> read_entry(const fs::path& path, const std::string& key) {
  std::error_code error;
  if (!fs::exists(path, error))
    return {};
  try {
    const auto reader = st::Reader::open(path);
    const auto found = reader.metadata().find(kKeyField);
    if (found == reader.metadata().end() || found->second != key)
      return {};
    std::map<std::string, torch::Tensor> tensors;
    for (const auto& view : reader.tensors())
      tensors[view.name] = aclora::train::tensor_from(view);
    return tensors;
  } catch (const st::Error&) {
    return {};  // a damaged entry is recomputed
  }
}

void write_entry(const fs::path& path, const std::string& key,
                 const std::map<std::string, torch::Tensor>& tensors) {
  st::Writer writer;
  writer.set_metadata(kKeyField, key);
  for (const auto& [name, tensor] : tensors)
    aclora::train::add_tensor(writer, name, tensor);
  try {
    writer.write(path);
  } catch (const st::Error& error) {
    throw std::runtime_error(std::string("cache: ") + error.what());
  }
}

}  // namespace

uint64_t file_checksum(const fs::path& path) {
  const auto mapped = st::MappedFile::open(path);
  return aclora::io::checksum(mapped.bytes());
}

uint64_t module_fingerprint(const torch::nn::Module& module) {
  uint64_t hash = aclora::io::checksum(std::string("aclora-module"));
  const auto add = [&](const std::string& name, const torch::Tensor& tensor) {
    const torch::Tensor host = tensor.detach().to(torch::kCPU).contiguous();
    std::string header = name + "|" + std::string(c10::toString(host.scalar_type()));
    for (int64_t size : host.sizes()) {
      header += '|';
      header += std::to_string(size);
    }
    hash = aclora::io::checksum(header, hash);
    hash = aclora::io::checksum(
        std::span(static_cast<const std::byte*>(host.data_ptr()),
                  static_cast<std::size_t>(host.numel()) * host.element_size()),
        hash);
  };
  for (const auto& item : module.named_parameters())
    add(item.key(), item.value());
  for (const auto& item : module.named_buffers())
    add(item.key(), item.value());
  return hash;
}

torch::Tensor training_time_ids(const TrainImage& image) {
  return torch::tensor(
      {static_cast<float>(image.original.height), static_cast<float>(image.original.width),
       static_cast<float>(image.choice.crop_top), static_cast<float>(image.choice.crop_left),
       static_cast<float>(image.choice.bucket.height),
       static_cast<float>(image.choice.bucket.width)});
}

torch::Tensor training_pixels(const TrainImage& image) {
  const RgbImage source = read_image(image.path);
  const RgbImage resized =
      resize_image(source, image.choice.resized.width, image.choice.resized.height);
  // sd-scripts' trim: the excess split evenly, the extra pixel on the right / bottom.
  const int64_t left = (resized.width - image.choice.bucket.width) / 2;
  const int64_t top = (resized.height - image.choice.bucket.height) / 2;
  const RgbImage cropped =
      crop_image(resized, left, top, image.choice.bucket.width, image.choice.bucket.height);
  const torch::Tensor bytes = torch::from_blob(const_cast<uint8_t*>(cropped.pixels.data()),
                                               {cropped.height, cropped.width, 3}, torch::kUInt8);
  return bytes.permute({2, 0, 1}).to(torch::kFloat32).div(127.5).sub(1.0).contiguous();
}

std::vector<torch::Tensor> cache_latents(const std::vector<TrainImage>& images, AutoencoderKL& vae,
                                         const fs::path& folder, uint64_t seed,
                                         CacheStatistics& statistics,
                                         const std::function<void(std::size_t)>& progress) {
  fs::create_directories(folder);
  const std::string model = aclora::io::hex64(module_fingerprint(*vae));
  std::vector<torch::Tensor> latents;
  latents.reserve(images.size());
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < images.size(); ++i) {
    const TrainImage& image = images[i];
    const std::string key = "version=" + std::to_string(kCacheVersion) + ";vae=" + model +
                            ";image=" + aclora::io::hex64(file_checksum(image.path)) +
                            ";bucket=" + std::to_string(image.choice.bucket.width) + "x" +
                            std::to_string(image.choice.bucket.height) +
                            ";resized=" + std::to_string(image.choice.resized.width) + "x" +
                            std::to_string(image.choice.resized.height) +
                            ";crop=centre;seed=" + std::to_string(seed);
    const fs::path entry = folder / (image.path.stem().string() + "_" +
                                     aclora::io::hex64(aclora::io::checksum(image.path.string())) +
                                     ".latent.safetensors");
    auto stored = read_entry(entry, key);
    if (stored.count("latents")) {
      latents.push_back(stored.at("latents"));
      ++statistics.reused;
    } else {
      const auto parameter = vae->parameters().front();
      const torch::Tensor pixels =
          training_pixels(image).unsqueeze(0).to(parameter.device(), parameter.scalar_type());
      // One posterior sample from a generator seeded by (seed, image): the same latent
      // whatever the order, the device's default generator left untouched.
      at::Generator generator = at::globalContext().defaultGenerator(parameter.device()).clone();
      generator.set_current_seed(seed ^ aclora::io::checksum(image.path.filename().string()));
      const torch::Tensor sample = vae->scale(vae->encode(pixels).sample(generator)).squeeze(0);
      const torch::Tensor host = sample.to(torch::kCPU, torch::kFloat32).contiguous();
      write_entry(entry, key, {{"latents", host}});
      latents.push_back(host);
      ++statistics.computed;
    }
    if (progress)
      progress(i + 1);
  }
  return latents;
}

std::map<std::string, CachedText> cache_text(const std::vector<std::string>& captions,
                                             const SdxlTextConditioner& conditioner,
                                             uint64_t text_fingerprint, const fs::path& folder,
                                             CacheStatistics& statistics) {
  fs::create_directories(folder);
  std::map<std::string, CachedText> out;
  torch::NoGradGuard no_grad;
  for (const std::string& caption : captions) {
    if (out.count(caption))
      continue;
    const std::string key = "version=" + std::to_string(kCacheVersion) +
                            ";text=" + aclora::io::hex64(text_fingerprint) + ";caption=" + caption;
    const fs::path entry =
        folder / ("text_" + aclora::io::hex64(aclora::io::checksum(caption)) + ".safetensors");
    auto stored = read_entry(entry, key);
    if (stored.count("context") && stored.count("pooled")) {
      out[caption] = CachedText{stored.at("context"), stored.at("pooled")};
      ++statistics.reused;
      continue;
    }
    const SdxlTextEmbeddings embeddings = conditioner.encode({caption});
    CachedText text{embeddings.context.squeeze(0).to(torch::kCPU, torch::kFloat32).contiguous(),
                    embeddings.pooled.squeeze(0).to(torch::kCPU, torch::kFloat32).contiguous()};
    write_entry(entry, key, {{"context", text.context}, {"pooled", text.pooled}});
    out[caption] = text;
    ++statistics.computed;
  }
  return out;
}

}  // namespace sdxl
