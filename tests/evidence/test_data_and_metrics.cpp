// The evidence experiment's data (idx files, Fashion-MNIST, the style), its classifier and
// its Frechet distance.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <zlib.h>

#include <aclora/adapters/safetensors.hpp>
#include <aclora/adapters/train/tensor_io.hpp>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "evidence/classifier.hpp"
#include "evidence/fashion_mnist.hpp"
#include "evidence/frechet.hpp"
#include "scratch_dir.hpp"

namespace {

namespace fs = std::filesystem;
using aclora::test::ScratchDir;

constexpr double kEps = std::numeric_limits<double>::epsilon();

// The message of the std::exception `action` throws; empty when it throws nothing.
std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const std::exception& error) {
    return error.what();
  }
  return "";
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// ---------------------------------------------------------------- idx files

void append_u32(std::vector<uint8_t>& out, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8)
    out.push_back(static_cast<uint8_t>(value >> shift));
}

// An idx images file: magic, count, rows, columns, then `pixels`.
std::vector<uint8_t> images_file(uint32_t count, const std::vector<uint8_t>& pixels,
                                 uint32_t magic = 0x803, uint32_t rows = 28,
                                 uint32_t columns = 28) {
  std::vector<uint8_t> out;
  for (uint32_t field : {magic, count, rows, columns})
    append_u32(out, field);
  out.insert(out.end(), pixels.begin(), pixels.end());
  return out;
}

// An idx labels file: magic, count, then `labels`.
std::vector<uint8_t> labels_file(uint32_t count, const std::vector<uint8_t>& labels,
                                 uint32_t magic = 0x801) {
  std::vector<uint8_t> out;
  append_u32(out, magic);
  append_u32(out, count);
  out.insert(out.end(), labels.begin(), labels.end());
  return out;
}

void write_plain(const fs::path& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

void write_gzip(const fs::path& path, const std::vector<uint8_t>& bytes) {
  gzFile file = gzopen(path.c_str(), "wb");
  ASSERT_NE(file, nullptr) << path;
  EXPECT_EQ(gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size())),
            static_cast<int>(bytes.size()));
  EXPECT_EQ(gzclose(file), Z_OK);
}

// Three 28 x 28 images of distinct bytes.
std::vector<uint8_t> three_images() {
  std::vector<uint8_t> pixels(3 * 28 * 28);
  for (std::size_t i = 0; i < pixels.size(); ++i)
    pixels[i] = static_cast<uint8_t>((i * 37 + 11) % 256);
  return pixels;
}

// read_idx returns the pixels and labels stored, byte for byte, from gzip and from plain
// files.
TEST(ReadIdx, ReturnsThePixelsAndLabelsOfGzipAndPlainFiles) {
  const ScratchDir scratch;
  const std::vector<uint8_t> pixels = three_images();
  const std::vector<uint8_t> labels{0, 9, 4};
  write_gzip(scratch / "images.gz", images_file(3, pixels));
  write_gzip(scratch / "labels.gz", labels_file(3, labels));
  write_plain(scratch / "images", images_file(3, pixels));
  write_plain(scratch / "labels", labels_file(3, labels));
  const torch::Tensor expected_images =
      torch::tensor(std::vector<int64_t>(pixels.begin(), pixels.end()))
          .to(torch::kUInt8)
          .view({3, 28, 28});
  const torch::Tensor expected_labels = torch::tensor({0, 9, 4}, torch::kInt64);
  for (const auto& [images, labels_path] : {std::pair{scratch / "images.gz", scratch / "labels.gz"},
                                            std::pair{scratch / "images", scratch / "labels"}}) {
    const evidence::ImageSet set = evidence::read_idx(images, labels_path);
    EXPECT_EQ(set.images.scalar_type(), torch::kUInt8);
    EXPECT_EQ(set.labels.scalar_type(), torch::kInt64);
    EXPECT_TRUE(torch::equal(set.images, expected_images)) << images;
    EXPECT_TRUE(torch::equal(set.labels, expected_labels)) << labels_path;
  }
}

