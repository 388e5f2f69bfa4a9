/// @file state.hpp
/// @brief Training states: everything a run needs to continue bit for bit, saved atomically.
///
/// One folder per save, built under a temporary name and renamed when complete:
///   manifest.json          format, version, counters, loss window, ranks, options, and the
///                          size and checksum of every other file
///   lora.safetensors       the factors, bytes as stored ("<module>.lora_down.weight", ...)
///   optimizer.safetensors  per-tensor optimizer state and the learning rate of each group
///   rng.safetensors        LibTorch's CPU generator state and each CUDA device's
///   extra.safetensors      tensors the trainer adds (its own data-order state, say)
/// A folder without manifest.json is not a state; a file whose size or hash differs from
/// the manifest is corrupt; a state whose modules or options differ from the run's is
/// refused. Loading checks everything before it changes any tensor.
#pragma once

#include <ATen/Context.h>
#include <torch/torch.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "aclora/adapters/io/atomic_file.hpp"
#include "aclora/adapters/io/checksum.hpp"
#include "aclora/adapters/json/dump.hpp"
#include "aclora/adapters/json/parse.hpp"
#include "aclora/adapters/json/value.hpp"
#include "aclora/adapters/safetensors/mapped_file.hpp"
#include "aclora/adapters/safetensors/reader.hpp"
#include "aclora/adapters/safetensors/writer.hpp"
#include "aclora/adapters/train/network.hpp"
#include "aclora/adapters/train/optimizer.hpp"
#include "aclora/adapters/train/tensor_io.hpp"

