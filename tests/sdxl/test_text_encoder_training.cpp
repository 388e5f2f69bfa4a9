// Training the text encoders' LoRAs with the UNet's (aclora-sdxl train --train-text-encoder):
// one step from captions to gradients against diffusers + PEFT
// (tests/fixtures/sdxl/train_step_text_encoders.safetensors, made by
// make_text_encoder_train_step_fixture.py), and a run that exports trained text-encoder
// modules.
#include <gtest/gtest.h>

#include <aclora/adapters/lora/open.hpp>
#include <aclora/adapters/safetensors.hpp>
#include <aclora/adapters/train/network.hpp>
#include <aclora/adapters/train/tensor_io.hpp>

#include <cmath>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "reference_fixtures.hpp"
#include "scratch_dir.hpp"
#include "sdxl/pipeline.hpp"
#include "sdxl/scheduler.hpp"
#include "sdxl/trainer.hpp"
#include "sdxl/training_step.hpp"
#include "trainer_fixture.hpp"

namespace {

std::string fixture_key(const aclora::train::LoraModuleEntry& module) {
  return std::string(aclora::lora::component_name(module.component)) + "." + module.path;
}

// Whether a tensor is undefined (no gradient reached it) or all zero.
bool no_gradient(const torch::Tensor& gradient) {
  return !gradient.defined() || gradient.count_nonzero().item<int64_t>() == 0;
}

}  // namespace

// With LoRAs on every q/k/v/out_proj, fc1 and fc2 of both CLIP text encoders
// (Targets::clip_text_encoder(), 30 + 30 modules) trained together with the UNet's 132, one
// step from two captions to the loss equals diffusers + PEFT's (text encoders in training mode,
// context = both encoders' penultimate states, pooled = encoder 2's projection): the token ids,
// the loss, and the gradient of every LoRA factor of the UNet and both text encoders, with and
// without gradient checkpointing. The 6 LoRAs of text encoder 1's last layer get no gradient
// in either (SDXL reads the hidden state before that layer and not its pooled output).
TEST(TextEncoderTraining, OneStepEqualsDiffusersAndPeft) {
  const auto fixture = aclora::safetensors::Reader::open(sdxl_test::sdxl_fixtures() /
                                                         "train_step_text_encoders.safetensors");
  const auto tensor = [&](const std::string& name) {
    return aclora::train::tensor_from(fixture.tensor(name));
  };
  const std::vector<std::string> captions{"a photo of a red cube on a wooden table",
                                          "an astronaut riding a horse, watercolor"};
  ASSERT_EQ(fixture.metadata().at("captions"),
            "[\"" + captions[0] + "\", \"" + captions[1] + "\"]");

  sdxl::SdxlPipeline pipeline =
      sdxl::SdxlPipeline::load(sdxl_test::sdxl_fixtures() / "tiny-sdxl", {});
  sdxl::SdxlModels& models = pipeline.models();
  aclora::train::LoraNetwork network;
  aclora::train::InjectOptions options;
  options.rank = 2;
  options.alpha = 1.0;
  options.naming = aclora::train::Naming::sdxl_unet();
  network.inject(*models.unet, aclora::train::Targets::sdxl_unet_linear(), options);
  options.naming = aclora::train::Naming::sdxl_text_encoder();
  network.inject(*models.text_encoder, aclora::train::Targets::clip_text_encoder(), options);
  options.naming = aclora::train::Naming::sdxl_text_encoder_2();
  network.inject(*models.text_encoder_2, aclora::train::Targets::clip_text_encoder(), options);
  ASSERT_EQ(network.size(), 132u + 30u + 30u);
  {
    torch::NoGradGuard no_grad;
    for (const auto& module : network.modules()) {
      module.adapter->down.copy_(tensor("init." + fixture_key(module) + ".down"));
      module.adapter->up.copy_(tensor("init." + fixture_key(module) + ".up"));
    }
  }
  const sdxl::SdxlTextConditioner& conditioner = pipeline.conditioner();
  EXPECT_TRUE(conditioner.token_ids(0, captions).equal(tensor("ids.tokenizer")));
  EXPECT_TRUE(conditioner.token_ids(1, captions).equal(tensor("ids.tokenizer_2")));

  const sdxl::StepDraws draws{tensor("batch.noise"), tensor("batch.timesteps")};
  const torch::Tensor abar =
      sdxl::alphas_cumprod_on(sdxl::NoiseSchedule{}.alphas_cumprod(), torch::kCPU);
  sdxl::LossOptions loss_options;
  loss_options.target = sdxl::PredictionTarget::epsilon;

  // fp32 (unit roundoff u = 2^-24) in both programs, summed in different orders: the
  // differences grow with the reductions' lengths and the depth of the path a gradient
  // travels. The longest reduction is a 3x3 convolution over 64 channels (n = 576); the deepest
  // path, from text encoder 1's first layer to the loss and back, crosses about D = 64
  // reductions (5 encoder layers of 4 matrix products, the UNet's 2 x 22 convolutions and
  // attention products). Rounding errors add up like a random walk: relative error about
  // sqrt(n * D) * u per step, amplified by the conditioning of the path, for which a
  // factor of 16 is allowed: 16 * sqrt(576 * 64) * 2^-24 = 1.8e-4.
  const double u = std::ldexp(1.0, -24);
  const double tolerance = 16.0 * std::sqrt(576.0 * 64.0) * u;
  for (const bool checkpointing : {false, true}) {
    models.unet->set_gradient_checkpointing(checkpointing);
    models.unet->train();
    models.text_encoder->train();
    models.text_encoder_2->train();
    for (auto& factor : network.parameters())
      factor.mutable_grad() = torch::Tensor();
    const sdxl::SdxlTextEmbeddings text = conditioner.encode_with_grad(captions);
    ASSERT_TRUE(text.context.requires_grad());
    const sdxl::TrainBatch batch{tensor("batch.latents"), text.context, text.pooled,
                                 tensor("batch.time_ids")};
    const torch::Tensor loss = sdxl::diffusion_loss(models.unet, batch, draws, abar, loss_options);
    loss.backward();
    const std::string name = checkpointing ? "checkpointing" : "plain";
    EXPECT_LT(sdxl_test::relative_norm_error(loss, tensor("loss").squeeze()), tolerance) << name;
    std::map<aclora::lora::Component, double> worst;
    std::size_t without_gradient = 0;
    for (const auto& module : network.modules()) {
      const std::string key = fixture_key(module);
      for (const auto& [factor, suffix] :
           {std::pair{module.adapter->down, ".down"}, std::pair{module.adapter->up, ".up"}}) {
        const torch::Tensor expected = tensor("grad." + key + suffix);
        if (expected.count_nonzero().item<int64_t>() == 0) {
          EXPECT_TRUE(no_gradient(factor.grad())) << name << ": " << key << suffix;
          without_gradient += suffix == std::string(".up");
          continue;
        }
        ASSERT_TRUE(factor.grad().defined()) << name << ": " << key << suffix;
        worst[module.component] = std::max(worst[module.component],
                                           sdxl_test::relative_norm_error(factor.grad(), expected));
      }
    }
    EXPECT_EQ(without_gradient, 6u) << name;  // text encoder 1's last layer
    for (const auto& [component, error] : worst) {
      const std::string label = name + "_" + std::string(aclora::lora::component_name(component));
      RecordProperty(label + "_worst_gradient_error", std::to_string(error));
      EXPECT_LT(error, tolerance) << label;
    }
    EXPECT_EQ(worst.size(), 3u);
  }
}