// Every kind of damaged pair is refused with an error naming the damaged file and the
// problem: bad magic numbers, other image sizes, truncated or overlong data, different
// counts, a label of 10, a missing file.
TEST(ReadIdx, RefusesDamagedFilesNamingThem) {
  const ScratchDir scratch;
  const std::vector<uint8_t> pixels = three_images();
  const fs::path good_images = scratch / "good-images.gz";
  const fs::path good_labels = scratch / "good-labels.gz";
  write_gzip(good_images, images_file(3, pixels));
  write_gzip(good_labels, labels_file(3, {1, 2, 3}));

  struct Case {
    std::string name;
    std::vector<uint8_t> bytes;
    bool is_images;
    std::string problem;
  };
  std::vector<uint8_t> truncated = pixels;
  truncated.pop_back();
  std::vector<uint8_t> overlong = pixels;
  overlong.push_back(0);
  const std::vector<Case> cases{
      {"images-magic.gz", images_file(3, pixels, 0x801), true, "magic"},
      {"labels-magic.gz", labels_file(3, {1, 2, 3}, 0x803), false, "magic"},
      {"images-size.gz", images_file(3, pixels, 0x803, 27, 28), true, "27 x 28"},
      {"images-truncated.gz", images_file(3, truncated), true, "truncated"},
      {"images-header-only.gz", images_file(3, {}), true, "truncated"},
      {"images-overlong.gz", images_file(3, overlong), true, "continues"},
      {"labels-truncated.gz", labels_file(3, {1, 2}), false, "truncated"},
      {"labels-count.gz", labels_file(2, {1, 2}), false, "holds 2 labels"},
      {"labels-ten.gz", labels_file(3, {1, 10, 3}), false, "label 10"},
  };
  for (const Case& bad : cases) {
    const fs::path path = scratch / bad.name;
    write_gzip(path, bad.bytes);
    const std::string message = error_of([&] {
      evidence::read_idx(bad.is_images ? path : good_images, bad.is_images ? good_labels : path);
    });
    EXPECT_TRUE(contains(message, path.string())) << bad.name << ": " << message;
    EXPECT_TRUE(contains(message, bad.problem)) << bad.name << ": " << message;
  }
  const fs::path missing = scratch / "missing.gz";
  const std::string message = error_of([&] { evidence::read_idx(missing, good_labels); });
  EXPECT_TRUE(contains(message, missing.string())) << message;
  // The good pair itself reads (so the refusals above are due to the damage).
  EXPECT_EQ(evidence::read_idx(good_images, good_labels).images.size(0), 3);
}

// ---------------------------------------------------------------- Fashion-MNIST

// Debian's package holds 60000 training and 10000 test images of 28 x 28, 6000 and 1000 of
// each of the ten classes, read in the file's order.
TEST(FashionMnist, TheDebianPackageHoldsTheFullBalancedSets) {
  const fs::path folder = evidence::default_fashion_mnist_folder();
  if (!fs::exists(folder))
    GTEST_SKIP() << folder << " is absent (Debian package dataset-fashion-mnist)";
  const evidence::FashionMnist data = evidence::read_fashion_mnist(folder);
  EXPECT_EQ(data.train.images.sizes(), (std::vector<int64_t>{60000, 28, 28}));
  EXPECT_EQ(data.test.images.sizes(), (std::vector<int64_t>{10000, 28, 28}));
  EXPECT_TRUE(
      torch::equal(torch::bincount(data.train.labels), torch::full({10}, 6000, torch::kInt64)));
  EXPECT_TRUE(
      torch::equal(torch::bincount(data.test.labels), torch::full({10}, 1000, torch::kInt64)));
  // The published statistics of the set (checked with Python's gzip module): mean pixel
  // 0.2860 of white over the training images, first labels 9, 0, 0, 3, 0 and 9, 2, 1, 1, 6.
  EXPECT_NEAR(data.train.images.to(torch::kFloat64).mean().item<double>() / 255, 0.2860, 5e-5);
  EXPECT_TRUE(torch::equal(data.train.labels.slice(0, 0, 5),
                           torch::tensor({9, 0, 0, 3, 0}, torch::kInt64)));
  EXPECT_TRUE(
      torch::equal(data.test.labels.slice(0, 0, 5), torch::tensor({9, 2, 1, 1, 6}, torch::kInt64)));
}

