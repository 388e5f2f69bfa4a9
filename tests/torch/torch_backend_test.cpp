// Properties specific to the Torch backend: one rounding for half-precision storage,
// tensor identity / autograd / optimizer state kept, writes through strided and conv
// views, results independent of batching and thread count for both routes, the tensor
// route against the CPU kernels, exact power-of-two scaling, the device noise (Philox and
// Box-Muller as tensor operations) against the core, shared memory and check()'s
// rejections, failures named by module and layer, OpenBLAS held to one thread meanwhile.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "../../bench/common/planted.hpp"
#include "aclora/aclora.hpp"
#include "aclora/backends/eigen.hpp"
#include "aclora/backends/torch.hpp"

namespace {

using aclora::Layer;
using aclora::NoisePolicy;
using aclora::RankAxis;
using Module = aclora::Module<at::Tensor>;
using TorchRestart = aclora::Restart<aclora::backends::TorchBackend>;

// A planted-spectrum factor (bench/common/planted.hpp): rows x cols with singular values
// 2^(-i/2), i < 6, plus a floor of rms 0.02 / sqrt(rows cols).
at::Tensor planted(std::int64_t rows, std::int64_t cols, std::uint64_t seed,
                   c10::ScalarType dtype = at::kFloat) {
  const auto r = static_cast<std::size_t>(rows), c = static_cast<std::size_t>(cols);
  aclora::workload::PlantedMatrix m = aclora::workload::planted_matrix(
      r, c,
      aclora::workload::geometric_values(std::min<std::size_t>({6, r, c}), 1.0, std::sqrt(0.5)),
      {.rms = 0.02 / std::sqrt(static_cast<double>(rows * cols))}, seed);
  return at::from_blob(m.values.data(), {rows, cols}, at::kDouble)
      .to(dtype, /*non_blocking=*/false, /*copy=*/true);
}

aclora::backends::TorchBackend tensor_route(std::int64_t chunk_elements = 0) {
  aclora::backends::TorchBackend::Options options;
  options.cpu_kernels = false;
  options.chunk_elements = chunk_elements;
  return aclora::backends::TorchBackend(options);
}

// All storage bytes of a tensor.
std::vector<unsigned char> bytes_of(const at::Tensor& tensor) {
  const at::Tensor host = tensor.contiguous();
  const auto* begin = static_cast<const unsigned char*>(host.data_ptr());
  return {begin, begin + host.numel() * host.element_size()};
}

std::vector<Module> clone_model(const std::vector<Module>& model) {
  std::vector<Module> copy;
  for (const Module& module : model) {
    Module m{module.name, {}};
    for (const auto& layer : module.layers)
      m.layers.push_back(Layer<at::Tensor>{layer.matrix.clone(), layer.axis});
    copy.push_back(std::move(m));
  }
  return copy;
}

std::vector<Module> shared_shape_model(c10::ScalarType dtype) {
  std::vector<Module> model;
  for (int i = 0; i < 6; ++i) {
    model.push_back(Module::lora("m" + std::to_string(i), planted(8, 96, 100 + i, dtype),
                                 planted(64, 8, 200 + i, dtype)));
  }
  model.push_back(Module::lora("odd", planted(4, 200, 7, dtype), planted(96, 4, 8, dtype)));
  return model;
}

void expect_same_bits(const std::vector<Module>& a, const std::vector<Module>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t m = 0; m < a.size(); ++m)
    for (std::size_t l = 0; l < a[m].layers.size(); ++l)
      EXPECT_EQ(bytes_of(a[m].layers[l].matrix), bytes_of(b[m].layers[l].matrix))
          << a[m].name << " layer " << l;
}

