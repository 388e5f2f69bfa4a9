// aclora-lora resize: per-module ranks from the product analysis, effective scale kept.
#include <chrono>
#include <cstdio>
#include <map>

#include "aclora/schedule.hpp"
#include "aclora/selection.hpp"
#include "commands.hpp"

namespace aclora::lora_tool {

namespace {

// The dtypes of a refactored module's factors (--dtype; keep: the input's).
lora::FactorDtypes output_dtypes(const std::string& name, const lora::LoraModule& module) {
  const auto both = [](safetensors::Dtype dtype) { return lora::FactorDtypes{dtype, dtype}; };
  if (name == "f32")
    return both(safetensors::Dtype::F32);
  if (name == "f16")
    return both(safetensors::Dtype::F16);
  if (name == "bf16")
    return both(safetensors::Dtype::BF16);
  if (name == "keep")
    return lora::FactorDtypes{module.down.dtype, module.up.dtype};
  throw UsageError("--dtype must be f32, f16, bf16 or keep, not '" + name + "'");
}

// What the output records about the resize: rule, its parameter, ranks before and after.
Metadata resize_metadata(const Options& options, double threshold, const lora::LoraFile& file,
                         const std::vector<lora::OutputModule>& written) {
  Metadata metadata;
  if (options.rank) {
    metadata["aclora_resize_rule"] = "rank";
    metadata["aclora_resize_parameter"] = std::to_string(*options.rank);
  } else if (options.energy) {
    metadata["aclora_resize_rule"] = "energy";
    metadata["aclora_resize_parameter"] = number_text(*options.energy);
  } else {
    metadata["aclora_resize_rule"] = "ac-lora";
    metadata["aclora_resize_parameter"] = number_text(threshold);
    metadata["aclora_resize_schedule"] = "{\"loss\":" + number_text(*options.loss) +
                                         ",\"epoch\":" + std::to_string(*options.epoch) +
                                         ",\"epochs\":" + std::to_string(*options.epochs) + "}";
  }
  metadata["aclora_source_ranks"] =
      module_json(written, [&](std::size_t i) { return file.modules[i].rank; });
  metadata["aclora_module_ranks"] =
      module_json(written, [&](std::size_t i) { return written[i].rank; });
  return metadata;
}

}  // namespace

int resize(const Options& options, std::ostream& out, std::ostream& err) {
  const int rules = (options.rank ? 1 : 0) + (options.energy ? 1 : 0) + (options.loss ? 1 : 0);
  if (rules != 1)
    throw UsageError(
        "resize needs exactly one rule: --rank N, --energy P or --loss L --epoch E --epochs N");
  if (options.energy && !(*options.energy > 0.0 && *options.energy <= 1.0))
    throw UsageError("--energy must lie in (0, 1] (or be given as a percentage like 99%)");
  if (options.rank && *options.rank == 0)
    throw UsageError("--rank must be >= 1");
  double threshold = 0.0;
  if (options.loss) {
    if (!options.epoch || !options.epochs)
      throw UsageError("the AC-LoRA rule needs --loss, --epoch and --epochs");
    threshold = Schedule{*options.epochs, 1}.threshold(*options.loss, *options.epoch);
  }
  output_dtypes(options.dtype, lora::LoraModule{});  // validates the name early
  check_output(options);
  const auto start = std::chrono::steady_clock::now();
  const lora::LoraFile file = open_input(options);
  refuse_lycoris(file, "resized");
  const std::string format = output_format(options, file);
  warn_unknown(file, err);
  const std::string label = file.path.string();

  // Refactored factors stay F32 (exact) until written: folding the scales (uniform alpha,
  // diffusers) and the rounding to --dtype then happen in one encode.
  std::vector<lora::OutputModule> written(file.modules.size());
  std::vector<lora::FactorDtypes> dtypes(file.modules.size());
  std::vector<std::size_t> kept(file.modules.size());
  for_each_module(file.modules.size(), options.threads, err, "resizing", [&](std::size_t i) {
    const auto& module = file.modules[i];
    const ModuleAnalysis analysis = analyze_module(module, label);
    const auto& values = analysis.decomposition.spectrum.singular_values;
    std::size_t k = module.rank;
    if (options.rank)
      k = std::min(*options.rank, module.rank);
    else if (options.energy)
      k = rank_for_energy(values, *options.energy);
    else
      k = std::max<std::size_t>(1, signal_count(values, threshold));
    k = std::clamp<std::size_t>(k, 1, module.rank);
    kept[i] = k;
    if (k == module.rank) {
      written[i] = lora::unchanged_module(module);
      dtypes[i] = lora::factor_dtypes(written[i]);
    } else {
      const ProductFactors factors = refactor_module(module, analysis, k);
      written[i] = lora::refactored_module(module, k, factors.up, factors.down);
      dtypes[i] = output_dtypes(options.dtype, module);
    }
  });
  const Metadata metadata = resize_metadata(options, threshold, file, written);
  std::size_t bytes_after = 0;
  for (std::size_t i = 0; i < written.size(); ++i)
    bytes_after += (written[i].down.bytes.size() / safetensors::dtype_size(written[i].down.dtype)) *
                       safetensors::dtype_size(dtypes[i].down) +
                   (written[i].up.bytes.size() / safetensors::dtype_size(written[i].up.dtype)) *
                       safetensors::dtype_size(dtypes[i].up);
  write_output(file, std::move(written), dtypes, format, options, metadata);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  std::size_t parameters_before = 0, parameters_after = 0, bytes_before = 0;
  struct Block {
    std::size_t modules = 0, rank_before = 0, rank_after = 0;
  };
  std::map<std::string, Block> blocks;
  for (std::size_t i = 0; i < file.modules.size(); ++i) {
    const auto& module = file.modules[i];
    parameters_before += module.parameters();
    parameters_after += kept[i] * (module.in_features + module.out_features);
    bytes_before += module.down.bytes.size() + module.up.bytes.size();
    Block& block = blocks[block_of(module)];
    ++block.modules;
    block.rank_before += module.rank;
    block.rank_after += kept[i];
  }
  out << "rule:        ";
  if (options.rank)
    out << "rank <= " << *options.rank << "\n";
  else if (options.energy)
    out << "energy >= " << *options.energy << " of each module's dW\n";
  else
    out << "AC-LoRA, p = " << threshold << " (loss " << *options.loss << ", epoch "
        << *options.epoch << " of " << *options.epochs << ")\n";
  out << "modules:     " << file.modules.size() << " -> " << format << " "
      << options.output->string() << "\n";
  char line[200];
  std::snprintf(line, sizeof line, "parameters:  %zu -> %zu (%.1f%%)\n", parameters_before,
                parameters_after,
                100.0 * static_cast<double>(parameters_after) /
                    static_cast<double>(std::max<std::size_t>(1, parameters_before)));
  out << line;
  std::snprintf(line, sizeof line, "factor bytes: %zu -> %zu (%.1f%%)\n", bytes_before, bytes_after,
                100.0 * static_cast<double>(bytes_after) /
                    static_cast<double>(std::max<std::size_t>(1, bytes_before)));
  out << line;
  std::snprintf(line, sizeof line, "time:        %.3f s\n", seconds);
  out << line << "ranks per block (modules: mean rank before -> after):\n";
  for (const auto& [name, block] : blocks) {
    std::snprintf(line, sizeof line, "  %-28s %4zu: %6.2f -> %6.2f\n", name.c_str(), block.modules,
                  static_cast<double>(block.rank_before) / static_cast<double>(block.modules),
                  static_cast<double>(block.rank_after) / static_cast<double>(block.modules));
    out << line;
  }
  return 0;
}

}  // namespace aclora::lora_tool