// A folder without the files is refused naming the first missing file.
TEST(FashionMnist, AMissingFileIsNamed) {
  const ScratchDir scratch;
  const std::string message = error_of([&] { evidence::read_fashion_mnist(scratch.path()); });
  EXPECT_TRUE(contains(message, (scratch / "train-images-idx3-ubyte.gz").string())) << message;
  EXPECT_TRUE(contains(message, "no such file")) << message;
}

// $ACLORA_FASHION_MNIST, when set, replaces Debian's folder.
TEST(FashionMnist, TheEnvironmentChoosesTheFolder) {
  const char* before = std::getenv("ACLORA_FASHION_MNIST");
  const std::optional<std::string> saved =
      before ? std::optional<std::string>(before) : std::nullopt;
  ::setenv("ACLORA_FASHION_MNIST", "/some/where", 1);
  EXPECT_EQ(evidence::default_fashion_mnist_folder(), fs::path("/some/where"));
  ::unsetenv("ACLORA_FASHION_MNIST");
  EXPECT_EQ(evidence::default_fashion_mnist_folder(),
            fs::path("/usr/share/datasets/fashion-mnist"));
  if (saved)
    ::setenv("ACLORA_FASHION_MNIST", saved->c_str(), 1);
}

// The ten class names, by label.
TEST(FashionMnist, ClassNames) {
  EXPECT_EQ(evidence::class_names()[0], "T-shirt/top");
  EXPECT_EQ(evidence::class_names()[9], "Ankle boot");
}

// to_model_range maps bytes x to x / 127.5 - 1 as [N, 1, H, W] float32: 0 -> -1, 255 -> 1.
TEST(FashionMnist, ToModelRange) {
  const torch::Tensor bytes = torch::tensor({0, 51, 255}, torch::kUInt8).view({1, 1, 3});
  const torch::Tensor pixels = evidence::to_model_range(bytes);
  EXPECT_EQ(pixels.scalar_type(), torch::kFloat32);
  EXPECT_EQ(pixels.sizes(), (std::vector<int64_t>{1, 1, 1, 3}));
  EXPECT_EQ(pixels[0][0][0][0].item<float>(), -1.0f);
  EXPECT_FLOAT_EQ(pixels[0][0][0][1].item<float>(), -0.6f);
  EXPECT_EQ(pixels[0][0][0][2].item<float>(), 1.0f);
  EXPECT_THROW(evidence::to_model_range(pixels), std::invalid_argument);
}

// ---------------------------------------------------------------- the style

// The style keeps the shape and the range [-1, 1] (exactly: differences of values in
// [-1, 1] round into [0, 2]).
TEST(Style, KeepsShapeAndRange) {
  torch::manual_seed(1);
  const torch::Tensor images = torch::rand({4, 1, 28, 28}) * 2 - 1;
  const torch::Tensor styled = evidence::apply_style(images);
  EXPECT_EQ(styled.sizes(), images.sizes());
  EXPECT_GE(styled.min().item<float>(), -1.0f);
  EXPECT_LE(styled.max().item<float>(), 1.0f);
  EXPECT_TRUE(torch::equal(styled, evidence::apply_style(images))) << "deterministic";
  EXPECT_THROW(evidence::apply_style(images[0]), std::invalid_argument);
}