namespace aclora::train {

/// The manifest's "format" value.
inline constexpr const char* kStateFormat = "aclora-training-state";
/// The manifest's "version" value this code writes and reads.
inline constexpr std::int64_t kStateVersion = 1;

/// The counters and records of a run at the moment of a save (everything but tensors).
struct RunPosition {
  int epoch = 0;                          ///< the epoch in progress (0-based)
  std::int64_t step_in_epoch = 0;         ///< steps of that epoch done (0: the epoch has not begun)
  std::int64_t global_step = 0;           ///< optimizer steps since the run began, across resumes
  double epoch_loss_sum = 0.0;            ///< sum of that epoch's step losses so far
  std::int64_t epoch_loss_count = 0;      ///< number of those losses
  std::vector<double> loss_window;        ///< epoch losses since the last RESTART
  std::uint64_t restart_count = 0;        ///< RESTARTs so far
  std::vector<std::size_t> module_ranks;  ///< K per module after the last RESTART (empty: none)
  std::vector<std::pair<int, double>> epoch_losses;  ///< (epoch, mean loss) of finished epochs
  /// K per module after each RESTART so far: (epoch, ranks), for the rank picture.
  std::vector<std::pair<int, std::vector<std::size_t>>> rank_history;
  std::uint64_t metrics_offset = 0;      ///< bytes of the metrics file at the save
  std::uint64_t tensorboard_offset = 0;  ///< bytes of the TensorBoard file at the save
  std::string tensorboard_file;          ///< its name (inside the run's log folder)
};

/// A loaded state: the position, the trainer's extra tensors and the saved options.
struct LoadedState {
  RunPosition position;                        ///< counters and records
  std::map<std::string, torch::Tensor> extra;  ///< what the trainer saved (CPU tensors)
  json::Value options;                         ///< the options saved with the state
  std::filesystem::path folder;                ///< where it was read from
};

namespace detail {

inline std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw Error(path.string() + ": cannot be read");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// What identifies the network a state belongs to: per module its name, kind, R and the
// factor shapes and dtype.
inline json::Value network_description(const LoraNetwork& network) {
  json::Value modules = json::Array{};
  for (const auto& entry : network.modules()) {
    const LoraAdapter& adapter = *entry.adapter;
    json::Value module = json::Object{};
    module["name"] = entry.name;
    module["layer"] = adapter.geometry().describe();
    module["rank"] = adapter.rank();
    module["alpha"] = adapter.alpha();
    module["out"] = adapter.geometry().out_features;
    module["in"] = adapter.geometry().down_columns();
    module["dtype"] = std::string(c10::toString(adapter.down.scalar_type()));
    modules.push_back(std::move(module));
  }
  return modules;
}

// The first difference between two network descriptions, in words.
inline std::string network_difference(const json::Value& saved, const json::Value& current) {
  const auto& a = saved.as_array();
  const auto& b = current.as_array();
  for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    if (a[i] == b[i])
      continue;
    const std::string name = b[i].find("name") ? b[i].find("name")->as_string() : "?";
    for (const char* key : {"name", "layer", "rank", "alpha", "out", "in", "dtype"}) {
      const json::Value* x = a[i].find(key);
      const json::Value* y = b[i].find(key);
      if (!x || !y || !(*x == *y)) {
        return "module #" + std::to_string(i) + " ('" + name + "'): " + key + " is " +
               (x ? json::dump(*x) : "missing") + " in the state but " +
               (y ? json::dump(*y) : "missing") + " in this run";
      }
    }
  }
  return "the state has " + std::to_string(a.size()) + " modules, this run " +
         std::to_string(b.size());
}

inline json::Value position_json(const RunPosition& p) {
  json::Value out = json::Object{};
  out["epoch"] = p.epoch;
  out["step_in_epoch"] = p.step_in_epoch;
  out["global_step"] = p.global_step;
  out["epoch_loss_sum"] = p.epoch_loss_sum;
  out["epoch_loss_count"] = p.epoch_loss_count;
  json::Value window = json::Array{};
  for (double loss : p.loss_window)
    window.push_back(loss);
  out["loss_window"] = std::move(window);
  out["restart_count"] = std::to_string(p.restart_count);
  json::Value ranks = json::Array{};
  for (std::size_t k : p.module_ranks)
    ranks.push_back(k);
  out["module_ranks"] = std::move(ranks);
  json::Value losses = json::Array{};
  for (const auto& [epoch, loss] : p.epoch_losses)
    losses.push_back(json::Array{json::Value(epoch), json::Value(loss)});
  out["epoch_losses"] = std::move(losses);
  json::Value history = json::Array{};
  for (const auto& [epoch, ks] : p.rank_history) {
    json::Value column = json::Array{};
    for (std::size_t k : ks)
      column.push_back(k);
    history.push_back(json::Array{json::Value(epoch), std::move(column)});
  }
  out["rank_history"] = std::move(history);
  out["metrics_offset"] = std::to_string(p.metrics_offset);
  out["tensorboard_offset"] = std::to_string(p.tensorboard_offset);
  out["tensorboard_file"] = p.tensorboard_file;
  return out;
}

inline const json::Value& member(const json::Value& object, const char* key,
                                 const std::string& where) {
  const json::Value* value = object.find(key);
  if (!value)
    throw Error(where + ": manifest.json lacks \"" + key + "\"");
  return *value;
}

inline std::uint64_t unsigned_of(const json::Value& value) {
  return std::stoull(value.as_string());
}

inline RunPosition position_from(const json::Value& in, const std::string& where) {
  RunPosition p;
  p.epoch = static_cast<int>(member(in, "epoch", where).as_int());
  p.step_in_epoch = member(in, "step_in_epoch", where).as_int();
  p.global_step = member(in, "global_step", where).as_int();
  p.epoch_loss_sum = member(in, "epoch_loss_sum", where).as_double();
  p.epoch_loss_count = member(in, "epoch_loss_count", where).as_int();
  for (const auto& loss : member(in, "loss_window", where).as_array())
    p.loss_window.push_back(loss.as_double());
  p.restart_count = unsigned_of(member(in, "restart_count", where));
  for (const auto& k : member(in, "module_ranks", where).as_array())
    p.module_ranks.push_back(static_cast<std::size_t>(k.as_int()));
  for (const auto& pair : member(in, "epoch_losses", where).as_array())
    p.epoch_losses.emplace_back(static_cast<int>(pair.as_array().at(0).as_int()),
                                pair.as_array().at(1).as_double());
  for (const auto& pair : member(in, "rank_history", where).as_array()) {
    std::vector<std::size_t> ks;
    for (const auto& k : pair.as_array().at(1).as_array())
      ks.push_back(static_cast<std::size_t>(k.as_int()));
    p.rank_history.emplace_back(static_cast<int>(pair.as_array().at(0).as_int()), std::move(ks));
  }
  p.metrics_offset = unsigned_of(member(in, "metrics_offset", where));
  p.tensorboard_offset = unsigned_of(member(in, "tensorboard_offset", where));
  p.tensorboard_file = member(in, "tensorboard_file", where).as_string();
  return p;
}

inline std::vector<std::pair<std::string, torch::Tensor>> named_factors(
    const LoraNetwork& network) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& entry : network.modules()) {
    out.emplace_back(entry.name + ".lora_down.weight", entry.adapter->down);
    out.emplace_back(entry.name + ".lora_up.weight", entry.adapter->up);
  }
  return out;
}

