// aclora-lora inspect: format, base model, modules, ranks, alphas, energy spectrum, size.
#include <algorithm>
#include <cstdio>
#include <map>
#include <sstream>

#include "aclora/adapters/json/dump.hpp"
#include "commands.hpp"

namespace aclora::lora_tool {

namespace {

struct EnergyRanks {
  std::size_t k90 = 0;
  std::size_t k99 = 0;
  std::size_t k999 = 0;
  std::size_t numerical = 0;
  double largest = 0.0;  // largest singular value of the scaled dW
};

std::string fixed(double value, int digits) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.*f", digits, value);
  return buffer;
}

std::string human_bytes(std::size_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024.0 && unit < 3) {
    value /= 1024.0;
    ++unit;
  }
  return fixed(value, unit == 0 ? 0 : 2) + " " + units[unit];
}

}  // namespace

int inspect(const Options& options, std::ostream& out, std::ostream& err) {
  const lora::LoraFile file = open_input(options);
  const std::string label = file.path.string();
  std::vector<EnergyRanks> energy(file.modules.size());
  for_each_module(file.modules.size(), options.threads, err, "analysing", [&](std::size_t i) {
    const auto& module = file.modules[i];
    const ModuleAnalysis analysis = analyze_module(module, label);
    const auto& values = analysis.decomposition.spectrum.singular_values;
    energy[i] = EnergyRanks{rank_for_energy(values, 0.90), rank_for_energy(values, 0.99),
                            rank_for_energy(values, 0.999), numerical_rank(values),
                            values.empty() ? 0.0 : values[0] * std::abs(module.scale())};
  });
  std::map<std::string, std::size_t> per_component;
  std::size_t total_k90 = 0, total_k99 = 0, total_k999 = 0, total_rank = 0;
  std::size_t min_rank = 0, max_rank = 0;
  for (std::size_t i = 0; i < file.modules.size(); ++i) {
    const auto& module = file.modules[i];
    ++per_component[std::string(lora::component_name(module.component))];
    total_k90 += energy[i].k90;
    total_k99 += energy[i].k99;
    total_k999 += energy[i].k999;
    total_rank += module.rank;
    min_rank = i == 0 ? module.rank : std::min(min_rank, module.rank);
    max_rank = std::max(max_rank, module.rank);
  }
  const std::string base = guess_base_model(file);

  if (options.json) {
    json::Value root = json::Object{};
    root["file"] = label;
    root["format"] = std::string(lora::format_name(file.format));
    root["base_model"] = base;
    root["module_count"] = json::Value(file.modules.size());
    root["lycoris_module_count"] = json::Value(file.lycoris.size());
    json::Value components = json::Object{};
    for (const auto& [name, count] : per_component)
      components[name] = json::Value(count);
    root["modules_per_component"] = std::move(components);
    root["parameters"] = json::Value(file.parameters());
    root["bytes"] = json::Value(file.tensor_bytes());
    root["total_rank"] = json::Value(total_rank);
    root["energy_rank_totals"] = json::Value(json::Object{{"0.9", json::Value(total_k90)},
                                                          {"0.99", json::Value(total_k99)},
                                                          {"0.999", json::Value(total_k999)}});
    json::Value modules = json::Array{};
    for (std::size_t i = 0; i < file.modules.size(); ++i) {
      const auto& module = file.modules[i];
      json::Value entry = json::Object{};
      entry["name"] = module.name;
      entry["component"] = std::string(lora::component_name(module.component));
      entry["path"] = module.path;
      entry["kind"] = module.kind == lora::ModuleKind::conv ? "conv" : "linear";
      entry["rank"] = json::Value(module.rank);
      entry["alpha"] = module.alpha;
      entry["in_features"] = json::Value(module.in_features);
      entry["out_features"] = json::Value(module.out_features);
      entry["dtype"] = std::string(safetensors::dtype_name(module.down.dtype));
      entry["rank_90"] = json::Value(energy[i].k90);
      entry["rank_99"] = json::Value(energy[i].k99);
      entry["rank_999"] = json::Value(energy[i].k999);
      entry["numerical_rank"] = json::Value(energy[i].numerical);
      entry["largest_singular_value"] = energy[i].largest;
      modules.push_back(std::move(entry));
    }
    root["modules"] = std::move(modules);
    json::Value lycoris = json::Array{};
    for (const auto& module : file.lycoris) {
      json::Value entry = json::Object{};
      entry["name"] = module.name;
      entry["algorithm"] = module.algorithm;
      entry["dimension"] = json::Value(module.dimension);
      entry["parameters"] = json::Value(module.parameters);
      if (module.alpha)
        entry["alpha"] = *module.alpha;
      lycoris.push_back(std::move(entry));
    }
    root["lycoris_modules"] = std::move(lycoris);
    json::Value unknown = json::Array{};
    for (const auto& key : file.unknown_keys)
      unknown.push_back(key);
    root["unknown_keys"] = std::move(unknown);
    json::Value notes = json::Array{};
    for (const auto& note : file.notes)
      notes.push_back(note);
    root["notes"] = std::move(notes);
    out << json::dump(root, 2) << "\n";
    return 0;
  }

  out << "file:        " << label << "\n";
  out << "format:      " << lora::format_name(file.format) << "\n";
  out << "base model:  " << base << "\n";
  out << "modules:     " << file.modules.size();
  for (const auto& [name, count] : per_component)
    out << "  " << name << " " << count;
  out << "\n";
  if (!file.lycoris.empty()) {
    std::map<std::string, std::size_t> algorithms;
    for (const auto& module : file.lycoris)
      ++algorithms[module.algorithm];
    out << "lycoris:     " << file.lycoris.size() << " modules";
    for (const auto& [name, count] : algorithms)
      out << "  " << name << " " << count;
    out << "\n";
  }
  if (!file.modules.empty()) {
    out << "rank:        " << min_rank << ".." << max_rank << " (sum " << total_rank << ")\n";
    out << "energy rank: sum over modules of the rank holding 90% / 99% / 99.9% of dW's energy: "
        << total_k90 << " / " << total_k99 << " / " << total_k999 << "\n";
  }
  out << "parameters:  " << file.parameters() << "  (" << human_bytes(file.tensor_bytes())
      << " of tensors)\n";
  out << "unknown keys: " << file.unknown_keys.size() << "\n";
  for (const auto& key : file.unknown_keys)
    out << "  unknown: " << key << "\n";
  for (const auto& note : file.notes)
    out << "note: " << note << "\n";
  if (!file.modules.empty()) {
    out << "\n"
        << "rank  alpha     k90  k99 k99.9  shape        module\n";
    for (std::size_t i = 0; i < file.modules.size(); ++i) {
      const auto& module = file.modules[i];
      char line[160];
      std::snprintf(
          line, sizeof line, "%4zu  %-8s %4zu %4zu %5zu  %-12s ", module.rank,
          fixed(module.alpha, 3).c_str(), energy[i].k90, energy[i].k99, energy[i].k999,
          (std::to_string(module.out_features) + "x" + std::to_string(module.in_features) +
           (module.kind == lora::ModuleKind::conv ? "c" : ""))
              .c_str());
      out << line << module.name << "\n";
    }
  }
  for (const auto& module : file.lycoris) {
    out << module.algorithm << "  dim " << module.dimension << "  params " << module.parameters
        << "  " << module.name << "\n";
  }
  return 0;
}

}  // namespace aclora::lora_tool