// A constant image has no edges: it maps to the darkest value everywhere, image borders
// included.
TEST(Style, AConstantImageBecomesDark) {
  for (float value : {-1.0f, 0.3f, 1.0f}) {
    const torch::Tensor styled = evidence::apply_style(torch::full({2, 1, 28, 28}, value));
    EXPECT_TRUE(torch::equal(styled, torch::full({2, 1, 28, 28}, -1.0f))) << value;
  }
}

// A filled white square on black lights up exactly the pixels whose 3 x 3 neighbourhood
// holds both colours (its border, one pixel inside and one outside); its inside and the far
// background stay dark.
TEST(Style, LightsUpTheBorderOfAFilledSquare) {
  torch::Tensor image = torch::full({1, 1, 28, 28}, -1.0f);
  image.index_put_({0, 0, torch::indexing::Slice(10, 18), torch::indexing::Slice(10, 18)}, 1.0f);
  torch::Tensor expected = torch::full({1, 1, 28, 28}, -1.0f);
  expected.index_put_({0, 0, torch::indexing::Slice(9, 19), torch::indexing::Slice(9, 19)}, 1.0f);
  expected.index_put_({0, 0, torch::indexing::Slice(11, 17), torch::indexing::Slice(11, 17)},
                      -1.0f);
  EXPECT_TRUE(torch::equal(evidence::apply_style(image), expected));
}

// ---------------------------------------------------------------- the classifier

// `count` noisy images of three kinds (labels 0, 1, 2): horizontal stripes, vertical stripes
// and a checkerboard, each with period 4 and a random phase, plus Gaussian noise of
// standard deviation 0.5, clamped to [-1, 1].
std::pair<torch::Tensor, torch::Tensor> stripes(int64_t count, uint64_t seed) {
  torch::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  const torch::Tensor labels = torch::randint(3, {count}, generator, torch::kInt64);
  const torch::Tensor phase = torch::randint(4, {count, 1, 1, 1}, generator, torch::kInt64);
  const torch::Tensor rows = torch::arange(28).view({1, 1, 28, 1});
  const torch::Tensor columns = torch::arange(28).view({1, 1, 1, 28});
  const torch::Tensor horizontal = (rows + phase).div(2, "floor").remainder(2);
  const torch::Tensor vertical = (columns + phase).div(2, "floor").remainder(2);
  const torch::Tensor checker = (horizontal + vertical).remainder(2);
  const torch::Tensor kind = labels.view({count, 1, 1, 1});
  const torch::Tensor pattern =
      torch::where(kind == 0, horizontal, torch::where(kind == 1, vertical, checker));
  const torch::Tensor noise = torch::randn({count, 1, 28, 28}, generator, torch::kFloat32);
  return {(pattern.to(torch::kFloat32) * 2 - 1 + 0.5 * noise).clamp(-1, 1), labels};
}

// Trained for two epochs on 900 images, the classifier tells the three kinds of a fresh
// sample apart (> 95 %); its outputs have the documented shapes (also for no images) and
// one log line per epoch is written.
TEST(Classifier, LearnsASeparableProblem) {
  const auto [images, labels] = stripes(900, 1);
  const auto [test_images, test_labels] = stripes(300, 2);
  std::vector<std::string> lines;
  evidence::ClassifierTraining settings;
  settings.log = [&](const std::string& line) { lines.push_back(line); };
  evidence::Classifier classifier = evidence::train_classifier(images, labels, 3, settings);
  EXPECT_EQ(lines.size(), 2u);
  const double fraction = evidence::accuracy(classifier, test_images, test_labels);
  EXPECT_GT(fraction, 0.95) << (lines.empty() ? "" : lines.back());
  const torch::Tensor predicted = evidence::predict(classifier, test_images);
  EXPECT_EQ(predicted.scalar_type(), torch::kInt64);
  EXPECT_EQ(predicted.sizes(), (std::vector<int64_t>{300}));
  const torch::Tensor features = evidence::features(classifier, test_images);
  EXPECT_EQ(features.scalar_type(), torch::kFloat32);
  EXPECT_EQ(features.sizes(), (std::vector<int64_t>{300, 128}));
  EXPECT_GE(features.min().item<float>(), 0.0f) << "features follow a ReLU";
  EXPECT_EQ(evidence::features(classifier, test_images.slice(0, 0, 0)).sizes(),
            (std::vector<int64_t>{0, 128}))
      << "no images, no features";
}