// Half-precision storage: the result is the double-precision reference rounded once
// (at most one unit in the last place apart where the reference sits on a rounding tie).
TEST(TorchBackend, HalfPrecisionStorageIsRoundedOnce) {
  for (c10::ScalarType dtype : {at::kHalf, at::kBFloat16}) {
    std::vector<Module> model = shared_shape_model(dtype);
    // Reference: the Eigen backend in double on the stored values (same noise generator).
    std::vector<Eigen::MatrixXd> storage;
    for (const Module& module : model)
      for (const auto& layer : module.layers) {
        const at::Tensor host = layer.matrix.to(at::kDouble).contiguous();
        storage.push_back(Eigen::Map<const Eigen::Matrix<double, -1, -1, Eigen::RowMajor>>(
            host.data_ptr<double>(), host.size(0), host.size(1)));
      }
    using View = aclora::backends::eigen::MatrixView;
    std::vector<aclora::Module<View>> reference;
    std::size_t next = 0;
    for (const Module& module : model) {
      aclora::Module<View> m{module.name, {}};
      for (const auto& layer : module.layers)
        m.layers.push_back(Layer<View>{View(storage[next++]), layer.axis});
      reference.push_back(std::move(m));
    }
    aclora::Restart<aclora::backends::EigenBackend>({.seed = 3}).at_threshold(reference, 0.9);
    TorchRestart({.seed = 3}).at_threshold(model, 0.9);

    const double ulp = dtype == at::kHalf ? std::ldexp(1.0, -10) : std::ldexp(1.0, -7);
    std::int64_t entries = 0, off_by_one = 0;
    next = 0;
    for (const Module& module : model)
      for (const auto& layer : module.layers) {
        const Eigen::MatrixXd& want = storage[next++];
        const at::Tensor expected =
            at::from_blob(const_cast<double*>(want.data()), {want.cols(), want.rows()}, at::kDouble)
                .t()
                .to(dtype)
                .to(at::kDouble);
        const at::Tensor got = layer.matrix.to(at::kDouble);
        const at::Tensor differs = got.ne(expected);
        entries += got.numel();
        off_by_one += differs.sum().item<std::int64_t>();
        const at::Tensor gap = (got - expected).abs() - ulp * expected.abs();
        EXPECT_LE(gap.max().item<double>(), 1e-30) << module.name;
      }
    EXPECT_LE(off_by_one, entries / 1000) << "entries not equal to the reference rounded once";
  }
}

// copy_ in place: same TensorImpl, data pointer and grad; the parameter stays a leaf that
// requires grad, Adam keeps its state for it and can step again.
TEST(TorchBackend, AutogradAndOptimizerReferencesStayValid) {
  at::Tensor down = planted(8, 64, 1).set_requires_grad(true);
  at::Tensor up = planted(32, 8, 2).set_requires_grad(true);
  torch::optim::Adam adam({down, up}, torch::optim::AdamOptions(1e-3));
  const at::Tensor input = at::randn({16, 64});
  auto step = [&] {
    adam.zero_grad();
    at::matmul(at::matmul(input, down.t()), up.t()).pow(2).sum().backward();
    adam.step();
  };
  step();
  const void* down_data = down.data_ptr();
  const c10::TensorImpl* down_impl = down.unsafeGetTensorImpl();
  const at::Tensor grad_before = down.grad().clone();
  const at::Tensor values_before = down.detach().clone();

  std::vector<Module> model{Module::lora("lora", down, up)};
  TorchRestart({.seed = 1}).at_threshold(model, 0.9);

  EXPECT_EQ(down.data_ptr(), down_data);
  EXPECT_EQ(down.unsafeGetTensorImpl(), down_impl);
  EXPECT_TRUE(down.is_leaf());
  EXPECT_TRUE(down.requires_grad());
  EXPECT_TRUE(at::equal(down.grad(), grad_before));
  EXPECT_FALSE(at::equal(down.detach(), values_before));
  ASSERT_EQ(adam.state().size(), 2u);  // one entry per factor, keyed by its TensorImpl

  const at::Tensor restarted = down.detach().clone();
  step();
  ASSERT_EQ(adam.state().size(), 2u);
  for (const auto& entry : adam.state())
    EXPECT_EQ(static_cast<const torch::optim::AdamParamState&>(*entry.second).step(), 2);
  EXPECT_FALSE(at::equal(down.detach(), restarted));
  EXPECT_TRUE(at::isfinite(down).all().item<bool>());
}

