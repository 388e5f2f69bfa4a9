// aclora-sdxl: the SDXL example's command line.
//   aclora-sdxl sample --model PATH --prompt TEXT [options] -o out.png
//   aclora-sdxl train --model PATH --data DIR -o OUT_DIR [options]
#include <aclora/adapters/lora/open.hpp>

#include <chrono>
#include <cstdio>
#include <exception>
#include <iostream>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "aclora_cli.hpp"
#include "sdxl/image.hpp"
#include "sdxl/lora.hpp"
#include "sdxl/pipeline.hpp"
#include "train_command.hpp"

namespace {

namespace cli = aclora::cli;

constexpr const char* kProgram = "aclora-sdxl";

struct LoraRequest {
  std::string path;
  double scale = 1.0;
};

struct Arguments {
  std::string model;
  std::string output;
  std::optional<std::string> config;
  std::optional<std::string> tokenizer;
  std::string device = "cpu";
  std::optional<std::string> dtype;
  bool fp16_variant = false;
  std::string lora_mode = "merge";
  std::vector<std::string> lora_texts;
  std::vector<LoraRequest> loras;
  std::string size = "1024x1024";
  sdxl::SampleOptions sample;
};

// FILE[:SCALE]; a path may itself contain ':', so only a numeric tail is a scale.
LoraRequest parse_lora(const std::string& text) {
  const auto colon = text.rfind(':');
  if (colon != std::string::npos && colon + 1 < text.size()) {
    try {
      return {text.substr(0, colon), cli::parse_real("--lora", text.substr(colon + 1))};
    } catch (const cli::UsageError&) {
      // not a number: part of the path
    }
  }
  return {text, 1.0};
}

// "WxH", both whole numbers >= 1.
void parse_size(const std::string& text, sdxl::SampleOptions& sample) {
  const auto x = text.find('x');
  if (x == std::string::npos)
    throw cli::UsageError("--size: expected WxH (e.g. 1024x1024), got '" + text + "'");
  sample.width = cli::parse_whole<std::int64_t>("--size (width)", text.substr(0, x), 1);
  sample.height = cli::parse_whole<std::int64_t>("--size (height)", text.substr(x + 1), 1);
}

void build(CLI::App& app, Arguments& args, sdxl_app::TrainArguments& train) {
  cli::configure(app, kProgram);
  app.description(
      "SDXL in LibTorch: LoRA training with AC-LoRA, and text to image with the Euler sampler "
      "and classifier-free guidance. Exit status: 0 done, 1 error (one line, no output file), "
      "2 bad command line, 130 training interrupted (state saved).");
  CLI::App* sample = app.add_subcommand(
      "sample", "generate an image (Euler sampler, classifier-free guidance) and write a PNG");
  sample
      ->add_option("--model", args.model, "diffusers folder or single-file .safetensors checkpoint")
      ->type_name("PATH")
      ->required();
  sample->add_option("--prompt", args.sample.prompt, "what to draw")->type_name("TEXT")->required();
  sample
      ->add_option("--negative", args.sample.negative,
                   "negative prompt (default: none, all-zero negative conditioning)")
      ->type_name("TEXT");
  cli::add_whole(*sample, "--steps", args.sample.steps, "sampling steps (default 30)", 1);
  cli::add_real(*sample, "--cfg", args.sample.guidance,
                "guidance scale (default 5; <= 1 disables guidance)", false, "G");
  cli::add_whole(*sample, "--seed", args.sample.seed,
                 "initial noise seed, 0 to 2^64-1 (default 0): same seed, same image", 0,
                 std::numeric_limits<std::uint64_t>::max(), "S");
  sample->add_option("--size", args.size, "image size, multiples of 8 (default 1024x1024)")
      ->type_name("WxH");
  sample
      ->add_option("--lora", args.lora_texts,
                   "apply a kohya / diffusers / PEFT LoRA (repeatable; SCALE default 1)")
      ->type_name("FILE[:SCALE]")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->expected(1)
      ->allow_extra_args(false);
  sample->add_option("--lora-mode", args.lora_mode, "merge (default) or runtime")
      ->type_name("MODE")
      ->check(CLI::IsMember({"merge", "runtime"}));
  sample
      ->add_option("--config", args.config,
                   "diffusers folder whose config.json files (and scheduler config) describe a "
                   "single-file model")
      ->type_name("DIR");
  sample
      ->add_option("--tokenizer", args.tokenizer,
                   "diffusers folder with tokenizer/ and tokenizer_2/, or "
                   "bpe_simple_vocab_16e6.txt.gz (default: the model or --config folder)")
      ->type_name("PATH");
  sample->add_option("--device", args.device, "cpu (default) or cuda")
      ->type_name("DEV")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  sample->add_option("--dtype", args.dtype, "fp32 (default on cpu), bf16 (default on cuda) or fp16")
      ->type_name("T")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
  sample->add_flag("--fp16-variant", args.fp16_variant,
                   "read *.fp16.safetensors files of a diffusers folder");
  sample->add_option("-o,--output", args.output, "PNG to write")->type_name("FILE")->required();
  sample->footer(
      "Tokenizer: a diffusers folder's tokenizer/ and tokenizer_2/ (vocab.json + merges.txt, or "
      "the tokenizer.json that transformers 5 writes). A single-file checkpoint has none: give "
      "--tokenizer with a diffusers SDXL folder or open_clip's bpe_simple_vocab_16e6.txt.gz (in "
      "the open_clip_torch package; a copy is tests/fixtures/tokenizer/ of this repository).\n"
      "Scheduler: the folder's scheduler/scheduler_config.json (epsilon, v_prediction or sample; "
      "leading, trailing or linspace spacing; ...), else SDXL base's; settings the sampler "
      "cannot follow are refused.");
  sdxl_app::add_train_command(app, train);
  app.footer("Run 'aclora-sdxl sample --help' or 'aclora-sdxl train --help' for the options.");
}

torch::Dtype dtype_of(const Arguments& args) {
  const std::string name = args.dtype.value_or(args.device == "cuda" ? "bf16" : "fp32");
  if (name == "bf16")
    return torch::kBFloat16;
  if (name == "fp16")
    return torch::kFloat16;
  return torch::kFloat32;
}

// "sampling [#########...........] 12/30  0.84 s/step"
void print_progress(int done, int total, double seconds) {
  constexpr int width = 30;
  const int filled = done * width / total;
  std::fprintf(stderr, "\rsampling [%s%s] %d/%d  %.2f s/step", std::string(filled, '#').c_str(),
               std::string(width - filled, '.').c_str(), done, total, seconds / done);
  if (done == total)
    std::fputc('\n', stderr);
  std::fflush(stderr);
}

int run(const Arguments& args) {
  if (args.device == "cuda" && !torch::cuda::is_available()) {
    throw std::runtime_error("--device cuda: no CUDA device is available");
  }
  sdxl::PipelineOptions options;
  options.load.dtype = dtype_of(args);
  options.load.device = args.device == "cuda" ? torch::Device(torch::kCUDA) : torch::kCPU;
  options.load.prefer_fp16_variant = args.fp16_variant;
  if (args.config)
    options.load.config_folder = *args.config;
  if (args.tokenizer)
    options.tokenizer = *args.tokenizer;

  // Every LoRA file and the scheduler config are read and checked before the model is loaded.
  std::vector<aclora::lora::LoraFile> loras;
  for (const auto& request : args.loras)
    loras.push_back(aclora::lora::open_lora(request.path));
  options.scheduler = sdxl::scheduler_of(args.model, options.load.config_folder);
  try {
    sdxl::euler_plan(*options.scheduler, args.sample.steps);  // --steps within the schedule
  } catch (const std::invalid_argument& error) {
    throw cli::UsageError(std::string("--steps: ") + error.what());
  }

  sdxl::SdxlPipeline pipeline = sdxl::SdxlPipeline::load(args.model, options);
  std::fprintf(stderr, "scheduler: %s: %s\n", pipeline.scheduler().source.c_str(),
               pipeline.scheduler().describe().c_str());
  for (std::size_t i = 0; i < loras.size(); ++i) {
    const sdxl::LoraTargets targets{pipeline.models().unet, pipeline.models().text_encoder,
                                    pipeline.models().text_encoder_2};
    const auto applied = sdxl::apply_lora(
        loras[i], targets, args.loras[i].scale,
        args.lora_mode == "runtime" ? sdxl::LoraMode::runtime : sdxl::LoraMode::merge);
    std::fprintf(stderr, "lora %s (%s, scale %g): %zu modules applied, %zu unmatched\n",
                 args.loras[i].path.c_str(), std::string(format_name(loras[i].format)).c_str(),
                 args.loras[i].scale, applied.applied, applied.unmatched.size());
    for (const auto& name : applied.unmatched)
      std::fprintf(stderr, "  unmatched: %s\n", name.c_str());
    for (const auto& name : applied.unsupported) {
      std::fprintf(stderr, "  not applied (unsupported): %s\n", name.c_str());
    }
  }

  const auto start = std::chrono::steady_clock::now();
  const torch::Tensor noise = pipeline.initial_noise(args.sample);
  const torch::Tensor latents =
      pipeline.sample_latents(args.sample, noise, [&](int done, int total) {
        const double seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        print_progress(done, total, seconds);
      });
  const torch::Tensor image = pipeline.decode(latents)[0];
  sdxl::write_png(args.output, sdxl::to_rgb8(image));
  std::fprintf(stderr, "wrote %s (%lldx%lld, seed %llu)\n", args.output.c_str(),
               static_cast<long long>(args.sample.width),
               static_cast<long long>(args.sample.height),
               static_cast<unsigned long long>(args.sample.seed));
  return cli::kExitSuccess;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app;
  Arguments args;
  sdxl_app::TrainArguments train;
  build(app, args, train);
  if (const auto status =
          cli::parse(app, std::vector<std::string>(argv + 1, argv + argc), std::cout, std::cerr))
    return *status;
  if (cli::selected_subcommand(app) == nullptr)
    return cli::report_usage_error(std::cerr, kProgram,
                                   "no command given (the commands are sample and train)");
  const std::string context = cli::command_name(app);
  const bool training = cli::selected_subcommand(app)->get_name() == "train";
  try {
    if (!training)
      parse_size(args.size, args.sample);
    for (const auto& text : args.lora_texts)
      args.loras.push_back(parse_lora(text));
  } catch (const cli::UsageError& error) {
    return cli::report_usage_error(std::cerr, context, error.what());
  }
  try {
    return training ? sdxl_app::run_train(train) : run(args);
  } catch (const cli::UsageError& error) {
    return cli::report_usage_error(std::cerr, context, error.what());
  } catch (const std::exception& error) {
    return cli::report_exception(std::cerr, kProgram, error);
  }
}