// Training is a function of the data and the seed: two runs give the same parameters bit
// for bit; another seed gives other parameters.
TEST(Classifier, TrainingIsDeterministicGivenTheSeed) {
  const auto [images, labels] = stripes(160, 3);
  evidence::ClassifierTraining settings;
  settings.epochs = 1;
  settings.batch = 32;
  settings.seed = 5;
  const auto first = evidence::train_classifier(images, labels, 3, settings);
  const auto second = evidence::train_classifier(images, labels, 3, settings);
  settings.seed = 6;
  const auto other = evidence::train_classifier(images, labels, 3, settings);
  const auto a = first->named_parameters();
  const auto b = second->named_parameters();
  const auto c = other->named_parameters();
  for (const auto& item : a) {
    EXPECT_TRUE(torch::equal(item.value(), b[item.key()])) << item.key();
    EXPECT_FALSE(torch::equal(item.value(), c[item.key()])) << item.key();
  }
}

// A saved classifier loads back with the same logits bit for bit; the file is a standard
// safetensors file keyed by the parameter names.
TEST(Classifier, SaveAndLoadRoundTrip) {
  const ScratchDir scratch;
  torch::manual_seed(7);
  evidence::Classifier classifier(4);
  const fs::path file = scratch / "classifier.safetensors";
  evidence::save_classifier(classifier, file);
  const auto reader = aclora::safetensors::Reader::open(file);
  std::vector<std::string> keys;
  for (const auto& item : classifier->named_parameters())
    keys.push_back(item.key());
  EXPECT_EQ(reader.names(), keys);
  evidence::Classifier loaded = evidence::load_classifier(file, 4);
  const torch::Tensor images = torch::rand({5, 1, 28, 28}) * 2 - 1;
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(classifier->forward(images), loaded->forward(images)));
}

// load_classifier refuses, naming the file (and the key when one is at fault): a missing
// file, a file that is not safetensors, a classifier of another class count, a tensor of
// another dtype and an unexpected tensor.
TEST(Classifier, LoadRefusesAWrongFile) {
  const ScratchDir scratch;
  torch::manual_seed(8);
  evidence::Classifier classifier(3);
  const fs::path three = scratch / "three.safetensors";
  evidence::save_classifier(classifier, three);

  const fs::path missing = scratch / "missing.safetensors";
  EXPECT_TRUE(contains(error_of([&] { evidence::load_classifier(missing, 3); }), missing.string()));

  const fs::path text = scratch / "text.safetensors";
  write_plain(text, {'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd', '!'});
  EXPECT_TRUE(contains(error_of([&] { evidence::load_classifier(text, 3); }), text.string()));

  const std::string classes = error_of([&] { evidence::load_classifier(three, 4); });
  EXPECT_TRUE(contains(classes, three.string()) && contains(classes, "output.weight")) << classes;

  namespace st = aclora::safetensors;
  const auto rewrite = [&](const fs::path& path, const std::string& extra) {
    st::Writer writer;
    for (const auto& item : classifier->named_parameters())
      aclora::train::add_tensor(writer, item.key(),
                                item.key() == "conv1.weight" && extra.empty()
                                    ? item.value().to(torch::kFloat64)
                                    : item.value());
    if (!extra.empty())
      aclora::train::add_tensor(writer, extra, torch::zeros({1}));
    writer.write(path);
  };
  const fs::path double_file = scratch / "double.safetensors";
  rewrite(double_file, "");
  const std::string dtype = error_of([&] { evidence::load_classifier(double_file, 3); });
  EXPECT_TRUE(contains(dtype, double_file.string()) && contains(dtype, "conv1.weight") &&
              contains(dtype, "F64"))
      << dtype;
  const fs::path extra_file = scratch / "extra.safetensors";
  rewrite(extra_file, "stray");
  const std::string extra = error_of([&] { evidence::load_classifier(extra_file, 3); });
  EXPECT_TRUE(contains(extra, extra_file.string()) && contains(extra, "stray")) << extra;
}

