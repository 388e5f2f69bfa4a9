/// @file training_cache.hpp
/// Caches of a training run, as sd-scripts users know them: one VAE latent sample per image
/// and both text encoders' outputs per caption, on disk (one safetensors file each, written
/// atomically), keyed by the model's weights, the image's bytes, its bucket and crop, and the
/// caption; a later run reuses what still matches and recomputes the rest.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "sdxl/conditioning.hpp"
#include "sdxl/dataset.hpp"
#include "sdxl/vae.hpp"

namespace sdxl {

/// The checksum (aclora::io::checksum) of a file's bytes, read through a memory map.
/// @throws aclora::safetensors::Error naming the file when it cannot be opened.
uint64_t file_checksum(const std::filesystem::path& path);

/// A checksum of a module's parameters (names, shapes, dtypes and bytes): changes when the
/// weights do. Reads every parameter once (memory speed).
uint64_t module_fingerprint(const torch::nn::Module& module);

/// The SDXL time ids of a training image, [6]: original size (h, w), crop top-left (y, x),
/// target size (h, w), as sd-scripts computes them.
torch::Tensor training_time_ids(const TrainImage& image);

/// The image resized to cover its bucket and centre-cropped to it, as [3, H, W] in [-1, 1].
torch::Tensor training_pixels(const TrainImage& image);

/// What caching did (for the log).
struct CacheStatistics {
  std::size_t reused = 0;    ///< entries found valid on disk
  std::size_t computed = 0;  ///< entries computed (and written)
};

/// The latents (times the VAE's scaling factor, [4, H/8, W/8], fp32, CPU) of every image,
/// from `folder` when a valid entry exists, else encoded with `vae` (one posterior sample from
/// a generator seeded by `seed` and the image's file name, so neither the order nor the
/// default generator matters) and written. `progress` is called after each image.
/// @throws std::runtime_error naming the file when a cache entry cannot be written.
std::vector<torch::Tensor> cache_latents(const std::vector<TrainImage>& images, AutoencoderKL& vae,
                                         const std::filesystem::path& folder, uint64_t seed,
                                         CacheStatistics& statistics,
                                         const std::function<void(std::size_t)>& progress = {});

/// Text embeddings of one caption: context [77, 2048] and pooled [1280] (fp32, CPU).
struct CachedText {
  torch::Tensor context;  ///< penultimate states of both encoders
  torch::Tensor pooled;   ///< projected pooled output of encoder 2
};

/// The embeddings of every distinct caption, from `folder` when valid, else encoded and
/// written. @throws std::runtime_error naming the file when an entry cannot be written.
std::map<std::string, CachedText> cache_text(const std::vector<std::string>& captions,
                                             const SdxlTextConditioner& conditioner,
                                             uint64_t text_fingerprint,
                                             const std::filesystem::path& folder,
                                             CacheStatistics& statistics);

}  // namespace sdxl
