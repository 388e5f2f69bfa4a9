// SDXL text conditioning (see conditioning.hpp).
#include "sdxl/conditioning.hpp"

#include <torch/torch.h>

#include <aclora/adapters/safetensors.hpp>
#include <stdexcept>

#include "sdxl/text_encoder_keys.hpp"

namespace sdxl {
namespace {

ClipTextModel load_encoder_folder(const std::filesystem::path& dir, const BuildOptions& options) {
  const ClipTextConfig config = ClipTextConfig::from_json_file(dir / "config.json");
  std::filesystem::path weights = dir / "model.safetensors";
  if (!std::filesystem::exists(weights) && std::filesystem::exists(dir / "model.fp16.safetensors"))
    weights = dir / "model.fp16.safetensors";
  if (!std::filesystem::exists(weights))
    throw std::runtime_error("text encoder weights not found: " + weights.string());
  BuildOptions no_init = options;
  no_init.initialize = false;
  ClipTextModel model(config, no_init);
  const auto reader = aclora::safetensors::Reader::open(weights);
  load_text_encoder(*model, reader, "", TextEncoderNaming::kHuggingFace);
  model->eval();
  return model;
}

}  // namespace

SdxlTextConditioner::SdxlTextConditioner(std::shared_ptr<const ClipTokenizer> tokenizer_1,
                                         ClipTextModel encoder_1,
                                         std::shared_ptr<const ClipTokenizer> tokenizer_2,
                                         ClipTextModel encoder_2)
    : tokenizers_{std::move(tokenizer_1), std::move(tokenizer_2)},
      encoders_{std::move(encoder_1), std::move(encoder_2)} {
  for (int i = 0; i < 2; ++i) {
    if (!tokenizers_[i] || !encoders_[i])
      throw std::invalid_argument("SDXL conditioner: tokenizer or encoder " +
                                  std::to_string(i + 1) + " is missing");
    if (tokenizers_[i]->max_length() > encoders_[i]->config().max_positions)
      throw std::invalid_argument("SDXL conditioner: tokenizer " + std::to_string(i + 1) +
                                  " frames to more tokens than its encoder has positions");
  }
  if (tokenizers_[0]->max_length() != tokenizers_[1]->max_length())
    throw std::invalid_argument("SDXL conditioner: the tokenizers frame to different lengths");
  if (encoders_[1]->config().projection_dim <= 0)
    throw std::invalid_argument("SDXL conditioner: encoder 2 needs a text projection");
}

SdxlTextConditioner SdxlTextConditioner::from_diffusers_folder(const std::filesystem::path& folder,
                                                               const BuildOptions& options) {
  auto tok1 = std::make_shared<const ClipTokenizer>(
      ClipTokenizer::from_folder(folder / "tokenizer", PadToken::kEndOfText));
  auto tok2 = std::make_shared<const ClipTokenizer>(
      ClipTokenizer::from_folder(folder / "tokenizer_2", PadToken::kExclamation));
  return SdxlTextConditioner(std::move(tok1), load_encoder_folder(folder / "text_encoder", options),
                             std::move(tok2),
                             load_encoder_folder(folder / "text_encoder_2", options));
}

torch::Tensor SdxlTextConditioner::token_ids(int index,
                                             const std::vector<std::string>& prompts) const {
  const ClipTokenizer& tok = tokenizer(index);
  const int64_t length = tok.max_length();
  torch::Tensor ids = torch::empty({static_cast<int64_t>(prompts.size()), length}, torch::kInt64);
  auto rows = ids.accessor<int64_t, 2>();
  for (size_t b = 0; b < prompts.size(); ++b) {
    const std::vector<int64_t> framed = tok.tokenize(prompts[b]);
    for (int64_t t = 0; t < length; ++t)
      rows[static_cast<int64_t>(b)][t] = framed[t];
  }
  return ids;
}

SdxlTextEmbeddings SdxlTextConditioner::encode(const std::vector<std::string>& prompts,
                                               const std::vector<std::string>& prompts_2) const {
  torch::NoGradGuard no_grad;
  return encode_with_grad(prompts, prompts_2);
}

SdxlTextEmbeddings SdxlTextConditioner::encode_with_grad(
    const std::vector<std::string>& prompts, const std::vector<std::string>& prompts_2) const {
  if (prompts.empty())
    throw std::invalid_argument("SDXL conditioner: no prompts to encode");
  if (!prompts_2.empty() && prompts_2.size() != prompts.size())
    throw std::invalid_argument("SDXL conditioner: " + std::to_string(prompts.size()) +
                                " prompts but " + std::to_string(prompts_2.size()) + " prompts_2");
  const ClipTextOutput out1 = encoders_[0].ptr()->forward(token_ids(0, prompts));
  const ClipTextOutput out2 =
      encoders_[1].ptr()->forward(token_ids(1, prompts_2.empty() ? prompts : prompts_2));
  const torch::Tensor& like = out1.penultimate;
  SdxlTextEmbeddings result;
  result.context = torch::cat({like, out2.penultimate.to(like.options())}, -1);
  result.pooled = out2.text_embeds.to(like.options());
  return result;
}

SdxlTextEmbeddings SdxlTextConditioner::encode_negative(
    const std::optional<std::vector<std::string>>& negative_prompts, int64_t batch) const {
  if (batch < 1)
    throw std::invalid_argument("SDXL conditioner: batch must be at least 1");
  if (!negative_prompts) {
    const auto& w = encoders_[0]->token_embedding->weight;
    const int64_t width = encoders_[0]->config().hidden_size + encoders_[1]->config().hidden_size;
    SdxlTextEmbeddings zeros;
    zeros.context = torch::zeros({batch, tokenizers_[0]->max_length(), width}, w.options());
    zeros.pooled = torch::zeros({batch, encoders_[1]->config().projection_dim}, w.options());
    return zeros;
  }
  const auto& negatives = *negative_prompts;
  if (negatives.size() == 1)
    return encode(std::vector<std::string>(batch, negatives.front()));
  if (static_cast<int64_t>(negatives.size()) != batch)
    throw std::invalid_argument("SDXL conditioner: " + std::to_string(negatives.size()) +
                                " negative prompts for a batch of " + std::to_string(batch));
  return encode(negatives);
}

const ClipTokenizer& SdxlTextConditioner::tokenizer(int index) const {
  if (index != 0 && index != 1)
    throw std::invalid_argument("SDXL conditioner: index must be 0 or 1");
  return *tokenizers_[index];
}

ClipTextModel SdxlTextConditioner::encoder(int index) const {
  if (index != 0 && index != 1)
    throw std::invalid_argument("SDXL conditioner: index must be 0 or 1");
  return encoders_[index];
}

torch::Tensor sdxl_time_ids(int64_t original_height, int64_t original_width, int64_t crop_top,
                            int64_t crop_left, int64_t target_height, int64_t target_width) {
  if (original_height <= 0 || original_width <= 0 || target_height <= 0 || target_width <= 0)
    throw std::invalid_argument("SDXL time ids: sizes must be positive");
  if (crop_top < 0 || crop_left < 0)
    throw std::invalid_argument("SDXL time ids: crop offsets must not be negative");
  const float values[6] = {static_cast<float>(original_height), static_cast<float>(original_width),
                           static_cast<float>(crop_top),        static_cast<float>(crop_left),
                           static_cast<float>(target_height),   static_cast<float>(target_width)};
  return torch::from_blob(const_cast<float*>(values), {6}, torch::kFloat32).clone();
}

}  // namespace sdxl