// A non-contiguous view (every other column of a wider tensor) is written through; the
// columns outside it are untouched and the values equal those of a contiguous copy.
TEST(TorchBackend, StridedViewWritesThrough) {
  const at::Tensor base = planted(8, 192, 5);
  const at::Tensor view = base.slice(1, 0, 192, 2);
  const at::Tensor untouched = base.slice(1, 1, 192, 2).clone();
  const at::Tensor up = planted(40, 8, 6);
  std::vector<Module> strided{Module::lora("s", view, up)};
  std::vector<Module> contiguous{Module::lora("s", view.contiguous(), up.clone())};
  TorchRestart({.seed = 2}).at_threshold(strided, 0.9);
  TorchRestart({.seed = 2}).at_threshold(contiguous, 0.9);
  EXPECT_TRUE(at::equal(base.slice(1, 0, 192, 2), contiguous[0].layers[0].matrix));
  EXPECT_TRUE(at::equal(base.slice(1, 1, 192, 2), untouched));
  EXPECT_TRUE(at::equal(up, contiguous[0].layers[1].matrix));
}

// Conv LoRA factors passed as 2-D views of 4-D parameters are updated in place.
TEST(TorchBackend, ConvFactorViewsWriteThrough) {
  const at::Tensor down = planted(8, 16 * 9, 9).view({8, 16, 3, 3}).set_requires_grad(true);
  const at::Tensor up = planted(32, 8, 10).view({32, 8, 1, 1}).set_requires_grad(true);
  const void* down_data = down.data_ptr();
  std::vector<Module> flat{Module::lora("c", down.detach().reshape({8, -1}).clone(),
                                        up.detach().reshape({32, 8}).clone())};
  std::vector<Module> views{Module::lora("c", down.view({8, -1}), up.view({32, 8}))};
  TorchRestart({.seed = 4}).at_threshold(views, 0.9);
  TorchRestart({.seed = 4}).at_threshold(flat, 0.9);
  EXPECT_EQ(down.data_ptr(), down_data);
  EXPECT_TRUE(at::equal(down.detach().reshape({8, -1}), flat[0].layers[0].matrix));
  EXPECT_TRUE(at::equal(up.detach().reshape({32, 8}), flat[0].layers[1].matrix));
}

// Batching by shape (one batch, one layer per batch, one module per call) and the
// thread count do not change a single byte, on either route.
TEST(TorchBackend, ResultsIndependentOfBatchingAndThreads) {
  for (bool kernels : {true, false}) {
    for (c10::ScalarType dtype : {at::kFloat, at::kDouble}) {
      SCOPED_TRACE(std::string(kernels ? "kernels " : "tensor ops ") + c10::toString(dtype));
      aclora::backends::TorchBackend::Options options;
      options.cpu_kernels = kernels;
      const std::vector<Module> model = shared_shape_model(dtype);
      std::vector<Module> batched = clone_model(model);
      TorchRestart({.seed = 8}, aclora::backends::TorchBackend(options)).at_threshold(batched, 0.9);

      std::vector<Module> single_layer = clone_model(model);
      options.chunk_elements = 1;
      TorchRestart({.seed = 8}, aclora::backends::TorchBackend(options))
          .at_threshold(single_layer, 0.9);
      options.chunk_elements = 0;
      expect_same_bits(batched, single_layer);

      std::vector<Module> per_module = clone_model(model);
      for (Module& module : per_module) {
        TorchRestart({.seed = 8}, aclora::backends::TorchBackend(options))
            .at_threshold(std::span<const Module>(&module, 1), 0.9);
      }
      expect_same_bits(batched, per_module);

      const int threads = at::get_num_threads();
      for (int count : {1, 3}) {
        at::set_num_threads(count);
        std::vector<Module> other_threads = clone_model(model);
        TorchRestart({.seed = 8}, aclora::backends::TorchBackend(options))
            .at_threshold(other_threads, 0.9);
        at::set_num_threads(threads);
        expect_same_bits(batched, other_threads);
      }
    }
  }
}

