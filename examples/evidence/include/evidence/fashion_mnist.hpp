/// @file fashion_mnist.hpp
/// Fashion-MNIST in the idx format (as Debian's dataset-fashion-mnist package installs it),
/// its conversion to the models' pixel range, and the style of the style task.
#pragma once

#include <torch/torch.h>

#include <array>
#include <filesystem>
#include <string>

namespace evidence {

/// Images with their class labels.
struct ImageSet {
  torch::Tensor images;  ///< uint8 [N, 28, 28], 0 = black, 255 = white
  torch::Tensor labels;  ///< int64 [N], each in 0..9
};

/// Reads one pair of idx files (gzip-compressed or plain): `images` (magic 0x00000803,
/// N x 28 x 28 bytes) and `labels` (magic 0x00000801, N bytes).
/// @throws std::runtime_error "<file>: <problem>" for a file that cannot be opened, a wrong
/// magic number, image dimensions other than 28 x 28, data shorter or longer than the header
/// says, a label of 10 or more, or different counts in the two files.
ImageSet read_idx(const std::filesystem::path& images, const std::filesystem::path& labels);

/// The training set (60000 images) and the test set (10000 images).
struct FashionMnist {
  ImageSet train;  ///< train-{images-idx3,labels-idx1}-ubyte.gz
  ImageSet test;   ///< t10k-{images-idx3,labels-idx1}-ubyte.gz
};

/// The folder of the four files: $ACLORA_FASHION_MNIST when set (and not empty), else
/// /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist package).
std::filesystem::path default_fashion_mnist_folder();

/// Reads both sets from `folder`.
/// @throws std::runtime_error naming the file as read_idx does; for a missing file in
/// Debian's folder the message says to install the dataset-fashion-mnist package.
FashionMnist read_fashion_mnist(
    const std::filesystem::path& folder = default_fashion_mnist_folder());

/// The names of the ten classes, by label: "T-shirt/top", "Trouser", "Pullover", "Dress",
/// "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot".
const std::array<std::string, 10>& class_names();

/// uint8 images [N, H, W] as the models take them: float32 [N, 1, H, W], x / 127.5 - 1, so
/// 0 maps to -1 and 255 to 1. @throws std::invalid_argument for another dtype or rank.
torch::Tensor to_model_range(const torch::Tensor& images_uint8);

/// The style of the style task, "outline" rendering: the morphological gradient of each
/// image (its 3 x 3 dilation minus its 3 x 3 erosion, neighbourhoods cut at the image's
/// edge), shifted back from [0, 2] to [-1, 1]. Edges become bright, flat areas (the inside
/// of a garment as well as the background) dark: a constant image maps to -1 everywhere.
/// Deterministic, on the images' device and dtype.
/// @param images float [N, C, H, W] in [-1, 1] (each channel is transformed on its own)
/// @return the same shape, in [-1, 1]
/// @throws std::invalid_argument for another rank or an integer dtype.
torch::Tensor apply_style(const torch::Tensor& images);

}  // namespace evidence