// The generators a training loop draws from: LibTorch's CPU generator and one per CUDA
// device. Names: "cpu", "cuda:0", ...
inline std::vector<std::pair<std::string, at::Generator>> generators() {
  std::vector<std::pair<std::string, at::Generator>> out;
  out.emplace_back("cpu", at::detail::getDefaultCPUGenerator());
  if (torch::cuda::is_available()) {
    for (std::size_t d = 0; d < torch::cuda::device_count(); ++d) {
      const at::Device device(at::kCUDA, static_cast<c10::DeviceIndex>(d));
      out.emplace_back("cuda:" + std::to_string(d), at::globalContext().defaultGenerator(device));
    }
  }
  return out;
}

// The saved generator states of `rng` (rng.safetensors, one tensor per generator name)
// paired with the generators `present` now (name, generator), checked and ready to apply.
// The CPU generator's state must be saved. A CUDA generator is restored when the state holds
// one for its device; a visible device without a saved state keeps its generator as it is,
// and a saved device not visible now is skipped (a resume with another number of GPUs).
// @throws Error when the CPU state is missing or a saved state has another layout than
// its generator's.
inline std::vector<std::pair<at::Generator, torch::Tensor>> saved_generator_states(
    const safetensors::Reader& rng,
    const std::vector<std::pair<std::string, at::Generator>>& present, const std::string& where) {
  if (!rng.contains("cpu"))
    throw Error(where + "/rng.safetensors: no state for the generator 'cpu'");
  std::vector<std::pair<at::Generator, torch::Tensor>> out;
  for (const auto& [name, generator] : present) {
    if (!rng.contains(name))
      continue;
    torch::Tensor state = tensor_from(rng.tensor(name));
    torch::Tensor now;
    {
      at::Generator current = generator;
      std::lock_guard<std::mutex> lock(current.mutex());
      now = current.get_state();
    }
    if (state.sizes() != now.sizes() || state.scalar_type() != now.scalar_type())
      throw Error(where + "/rng.safetensors: the state of '" + name + "' has another layout");
    out.emplace_back(generator, std::move(state));
  }
  return out;
}

inline std::string state_file_label(const std::filesystem::path& folder, const char* file) {
  return (folder / file).string();
}

}  // namespace detail

/// The folder name of the state saved at `global_step`: "state-000001200".
inline std::string state_folder_name(std::int64_t global_step) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "state-%09lld", static_cast<long long>(global_step));
  return buffer;
}

