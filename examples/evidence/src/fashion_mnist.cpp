#include "evidence/fashion_mnist.hpp"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace evidence {
namespace {

namespace fs = std::filesystem;

constexpr uint32_t kImagesMagic = 0x00000803;
constexpr uint32_t kLabelsMagic = 0x00000801;
constexpr int64_t kSide = 28;
constexpr const char* kDebianFolder = "/usr/share/datasets/fashion-mnist";

[[noreturn]] void fail(const fs::path& file, const std::string& problem) {
  throw std::runtime_error(file.string() + ": " + problem);
}

// An idx file opened with zlib (which reads gzip and plain files alike).
class IdxFile {
 public:
  explicit IdxFile(const fs::path& path) : path_(path), file_(gzopen(path.c_str(), "rb")) {
    if (file_ == nullptr)
      fail(path_, std::string("cannot open: ") + std::strerror(errno));
  }
  IdxFile(const IdxFile&) = delete;
  IdxFile& operator=(const IdxFile&) = delete;
  ~IdxFile() { gzclose(file_); }

  // Up to `size` bytes into `out`; the count read (less than `size` only at the end).
  std::size_t read_some(void* out, std::size_t size) {
    const int got = gzread(file_, out, static_cast<unsigned>(size));
    if (got < 0) {
      int code = 0;
      fail(path_, std::string("cannot read: ") + gzerror(file_, &code));
    }
    return static_cast<std::size_t>(got);
  }

  // One big-endian 32-bit header field.
  uint32_t read_u32(const char* what) {
    unsigned char bytes[4];
    if (read_some(bytes, 4) != 4)
      fail(path_, std::string("truncated header (no ") + what + ")");
    return (uint32_t{bytes[0]} << 24) | (uint32_t{bytes[1]} << 16) | (uint32_t{bytes[2]} << 8) |
           uint32_t{bytes[3]};
  }

  // Exactly `size` bytes, then the end of the file. Grows the buffer only as data arrives,
  // so that a header announcing too much fails as truncated rather than by allocation.
  std::vector<uint8_t> read_rest(uint64_t size) {
    constexpr std::size_t kChunk = std::size_t{1} << 20;
    std::vector<uint8_t> data;
    while (data.size() < size) {
      const std::size_t want =
          static_cast<std::size_t>(std::min<uint64_t>(kChunk, size - data.size()));
      const std::size_t start = data.size();
      data.resize(start + want);
      const std::size_t got = read_some(data.data() + start, want);
      data.resize(start + got);
      if (got < want)
        fail(path_, "truncated: the header announces " + std::to_string(size) +
                        " data bytes, the file holds " + std::to_string(data.size()));
    }
    unsigned char extra = 0;
    if (read_some(&extra, 1) != 0)
      fail(path_,
           "data continues after the " + std::to_string(size) + " bytes the header announces");
    return data;
  }

 private:
  fs::path path_;
  gzFile file_;
};

void check_magic(const fs::path& path, uint32_t magic, uint32_t expected, const char* kind) {
  if (magic != expected) {
    char text[96];
    std::snprintf(text, sizeof text, "bad magic number 0x%08x (an idx %s file has 0x%08x)", magic,
                  kind, expected);
    fail(path, text);
  }
}

}  // namespace

ImageSet read_idx(const fs::path& images, const fs::path& labels) {
  IdxFile image_file(images);
  check_magic(images, image_file.read_u32("magic number"), kImagesMagic, "images");
  const uint32_t count = image_file.read_u32("image count");
  const uint32_t rows = image_file.read_u32("row count");
  const uint32_t columns = image_file.read_u32("column count");
  if (rows != kSide || columns != kSide)
    fail(images, "images are " + std::to_string(rows) + " x " + std::to_string(columns) +
                     ", expected 28 x 28");
  std::vector<uint8_t> pixels = image_file.read_rest(uint64_t{count} * kSide * kSide);

  IdxFile label_file(labels);
  check_magic(labels, label_file.read_u32("magic number"), kLabelsMagic, "labels");
  const uint32_t label_count = label_file.read_u32("label count");
  if (label_count != count)
    fail(labels, "holds " + std::to_string(label_count) + " labels but " + images.string() +
                     " holds " + std::to_string(count) + " images");
  std::vector<uint8_t> label_bytes = label_file.read_rest(label_count);
  for (std::size_t i = 0; i < label_bytes.size(); ++i)
    if (label_bytes[i] >= 10)
      fail(labels, "label " + std::to_string(label_bytes[i]) + " at index " + std::to_string(i) +
                       " (labels are 0..9)");

  const auto n = static_cast<int64_t>(count);
  ImageSet set;
  set.images = torch::from_blob(pixels.data(), {n, kSide, kSide}, torch::kUInt8).clone();
  set.labels = torch::from_blob(label_bytes.data(), {n}, torch::kUInt8).to(torch::kInt64);
  return set;
}

fs::path default_fashion_mnist_folder() {
  const char* folder = std::getenv("ACLORA_FASHION_MNIST");
  if (folder != nullptr && *folder != '\0')
    return folder;
  return kDebianFolder;
}

FashionMnist read_fashion_mnist(const fs::path& folder) {
  const auto read_pair = [&](const std::string& prefix) {
    const fs::path images = folder / (prefix + "-images-idx3-ubyte.gz");
    const fs::path labels = folder / (prefix + "-labels-idx1-ubyte.gz");
    for (const fs::path& file : {images, labels}) {
      std::error_code error;
      if (!fs::exists(file, error))
        fail(file, folder == fs::path(kDebianFolder)
                       ? "no such file: install Debian's dataset-fashion-mnist package (or set "
                         "ACLORA_FASHION_MNIST to a folder holding the Fashion-MNIST files)"
                       : "no such file");
    }
    return read_idx(images, labels);
  };
  FashionMnist data;
  data.train = read_pair("train");
  data.test = read_pair("t10k");
  return data;
}

const std::array<std::string, 10>& class_names() {
  static const std::array<std::string, 10> names{"T-shirt/top", "Trouser",   "Pullover", "Dress",
                                                 "Coat",        "Sandal",    "Shirt",    "Sneaker",
                                                 "Bag",         "Ankle boot"};
  return names;
}

torch::Tensor to_model_range(const torch::Tensor& images_uint8) {
  if (images_uint8.scalar_type() != torch::kUInt8 || images_uint8.dim() != 3)
    throw std::invalid_argument("to_model_range: expected uint8 images [N, H, W], got " +
                                std::string(c10::toString(images_uint8.scalar_type())) + " " +
                                c10::str(images_uint8.sizes()));
  return images_uint8.unsqueeze(1).to(torch::kFloat32).div(127.5).sub(1.0);
}

torch::Tensor apply_style(const torch::Tensor& images) {
  if (images.dim() != 4 || !images.is_floating_point())
    throw std::invalid_argument("apply_style: expected float images [N, C, H, W], got " +
                                std::string(c10::toString(images.scalar_type())) + " " +
                                c10::str(images.sizes()));
  // Max pooling pads with -infinity: the neighbourhoods end at the image's edge.
  const auto options = torch::nn::functional::MaxPool2dFuncOptions(3).stride(1).padding(1);
  const torch::Tensor dilation = torch::nn::functional::max_pool2d(images, options);
  const torch::Tensor erosion = -torch::nn::functional::max_pool2d(-images, options);
  return dilation - erosion - 1.0;
}

}  // namespace evidence