// encode() runs without autograd whatever the grad mode (sampling, caches); encode_with_grad()
// follows the grad mode, and the two give the same embeddings.
TEST(TextEncoderTraining, EncodeWithGradRecordsHistoryOnlyWhenAsked) {
  sdxl::SdxlPipeline pipeline =
      sdxl::SdxlPipeline::load(sdxl_test::sdxl_fixtures() / "tiny-sdxl", {});
  aclora::train::LoraNetwork network;
  aclora::train::InjectOptions options;
  options.naming = aclora::train::Naming::sdxl_text_encoder();
  network.inject(*pipeline.models().text_encoder, aclora::train::Targets::clip_text_encoder(),
                 options);
  const sdxl::SdxlTextConditioner& conditioner = pipeline.conditioner();
  const sdxl::SdxlTextEmbeddings plain = conditioner.encode({"a red circle"});
  const sdxl::SdxlTextEmbeddings tracked = conditioner.encode_with_grad({"a red circle"});
  EXPECT_FALSE(plain.context.requires_grad());
  EXPECT_TRUE(tracked.context.requires_grad());
  EXPECT_TRUE(tracked.context.equal(plain.context));
  EXPECT_TRUE(tracked.pooled.equal(plain.pooled));
  torch::NoGradGuard no_grad;
  EXPECT_FALSE(conditioner.encode_with_grad({"a red circle"}).context.requires_grad());
}

// aclora-sdxl train --train-text-encoder for 2 epochs (a RESTART after the first) exports the
// text-encoder modules of both encoders (lora_te1_*, lora_te2_* in kohya format) next to the
// UNet's, and training reached them: every module's up factor is non-zero but those of text
// encoder 1's last layer, which no loss reaches (SDXL reads the state before it; sd-scripts
// exports them untrained too). So in fp32, and with bf16 autocast and gradient checkpointing.
// The metadata names the text-encoder learning rate.
TEST(TextEncoderTraining, RunExportsTrainedTextEncoderModules) {
  for (const bool mixed : {false, true}) {
    const aclora::test::ScratchDir scratch;
    auto options = sdxl_test::tiny_train_options(scratch.path());
    options.train_text_encoder = true;
    options.epochs = 2;
    options.validation_dir.reset();
    if (mixed) {
      options.mixed_precision = sdxl::MixedPrecision::bf16;
      options.gradient_checkpointing = true;
    }
    const std::string name = mixed ? "bf16 autocast, gradient checkpointing" : "fp32";
    const sdxl::TrainResult result = sdxl::train(options, [](const std::string&) {});
    EXPECT_EQ(result.modules, 132u + 30u + 30u) << name;

    const auto file = aclora::lora::open_lora(result.lora);
    std::map<aclora::lora::Component, std::size_t> trained, untrained;
    for (const auto& module : file.modules) {
      if (module.name.rfind("lora_te1_text_model_encoder_layers_4_", 0) == 0) {
        ++untrained[module.component];
        continue;
      }
      ++trained[module.component];
      const torch::Tensor up = aclora::train::tensor_from(module.up);
      EXPECT_GT(up.abs().max().item<double>(), 0.0) << name << ": " << module.name;
    }
    EXPECT_EQ(trained[aclora::lora::Component::unet], 132u) << name;
    EXPECT_EQ(trained[aclora::lora::Component::text_encoder], 24u) << name;
    EXPECT_EQ(trained[aclora::lora::Component::text_encoder_2], 30u) << name;
    EXPECT_LE(untrained[aclora::lora::Component::text_encoder], 6u) << name;
    EXPECT_EQ(file.metadata.at("ss_text_encoder_lr"), std::to_string(options.lr)) << name;
  }
}
