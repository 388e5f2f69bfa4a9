// LoRA injection (aclora/adapters/train/network.hpp): which layers get a LoRA, their names,
// initial values, gradients, stock-layer reparametrisation, conv LoRAs and the errors.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <aclora/adapters/train/network.hpp>

#include <set>
#include <string>
#include <vector>

#include "tiny_model.hpp"

namespace {

using aclora::train::InjectOptions;
using aclora::train::LoraNetwork;
using aclora::train::Naming;
using aclora::train::Targets;
using train_test::TinyNet;

InjectOptions options(std::int64_t rank = 4) {
  InjectOptions o;
  o.rank = rank;
  o.naming = Naming::plain("lora_unet");
  return o;
}

std::vector<std::string> names(const LoraNetwork& network) {
  std::vector<std::string> out;
  for (const auto& module : network.modules())
    out.push_back(module.name);
  return out;
}

// Sets every up factor to random values so the LoRAs change the output.
void randomize_up(LoraNetwork& network) {
  torch::NoGradGuard no_grad;
  for (auto& module : network.modules())
    module.adapter->up.normal_(0.0, 0.5);
}

}  // namespace

// Suffix rules wrap exactly the layers whose name ends in them, in tree order, with kohya
// names; the output is unchanged at initialisation because up = 0.
TEST(Inject, WrapsTheSelectedLayersWithKohyaNamesAndKeepsTheOutput) {
  torch::manual_seed(1);
  TinyNet net;
  const torch::Tensor x = torch::randn({2, 3, 4, 4});
  const torch::Tensor before = net->forward(x).detach();
  LoraNetwork network;
  EXPECT_EQ(network.inject(*net, Targets::patterns({"to_q", "to_v"}), options()), 4u);
  EXPECT_EQ(names(network),
            (std::vector<std::string>{"lora_unet_blocks_0_to_q", "lora_unet_blocks_0_to_v",
                                      "lora_unet_blocks_1_to_q", "lora_unet_blocks_1_to_v"}));
  EXPECT_TRUE(torch::equal(net->forward(x), before));
  for (const auto& module : network.modules()) {
    EXPECT_EQ(module.adapter->down.sizes(), (std::vector<int64_t>{4, 8}));
    EXPECT_EQ(module.adapter->up.sizes(), (std::vector<int64_t>{8, 4}));
    EXPECT_EQ(module.adapter->up.abs().max().item<float>(), 0.0f);
    // kohya / PEFT initialisation: U(+-1/sqrt(in)).
    EXPECT_LE(module.adapter->down.abs().max().item<double>(), 1.0 / std::sqrt(8.0));
    EXPECT_GT(module.adapter->down.abs().max().item<double>(), 0.5 / std::sqrt(8.0));
    EXPECT_DOUBLE_EQ(module.adapter->scale(), 1.0);  // alpha 0 means alpha = rank
  }
  EXPECT_EQ(network.parameters().size(), 8u);
  EXPECT_EQ(network.restart_modules().size(), 4u);
  EXPECT_EQ(network.restart_modules()[2].name, "lora_unet_blocks_1_to_q");
}

// After injection only the factors require gradients, and a backward pass reaches them
// and nothing else.
TEST(Inject, GradientsReachOnlyTheFactors) {
  torch::manual_seed(2);
  TinyNet net;
  LoraNetwork network;
  network.inject(*net, Targets::patterns({"*.to_?", "blocks.*.ff_*"}), options());
  randomize_up(network);
  net->forward(torch::randn({2, 3, 4, 4})).square().sum().backward();
  std::set<const void*> factors;
  for (const auto& factor : network.parameters()) {
    factors.insert(factor.unsafeGetTensorImpl());
    ASSERT_TRUE(factor.grad().defined());
    EXPECT_GT(factor.grad().abs().sum().item<double>(), 0.0);
  }
  for (const auto& item : net->named_parameters()) {
    if (factors.count(item.value().unsafeGetTensorImpl()))
      continue;
    EXPECT_FALSE(item.value().requires_grad()) << item.key();
    EXPECT_FALSE(item.value().grad().defined()) << item.key();
  }
}

