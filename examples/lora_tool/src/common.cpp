// Shared parts of aclora-lora: factor loading, product analysis, input / output handling.
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>

#include "aclora/adapters/json/dump.hpp"
#include "aclora/backends/eigen/product.hpp"
#include "aclora/parallel.hpp"
#include "commands.hpp"

namespace aclora::lora_tool {

namespace {

// A float view of a tensor: in place when it is aligned F32, else converted into `storage`.
const float* float_data(const safetensors::TensorView& view, std::vector<float>& storage) {
  const auto address = reinterpret_cast<std::uintptr_t>(view.bytes.data());
  if (view.dtype == safetensors::Dtype::F32 && address % alignof(float) == 0)
    return reinterpret_cast<const float*>(view.bytes.data());
  storage = safetensors::convert_to<float>(view);
  return storage.data();
}

bool all_finite(const float* data, std::size_t count) {
  for (std::size_t i = 0; i < count; ++i)
    if (!std::isfinite(data[i]))
      return false;
  return true;
}

backends::eigen::MatrixView view_of(const float* data, std::size_t rows, std::size_t cols) {
  // The analysis only reads through the view; MatrixView is writable by design.
  return backends::eigen::MatrixView(const_cast<float*>(data), static_cast<std::ptrdiff_t>(rows),
                                     static_cast<std::ptrdiff_t>(cols),
                                     static_cast<std::ptrdiff_t>(cols), 1);
}

}  // namespace

FloatFactors load_factors(const lora::LoraModule& module, const std::string& file_label) {
  FloatFactors factors;
  factors.down = float_data(module.down, factors.down_storage);
  factors.up = float_data(module.up, factors.up_storage);
  if (!all_finite(factors.down, module.rank * module.in_features))
    throw lora::Error(file_label + ": module '" + module.name + "': down factor holds NaN or Inf");
  if (!all_finite(factors.up, module.rank * module.out_features))
    throw lora::Error(file_label + ": module '" + module.name + "': up factor holds NaN or Inf");
  return factors;
}

ModuleAnalysis analyze_module(const lora::LoraModule& module, const std::string& file_label) {
  ModuleAnalysis analysis;
  analysis.factors = load_factors(module, file_label);
  backends::eigen::ProductPrimitives primitives;
  const Layer<backends::eigen::MatrixView> down{
      view_of(analysis.factors.down, module.rank, module.in_features), RankAxis::rows};
  const Layer<backends::eigen::MatrixView> up{
      view_of(analysis.factors.up, module.out_features, module.rank), RankAxis::cols};
  analysis.decomposition = product_analyze(primitives, down, up, module.rank);
  if (!analysis.decomposition.spectrum.finite)
    throw lora::Error(file_label + ": module '" + module.name + "': factors hold NaN or Inf");
  return analysis;
}

ProductFactors refactor_module(const lora::LoraModule& module, const ModuleAnalysis& analysis,
                               std::size_t kept) {
  backends::eigen::ProductPrimitives primitives;
  const Layer<backends::eigen::MatrixView> down{
      view_of(analysis.factors.down, module.rank, module.in_features), RankAxis::rows};
  const Layer<backends::eigen::MatrixView> up{
      view_of(analysis.factors.up, module.out_features, module.rank), RankAxis::cols};
  return product_refactor(primitives, analysis.decomposition, down, up, kept);
}

void for_each_module(std::size_t count, unsigned threads, std::ostream& err, const char* what,
                     const std::function<void(std::size_t)>& task) {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  auto last = start;
  std::atomic<std::size_t> done{0};
  std::mutex print;
  bool printed = false;
  aclora::for_each_index(count, threads, [&](std::size_t i, unsigned) {
    task(i);
    const std::size_t finished = ++done;
    const auto now = clock::now();
    std::lock_guard lock(print);
    if (now - start > std::chrono::seconds(1) &&
        (now - last > std::chrono::milliseconds(250) || finished == count)) {
      err << "\r" << what << " " << finished << "/" << count << " modules" << std::flush;
      last = now;
      printed = true;
    }
  });
  if (printed)
    err << "\n";
}

std::string guess_base_model(const lora::LoraFile& file) {
  for (const char* key : {"ss_base_model_version", "modelspec.architecture"}) {
    const auto found = file.metadata.find(key);
    if (found == file.metadata.end())
      continue;
    const std::string& value = found->second;
    if (value.find("sdxl") != std::string::npos ||
        value.find("stable-diffusion-xl") != std::string::npos)
      return "SDXL (metadata " + std::string(key) + " = " + value + ")";
    if (value.find("v1") != std::string::npos ||
        value.find("stable-diffusion-v1") != std::string::npos)
      return "SD 1.x (metadata " + std::string(key) + " = " + value + ")";
    if (value.find("v2") != std::string::npos)
      return "SD 2.x (metadata " + std::string(key) + " = " + value + ")";
  }
  for (const auto& module : file.modules) {
    if (module.component == lora::Component::text_encoder_2)
      return "SDXL (text_encoder_2 modules present)";
  }
  for (const auto& module : file.modules) {
    if (module.component == lora::Component::unet && module.path.ends_with("attn2.to_k")) {
      if (module.in_features == 2048)
        return "SDXL (cross-attention width 2048)";
      if (module.in_features == 768)
        return "SD 1.x (cross-attention width 768)";
      if (module.in_features == 1024)
        return "SD 2.x (cross-attention width 1024)";
      return "unknown (cross-attention width " + std::to_string(module.in_features) + ")";
    }
  }
  return "unknown";
}

bool is_sdxl(const lora::LoraFile& file) {
  return guess_base_model(file).rfind("SDXL", 0) == 0;
}

std::string block_of(const lora::LoraModule& module) {
  if (module.component != lora::Component::unet)
    return std::string(lora::component_name(module.component));
  const std::vector<std::string> parts =
      lora::detail::split(lora::unet_diffusers_to_ldm(module.path).value_or(module.path), '.');
  if (parts.size() >= 2 && parts[0] != "middle_block")
    return "unet." + parts[0] + "." + parts[1];
  return "unet." + parts[0];
}

lora::LoraFile open_input(const Options& options) {
  return lora::open_lora(options.input);
}

void check_output(const Options& options) {
  namespace fs = std::filesystem;
  if (!options.output)
    throw UsageError(options.command + " needs -o OUT");
  const fs::path& out = *options.output;
  std::error_code error;
  if (fs::exists(options.input, error) && fs::exists(out, error) &&
      fs::equivalent(options.input, out, error)) {
    throw lora::Error(out.string() + ": output is the input file (the input is never modified)");
  }
  if (!out.has_filename())
    throw lora::Error(out.string() + ": output path names no file");
  const fs::path parent = out.has_parent_path() ? out.parent_path() : fs::path(".");
  if (!fs::is_directory(parent, error))
    throw lora::Error(out.string() + ": cannot write: folder '" + parent.string() +
                      "' does not exist");
  if (::access(parent.c_str(), W_OK) != 0)
    throw lora::Error(out.string() + ": cannot write: folder '" + parent.string() +
                      "' is not writable");
  if (fs::is_directory(out, error) && options.to.value_or("") != "peft" &&
      !fs::exists(out / "adapter_config.json", error) && !fs::exists(out / "unet", error))
    throw lora::Error(out.string() + ": cannot write: it is a folder");
}

std::string output_format(const Options& options, const lora::LoraFile& file) {
  if (options.to) {
    if (*options.to != "kohya" && *options.to != "diffusers" && *options.to != "peft")
      throw UsageError("--to must be kohya, diffusers or peft, not '" + *options.to + "'");
    return *options.to;
  }
  if (file.format == lora::Format::lycoris)
    return "kohya";
  return std::string(lora::format_name(file.format));
}

void write_output(const lora::LoraFile& source, std::vector<lora::OutputModule> modules,
                  std::span<const lora::FactorDtypes> dtypes, const std::string& format,
                  const Options& options, const Metadata& metadata) {
  const std::filesystem::path& path = *options.output;
  if (format == "kohya") {
    // Kohya to kohya conversion keeps the bytes (and the source's alphas); every other
    // kohya output gets one alpha so that diffusers scales it right.
    const bool keep_alphas = options.command == "convert" && source.format == lora::Format::kohya;
    if (options.uniform_alpha.value_or(!keep_alphas)) {
      lora::make_alpha_uniform(modules, dtypes);
    } else {
      for (std::size_t i = 0; i < modules.size(); ++i) {
        lora::OutputModule& module = modules[i];
        if (module.alpha_tensor && lora::factor_dtypes(module) == dtypes[i])
          continue;  // as stored
        lora::encode_module(module, dtypes[i], module.alpha, dtypes[i].up);
      }
    }
    std::map<std::string, std::string> entries =
        lora::kohya_metadata(source.metadata, modules, path.stem().string(), is_sdxl(source));
    for (const auto& [key, value] : metadata)
      entries[key] = value;
    lora::write_kohya(modules, entries, path);
  } else if (format == "diffusers") {
    // The scale folded into up (alpha = rank) before the one rounding to the dtype.
    for (std::size_t i = 0; i < modules.size(); ++i)
      lora::encode_module(modules[i], dtypes[i], static_cast<double>(modules[i].rank),
                          dtypes[i].up);
    lora::write_diffusers(modules, path, metadata);
  } else {
    // PEFT keeps alpha in its JSON config: no rounding of alpha.
    for (std::size_t i = 0; i < modules.size(); ++i)
      lora::encode_module(modules[i], dtypes[i], modules[i].alpha, safetensors::Dtype::F64);
    lora::write_peft(modules, path, metadata);
  }
}

std::string module_json(const std::vector<lora::OutputModule>& modules,
                        const std::function<std::size_t(std::size_t)>& value) {
  json::Value object = json::Object{};
  for (std::size_t i = 0; i < modules.size(); ++i)
    object[modules[i].name] = json::Value(value(i));
  return json::dump(object);
}

std::string number_text(double value) {
  char buffer[64];
  const auto result = std::to_chars(buffer, buffer + sizeof buffer, value);
  return std::string(buffer, result.ptr);
}

void refuse_lycoris(const lora::LoraFile& file, const std::string& command) {
  if (!file.lycoris.empty()) {
    throw lora::Error(file.path.string() + ": " + std::to_string(file.lycoris.size()) +
                      " LyCORIS (" + file.lycoris.front().algorithm +
                      ") modules: they can be inspected but not " + command);
  }
  if (file.modules.empty())
    throw lora::Error(file.path.string() + ": no LoRA modules");
}

void warn_unknown(const lora::LoraFile& file, std::ostream& err) {
  if (file.unknown_keys.empty())
    return;
  err << "aclora-lora: warning: " << file.unknown_keys.size()
      << " tensors with unknown keys are not written (first: " << file.unknown_keys.front()
      << ")\n";
}

}  // namespace aclora::lora_tool