// The tensor route (what CUDA devices run) and the CPU kernels agree, for every noise
// policy and precision: same K, and ||kernels - tensor ops||_F <= 4 epsilon ||M||_F with
// epsilon = aclora::truncation_tolerance (each route's truncation is within epsilon ||M||_F
// of the exact one, and the noise, bit-equal in float and within a few ulp in double, is
// projected by kept subspaces within the same angle).
TEST(TorchBackend, TensorRouteMatchesKernels) {
  for (aclora::Precision precision : {aclora::Precision::fp64, aclora::Precision::fp32}) {
    for (NoisePolicy policy : {NoisePolicy::whole, NoisePolicy::discarded, NoisePolicy::none}) {
      for (c10::ScalarType dtype : {at::kFloat, at::kDouble}) {
        SCOPED_TRACE(std::string(aclora::precision_name(precision)) + " " + c10::toString(dtype) +
                     " policy " + std::to_string(static_cast<int>(policy)));
        const std::vector<Module> model = shared_shape_model(dtype);
        std::vector<Module> kernels = clone_model(model);
        std::vector<Module> tensors = clone_model(model);
        aclora::backends::TorchBackend::Options options;
        options.precision = precision;
        const auto want =
            TorchRestart({.noise = policy, .seed = 5}, aclora::backends::TorchBackend(options))
                .at_threshold(kernels, 0.9);
        options.cpu_kernels = false;
        const auto got =
            TorchRestart({.noise = policy, .seed = 5}, aclora::backends::TorchBackend(options))
                .at_threshold(tensors, 0.9);
        const auto storage =
            dtype == at::kDouble ? aclora::StorageType::f64 : aclora::StorageType::f32;
        for (std::size_t m = 0; m < model.size(); ++m) {
          const std::size_t kept = want.modules[m].module_rank;
          EXPECT_EQ(got.modules[m].module_rank, kept);
          for (std::size_t l = 0; l < model[m].layers.size(); ++l) {
            const auto& layer = model[m].layers[l];
            const auto shape = aclora::backends::TorchBackend::shape(layer.matrix);
            const std::size_t rank = shape.along(layer.axis);
            const double epsilon = aclora::truncation_tolerance(
                precision, rank, shape.size() / rank, kept,
                aclora::relative_gap(want.modules[m].layers[l].singular_values, kept), storage);
            const at::Tensor difference = kernels[m].layers[l].matrix.to(at::kDouble) -
                                          tensors[m].layers[l].matrix.to(at::kDouble);
            EXPECT_LE(difference.norm().item<double>(),
                      4 * epsilon * layer.matrix.to(at::kDouble).norm().item<double>())
                << model[m].name << " layer " << l;
          }
        }
      }
    }
  }
}

// Scaling by a power of two is exact, and RESTART works on the matrix scaled by a power of
// two below its largest entry: a model times 2^900 (float64) or 2^100 (float32: squares
// of its entries overflow float32) restarts to exactly 2^900 (2^100) times the result of
// the model itself, on both routes and in every precision.
TEST(TorchBackend, PowerOfTwoScalingIsExact) {
  for (bool kernels : {true, false}) {
    for (aclora::Precision precision : {aclora::Precision::fp64, aclora::Precision::fp32}) {
      for (auto [dtype, exponent] : {std::pair(at::kDouble, 900), std::pair(at::kFloat, 100)}) {
        SCOPED_TRACE(std::string(kernels ? "kernels " : "tensor ops ") +
                     aclora::precision_name(precision) + " " + c10::toString(dtype));
        aclora::backends::TorchBackend::Options options;
        options.precision = precision;
        options.cpu_kernels = kernels;
        const double factor = std::ldexp(1.0, exponent);
        std::vector<Module> plain = shared_shape_model(dtype);
        std::vector<Module> scaled = clone_model(plain);
        for (Module& module : scaled)
          for (auto& layer : module.layers)
            layer.matrix.mul_(factor);
        TorchRestart({.seed = 6}, aclora::backends::TorchBackend(options)).at_threshold(plain, 0.9);
        TorchRestart({.seed = 6}, aclora::backends::TorchBackend(options))
            .at_threshold(scaled, 0.9);
        for (std::size_t m = 0; m < plain.size(); ++m)
          for (std::size_t l = 0; l < plain[m].layers.size(); ++l)
            EXPECT_TRUE(at::equal(plain[m].layers[l].matrix * factor, scaled[m].layers[l].matrix))
                << plain[m].name << " layer " << l;
      }
    }
  }
}

