// aclora-lora resize: per-module ranks from the product analysis, effective scale kept.
#include <chrono>
#include <cstdio>
#include <map>

#include "aclora/schedule.hpp"
#include "aclora/selection.hpp"
#include "commands.hpp"

namespace aclora::lora_tool {

namespace {

safetensors::Dtype output_dtype(const std::string& name, const lora::LoraModule& module) {
  if (name == "f32")
    return safetensors::Dtype::F32;
  if (name == "f16")
    return safetensors::Dtype::F16;
  if (name == "bf16")
    return safetensors::Dtype::BF16;
  if (name == "keep")
    return module.down.dtype;
  throw UsageError("--dtype must be f32, f16, bf16 or keep, not '" + name + "'");
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
  output_dtype(options.dtype, lora::LoraModule{});  // validates the name early
  check_output(options);
  const auto start = std::chrono::steady_clock::now();
  const lora::LoraFile file = open_input(options);
  refuse_lycoris(file, "resized");
  const std::string format = output_format(options, file);
  warn_unknown(file, err);
  const std::string label = file.path.string();

  std::vector<lora::OutputModule> written(file.modules.size());
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
    } else {
      const ProductFactors factors = refactor_module(module, analysis, k);
      written[i] = lora::refactored_module(module, k, factors.up, factors.down,
                                           output_dtype(options.dtype, module));
    }
  });
  write_output(file, written, format, options);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  std::size_t parameters_before = 0, parameters_after = 0, bytes_before = 0, bytes_after = 0;
  struct Block {
    std::size_t modules = 0, rank_before = 0, rank_after = 0;
  };
  std::map<std::string, Block> blocks;
  for (std::size_t i = 0; i < file.modules.size(); ++i) {
    const auto& module = file.modules[i];
    parameters_before += module.parameters();
    parameters_after += kept[i] * (module.in_features + module.out_features);
    bytes_before += module.down.bytes.size() + module.up.bytes.size();
    bytes_after += written[i].down.bytes.size() + written[i].up.bytes.size();
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
