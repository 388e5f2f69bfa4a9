// aclora-lora restart: one AC-LoRA RESTART of the stored factors, as the trainer does it.
#include <cstdio>
#include <map>

#include "aclora/backends/eigen.hpp"
#include "aclora/restart.hpp"
#include "commands.hpp"

namespace aclora::lora_tool {

int restart(const Options& options, std::ostream& out, std::ostream& err) {
  if (!options.loss || !options.epoch || !options.epochs)
    throw UsageError("restart needs --loss L --epoch E --epochs N");
  const Schedule schedule{*options.epochs, 1};
  const double threshold = schedule.threshold(*options.loss, *options.epoch);  // validates
  check_output(options);
  const lora::LoraFile file = open_input(options);
  refuse_lycoris(file, "restarted");
  const std::string format = output_format(options, file);
  warn_unknown(file, err);
  const std::string label = file.path.string();

  // Owned float copies: RESTART writes in place, the input mapping stays untouched.
  std::vector<std::vector<float>> downs(file.modules.size());
  std::vector<std::vector<float>> ups(file.modules.size());
  using View = backends::eigen::MatrixView;
  std::vector<Module<View>> modules;
  for (std::size_t i = 0; i < file.modules.size(); ++i) {
    const auto& module = file.modules[i];
    const FloatFactors factors = load_factors(module, label);
    downs[i].assign(factors.down, factors.down + module.rank * module.in_features);
    ups[i].assign(factors.up, factors.up + module.out_features * module.rank);
    const auto rank = static_cast<std::ptrdiff_t>(module.rank);
    const auto in = static_cast<std::ptrdiff_t>(module.in_features);
    const auto outs = static_cast<std::ptrdiff_t>(module.out_features);
    modules.push_back(Module<View>::lora(module.name, View(downs[i].data(), rank, in, in, 1),
                                         View(ups[i].data(), outs, rank, rank, 1)));
  }
  Restart<backends::EigenBackend> driver(
      Restart<backends::EigenBackend>::Options{NoisePolicy::whole, 1, options.seed},
      backends::EigenBackend(
          backends::EigenBackend::Options{backends::eigen::Method::gram, options.threads, 256}));
  RestartReport report;
  try {
    report = driver(modules, schedule, *options.epoch, *options.loss);
  } catch (const aclora::Error& error) {
    throw lora::Error(label + ": " + error.what());
  }

  // The new factors as F32 (exact) until written; each is then rounded once to the input's
  // dtype, after any scale folding.
  std::vector<lora::OutputModule> written;
  std::vector<lora::FactorDtypes> dtypes;
  for (std::size_t i = 0; i < file.modules.size(); ++i) {
    const auto& module = file.modules[i];
    lora::OutputModule result = lora::unchanged_module(module);
    result.down = lora::encode_tensor(downs[i], safetensors::Dtype::F32, module.down.shape);
    result.up = lora::encode_tensor(ups[i], safetensors::Dtype::F32, module.up.shape);
    std::vector<float>().swap(downs[i]);
    std::vector<float>().swap(ups[i]);
    dtypes.push_back(lora::FactorDtypes{module.down.dtype, module.up.dtype});
    written.push_back(std::move(result));
  }
  Metadata metadata;
  metadata["aclora_restart_threshold"] = number_text(threshold);
  metadata["aclora_restart_schedule"] = "{\"loss\":" + number_text(*options.loss) +
                                        ",\"epoch\":" + std::to_string(*options.epoch) +
                                        ",\"epochs\":" + std::to_string(*options.epochs) + "}";
  metadata["aclora_restart_seed"] = std::to_string(options.seed);
  metadata["aclora_module_ranks"] =
      module_json(written, [&](std::size_t i) { return report.modules[i].module_rank; });
  write_output(file, std::move(written), dtypes, format, options, metadata);

  struct Block {
    std::size_t modules = 0, kept = 0, allocated = 0;
  };
  std::map<std::string, Block> blocks;
  for (std::size_t i = 0; i < report.modules.size(); ++i) {
    Block& block = blocks[block_of(file.modules[i])];
    ++block.modules;
    block.kept += report.modules[i].module_rank;
    block.allocated += report.modules[i].allocated_rank;
  }
  char line[200];
  std::snprintf(line, sizeof line,
                "restart:     p = %.6f (loss %g, alpha %.4f, epoch %d of %d, seed %llu)\n",
                threshold, *options.loss, report.alpha, *options.epoch, *options.epochs,
                static_cast<unsigned long long>(options.seed));
  out << line;
  out << "modules:     " << report.modules.size() << " -> " << format << " "
      << options.output->string() << "\n";
  out << "kept rank:   " << report.total_module_rank() << " of allocated ";
  std::size_t allocated = 0;
  for (const auto& module : report.modules)
    allocated += module.allocated_rank;
  out << allocated << " (the factors keep their allocated rank; the rest is noise)\n";
  out << "kept rank per block (modules: mean K / mean R):\n";
  for (const auto& [name, block] : blocks) {
    std::snprintf(line, sizeof line, "  %-28s %4zu: %6.2f / %6.2f\n", name.c_str(), block.modules,
                  static_cast<double>(block.kept) / static_cast<double>(block.modules),
                  static_cast<double>(block.allocated) / static_cast<double>(block.modules));
    out << line;
  }
  return 0;
}

}  // namespace aclora::lora_tool