// Entries so large that the Frobenius norm exceeds the float64 range: an error naming the
// module and layer, raised before anything is written (both routes).
TEST(TorchBackend, NormBeyondFloat64IsRefusedByName) {
  for (bool kernels : {true, false}) {
    aclora::backends::TorchBackend::Options options;
    options.cpu_kernels = kernels;
    std::vector<Module> model = shared_shape_model(at::kDouble);
    model.push_back(Module::lora("huge", at::full({8, 96}, 1e308, at::kDouble),
                                 planted(64, 8, 9, at::kDouble)));
    const std::vector<Module> before = clone_model(model);
    try {
      TorchRestart({.seed = 1}, aclora::backends::TorchBackend(options)).at_threshold(model, 0.9);
      ADD_FAILURE() << "expected aclora::Error";
    } catch (const aclora::Error& error) {
      const std::string what = error.what();
      EXPECT_NE(what.find("'huge'"), std::string::npos) << what;
      EXPECT_NE(what.find("layer 0"), std::string::npos) << what;
      EXPECT_NE(what.find("float64 range"), std::string::npos) << what;
    }
    expect_same_bits(before, model);
  }
}

// Philox-4x32-10 as int64 tensor operations gives the core's words bit for bit, for random
// counters and keys and for the extreme words (0, 2^32 - 1).
TEST(TorchNoise, PhiloxTensorsEqualTheCore) {
  std::mt19937_64 random(11);
  std::vector<std::uint32_t> words(6 * 4100);
  for (auto& w : words)
    w = static_cast<std::uint32_t>(random());
  for (std::size_t i = 0; i < 6 * 4; ++i)  // extremes in every position
    words[i] = (i % 2) ? 0xFFFFFFFFu : 0u;
  const auto count = static_cast<std::int64_t>(words.size() / 6);
  std::vector<std::int64_t> wide(words.begin(), words.end());
  const at::Tensor all = at::from_blob(wide.data(), {count, 6}, at::kLong);
  aclora::backends::libtorch::WordTensors counter;
  for (int k = 0; k < 4; ++k)
    counter[k] = all.select(1, k);
  const aclora::backends::libtorch::WordTensors got =
      aclora::backends::libtorch::philox_tensors(counter, all.select(1, 4), all.select(1, 5));
  for (std::int64_t i = 0; i < count; ++i) {
    const std::uint32_t* w = words.data() + 6 * i;
    const aclora::PhiloxBlock want = aclora::philox4x32_10({{w[0], w[1], w[2], w[3]}}, w[4], w[5]);
    for (int k = 0; k < 4; ++k)
      ASSERT_EQ(got[k][i].item<std::int64_t>(), static_cast<std::int64_t>(want.word[k]))
          << "block " << i << " word " << k;
  }
}

// The two Box-Muller transforms as tensor operations, on word pairs that cover the ends of
// both ranges, the quarter turns of the angle and random pairs: float bit-equal to the
// core's box_muller<float>; double within 8 units of 2^-52 times the radius of the core's
// box_muller<double> (log, cos and sin are each within an ulp in LibTorch and in the C
// library; the products and the square root add a few roundings).
TEST(TorchNoise, BoxMullerTensorsMatchTheCore) {
  std::vector<std::uint32_t> first{0u, 1u, 2u, 0x7FFFFFFFu, 0x80000000u, 0xFFFFFFFEu, 0xFFFFFFFFu};
  std::vector<std::uint32_t> second{0u, 1u, 0xFFFFFFFFu, 0xFFFFFFFEu};
  for (std::uint32_t quarter = 0; quarter <= 4; ++quarter)
    for (std::int64_t offset = -3; offset <= 3; ++offset)
      second.push_back(static_cast<std::uint32_t>(
          std::clamp<std::int64_t>((std::int64_t{quarter} << 30) + offset, 0, 0xFFFFFFFF)));
  std::mt19937_64 random(12);
  std::vector<std::int64_t> a, b;
  for (std::uint32_t x : first)
    for (std::uint32_t y : second) {
      a.push_back(x);
      b.push_back(y);
    }
  for (int i = 0; i < 100000; ++i) {
    a.push_back(static_cast<std::uint32_t>(random()));
    b.push_back(static_cast<std::uint32_t>(random()));
  }
  const auto count = static_cast<std::int64_t>(a.size());
  const at::Tensor ta = at::from_blob(a.data(), {count}, at::kLong);
  const at::Tensor tb = at::from_blob(b.data(), {count}, at::kLong);
  auto [f0, f1] = aclora::backends::libtorch::box_muller_tensors(ta, tb, at::kFloat);
  auto [d0, d1] = aclora::backends::libtorch::box_muller_tensors(ta, tb, at::kDouble);
  f0 = f0.contiguous();
  f1 = f1.contiguous();
  d0 = d0.contiguous();
  d1 = d1.contiguous();
  std::int64_t float_mismatches = 0;
  double worst = 0.0;
  for (std::int64_t i = 0; i < count; ++i) {
    const auto x = static_cast<std::uint32_t>(a[i]), y = static_cast<std::uint32_t>(b[i]);
    float z0, z1;
    aclora::box_muller<float>(x, y, z0, z1);
    float_mismatches += std::memcmp(&z0, f0.data_ptr<float>() + i, 4) != 0;
    float_mismatches += std::memcmp(&z1, f1.data_ptr<float>() + i, 4) != 0;
    double w0, w1;
    aclora::box_muller<double>(x, y, w0, w1);
    const double radius = std::sqrt(w0 * w0 + w1 * w1);
    worst = std::max({worst, std::abs(d0.data_ptr<double>()[i] - w0) / radius,
                      std::abs(d1.data_ptr<double>()[i] - w1) / radius});
  }
  EXPECT_EQ(float_mismatches, 0) << "of " << 2 * count << " float draws";
  EXPECT_LE(worst, 8 * std::ldexp(1.0, -52));
}

