// SDXL UNet: architecture (parameter names, shapes and counts of SDXL base,
// built on the meta device without memory), the time embedding rule, forward
// shapes, input checks and gradient checkpointing.
#include <gtest/gtest.h>

#include <sdxl/unet.hpp>

#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include <cmath>
#include <map>
#include <string>

namespace {

sdxl::UNetConfig tiny_unet_config() {
  sdxl::UNetConfig config;
  config.block_out_channels = {32, 64};
  config.layers_per_block = {2, 2};
  config.down_block_types = {"DownBlock2D", "CrossAttnDownBlock2D"};
  config.up_block_types = {"CrossAttnUpBlock2D", "UpBlock2D"};
  config.attention_heads = {2, 4};
  config.transformer_layers_per_block = {1, 2};
  config.cross_attention_dim = 64;
  config.addition_time_embed_dim = 8;
  config.projection_class_embeddings_input_dim = 80;
  return config;
}

sdxl::BuildOptions meta_options() {
  sdxl::BuildOptions options;
  options.device = torch::kMeta;
  return options;
}

std::map<std::string, std::vector<int64_t>> parameter_shapes(const torch::nn::Module& module) {
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& item : module.named_parameters()) {
    shapes[item.key()] = item.value().sizes().vec();
  }
  return shapes;
}

struct TinyInputs {
  torch::Tensor sample, timestep, context;
  sdxl::AddedConditions added;
};

TinyInputs tiny_inputs(int64_t batch, int64_t height, int64_t width) {
  TinyInputs in;
  in.sample = torch::randn({batch, 4, height, width});
  in.timestep = torch::tensor({999.0f, 17.5f}).slice(0, 0, batch);
  in.context = torch::randn({batch, 7, 64});
  in.added.text_embeds = torch::randn({batch, 32});
  in.added.time_ids = torch::tensor({64.0f, 64.0f, 0.0f, 0.0f, 64.0f, 64.0f}).repeat({batch, 1});
  return in;
}

}  // namespace

// The SDXL base UNet has exactly 2,567,463,684 parameters in 1,680 tensors
// (diffusers' count); built on the meta device, so nothing is allocated.
TEST(SdxlUNet, BaseParameterCountMatchesDiffusers) {
  sdxl::UNet unet(sdxl::UNetConfig::sdxl_base(), meta_options());
  EXPECT_EQ(sdxl::count_parameters(*unet), 2567463684LL);
  EXPECT_EQ(unet->parameters().size(), 1680u);
}

// Module paths are the diffusers keys, with the shapes diffusers stores.
TEST(SdxlUNet, BaseParameterNamesAndShapesFollowDiffusers) {
  sdxl::UNet unet(sdxl::UNetConfig::sdxl_base(), meta_options());
  const auto shapes = parameter_shapes(*unet);
  const std::map<std::string, std::vector<int64_t>> expected{
      {"conv_in.weight", {320, 4, 3, 3}},
      {"time_embedding.linear_1.weight", {1280, 320}},
      {"add_embedding.linear_1.weight", {1280, 2816}},
      {"add_embedding.linear_2.bias", {1280}},
      {"down_blocks.0.resnets.0.time_emb_proj.weight", {320, 1280}},
      {"down_blocks.0.downsamplers.0.conv.weight", {320, 320, 3, 3}},
      {"down_blocks.1.resnets.0.conv_shortcut.weight", {640, 320, 1, 1}},
      {"down_blocks.1.attentions.0.proj_in.weight", {640, 640}},
      {"down_blocks.1.attentions.1.transformer_blocks.1.attn2.to_k.weight", {640, 2048}},
      {"down_blocks.2.attentions.1.transformer_blocks.9.ff.net.0.proj.weight", {10240, 1280}},
      {"down_blocks.2.attentions.1.transformer_blocks.9.ff.net.2.weight", {1280, 5120}},
      {"mid_block.attentions.0.transformer_blocks.9.attn1.to_out.0.bias", {1280}},
      {"mid_block.resnets.1.norm2.weight", {1280}},
      {"up_blocks.0.resnets.0.conv1.weight", {1280, 2560, 3, 3}},
      {"up_blocks.0.resnets.2.conv_shortcut.weight", {1280, 1920, 1, 1}},
      {"up_blocks.0.attentions.2.transformer_blocks.9.norm3.weight", {1280}},
      {"up_blocks.0.upsamplers.0.conv.weight", {1280, 1280, 3, 3}},
      {"up_blocks.1.resnets.2.conv_shortcut.weight", {640, 960, 1, 1}},
      {"up_blocks.1.attentions.2.transformer_blocks.1.attn1.to_q.weight", {640, 640}},
      {"up_blocks.2.resnets.0.conv1.weight", {320, 960, 3, 3}},
      {"up_blocks.2.resnets.2.conv1.weight", {320, 640, 3, 3}},
      {"conv_norm_out.weight", {320}},
      {"conv_out.weight", {4, 320, 3, 3}},
  };
  for (const auto& [name, shape] : expected) {
    auto found = shapes.find(name);
    ASSERT_NE(found, shapes.end()) << name;
    EXPECT_EQ(found->second, shape) << name;
  }
  // No attention at level 0 (DownBlock2D / UpBlock2D), no bias on q/k/v.
  EXPECT_EQ(shapes.count("down_blocks.0.attentions.0.proj_in.weight"), 0u);
  EXPECT_EQ(shapes.count("up_blocks.2.attentions.0.proj_in.weight"), 0u);
  EXPECT_EQ(shapes.count("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.bias"), 0u);
  EXPECT_EQ(shapes.count("up_blocks.2.upsamplers.0.conv.weight"), 0u);
}

