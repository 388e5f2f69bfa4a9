// aclora-sdxl: the SDXL example's command line.
//   aclora-sdxl sample --model PATH --prompt TEXT [options] -o out.png
#include <aclora/adapters/lora/open.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "sdxl/image.hpp"
#include "sdxl/lora.hpp"
#include "sdxl/pipeline.hpp"

namespace {

constexpr const char* kUsage =
    R"(usage: aclora-sdxl sample --model PATH --prompt TEXT -o OUT.png [options]

Generates an image with SDXL (Euler sampler, classifier-free guidance).

  --model PATH          diffusers folder or single-file .safetensors checkpoint
  --prompt TEXT         what to draw
  --negative TEXT       negative prompt (default: none, all-zero negative conditioning)
  --steps N             sampling steps (default 30)
  --cfg G               guidance scale (default 5; <= 1 disables guidance)
  --seed S              initial noise seed (default 0): same seed, same image
  --size WxH            image size, multiples of 8 (default 1024x1024)
  --lora FILE[:SCALE]   apply a kohya / diffusers / PEFT LoRA (repeatable; SCALE default 1)
  --lora-mode MODE      merge (default) or runtime
  --config DIR          diffusers folder whose config.json files describe a single-file model
  --tokenizer PATH      diffusers folder with tokenizer/ and tokenizer_2/, or
                        bpe_simple_vocab_16e6.txt.gz (default: the model or --config folder)
  --device DEV          cpu (default) or cuda
  --dtype T             fp32 (default on cpu), bf16 (default on cuda) or fp16
  --fp16-variant        read *.fp16.safetensors files of a diffusers folder
  -o, --output FILE     PNG to write
  -h, --help            this text
)";

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

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
  std::vector<LoraRequest> loras;
  sdxl::SampleOptions sample;
};

double parse_number(const std::string& flag, const std::string& text) {
  try {
    std::size_t used = 0;
    const double value = std::stod(text, &used);
    if (used == text.size())
      return value;
  } catch (const std::exception&) {
  }
  throw UsageError(flag + ": not a number: '" + text + "'");
}

std::int64_t parse_integer(const std::string& flag, const std::string& text) {
  const double value = parse_number(flag, text);
  if (value != static_cast<double>(static_cast<std::int64_t>(value)) || value < 0) {
    throw UsageError(flag + ": not a non-negative integer: '" + text + "'");
  }
  return static_cast<std::int64_t>(value);
}

LoraRequest parse_lora(const std::string& text) {
  // FILE[:SCALE]; a path may itself contain ':', so only a numeric tail is a scale.
  const auto colon = text.rfind(':');
  if (colon != std::string::npos && colon + 1 < text.size()) {
    try {
      std::size_t used = 0;
      const std::string tail = text.substr(colon + 1);
      const double scale = std::stod(tail, &used);
      if (used == tail.size())
        return {text.substr(0, colon), scale};
    } catch (const std::exception&) {
    }
  }
  return {text, 1.0};
}

Arguments parse(int argc, char** argv) {
  if (argc < 2)
    throw UsageError("missing command");
  const std::string command = argv[1];
  if (command == "-h" || command == "--help") {
    std::cout << kUsage;
    std::exit(0);
  }
  if (command != "sample")
    throw UsageError("unknown command '" + command + "'");
  Arguments args;
  bool have_prompt = false;
  for (int i = 2; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "-h" || flag == "--help") {
      std::cout << kUsage;
      std::exit(0);
    }
    if (flag == "--fp16-variant") {
      args.fp16_variant = true;
      continue;
    }
    if (i + 1 >= argc)
      throw UsageError(flag + ": missing value");
    const std::string value = argv[++i];
    if (flag == "--model") {
      args.model = value;
    } else if (flag == "--prompt") {
      args.sample.prompt = value;
      have_prompt = true;
    } else if (flag == "--negative") {
      args.sample.negative = value;
    } else if (flag == "--steps") {
      args.sample.steps = static_cast<int>(parse_integer(flag, value));
    } else if (flag == "--cfg") {
      args.sample.guidance = parse_number(flag, value);
    } else if (flag == "--seed") {
      args.sample.seed = static_cast<std::uint64_t>(parse_integer(flag, value));
    } else if (flag == "--size") {
      const auto x = value.find('x');
      if (x == std::string::npos)
        throw UsageError("--size: expected WxH, got '" + value + "'");
      args.sample.width = parse_integer(flag, value.substr(0, x));
      args.sample.height = parse_integer(flag, value.substr(x + 1));
    } else if (flag == "--lora") {
      args.loras.push_back(parse_lora(value));
    } else if (flag == "--lora-mode") {
      if (value != "merge" && value != "runtime") {
        throw UsageError("--lora-mode: expected merge or runtime, got '" + value + "'");
      }
      args.lora_mode = value;
    } else if (flag == "--config") {
      args.config = value;
    } else if (flag == "--tokenizer") {
      args.tokenizer = value;
    } else if (flag == "--device") {
      if (value != "cpu" && value != "cuda") {
        throw UsageError("--device: expected cpu or cuda, got '" + value + "'");
      }
      args.device = value;
    } else if (flag == "--dtype") {
      if (value != "fp32" && value != "bf16" && value != "fp16") {
        throw UsageError("--dtype: expected fp32, bf16 or fp16, got '" + value + "'");
      }
      args.dtype = value;
    } else if (flag == "-o" || flag == "--output") {
      args.output = value;
    } else {
      throw UsageError("unknown option '" + flag + "'");
    }
  }
  if (args.model.empty())
    throw UsageError("--model is required");
  if (!have_prompt)
    throw UsageError("--prompt is required");
  if (args.output.empty())
    throw UsageError("-o OUT.png is required");
  if (args.sample.steps < 1)
    throw UsageError("--steps must be at least 1");
  return args;
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

  // Every LoRA file is read and checked before the model is loaded.
  std::vector<aclora::lora::LoraFile> loras;
  for (const auto& request : args.loras)
    loras.push_back(aclora::lora::open_lora(request.path));

  sdxl::SdxlPipeline pipeline = sdxl::SdxlPipeline::load(args.model, options);
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
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse(argc, argv));
  } catch (const UsageError& error) {
    std::fprintf(stderr, "aclora-sdxl: %s (see aclora-sdxl --help)\n", error.what());
    return 2;
  } catch (const std::exception& error) {
    std::string message = error.what();
    // LibTorch errors carry a C++ backtrace after the first line; keep one line.
    if (const auto newline = message.find('\n'); newline != std::string::npos) {
      message.resize(newline);
    }
    std::fprintf(stderr, "aclora-sdxl: %s\n", message.c_str());
    return 1;
  }
}
