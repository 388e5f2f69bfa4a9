#include "sdxl/pipeline.hpp"

#include <torch/torch.h>

#include <stdexcept>
#include <utility>

namespace sdxl {
namespace {

// The tokenizer source: --tokenizer, else the model folder, else the config folder.
std::optional<std::filesystem::path> tokenizer_source(const std::filesystem::path& model,
                                                      const PipelineOptions& options) {
  if (options.tokenizer)
    return options.tokenizer;
  if (std::filesystem::is_directory(model))
    return model;
  return options.load.config_folder;
}

std::pair<std::shared_ptr<const ClipTokenizer>, std::shared_ptr<const ClipTokenizer>>
load_tokenizers(const std::filesystem::path& source) {
  if (std::filesystem::is_directory(source)) {
    return {std::make_shared<const ClipTokenizer>(
                ClipTokenizer::from_folder(source / "tokenizer", PadToken::kEndOfText)),
            std::make_shared<const ClipTokenizer>(
                ClipTokenizer::from_folder(source / "tokenizer_2", PadToken::kExclamation))};
  }
  return {std::make_shared<const ClipTokenizer>(
              ClipTokenizer::from_bpe_gz(source, PadToken::kEndOfText)),
          std::make_shared<const ClipTokenizer>(
              ClipTokenizer::from_bpe_gz(source, PadToken::kExclamation))};
}

SdxlTextConditioner make_conditioner(const SdxlModels& models,
                                     std::shared_ptr<const ClipTokenizer> tokenizer_1,
                                     std::shared_ptr<const ClipTokenizer> tokenizer_2) {
  if (!models.unet || !models.vae || !models.text_encoder || !models.text_encoder_2) {
    throw std::invalid_argument("SdxlPipeline needs the UNet, the VAE and both text encoders");
  }
  return SdxlTextConditioner(std::move(tokenizer_1), models.text_encoder, std::move(tokenizer_2),
                             models.text_encoder_2);
}

}  // namespace

SdxlPipeline SdxlPipeline::load(const std::filesystem::path& model,
                                const PipelineOptions& options) {
  // The scheduler config first (cheap, and a refused one should not wait for the weights),
  // then the models: their loader says what a wrong file is (a LoRA, an SD 1.5 model).
  SchedulerConfig scheduler =
      options.scheduler ? *options.scheduler : scheduler_of(model, options.load.config_folder);
  SdxlModels models = load_sdxl(model, options.load);
  const auto source = tokenizer_source(model, options);
  if (!source) {
    throw std::runtime_error(model.string() +
                             ": a single-file checkpoint carries no tokenizer; give one with "
                             "--tokenizer (a diffusers folder or bpe_simple_vocab_16e6.txt.gz)");
  }
  auto [tokenizer_1, tokenizer_2] = load_tokenizers(*source);
  // The SDXL VAE overflows in fp16: keep it in fp32 then.
  if (options.load.dtype == torch::kFloat16)
    models.vae->to(torch::kFloat32);
  return SdxlPipeline(std::move(models), std::move(tokenizer_1), std::move(tokenizer_2),
                      std::move(scheduler));
}

SdxlPipeline::SdxlPipeline(SdxlModels models, std::shared_ptr<const ClipTokenizer> tokenizer_1,
                           std::shared_ptr<const ClipTokenizer> tokenizer_2,
                           SchedulerConfig scheduler)
    : models_(std::move(models)),
      conditioner_(make_conditioner(models_, std::move(tokenizer_1), std::move(tokenizer_2))),
      scheduler_(std::move(scheduler)) {}

torch::Tensor SdxlPipeline::initial_noise(const SampleOptions& request) const {
  // Each VAE level but the last halves the resolution: 8 for SDXL (4 levels).
  const int64_t factor = int64_t{1} << (models_.vae->config().block_out_channels.size() - 1);
  if (request.height <= 0 || request.width <= 0 || request.height % factor != 0 ||
      request.width % factor != 0) {
    throw std::invalid_argument("image size must be a positive multiple of " +
                                std::to_string(factor) + ", got " + std::to_string(request.width) +
                                "x" + std::to_string(request.height));
  }
  auto generator = at::detail::createCPUGenerator(request.seed);
  const int64_t channels = models_.unet->config().in_channels;
  return torch::randn({1, channels, request.height / factor, request.width / factor}, generator,
                      torch::TensorOptions().dtype(torch::kFloat32));
}

torch::Tensor SdxlPipeline::sample_latents(const SampleOptions& request, const torch::Tensor& noise,
                                           const StepCallback& on_step) {
  torch::NoGradGuard no_grad;
  const EulerPlan plan = euler_plan(scheduler_, request.steps);
  const auto parameter = models_.unet->parameters().front();
  const auto options = parameter.options();

  const SdxlTextEmbeddings positive = conditioner_.encode({request.prompt});
  const bool guide = request.guidance > 1.0;
  SdxlTextEmbeddings negative;
  if (guide) {
    std::optional<std::vector<std::string>> negatives;
    if (request.negative)
      negatives = std::vector<std::string>{*request.negative};
    negative = conditioner_.encode_negative(negatives, 1);
  }
  const torch::Tensor time_ids =
      sdxl_time_ids(request.height, request.width, 0, 0, request.height, request.width)
          .unsqueeze(0)
          .to(options);

  const std::shared_ptr<UNetImpl> unet = models_.unet.ptr();
  auto unet_pass = [unet, options](const torch::Tensor& input, float timestep,
                                   const torch::Tensor& context, const torch::Tensor& pooled,
                                   const torch::Tensor& ids) {
    const torch::Tensor t = torch::full({input.size(0)}, timestep, options);
    return unet->forward(input.to(options), t, context.to(options),
                         AddedConditions{pooled.to(options), ids});
  };
  NoisePredictor predict;
  if (guide) {
    const torch::Tensor context = torch::cat({negative.context, positive.context});
    const torch::Tensor pooled = torch::cat({negative.pooled, positive.pooled});
    const torch::Tensor ids = torch::cat({time_ids, time_ids});
    predict = guided([=](const torch::Tensor& pair,
                         float t) { return unet_pass(pair, t, context, pooled, ids); },
                     request.guidance);
  } else {
    predict = [=](const torch::Tensor& input, float t) {
      return unet_pass(input, t, positive.context, positive.pooled, time_ids);
    };
  }
  return euler_sample(plan, noise.to(options.device()), predict, on_step);
}

torch::Tensor SdxlPipeline::decode(const torch::Tensor& latents) {
  torch::NoGradGuard no_grad;
  const auto options = models_.vae->parameters().front().options();
  return models_.vae->decode(models_.vae->unscale(latents.to(options)))
      .to(torch::kCPU, torch::kFloat32);
}

}  // namespace sdxl
