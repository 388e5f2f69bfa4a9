// SDXL VAE: parameter count and names of SDXL base (meta device), posterior
// and decoder shapes, logvar clamp, latent scaling.
#include <gtest/gtest.h>

#include <sdxl/vae.hpp>

#include <set>
#include <string>

namespace {

sdxl::VaeConfig tiny_vae_config() {
  sdxl::VaeConfig config;
  config.block_out_channels = {32, 64};
  config.layers_per_block = 2;
  return config;
}

}  // namespace

// The SDXL VAE has 83,653,863 parameters (diffusers' count).
TEST(SdxlVae, BaseParameterCountMatchesDiffusers) {
  sdxl::BuildOptions options;
  options.device = torch::kMeta;
  sdxl::AutoencoderKL vae(sdxl::VaeConfig::sdxl_base(), options);
  EXPECT_EQ(sdxl::count_parameters(*vae), 83653863LL);
}

// Module paths follow the diffusers keys (mid-block attention as Linear layers).
TEST(SdxlVae, BaseParameterNamesFollowDiffusers) {
  sdxl::BuildOptions options;
  options.device = torch::kMeta;
  sdxl::AutoencoderKL vae(sdxl::VaeConfig::sdxl_base(), options);
  std::set<std::string> names;
  for (const auto& item : vae->named_parameters()) {
    names.insert(item.key());
  }
  for (const char* name :
       {"encoder.conv_in.weight", "encoder.down_blocks.0.downsamplers.0.conv.weight",
        "encoder.down_blocks.1.resnets.0.conv_shortcut.weight",
        "encoder.mid_block.attentions.0.group_norm.weight",
        "encoder.mid_block.attentions.0.to_q.weight",
        "encoder.mid_block.attentions.0.to_out.0.bias", "encoder.conv_out.weight",
        "quant_conv.weight", "post_quant_conv.bias", "decoder.up_blocks.0.resnets.2.conv2.weight",
        "decoder.up_blocks.2.resnets.0.conv_shortcut.weight",
        "decoder.up_blocks.2.upsamplers.0.conv.weight", "decoder.conv_norm_out.weight"}) {
    EXPECT_EQ(names.count(name), 1u) << name;
  }
  EXPECT_EQ(names.count("encoder.down_blocks.3.downsamplers.0.conv.weight"), 0u);
  EXPECT_EQ(names.count("decoder.up_blocks.3.upsamplers.0.conv.weight"), 0u);
}

// Encoding halves the size per downsampling level into mean and clamped logvar;
// decoding restores the image size.
TEST(SdxlVae, TinyEncodeDecodeShapes) {
  torch::manual_seed(0);
  sdxl::AutoencoderKL vae(tiny_vae_config());
  torch::NoGradGuard no_grad;
  const torch::Tensor images = torch::rand({2, 3, 16, 12}) * 2 - 1;
  const sdxl::Posterior posterior = vae->encode(images);
  EXPECT_EQ(posterior.mean.sizes(), (std::vector<int64_t>{2, 4, 8, 6}));
  EXPECT_EQ(posterior.logvar.sizes(), posterior.mean.sizes());
  const torch::Tensor decoded = vae->decode(posterior.mean);
  EXPECT_EQ(decoded.sizes(), images.sizes());
  EXPECT_TRUE(decoded.isfinite().all().item<bool>());
}

// logvar is clamped to [-30, 20]: a quant_conv pushing it far out stays inside.
TEST(SdxlVae, LogvarIsClamped) {
  sdxl::AutoencoderKL vae(tiny_vae_config());
  torch::NoGradGuard no_grad;
  vae->quant_conv->bias.slice(0, 4, 6).fill_(1e4);
  vae->quant_conv->bias.slice(0, 6, 8).fill_(-1e4);
  const sdxl::Posterior posterior = vae->encode(torch::zeros({1, 3, 8, 8}));
  EXPECT_EQ(posterior.logvar.max().item<float>(), 20.0f);
  EXPECT_EQ(posterior.logvar.min().item<float>(), -30.0f);
}

// Latent scaling uses the config's factor (0.13025 for SDXL) and round-trips.
TEST(SdxlVae, ScalingFactorRoundTrips) {
  sdxl::BuildOptions options;
  options.device = torch::kMeta;
  sdxl::AutoencoderKL vae(sdxl::VaeConfig::sdxl_base(), options);
  const torch::Tensor z = torch::ones({1, 4, 2, 2});
  EXPECT_FLOAT_EQ(vae->scale(z)[0][0][0][0].item<float>(), 0.13025f);
  EXPECT_TRUE(torch::allclose(vae->unscale(vae->scale(z)), z));
}