// ---------------------------------------------------------------- the Frechet distance

// A bound on the rounding of the trace term for sets of width d whose covariances have a
// condition number below `condition` and traces summing to `trace`: each of the d
// eigenvalues mu of (C^(1/2) C C^(1/2)), about lambda^2, is off by a few d eps lambda_max^2,
// so its square root by d eps lambda_max^2 / (2 lambda) <= d eps condition lambda_max / 2;
// over d of them, below d^2 eps condition trace / 2. A factor 100 covers the constants of
// the eigen-solver and of the matrix products.
double trace_rounding_bound(int64_t d, double condition, double trace) {
  return 100.0 * static_cast<double>(d * d) * kEps * condition * trace / 2.0;
}

double trace_of_covariance(const torch::Tensor& x) {
  const torch::Tensor centred = x - x.mean(0);
  return centred.square().sum().item<double>() / static_cast<double>(x.size(0) - 1);
}

// A set against itself is at distance 0 up to rounding (1000 Gaussian rows of width 16:
// condition number of the covariance about ((1 + 0.13) / (1 - 0.13))^2 = 1.7, bounded by 4).
TEST(Frechet, ASetIsAtDistanceZeroFromItself) {
  torch::Generator generator = at::make_generator<at::CPUGeneratorImpl>(11);
  const torch::Tensor x = torch::randn({1000, 16}, generator, torch::kFloat64);
  const double tolerance = trace_rounding_bound(16, 4.0, 2 * trace_of_covariance(x));
  EXPECT_NEAR(evidence::frechet_distance(x, x), 0.0, tolerance);
}

// A set and the same set shifted by v are at distance |v|^2: with entries k / 8 (|k| <= 64)
// in 256 rows and v in quarters, the shift, the means and the centred rows are exact in
// double precision, so both covariances are computed bit for bit equal and only the
// rounding of the trace term remains (condition number about 2, bounded by 4).
TEST(Frechet, AShiftedSetIsAtTheSquaredShift) {
  torch::Generator generator = at::make_generator<at::CPUGeneratorImpl>(12);
  const torch::Tensor x = torch::randint(-64, 65, {256, 8}, generator, torch::kFloat64) / 8.0;
  const torch::Tensor v =
      torch::tensor({0.25, -1.5, 3.0, 0.0, 2.75, -0.5, 1.0, 4.0}, torch::kFloat64);
  const double expected = v.square().sum().item<double>();
  const double tolerance = trace_rounding_bound(8, 4.0, 2 * trace_of_covariance(x));
  EXPECT_NEAR(evidence::frechet_distance(x, x + v), expected, tolerance);
  EXPECT_NEAR(evidence::frechet_distance(x.to(torch::kFloat32), (x + v).to(torch::kFloat32)),
              expected, tolerance)
      << "float32 input (the values are exact in float32 too)";
}