// gaussian_tensor numbers draws as the core does: draw i of a stream is lane i % 4 of
// block i / 4 (float: bit-equal to gaussian_block<float>), for several streams at once
// and counts that are not multiples of four.
TEST(TorchNoise, GaussianTensorNumbersDrawsLikeTheCore) {
  const std::vector<aclora::NoiseKey> keys{{1, 2}, {0xFFFFFFFFFFFFFFFFull, 7}, {42, 1ull << 40}};
  for (std::int64_t count : {1, 5, 4097}) {
    const at::Tensor draws =
        aclora::backends::libtorch::gaussian_tensor(keys, count, at::kFloat, at::Device(at::kCPU))
            .contiguous();
    ASSERT_EQ(draws.size(0), 3);
    ASSERT_EQ(draws.size(1), count);
    for (std::size_t g = 0; g < keys.size(); ++g)
      for (std::int64_t i = 0; i < count; ++i) {
        const float want = aclora::gaussian_at<float>(keys[g], static_cast<std::uint64_t>(i));
        const float got = draws[static_cast<std::int64_t>(g)][i].item<float>();
        ASSERT_EQ(std::memcmp(&want, &got, 4), 0) << "stream " << g << " draw " << i;
      }
  }
}

// Two layers that share memory are refused before anything is written, naming both
// (overlapping views of one parameter); disjoint views of one parameter are fine.
TEST(TorchBackend, SharedMemoryIsRefused) {
  const at::Tensor base = planted(16, 96, 3);
  const at::Tensor before = base.clone();
  std::vector<Module> overlapping{Module::lora("first", base.narrow(0, 0, 8), planted(40, 8, 4)),
                                  Module::lora("second", base.narrow(0, 4, 8), planted(40, 8, 5))};
  try {
    TorchRestart().at_threshold(overlapping, 0.9);
    ADD_FAILURE() << "expected aclora::Error";
  } catch (const aclora::Error& error) {
    const std::string what = error.what();
    EXPECT_NE(what.find("'first'"), std::string::npos) << what;
    EXPECT_NE(what.find("'second'"), std::string::npos) << what;
  }
  EXPECT_TRUE(at::equal(base, before));
  // The even and the odd columns of one buffer interleave but do not share an entry.
  const at::Tensor rows = base.narrow(0, 0, 8);
  std::vector<Module> disjoint{Module::lora("even", rows.slice(1, 0, 96, 2), planted(40, 8, 6)),
                               Module::lora("odd", rows.slice(1, 1, 96, 2), planted(40, 8, 7))};
  EXPECT_NO_THROW(TorchRestart().at_threshold(disjoint, 0.9));
  EXPECT_FALSE(at::equal(base, before));
}