/// Saves a state into the new folder `folder` (which must not exist): factors, optimizer
/// state and learning rates, generator states, `extra` tensors, `position` and `options`.
/// Built under a temporary name and renamed when complete; on failure nothing is left.
/// @throws Error when the folder exists or a write fails.
inline void save_state(const std::filesystem::path& folder, const LoraNetwork& network,
                       torch::optim::Optimizer& optimizer, const RunPosition& position,
                       const json::Value& options,
                       const std::map<std::string, torch::Tensor>& extra = {}) {
  try {
    io::AtomicDirectory staging(folder);
    const auto factors = detail::named_factors(network);
    {
      safetensors::Writer writer;
      std::vector<torch::Tensor> keep;
      for (const auto& [name, tensor] : factors)
        add_tensor_view(writer, name, tensor, keep);
      writer.write(staging.path() / "lora.safetensors");
    }
    {
      safetensors::Writer writer;
      std::vector<torch::Tensor> keep;
      for (const auto& [name, tensor] : optimizer_state_tensors(optimizer, factors))
        add_tensor_view(writer, "state." + name, tensor, keep);
      std::vector<double> rates;
      for (const auto& group : optimizer.param_groups())
        rates.push_back(group.options().get_lr());
      writer.add("param_groups.lr", {static_cast<std::int64_t>(rates.size())},
                 std::span<const double>(rates));
      writer.write(staging.path() / "optimizer.safetensors");
    }
    {
      safetensors::Writer writer;
      for (auto& [name, generator] : detail::generators()) {
        std::lock_guard<std::mutex> lock(generator.mutex());
        add_tensor(writer, name, generator.get_state());
      }
      writer.write(staging.path() / "rng.safetensors");
    }
    {
      safetensors::Writer writer;
      for (const auto& [name, tensor] : extra)
        add_tensor(writer, name, tensor);
      writer.write(staging.path() / "extra.safetensors");
    }
    json::Value manifest = json::Object{};
    manifest["format"] = kStateFormat;
    manifest["version"] = kStateVersion;
    manifest["position"] = detail::position_json(position);
    manifest["options"] = options;
    manifest["network"] = detail::network_description(network);
    json::Value files = json::Object{};
    for (const char* file :
         {"lora.safetensors", "optimizer.safetensors", "rng.safetensors", "extra.safetensors"}) {
      const auto mapped = safetensors::MappedFile::open(staging.path() / file);
      json::Value record = json::Object{};
      record["bytes"] = mapped.bytes().size();
      record["checksum"] = io::hex64(io::checksum(mapped.bytes()));
      files[file] = std::move(record);
    }
    manifest["files"] = std::move(files);
    io::write_file_atomically(staging.path() / "manifest.json", json::dump(manifest, 2) + "\n");
    staging.commit();
  } catch (const io::Error& error) {
    throw Error(std::string("saving the training state: ") + error.what());
  } catch (const safetensors::Error& error) {
    throw Error(std::string("saving the training state: ") + error.what());
  }
}