// A second injection into the same tree (into the same network or another) freezes the
// base model only: every LoRA factor of both injections still requires a gradient and gets
// one, and the base parameters get none.
TEST(Inject, ASecondInjectionKeepsTheFirstTrainable) {
  torch::manual_seed(2);
  TinyNet net;
  LoraNetwork network;
  LoraNetwork other;
  network.inject(*net, Targets::patterns({"to_q"}), options());
  network.inject(*net, Targets::patterns({"ff_in"}), options());
  other.inject(*net, Targets::patterns({"to_v"}), options());
  randomize_up(network);
  randomize_up(other);
  net->forward(torch::randn({2, 3, 4, 4})).square().sum().backward();
  std::set<const void*> factors;
  for (const LoraNetwork* lora : {&network, &other}) {
    for (const auto& module : lora->modules()) {
      for (const auto& factor : {module.adapter->down, module.adapter->up}) {
        factors.insert(factor.unsafeGetTensorImpl());
        EXPECT_TRUE(factor.requires_grad()) << module.name;
        ASSERT_TRUE(factor.grad().defined()) << module.name;
        EXPECT_GT(factor.grad().abs().sum().item<double>(), 0.0) << module.name;
      }
    }
  }
  EXPECT_EQ(factors.size(), 2u * (4u + 2u));  // to_q, ff_in, to_v of two blocks
  for (const auto& item : net->named_parameters()) {
    if (factors.count(item.value().unsafeGetTensorImpl()))
      continue;
    EXPECT_FALSE(item.value().requires_grad()) << item.key();
    EXPECT_FALSE(item.value().grad().defined()) << item.key();
  }
}

// A LoRA adds scale * up @ down to the layer: the adapted forward equals the plain layer
// with the merged weight, for a Linear and for a 3x3 Conv2d with its own conv rank.
TEST(Inject, AdaptedLayerEqualsMergedWeight) {
  torch::manual_seed(3);
  TinyNet net;
  LoraNetwork network;
  InjectOptions o = options(4);
  o.alpha = 2.0;
  o.conv_rank = 3;
  o.conv_alpha = 6.0;
  network.inject(*net, {{{"conv", aclora::train::conv_layers}, {"blocks.1.ff_in"}}}, o);
  ASSERT_EQ(network.size(), 2u);
  randomize_up(network);
  const auto& conv_lora = *network.modules()[0].adapter;
  EXPECT_EQ(conv_lora.down.sizes(), (std::vector<int64_t>{3, 3, 3, 3}));
  EXPECT_EQ(conv_lora.up.sizes(), (std::vector<int64_t>{8, 3, 1, 1}));
  EXPECT_DOUBLE_EQ(conv_lora.scale(), 2.0);
  const torch::Tensor image = torch::randn({2, 3, 5, 5});
  const torch::Tensor merged_conv =
      torch::conv2d(image, net->conv->weight + conv_lora.weight_delta(), net->conv->bias, 1, 1);
  EXPECT_TRUE(torch::allclose(net->conv(image), merged_conv, 1e-5, 1e-6));

  const auto& linear_lora = *network.modules()[1].adapter;
  EXPECT_DOUBLE_EQ(linear_lora.scale(), 0.5);
  const torch::Tensor tokens = torch::randn({2, 5, 8});
  auto& ff_in = net->block_list[1]->ff_in;
  const torch::Tensor merged_linear =
      torch::linear(tokens, ff_in->weight + linear_lora.weight_delta(), ff_in->bias);
  EXPECT_TRUE(torch::allclose(ff_in(tokens), merged_linear, 1e-5, 1e-6));
}

// A stock torch::nn::Linear is reparametrised: refresh() sets its weight to base + delta
// (autograd reaching the factors), remove() gives the base weight back.
TEST(Inject, StockLayersAreReparametrised) {
  torch::manual_seed(4);
  TinyNet net;
  const torch::Tensor base = net->head->weight.detach().clone();
  LoraNetwork network;
  network.inject(*net, Targets::patterns({"head"}), options(2));
  EXPECT_TRUE(network.has_reparametrised_layers());
  randomize_up(network);
  network.refresh();
  const auto& lora = *network.modules()[0].adapter;
  EXPECT_TRUE(torch::allclose(net->head->weight, base + lora.weight_delta(), 1e-6, 1e-7));
  net->forward(torch::randn({1, 3, 4, 4})).sum().backward();
  EXPECT_TRUE(lora.up.grad().defined());
  EXPECT_FALSE(net->named_parameters()["head.weight"].grad().defined());
  network.remove();
  EXPECT_TRUE(torch::equal(net->head->weight, base));
  EXPECT_EQ(network.size(), 0u);
}

