// Properties specific to the Torch backend: one rounding for half-precision storage,
// tensor identity / autograd / optimizer state kept, writes through strided and conv
// views, results independent of batching and thread count, and check()'s rejections.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "aclora/aclora.hpp"
#include "aclora/backends/eigen.hpp"
#include "aclora/backends/torch.hpp"

namespace {

using aclora::Layer;
using aclora::NoisePolicy;
using aclora::RankAxis;
using Module = aclora::Module<at::Tensor>;
using TorchRestart = aclora::Restart<aclora::backends::Torch>;

// A planted-spectrum factor: rows x cols with singular values 2^(-i/2), i < 6, plus a floor.
at::Tensor planted(std::int64_t rows, std::int64_t cols, std::uint64_t seed,
                   c10::ScalarType dtype = at::kFloat) {
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  const std::int64_t planted = std::min<std::int64_t>({6, rows, cols});
  at::Tensor left = at::randn({rows, planted}, generator, at::kDouble) / std::sqrt(double(rows));
  at::Tensor right = at::randn({planted, cols}, generator, at::kDouble) / std::sqrt(double(cols));
  at::Tensor scales = at::pow(2.0, -0.5 * at::arange(planted, at::kDouble));
  at::Tensor m = at::matmul(left * scales, right);
  m += 0.02 / std::sqrt(double(rows * cols)) * at::randn({rows, cols}, generator, at::kDouble);
  return m.to(dtype);
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
      EXPECT_TRUE(at::equal(a[m].layers[l].matrix, b[m].layers[l].matrix))
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
    aclora::Restart<aclora::backends::Eigen>({.seed = 3}).at_threshold(reference, 0.9);
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
// thread count do not change a single bit.
TEST(TorchBackend, ResultsIndependentOfBatchingAndThreads) {
  for (c10::ScalarType dtype : {at::kFloat, at::kDouble}) {
    const std::vector<Module> model = shared_shape_model(dtype);
    std::vector<Module> batched = clone_model(model);
    TorchRestart({.seed = 8}).at_threshold(batched, 0.9);

    std::vector<Module> single_layer = clone_model(model);
    TorchRestart({.seed = 8}, aclora::backends::Torch({.chunk_elements = 1}))
        .at_threshold(single_layer, 0.9);
    expect_same_bits(batched, single_layer);

    std::vector<Module> per_module = clone_model(model);
    for (Module& module : per_module) {
      TorchRestart({.seed = 8}).at_threshold(std::span<const Module>(&module, 1), 0.9);
    }
    expect_same_bits(batched, per_module);

    const int threads = at::get_num_threads();
    at::set_num_threads(1);
    std::vector<Module> one_thread = clone_model(model);
    TorchRestart({.seed = 8}).at_threshold(one_thread, 0.9);
    at::set_num_threads(threads);
    expect_same_bits(batched, one_thread);
  }
}

// check() names what it cannot process; a tensor that requires grad is fine.
TEST(TorchBackend, CheckRejectsWhatItCannotWrite) {
  using aclora::backends::Torch;
  EXPECT_NE(Torch::check(at::zeros({2, 3, 4})).find("2-D"), std::string::npos);
  EXPECT_NE(Torch::check(at::zeros({2, 3}, at::kInt)).find("dtype"), std::string::npos);
  EXPECT_NE(Torch::check(at::zeros({2, 3}).to_sparse()).find("strided"), std::string::npos);
  EXPECT_NE(Torch::check(at::zeros({1, 3}).expand({4, 3})).find("overlapping"), std::string::npos);
  EXPECT_NE(Torch::check(at::Tensor()).find("undefined"), std::string::npos);
  EXPECT_EQ(Torch::check(at::zeros({2, 3}).set_requires_grad(true)), "");
  EXPECT_EQ(Torch::check(at::zeros({2, 3}, at::kBFloat16)), "");

  std::vector<Module> model{Module::lora("int", at::zeros({4, 9}, at::kInt), planted(9, 4, 1))};
  try {
    TorchRestart().at_threshold(model, 0.9);
    ADD_FAILURE() << "expected aclora::Error";
  } catch (const aclora::Error& error) {
    EXPECT_NE(std::string(error.what()).find("unsupported dtype"), std::string::npos);
  }
}

}  // namespace