/// Reads, checks and applies the state in `folder`: the factors are copied into the
/// network's parameters, the optimizer state and learning rates replaced, the generators
/// restored: the CPU generator, and each CUDA device's that is visible now and was saved
/// (a resume with fewer or more visible GPUs restores those it has and leaves the others;
/// a trainer whose draws must not depend on the device count reseeds the CUDA generators
/// itself, as the SDXL trainer does per micro-batch). Nothing changes unless every check
/// passes.
/// @param folder a state folder (state-*)  @param network the run's LoRAs (same modules,
/// ranks and dtypes as saved)  @param optimizer the run's optimizer over those factors
/// @param expected_options the run's options; the saved ones must be equal
/// @throws Error naming the problem: not a state (no manifest), another format or version,
/// a missing or corrupt file (size or hash), another network (first difference named),
/// other options (the differing keys named), or bad contents.
inline LoadedState load_state(const std::filesystem::path& folder, LoraNetwork& network,
                              torch::optim::Optimizer& optimizer,
                              const json::Value& expected_options) {
  const std::string where = folder.string();
  namespace fs = std::filesystem;
  if (!fs::is_directory(folder))
    throw Error(where + ": no such training-state folder");
  if (!fs::exists(folder / "manifest.json"))
    throw Error(where + ": not a complete training state (no manifest.json)");
  json::Value manifest;
  try {
    manifest = json::parse(detail::read_file(folder / "manifest.json"));
  } catch (const json::Error& error) {
    throw Error(where + "/manifest.json: corrupt: " + error.what());
  }
  try {
    if (detail::member(manifest, "format", where).as_string() != kStateFormat)
      throw Error(where + ": manifest.json is not an aclora training state");
    const std::int64_t version = detail::member(manifest, "version", where).as_int();
    if (version != kStateVersion) {
      throw Error(where + ": training-state version " + std::to_string(version) +
                  " (this build reads version " + std::to_string(kStateVersion) + ")");
    }
    for (const auto& [file, record] : detail::member(manifest, "files", where).as_object()) {
      const fs::path path = folder / file;
      if (!fs::exists(path))
        throw Error(where + ": " + file + " is missing (partial state)");
      const auto mapped = safetensors::MappedFile::open(path);
      if (static_cast<std::int64_t>(mapped.bytes().size()) !=
          detail::member(record, "bytes", where).as_int())
        throw Error(path.string() + ": size differs from the manifest (truncated or corrupt)");
      if (io::hex64(io::checksum(mapped.bytes())) !=
          detail::member(record, "checksum", where).as_string())
        throw Error(path.string() + ": checksum differs from the manifest (corrupt)");
    }
    for (const char* file :
         {"lora.safetensors", "optimizer.safetensors", "rng.safetensors", "extra.safetensors"}) {
      if (!detail::member(manifest, "files", where).find(file))
        throw Error(where + ": manifest.json lists no " + file);
    }
    const json::Value current = detail::network_description(network);
    const json::Value& saved_network = detail::member(manifest, "network", where);
    if (!(saved_network == current)) {
      throw Error(where + ": the state belongs to another network: " +
                  detail::network_difference(saved_network, current));
    }
    const json::Value& saved_options = detail::member(manifest, "options", where);
    if (!(saved_options == expected_options)) {
      std::string keys;
      // The differing options by dotted name ("trainer.grad_accum"), objects compared member
      // by member.
      const auto compare = [&keys](const auto& self, const json::Value& old_value,
                                   const json::Value& new_value, const std::string& name) -> void {
        if (old_value == new_value)
          return;
        if (!old_value.is_object() || !new_value.is_object()) {
          keys += (keys.empty() ? "" : ", ") + name + " (state: " + json::dump(old_value) +
                  ", now: " + json::dump(new_value) + ")";
          return;
        }
        const std::string prefix = name.empty() ? "" : name + ".";
        for (const auto& [key, value] : new_value.as_object()) {
          if (const json::Value* old = old_value.find(key))
            self(self, *old, value, prefix + key);
          else
            keys += (keys.empty() ? "" : ", ") + prefix + key + " (not in the state)";
        }
        for (const auto& [key, value] : old_value.as_object())
          if (!new_value.find(key))
            keys += (keys.empty() ? "" : ", ") + prefix + key + " (only in the state)";
      };
      compare(compare, saved_options, expected_options, "");
      throw Error(where + ": the state was made with other options: " +
                  (keys.empty() ? std::string("they differ") : keys));
    }

    const auto open = [&](const char* file) { return safetensors::Reader::open(folder / file); };
    LoadedState loaded;
    loaded.folder = folder;
    loaded.options = saved_options;
    loaded.position = detail::position_from(detail::member(manifest, "position", where), where);

    // Factors: same names, shapes and dtypes as the network's.
    const auto factors = detail::named_factors(network);
    const safetensors::Reader lora = open("lora.safetensors");
    if (lora.names().size() != factors.size())
      throw Error(where + "/lora.safetensors: " + std::to_string(lora.names().size()) +
                  " tensors for " + std::to_string(factors.size()) + " factors");
    std::vector<const safetensors::TensorView*> values;
    for (const auto& [name, tensor] : factors) {
      if (!lora.contains(name))
        throw Error(where + "/lora.safetensors: no tensor '" + name + "'");
      const safetensors::TensorView& view = lora.tensor(name);
      if (view.shape != tensor.sizes().vec() ||
          view.dtype != safetensors_dtype(tensor.scalar_type()))
        throw Error(where + "/lora.safetensors: '" + name + "' differs in shape or dtype");
      values.push_back(&view);
    }
    // Optimizer state and learning rates.
    const safetensors::Reader optimizer_file = open("optimizer.safetensors");
    std::map<std::string, torch::Tensor> optimizer_state;
    std::vector<double> rates;
    for (const auto& view : optimizer_file.tensors()) {
      if (view.name == "param_groups.lr") {
        const torch::Tensor lr = tensor_from(view).to(torch::kFloat64);
        rates.assign(lr.data_ptr<double>(), lr.data_ptr<double>() + lr.numel());
      } else if (view.name.rfind("state.", 0) == 0) {
        optimizer_state[view.name.substr(6)] = tensor_view(view);  // restore copies it
      } else {
        throw Error(where + "/optimizer.safetensors: unknown tensor '" + view.name + "'");
      }
    }
    if (rates.size() != optimizer.param_groups().size())
      throw Error(where + "/optimizer.safetensors: learning rates for " +
                  std::to_string(rates.size()) + " parameter groups, the optimizer has " +
                  std::to_string(optimizer.param_groups().size()));
    // Generators.
    const safetensors::Reader rng = open("rng.safetensors");
    std::vector<std::pair<at::Generator, torch::Tensor>> generator_states =
        detail::saved_generator_states(rng, detail::generators(), where);
    const safetensors::Reader extra = open("extra.safetensors");
    for (const auto& view : extra.tensors())
      loaded.extra[view.name] = tensor_from(view);

    // Everything checked: apply. The optimizer state is checked inside restore (before
    // it changes anything), so it goes first.
    restore_optimizer_state(optimizer, factors, optimizer_state);
    for (std::size_t g = 0; g < rates.size(); ++g)
      optimizer.param_groups()[g].options().set_lr(rates[g]);
    {
      ::torch::NoGradGuard no_grad;
      for (std::size_t i = 0; i < factors.size(); ++i) {
        torch::Tensor parameter = factors[i].second;
        parameter.copy_(tensor_view(*values[i]));
      }
    }
    for (auto& [generator, state] : generator_states) {
      std::lock_guard<std::mutex> lock(generator.mutex());
      generator.set_state(state);
    }
    return loaded;
  } catch (const json::Error& error) {
    throw Error(where + "/manifest.json: malformed: " + error.what());
  } catch (const safetensors::Error& error) {
    throw Error(std::string("corrupt training state: ") + error.what());
  } catch (const std::invalid_argument& error) {
    throw Error(where + "/manifest.json: malformed number: " + error.what());
  }
}

/// The newest complete state in `directory` (the state-* folder with a manifest and the
/// highest step), or nothing.
inline std::optional<std::filesystem::path> latest_state(const std::filesystem::path& directory) {
  namespace fs = std::filesystem;
  std::optional<fs::path> best;
  std::error_code error;
  if (!fs::is_directory(directory, error))
    return best;
  for (const auto& item : fs::directory_iterator(directory, error)) {
    const std::string name = item.path().filename().string();
    if (name.rfind("state-", 0) != 0 || !fs::exists(item.path() / "manifest.json"))
      continue;
    if (!best || name > best->filename().string())
      best = item.path();
  }
  return best;
}

}  // namespace aclora::train