// SDXL has 70 transformer blocks (10 at 640 channels, 60 at 1280) and 722
// Linear layers inside its Transformer2D modules.
TEST(SdxlUNet, BaseTransformerLinearCountsMatchTheLoraTargets) {
  sdxl::UNet unet(sdxl::UNetConfig::sdxl_base(), meta_options());
  int transformer_blocks = 0, transformer_linears = 0;
  for (const auto& item : unet->named_modules()) {
    if (item.value()->as<sdxl::BasicTransformerBlockImpl>() != nullptr) {
      ++transformer_blocks;
    }
    if (item.value()->as<sdxl::LinearImpl>() != nullptr &&
        item.key().find(".attentions.") != std::string::npos) {
      ++transformer_linears;
    }
  }
  EXPECT_EQ(transformer_blocks, 70);
  EXPECT_EQ(transformer_linears, 722);
}

// Timestep embedding: [cos, sin] of t * exp(-ln(10000) k / half).
TEST(SdxlUNet, TimestepEmbeddingIsCosThenSin) {
  const torch::Tensor t = torch::tensor({0.0f, 3.0f});
  const torch::Tensor e = sdxl::timestep_embedding(t, 8);
  ASSERT_EQ(e.sizes(), (std::vector<int64_t>{2, 8}));
  for (int k = 0; k < 4; ++k) {
    const double frequency = std::exp(-std::log(10000.0) * k / 4.0);
    EXPECT_NEAR(e[0][k].item<float>(), 1.0, 1e-6);
    EXPECT_NEAR(e[0][4 + k].item<float>(), 0.0, 1e-6);
    EXPECT_NEAR(e[1][k].item<float>(), std::cos(3.0 * frequency), 1e-6);
    EXPECT_NEAR(e[1][4 + k].item<float>(), std::sin(3.0 * frequency), 1e-6);
  }
}

// The output has the input's shape, also for latents not divisible by the
// total downsampling factor (the upsamplers follow the skip sizes).
TEST(SdxlUNet, TinyForwardKeepsTheSampleShape) {
  torch::manual_seed(0);
  sdxl::UNet unet(tiny_unet_config());
  torch::NoGradGuard no_grad;
  for (auto [h, w] : {std::pair<int64_t, int64_t>{8, 8}, {9, 6}}) {
    auto in = tiny_inputs(2, h, w);
    const torch::Tensor out = unet->forward(in.sample, in.timestep, in.context, in.added);
    EXPECT_EQ(out.sizes(), in.sample.sizes());
    EXPECT_TRUE(out.isfinite().all().item<bool>());
  }
}

