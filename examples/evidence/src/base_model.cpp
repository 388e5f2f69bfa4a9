#include "evidence/base_model.hpp"

#include <sdxl/sampler.hpp>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <sstream>
#include <stdexcept>

#include "evidence/module_file.hpp"

namespace evidence {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kLatentChannels = 4;

void check_images(const torch::Tensor& images, const char* what) {
  if (images.dim() != 4 || images.size(1) != 1 || images.size(2) != 28 || images.size(3) != 28)
    throw std::invalid_argument(std::string(what) + ": images must be [N, 1, 28, 28], got " +
                                c10::str(images.sizes()));
}

// Exponential moving average of a model's parameters (the weights pretraining returns).
class Average {
 public:
  Average(const BaseModel& model, double decay) : decay_(decay) {
    torch::NoGradGuard no_grad;
    for (const auto& p : model->parameters())
      shadow_.push_back(p.detach().clone());
  }
  void update(const BaseModel& model) {
    torch::NoGradGuard no_grad;
    const auto parameters = model->parameters();
    for (std::size_t i = 0; i < shadow_.size(); ++i)
      shadow_[i].lerp_(parameters[i].detach(), 1.0 - decay_);
  }
  void copy_to(BaseModel& model) const {
    torch::NoGradGuard no_grad;
    const auto parameters = model->parameters();
    for (std::size_t i = 0; i < shadow_.size(); ++i)
      parameters[i].copy_(shadow_[i]);
  }

 private:
  double decay_;
  std::vector<torch::Tensor> shadow_;
};

double warmup_cosine(int64_t step, int64_t steps, int64_t warmup, double peak) {
  if (step < warmup)
    return peak * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const double progress = static_cast<double>(step - warmup) /
                          static_cast<double>(std::max<int64_t>(1, steps - warmup));
  return peak * 0.5 * (1.0 + std::cos(M_PI * std::min(1.0, progress)));
}

}  // namespace

LabelConditionerImpl::LabelConditionerImpl(int64_t context_width, int64_t pooled_width)
    : context_width_(context_width) {
  context_table_ = register_module(
      "context", torch::nn::Embedding(kNullLabel + 1, kContextTokens * context_width));
  pooled_table_ = register_module("pooled", torch::nn::Embedding(kNullLabel + 1, pooled_width));
}

torch::Tensor LabelConditionerImpl::context(const torch::Tensor& labels) {
  return context_table_(labels).view({labels.size(0), kContextTokens, context_width_});
}

torch::Tensor LabelConditionerImpl::pooled(const torch::Tensor& labels) {
  return pooled_table_(labels);
}

BaseModelImpl::BaseModelImpl(const sdxl::UNetConfig& config) {
  if (config.in_channels != kLatentChannels || config.out_channels != kLatentChannels)
    throw std::invalid_argument("base model: the UNet must have 4 input and output channels");
  unet = register_module("unet", sdxl::UNet(config));
  conditioner = register_module("conditioner",
                                LabelConditioner(config.cross_attention_dim, config.pooled_dim()));
}

sdxl::TrainBatch BaseModelImpl::batch(const torch::Tensor& images, const torch::Tensor& labels) {
  check_images(images, "BaseModel::batch");
  const int64_t n = images.size(0);
  return sdxl::TrainBatch{to_latents(images), conditioner->context(labels),
                          conditioner->pooled(labels), torch::zeros({n, 6}, images.options())};
}

torch::Tensor BaseModelImpl::predict_noise(const torch::Tensor& latents,
                                           const torch::Tensor& timesteps,
                                           const torch::Tensor& labels) {
  const int64_t n = latents.size(0);
  return unet->forward(latents, timesteps, conditioner->context(labels),
                       {conditioner->pooled(labels), torch::zeros({n, 6}, latents.options())});
}

torch::Tensor to_latents(const torch::Tensor& images) {
  return torch::pixel_unshuffle(images, 2);
}

torch::Tensor to_images(const torch::Tensor& latents) {
  return torch::pixel_shuffle(latents, 2);
}

fs::path data_folder() {
  if (const char* folder = std::getenv("ACLORA_EVIDENCE_DATA"); folder && *folder)
    return folder;
  return ACLORA_EVIDENCE_DATA_DIR;
}

sdxl::UNetConfig base_unet_config(const fs::path& folder) {
  return sdxl::UNetConfig::from_json_file(folder / "base_unet.json");
}

sdxl::NoiseSchedule base_schedule() {
  sdxl::NoiseSchedule schedule;
  schedule.train_steps = 1000;
  schedule.beta_start = 1e-4;
  schedule.beta_end = 0.02;
  schedule.beta_schedule = sdxl::BetaSchedule::kLinear;
  return schedule;
}

BaseModel load_base_model(const fs::path& file, const sdxl::UNetConfig& config) {
  BaseModel model(config);
  load_module(*model, file, "a base model of data/base_unet.json");
  model->eval();
  return model;
}

void save_base_model(const BaseModel& model, const fs::path& file,
                     const std::map<std::string, std::string>& metadata) {
  std::map<std::string, std::string> all = metadata;
  all["format"] = "aclora-evidence-base-model";
  save_module(*model, file, all);
}