// The CPU route writes through the tensors' memory and bumps their version counters, so
// autograd refuses a backward pass through a graph that saved a restarted factor.
TEST(TorchBackend, InPlaceWriteIsVisibleToAutograd) {
  const at::Tensor down = planted(8, 64, 1).set_requires_grad(true);
  const at::Tensor up = planted(32, 8, 2);
  const at::Tensor loss = (down * down).sum();  // saves `down` for backward
  const auto version = down._version();
  std::vector<Module> model{Module::lora("lora", down, up)};
  TorchRestart({.seed = 1}).at_threshold(model, 0.9);
  EXPECT_GT(down._version(), version);
  EXPECT_THROW(loss.backward(), c10::Error);
}

// automatic runs fp64 on the CPU; tf32 (no tensor cores) runs as fp32 there.
TEST(TorchBackend, PrecisionOnTheCpu) {
  using aclora::Precision;
  const at::Device cpu(at::kCPU);
  auto resolved = [&](Precision requested) {
    aclora::backends::TorchBackend::Options options;
    options.precision = requested;
    return aclora::backends::TorchBackend(options).resolved_precision(cpu);
  };
  EXPECT_EQ(resolved(Precision::automatic), Precision::fp64);
  EXPECT_EQ(resolved(Precision::fp64), Precision::fp64);
  EXPECT_EQ(resolved(Precision::fp32), Precision::fp32);
  EXPECT_EQ(resolved(Precision::tf32), Precision::fp32);
}

// check() names what it cannot process; a tensor that requires grad is fine.
TEST(TorchBackend, CheckRejectsWhatItCannotWrite) {
  using aclora::backends::TorchBackend;
  EXPECT_NE(TorchBackend::check(at::zeros({2, 3, 4})).find("2-D"), std::string::npos);
  EXPECT_NE(TorchBackend::check(at::zeros({2, 3}, at::kInt)).find("dtype"), std::string::npos);
  EXPECT_NE(TorchBackend::check(at::zeros({2, 3}).to_sparse()).find("strided"), std::string::npos);
  EXPECT_NE(TorchBackend::check(at::zeros({1, 3}).expand({4, 3})).find("overlapping"),
            std::string::npos);
  EXPECT_NE(TorchBackend::check(at::Tensor()).find("undefined"), std::string::npos);
  EXPECT_EQ(TorchBackend::check(at::zeros({2, 3}).set_requires_grad(true)), "");
  EXPECT_EQ(TorchBackend::check(at::zeros({2, 3}, at::kBFloat16)), "");
  EXPECT_NE(TorchBackend::check(at::_neg_view(at::zeros({2, 3}))).find("negative"),
            std::string::npos);
  at::Tensor inference;
  {
    c10::InferenceMode guard;
    inference = at::zeros({2, 3});
    EXPECT_EQ(TorchBackend::check(inference), "");  // writable inside InferenceMode
  }
  EXPECT_NE(TorchBackend::check(inference).find("InferenceMode"), std::string::npos);

  std::vector<Module> model{Module::lora("int", at::zeros({4, 9}, at::kInt), planted(9, 4, 1))};
  try {
    TorchRestart().at_threshold(model, 0.9);
    ADD_FAILURE() << "expected aclora::Error";
  } catch (const aclora::Error& error) {
    EXPECT_NE(std::string(error.what()).find("unsupported dtype"), std::string::npos);
  }
}

}  // namespace

// While the CPU route's workers call LAPACK, OpenBLAS (when the process has it) runs one
// thread, and its previous thread count comes back afterwards, also after a RESTART.
TEST(TorchBackend, OpenBlasHeldToOneThreadAndRestored) {
  using GetThreads = int (*)();
  using SetThreads = void (*)(int);
  const auto get = reinterpret_cast<GetThreads>(::dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  const auto set = reinterpret_cast<SetThreads>(::dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (get == nullptr || set == nullptr)
    GTEST_SKIP() << "no OpenBLAS in this process";
  const int before = get();
  set(3);
  {
    const aclora::backends::libtorch::SingleThreadedOpenBlas guard;
    EXPECT_EQ(guard.previous_threads(), 3);
    EXPECT_EQ(get(), 1);
  }
  EXPECT_EQ(get(), 3);
  std::vector<Module> model{Module::lora("m", planted(8, 300, 1), planted(200, 8, 2))};
  (void)TorchRestart({.seed = 1}).at_threshold(model, 0.9);
  EXPECT_EQ(get(), 3);
  set(before);
}