// A scalar timestep means the same timestep for every sample of the batch.
TEST(SdxlUNet, ScalarTimestepBroadcastsOverTheBatch) {
  torch::manual_seed(1);
  sdxl::UNet unet(tiny_unet_config());
  torch::NoGradGuard no_grad;
  auto in = tiny_inputs(2, 8, 8);
  const torch::Tensor scalar =
      unet->forward(in.sample, torch::tensor(250.0f), in.context, in.added);
  const torch::Tensor vector =
      unet->forward(in.sample, torch::tensor({250.0f, 250.0f}), in.context, in.added);
  EXPECT_TRUE(torch::equal(scalar, vector));
}

// Wrong input shapes are rejected with the name of the input.
TEST(SdxlUNet, WrongInputShapesNameTheInput) {
  sdxl::UNet unet(tiny_unet_config());
  auto in = tiny_inputs(1, 8, 8);
  auto message_of = [&](const TinyInputs& bad) {
    try {
      unet->forward(bad.sample, bad.timestep, bad.context, bad.added);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  TinyInputs bad = in;
  bad.context = torch::randn({1, 7, 32});
  EXPECT_NE(message_of(bad).find("context"), std::string::npos);
  bad = in;
  bad.added.text_embeds = torch::randn({1, 31});
  EXPECT_NE(message_of(bad).find("text_embeds"), std::string::npos);
  bad = in;
  bad.added.time_ids = torch::randn({1, 5});
  EXPECT_NE(message_of(bad).find("time_ids"), std::string::npos);
  bad = in;
  bad.sample = torch::randn({1, 3, 8, 8});
  EXPECT_NE(message_of(bad).find("sample"), std::string::npos);
}

// Gradient checkpointing recomputes blocks in backward: same loss and the same
// gradients for every parameter and for the input, also when only some
// parameters train and the input needs no gradient.
TEST(SdxlUNet, GradientCheckpointingGivesTheSameGradients) {
  torch::manual_seed(2);
  sdxl::UNet unet(tiny_unet_config());
  unet->train();
  auto in = tiny_inputs(2, 8, 8);
  auto run = [&](bool checkpointing, bool input_grad) {
    unet->zero_grad();
    unet->set_gradient_checkpointing(checkpointing);
    torch::Tensor sample = in.sample.clone().requires_grad_(input_grad);
    torch::Tensor loss = unet->forward(sample, in.timestep, in.context, in.added).square().mean();
    loss.backward();
    std::vector<torch::Tensor> grads;
    for (const auto& p : unet->parameters()) {
      grads.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
    }
    if (input_grad) {
      grads.push_back(sample.grad().clone());
    }
    return std::make_pair(loss.detach(), grads);
  };
  for (bool input_grad : {true, false}) {
    auto plain = run(false, input_grad);
    auto recomputed = run(true, input_grad);
    EXPECT_TRUE(torch::allclose(plain.first, recomputed.first));
    ASSERT_EQ(plain.second.size(), recomputed.second.size());
    for (std::size_t i = 0; i < plain.second.size(); ++i) {
      EXPECT_TRUE(torch::allclose(plain.second[i], recomputed.second[i], 1e-5, 1e-6)) << i;
    }
  }
  // Only the attention projections train (as with a frozen base under LoRA).
  for (const auto& item : unet->named_parameters()) {
    item.value().requires_grad_(item.key().find("to_q") != std::string::npos);
  }
  auto plain = run(false, false);
  auto recomputed = run(true, false);
  double total = 0;
  for (std::size_t i = 0; i < plain.second.size(); ++i) {
    EXPECT_TRUE(torch::allclose(plain.second[i], recomputed.second[i], 1e-5, 1e-6)) << i;
    total += recomputed.second[i].abs().sum().item<double>();
  }
  EXPECT_GT(total, 0.0);
}

namespace {

// delta(x) = x @ A^T, a fixed test adapter with one parameter.
class ScaledCopyAdapter : public aclora::train::LayerAdapter {
 public:
  explicit ScaledCopyAdapter(torch::Tensor matrix) {
    a = register_parameter("a", std::move(matrix));
  }
  torch::Tensor delta(const torch::Tensor& input) override { return torch::matmul(input, a.t()); }
  torch::Tensor a;
};

}  // namespace

// A Linear's adapters add their deltas to the output (two stack), show their parameters
// under "<linear>.adapter." and "<linear>.adapter_1.", and removing them restores the
// plain Linear.
TEST(SdxlLayers, LinearAdaptersAddTheirDeltas) {
  torch::manual_seed(3);
  sdxl::Linear linear(3, 2, true, sdxl::BuildOptions{});
  const torch::Tensor x = torch::randn({4, 3});
  const torch::Tensor plain = linear(x);
  const torch::Tensor a = torch::randn({2, 3});
  const torch::Tensor b = torch::randn({2, 3});
  auto first = std::make_shared<ScaledCopyAdapter>(a);
  linear->add_adapter(first);
  EXPECT_TRUE(torch::allclose(linear(x), plain + torch::matmul(x, a.t())));
  linear->add_adapter(std::make_shared<ScaledCopyAdapter>(b));
  EXPECT_TRUE(
      torch::allclose(linear(x), plain + torch::matmul(x, a.t()) + torch::matmul(x, b.t())));
  const auto names = parameter_shapes(*linear);
  EXPECT_EQ(names.count("adapter.a"), 1u);
  EXPECT_EQ(names.count("adapter_1.a"), 1u);
  EXPECT_EQ(names.size(), 4u);
  EXPECT_TRUE(aclora::train::is_adapter_parameter("up_blocks.0.to_q.adapter_1.a"));
  EXPECT_FALSE(aclora::train::is_adapter_parameter("up_blocks.0.adapters.a"));
  EXPECT_TRUE(linear->remove_adapter(first));
  EXPECT_TRUE(torch::allclose(linear(x), plain + torch::matmul(x, b.t())));
  linear->clear_adapters();
  EXPECT_TRUE(torch::equal(linear(x), plain));
  EXPECT_EQ(linear->parameters().size(), 2u);
}

// Without initialisation (for checkpoint loading) nothing is drawn; on the
// meta device parameters have shapes but no storage.
TEST(SdxlLayers, BuildOptionsControlDeviceDtypeAndInit) {
  sdxl::BuildOptions options;
  options.dtype = torch::kBFloat16;
  sdxl::Linear bf16(4, 5, true, options);
  EXPECT_EQ(bf16->weight.scalar_type(), torch::kBFloat16);
  const double bound = 1.0 / 2.0;  // 1/sqrt(in_features)
  EXPECT_LE(bf16->weight.abs().max().item<float>(), bound);
  options.device = torch::kMeta;
  sdxl::Conv2d meta(4, 5, 3, 1, 1, options);
  EXPECT_TRUE(meta->weight.is_meta());
  EXPECT_EQ(meta->weight.sizes(), (std::vector<int64_t>{5, 4, 3, 3}));
  EXPECT_FALSE(options.initializes());
}

namespace {

// Turns CPU autocast to bf16 on for its lifetime.
class CpuBf16Autocast {
 public:
  CpuBf16Autocast() { set(true); }
  ~CpuBf16Autocast() {
    set(false);
    at::autocast::clear_cache();
  }

 private:
  static void set(bool enabled) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    at::autocast::set_autocast_enabled(at::kCPU, enabled);
    at::autocast::set_autocast_dtype(at::kCPU, torch::kBFloat16);
#else
    at::autocast::set_cpu_enabled(enabled);
    at::autocast::set_autocast_cpu_dtype(torch::kBFloat16);
#endif
  }
};

// Runs with oneDNN (mkldnn) kernels on or off while it lives. ATen sends bf16 convolutions
// and matmuls to oneDNN only on CPUs with AVX-512; other CPUs (the AMD EPYC machines of our
// kind, for one) run ATen's own kernels, which round more often. Off, any machine computes
// what those CPUs compute.
class MkldnnSwitch {
 public:
  explicit MkldnnSwitch(bool enabled) : saved_(at::globalContext().userEnabledMkldnn()) {
    at::globalContext().setUserEnabledMkldnn(enabled);
  }
  ~MkldnnSwitch() { at::globalContext().setUserEnabledMkldnn(saved_); }
  MkldnnSwitch(const MkldnnSwitch&) = delete;
  MkldnnSwitch& operator=(const MkldnnSwitch&) = delete;

 private:
  bool saved_;
};

}  // namespace

// Under bf16 autocast (fp32 weights) the UNet runs, also with gradient checkpointing, and stays
// within bf16's rounding of the fp32 results, with oneDNN's kernels and with ATen's own.
// Bounds from the format: bf16 keeps 8 significant bits (unit roundoff u = 2^-8), and a rounding
// adds a relative error of RMS u / sqrt(3). Under autocast each Linear / Conv2d rounds its input,
// its weight and its output, and the elementwise op after it (SiLU, GELU, a residual sum) rounds
// once more: 4 roundings per layer. Independent errors over the model's D layers add in
// quadrature: a relative RMS error of u sqrt(4D / 3) in the output; the backward rounds in two
// more products per layer (input and weight gradients), u sqrt(12D / 3) in the gradients. The
// test allows 3 times these estimates (errors are correlated through the network). The
// checkpointed run recomputes the same forward but sums gradients in another order (bf16
// sums), so it is held to the same bounds, not compared bit for bit.
TEST(SdxlUNet, Bf16AutocastForwardAndCheckpointedBackward) {
  torch::manual_seed(4);
  sdxl::UNet unet(tiny_unet_config());
  unet->train();
  auto in = tiny_inputs(1, 8, 8);
  int64_t layers = 0;
  for (const auto& module : unet->modules(/*include_self=*/false))
    if (std::dynamic_pointer_cast<aclora::train::AdaptableLayer>(module))
      ++layers;
  const double u = std::ldexp(1.0, -8);
  const double output_bound = 3.0 * u * std::sqrt(4.0 * static_cast<double>(layers) / 3.0);
  const double gradient_bound = 3.0 * u * std::sqrt(12.0 * static_cast<double>(layers) / 3.0);

  // Output (fp32) and all parameter gradients (concatenated) of one forward / backward.
  const auto run = [&](bool autocast, bool checkpointing) {
    unet->set_gradient_checkpointing(checkpointing);
    unet->zero_grad();
    torch::Tensor out;
    if (autocast) {
      CpuBf16Autocast scope;
      out = unet->forward(in.sample, in.timestep, in.context, in.added);
      EXPECT_EQ(out.scalar_type(), torch::kBFloat16);
    } else {
      out = unet->forward(in.sample, in.timestep, in.context, in.added);
    }
    out = out.to(torch::kFloat32);
    out.square().mean().backward();
    std::vector<torch::Tensor> grads;
    for (const auto& parameter : unet->parameters()) {
      EXPECT_TRUE(parameter.grad().defined());
      grads.push_back(parameter.grad().flatten());
    }
    return std::make_pair(out.detach(), torch::cat(grads));
  };
  const auto relative = [](const torch::Tensor& a, const torch::Tensor& b) {
    return ((a - b).norm() / b.norm()).item<double>();
  };
  const auto [reference, reference_grads] = run(false, false);
  for (const bool mkldnn : {true, false}) {
    MkldnnSwitch kernels(mkldnn);
    const auto [plain, plain_grads] = run(true, false);
    const auto [checkpointed, checkpointed_grads] = run(true, true);
    const std::string which = mkldnn ? "onednn_" : "aten_";
    RecordProperty(which + "output_error", std::to_string(relative(plain, reference)));
    RecordProperty(which + "gradient_error",
                   std::to_string(relative(checkpointed_grads, reference_grads)));
    EXPECT_LT(relative(plain, reference), output_bound) << which;
    EXPECT_LT(relative(checkpointed, reference), output_bound) << which;
    EXPECT_LT(relative(plain_grads, reference_grads), gradient_bound) << which;
    EXPECT_LT(relative(checkpointed_grads, reference_grads), gradient_bound) << which;
    EXPECT_TRUE(checkpointed_grads.isfinite().all().item<bool>()) << which;
  }
  RecordProperty("output_bound", std::to_string(output_bound));
  RecordProperty("gradient_bound", std::to_string(gradient_bound));
}