BaseModel pretrain_base_model(const ImageSet& train, const sdxl::UNetConfig& config,
                              const Pretraining& settings) {
  if (settings.steps < 1 || settings.batch < 1 || !(settings.lr > 0.0) ||
      settings.warmup_steps < 0 ||
      !(settings.label_dropout >= 0.0 && settings.label_dropout < 1.0) ||
      !(settings.ema_decay >= 0.0 && settings.ema_decay < 1.0))
    throw std::invalid_argument(
        "pretrain_base_model: steps and batch must be positive, lr "
        "positive, label_dropout and ema_decay in [0, 1)");
  const torch::Tensor keep = train.labels != settings.held_out_class;
  const torch::Tensor images = to_model_range(train.images.index({keep}));
  const torch::Tensor labels = train.labels.index({keep});
  const int64_t count = images.size(0);
  if (count == 0)
    throw std::invalid_argument("pretrain_base_model: no training images");

  torch::manual_seed(settings.seed);
  BaseModel model(config);
  model->train();
  torch::optim::AdamW optimizer(model->parameters(),
                                torch::optim::AdamWOptions(settings.lr).weight_decay(0.0));
  Average average(model, settings.ema_decay);
  const torch::Tensor abar = sdxl::alphas_cumprod_on(base_schedule().alphas_cumprod(), torch::kCPU);
  torch::Generator order = at::detail::createCPUGenerator(settings.seed);
  torch::Tensor permutation = torch::randperm(count, order);
  int64_t cursor = 0;
  double loss_sum = 0.0;
  const auto start = std::chrono::steady_clock::now();
  for (int64_t step = 0; step < settings.steps; ++step) {
    if (cursor + settings.batch > count) {
      permutation = torch::randperm(count, order);
      cursor = 0;
    }
    const torch::Tensor index = permutation.slice(0, cursor, cursor + settings.batch);
    cursor += settings.batch;
    torch::Tensor batch_labels = labels.index({index});
    const torch::Tensor dropped = torch::rand({settings.batch}) < settings.label_dropout;
    batch_labels = torch::where(dropped, torch::full_like(batch_labels, kNullLabel), batch_labels);
    const sdxl::TrainBatch batch = model->batch(images.index({index}), batch_labels);
    const sdxl::StepDraws draws = sdxl::draw_step(batch, {});
    const torch::Tensor loss = sdxl::diffusion_loss(model->unet, batch, draws, abar, {});
    for (auto& group : optimizer.param_groups())
      group.options().set_lr(
          warmup_cosine(step, settings.steps, settings.warmup_steps, settings.lr));
    optimizer.zero_grad();
    loss.backward();
    torch::nn::utils::clip_grad_norm_(model->parameters(), 1.0);
    optimizer.step();
    average.update(model);
    loss_sum += loss.item<double>();
    if (settings.log && ((step + 1) % 100 == 0 || step + 1 == settings.steps)) {
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::ostringstream line;
      line << "step " << step + 1 << "/" << settings.steps << "  loss "
           << loss_sum / ((step % 100) + 1) << "  " << static_cast<int64_t>(seconds) << " s";
      settings.log(line.str());
      loss_sum = 0.0;
    }
  }
  average.copy_to(model);
  model->eval();
  return model;
}

torch::Tensor sample_images(BaseModel& model, const torch::Tensor& labels,
                            const Sampling& settings) {
  sdxl::SchedulerConfig scheduler;
  scheduler.schedule = base_schedule();
  scheduler.spacing = sdxl::TimestepSpacing::kTrailing;
  scheduler.steps_offset = 0;
  const sdxl::EulerPlan plan = sdxl::euler_plan(scheduler, settings.steps);
  const bool was_training = model->is_training();
  model->eval();
  torch::NoGradGuard no_grad;
  torch::Generator generator = at::detail::createCPUGenerator(settings.seed);
  const int64_t n = labels.size(0);
  const torch::Tensor noise = torch::randn({n, kLatentChannels, 14, 14}, generator);
  std::vector<torch::Tensor> parts;
  for (int64_t start = 0; start < n; start += settings.batch) {
    const torch::Tensor wanted = labels.slice(0, start, start + settings.batch);
    const torch::Tensor pair_labels = torch::cat({torch::full_like(wanted, kNullLabel), wanted});
    const sdxl::NoisePredictor pair = [&](const torch::Tensor& input, float timestep) {
      return model->predict_noise(input, torch::full({input.size(0)}, timestep), pair_labels);
    };
    const sdxl::NoisePredictor predict =
        settings.guidance == 1.0 ? sdxl::NoisePredictor([&](const torch::Tensor& input, float t) {
          return model->predict_noise(input, torch::full({input.size(0)}, t), wanted);
        })
                                 : sdxl::guided(pair, settings.guidance);
    const torch::Tensor latents =
        sdxl::euler_sample(plan, noise.slice(0, start, start + settings.batch), predict);
    parts.push_back(to_images(latents).clamp(-1.0, 1.0));
  }
  model->train(was_training);
  return torch::cat(parts);
}

}  // namespace evidence