// Dropout acts on the LoRA's input in training mode only.
TEST(Inject, DropoutActsInTrainingModeOnly) {
  torch::manual_seed(5);
  TinyNet net;
  LoraNetwork network;
  InjectOptions o = options(4);
  o.dropout = 0.5;
  network.inject(*net, Targets::patterns({"blocks.0.to_q"}), o);
  randomize_up(network);
  auto& to_q = net->block_list[0]->to_q;
  const torch::Tensor tokens = torch::randn({1, 16, 8});
  network.train(false);
  const torch::Tensor a = to_q(tokens), b = to_q(tokens);
  EXPECT_TRUE(torch::equal(a, b));
  network.train(true);
  EXPECT_FALSE(torch::equal(to_q(tokens), a));
}

// Each error is reported before any layer changes: no adapter attached, requires_grad kept.
TEST(Inject, ErrorsNameTheProblemAndChangeNothing) {
  TinyNet net;
  LoraNetwork network;
  const auto expect_error = [&](const Targets& targets, const InjectOptions& o,
                                const std::string& words) {
    try {
      network.inject(*net, targets, o);
      ADD_FAILURE() << "no error for " << words;
    } catch (const aclora::train::Error& error) {
      EXPECT_NE(std::string(error.what()).find(words), std::string::npos) << error.what();
    }
    EXPECT_EQ(network.size(), 0u);
    EXPECT_EQ(net->block_list[0]->to_q->adapter_count(), 0u);
    EXPECT_TRUE(net->block_list[0]->to_q->weight.requires_grad());
  };
  expect_error(Targets::patterns({"to_q", "nothing_here"}), options(), "'nothing_here' selects no");
  expect_error(Targets::patterns({"to_q", "blocks.0.to_q"}), options(), "selected by two");
  expect_error(Targets::patterns({"conv"}), options(), "selects no");  // linear rules only
  InjectOptions bad = options(0);
  expect_error(Targets::patterns({"to_q"}), bad, "rank must be >= 1");
  bad = options();
  bad.dropout = 1.0;
  expect_error(Targets::patterns({"to_q"}), bad, "dropout");
  bad = options();
  bad.dropout = 0.1;
  expect_error(Targets::patterns({"to_q", "head"}), bad, "stock LibTorch layer");
  bad = options();
  bad.naming = Naming::sdxl_unet();  // tiny paths have no kohya SDXL name
  expect_error(Targets::patterns({"to_q"}), bad, "no kohya SDXL name");

  network.inject(*net, Targets::patterns({"to_q"}), options());
  EXPECT_THROW(network.inject(*net, Targets::patterns({"blocks.0.to_q"}), options()),
               aclora::train::Error);  // already carries a LoRA
  EXPECT_EQ(network.size(), 2u);
}

// The glob and suffix rules of TargetRule.
TEST(Inject, RuleMatching) {
  using aclora::train::rule_matches;
  const aclora::train::LayerGeometry linear{aclora::train::LayerKind::linear, 4, 4};
  aclora::train::LayerGeometry conv3{aclora::train::LayerKind::conv2d, 4, 4, 3, 3};
  EXPECT_TRUE(rule_matches({"to_q"}, "a.attn1.to_q", linear));
  EXPECT_FALSE(rule_matches({"to_q"}, "a.attn1.xto_q", linear));
  EXPECT_TRUE(rule_matches({"to_q"}, "to_q", linear));
  EXPECT_TRUE(rule_matches({"*.attentions.*"}, "down_blocks.1.attentions.0.proj_in", linear));
  EXPECT_FALSE(rule_matches({"*.attentions.*"}, "down_blocks.1.resnets.0.conv1", linear));
  EXPECT_TRUE(rule_matches({"*.attn?.to_out.0"}, "m.attentions.0.t.0.attn2.to_out.0", linear));
  EXPECT_FALSE(rule_matches({"*.attn?.to_out.0"}, "m.attn2.to_out.0.x", linear));
  EXPECT_FALSE(rule_matches({"*.resnets.*"}, "a.resnets.0.conv1", conv3));  // linear only
  EXPECT_TRUE(rule_matches({"*.resnets.*", aclora::train::all_layers}, "a.resnets.0.conv1", conv3));
  EXPECT_FALSE(rule_matches({"*", aclora::train::conv_1x1_layers}, "a.conv", conv3));
}