// Two sets of width 2 with known, non-commuting covariances are at the closed-form
// distance. The rows of z (columns 2 and 3 of a 4 x 4 Hadamard matrix) have mean 0 and
// z^T z = 4 I, so z L^T has covariance (4 / 3) L L^T exactly up to rounding; for 2 x 2
// matrices Tr((A^(1/2) B A^(1/2))^(1/2)) = sqrt(Tr(A B) + 2 sqrt(det A det B)).
TEST(Frechet, MatchesTheClosedFormForKnownCovariances) {
  const torch::Tensor z =
      torch::tensor({1.0, 1.0, -1.0, 1.0, 1.0, -1.0, -1.0, -1.0}, torch::kFloat64).view({4, 2});
  const torch::Tensor la = torch::tensor({1.0, 0.0, 0.5, 2.0}, torch::kFloat64).view({2, 2});
  const torch::Tensor lb = torch::tensor({1.5, 0.0, -1.0, 0.5}, torch::kFloat64).view({2, 2});
  const torch::Tensor v = torch::tensor({0.5, -2.0}, torch::kFloat64);
  const torch::Tensor a = z.matmul(la.t());
  const torch::Tensor b = z.matmul(lb.t()) + v;
  ASSERT_TRUE(torch::equal(z.sum(0), torch::zeros({2}, torch::kFloat64)));
  ASSERT_TRUE(torch::equal(z.t().matmul(z), 4 * torch::eye(2, torch::kFloat64)));
  const torch::Tensor ca = la.matmul(la.t()) * (4.0 / 3.0);
  const torch::Tensor cb = lb.matmul(lb.t()) * (4.0 / 3.0);
  const double cross = std::sqrt(ca.matmul(cb).trace().item<double>() +
                                 2 * std::sqrt(ca.det().item<double>() * cb.det().item<double>()));
  const double expected = v.square().sum().item<double>() + ca.trace().item<double>() +
                          cb.trace().item<double>() - 2 * cross;
  // Condition numbers: L_a L_a^T about 4.7, L_b L_b^T about 20; bound 40.
  const double tolerance =
      trace_rounding_bound(2, 40.0, ca.trace().item<double>() + cb.trace().item<double>());
  EXPECT_NEAR(evidence::frechet_distance(a, b), expected, tolerance);
  EXPECT_GT(expected, 1.0) << "a distance well away from the shift's alone";
}

// The distance does not depend on the order of its arguments (up to rounding: the square
// roots are taken of different matrices).
TEST(Frechet, IsSymmetric) {
  torch::Generator generator = at::make_generator<at::CPUGeneratorImpl>(13);
  const torch::Tensor a = torch::randn({300, 6}, generator, torch::kFloat64);
  const torch::Tensor b = 2 * torch::randn({200, 6}, generator, torch::kFloat64) + 0.5;
  // Condition numbers about ((1 + 0.17) / (1 - 0.17))^2 = 2 for b, below 4.
  const double tolerance =
      trace_rounding_bound(6, 4.0, trace_of_covariance(a) + trace_of_covariance(b));
  const double ab = evidence::frechet_distance(a, b);
  EXPECT_NEAR(ab, evidence::frechet_distance(b, a), tolerance);
  EXPECT_GT(ab, 1.0) << "distinct sets (variance 1 against 4, means 0 and 0.5)";
}

// Inputs that are not two sets of rows of one width, with at least two rows each, are
// refused.
TEST(Frechet, RefusesBadShapes) {
  const torch::Tensor good = torch::randn({5, 3});
  EXPECT_THROW(evidence::frechet_distance(torch::randn({5}), good), std::invalid_argument);
  EXPECT_THROW(evidence::frechet_distance(good, torch::randn({5, 3, 1})), std::invalid_argument);
  EXPECT_THROW(evidence::frechet_distance(good, torch::randn({5, 4})), std::invalid_argument);
  EXPECT_THROW(evidence::frechet_distance(good, torch::randn({1, 3})), std::invalid_argument);
  EXPECT_THROW(evidence::frechet_distance(torch::randn({5, 0}), torch::randn({5, 0})),
               std::invalid_argument);
  EXPECT_NO_THROW(evidence::frechet_distance(good, torch::randn({2, 3})));
}

}  // namespace
