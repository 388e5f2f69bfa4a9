#pragma once
/// @file
/// @brief metrics.jsonl: one JSON object per line for every step and every RESTART.
///
/// @code
/// aclora::logs::MetricsFile metrics(run_dir / "metrics.jsonl", state.metrics_offset);
/// metrics.write_step(epoch, step, loss, lr, {{"grad_norm", norm}});
/// metrics.write_restart(report, epoch, step, seconds);
/// state.metrics_offset = metrics.offset();   // saved with the training state
/// @endcode

#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "aclora/adapters/json/dump.hpp"
#include "aclora/adapters/json/value.hpp"
#include "aclora/adapters/logs/append_file.hpp"
#include "aclora/adapters/logs/error.hpp"
#include "aclora/report.hpp"

namespace aclora::logs {

/// An extra numeric field of a step record: name and value (e.g. {"grad_norm", 0.7}).
using MetricField = std::pair<std::string, double>;

/// A JSON number for value, or null when value is NaN or infinite (JSON has no
/// such numbers; a diverging loss must still be logged).
inline json::Value number_or_null(double value) {
  if (!std::isfinite(value)) {
    return json::Value(nullptr);
  }
  return json::Value(value);
}

/// The step record {"type":"step","epoch","step","loss","lr", extra...}; extra
/// fields follow in the given order. Non-finite numbers become null.
/// @throws Error when an extra field's name is "type", "epoch", "step", "loss"
/// or "lr", appears twice, or is empty.
inline json::Value step_record(int epoch, std::int64_t step, double loss, double learning_rate,
                               const std::vector<MetricField>& extra = {}) {
  json::Value record = json::Object{};
  record["type"] = "step";
  record["epoch"] = epoch;
  record["step"] = step;
  record["loss"] = number_or_null(loss);
  record["lr"] = number_or_null(learning_rate);
  for (const auto& [name, value] : extra) {
    if (name.empty() || record.contains(name)) {
      throw Error(
          "step record: extra field \"" + name +
          (name.empty() ? "\" has an empty name" : "\" repeats a field already in the record"));
    }
    record[name] = number_or_null(value);
  }
  return record;
}

/// The restart record {"type":"restart","epoch","step","restart_index","L",
/// "alpha","p","total_rank","seconds","modules":[{"name","K","R"}...]} of one
/// RESTART: L, alpha and p from the report (null when not finite, as L and alpha
/// are when p was given explicitly), K = module_rank and R = allocated_rank per
/// module in list order, seconds = how long the RESTART took. With
/// with_kept_energy each module also gets "kept_energy": [E_K / T per layer].
inline json::Value restart_record(const RestartReport& report, int epoch, std::int64_t step,
                                  double seconds, bool with_kept_energy = false) {
  json::Value record = json::Object{};
  record["type"] = "restart";
  record["epoch"] = epoch;
  record["step"] = step;
  record["restart_index"] = report.restart_index;
  record["L"] = number_or_null(report.mean_loss);
  record["alpha"] = number_or_null(report.alpha);
  record["p"] = number_or_null(report.threshold);
  record["total_rank"] = report.total_module_rank();
  record["seconds"] = number_or_null(seconds);
  json::Array modules;
  modules.reserve(report.modules.size());
  for (const ModuleReport& module : report.modules) {
    json::Value entry = json::Object{};
    entry["name"] = module.name;
    entry["K"] = module.module_rank;
    entry["R"] = module.allocated_rank;
    if (with_kept_energy) {
      json::Array energy;
      energy.reserve(module.layers.size());
      for (const LayerReport& layer : module.layers) {
        energy.push_back(number_or_null(layer.kept_energy_fraction));
      }
      entry["kept_energy"] = std::move(energy);
    }
    modules.push_back(std::move(entry));
  }
  record["modules"] = std::move(modules);
  return record;
}

/// A JSON Lines metrics file: each write adds one compact JSON object and a
/// newline, handed to the kernel before the call returns (see AppendFile), so a
/// crash loses at most the line being written. Numbers are written in the
/// shortest form that reads back to the same double.
///
/// Exact resume: offset() is the file's size after the last write; store it with
/// the training state and pass it back as resume_offset, and the lines written
/// after that state disappear, so the resumed run's file equals the file of a run
/// that was never interrupted. resume_offset 0 starts a fresh (empty) file.
class MetricsFile {
 public:
  /// Opens (creating when resume_offset is 0) path and truncates it to resume_offset.
  /// @throws Error naming path: cannot open; the file is shorter than
  /// resume_offset (both sizes in the message); resume_offset is not at the end
  /// of a line.
  explicit MetricsFile(const std::filesystem::path& path, std::uint64_t resume_offset = 0)
      : file_(AppendFile::open_at(path, resume_offset, [&path](int fd, std::uint64_t offset) {
          check_line_boundary(fd, offset, path);
        })) {}

  /// Writes a step record (see step_record()).
  /// @throws Error naming the file when the record is invalid or the write fails.
  void write_step(int epoch, std::int64_t step, double loss, double learning_rate,
                  const std::vector<MetricField>& extra = {}) {
    write(build([&] { return step_record(epoch, step, loss, learning_rate, extra); }));
  }

  /// Writes a restart record (see restart_record()); seconds is the RESTART's duration.
  /// @throws Error naming the file when the record is invalid or the write fails.
  void write_restart(const RestartReport& report, int epoch, std::int64_t step, double seconds,
                     bool with_kept_energy = false) {
    write(build([&] { return restart_record(report, epoch, step, seconds, with_kept_energy); }));
  }

  /// Writes any JSON object as one line (for records of the caller's own types).
  /// @throws Error naming the file when record is not an object, holds a
  /// non-finite number or a string that is not UTF-8, or the write fails.
  void write(const json::Value& record) {
    std::string line;
    try {
      if (!record.is_object()) {
        throw Error("a record must be a JSON object, got " +
                    std::string(json::kind_name(record.kind())));
      }
      line = json::dump(record);
    } catch (const std::runtime_error& error) {
      throw Error(file_.path().string() + ": cannot write a record: " + error.what());
    }
    line.push_back('\n');
    file_.append(line);
  }

  /// Makes every line written so far durable (fsync), e.g. before the training
  /// state that stores offset() is saved. Lines are in the file without it: each
  /// write already handed them to the kernel.
  /// @throws Error naming the file when fsync fails.
  void sync() { file_.sync(); }
  /// Same as sync() (the name EventWriter uses).
  /// @throws Error naming the file when fsync fails.
  void flush() { sync(); }

  /// Bytes in the file so far (the value to store for a later resume).
  std::uint64_t offset() const { return file_.offset(); }
  /// The file's path.
  const std::filesystem::path& path() const { return file_.path(); }

 private:
  template <class Builder>
  json::Value build(const Builder& builder) const {
    try {
      return builder();
    } catch (const std::runtime_error& error) {
      throw Error(file_.path().string() + ": cannot write a record: " + error.what());
    }
  }

  static void check_line_boundary(int fd, std::uint64_t offset, const std::filesystem::path& path) {
    if (offset == 0) {
      return;
    }
    char last = 0;
    const ::ssize_t got = ::pread(fd, &last, 1, static_cast<::off_t>(offset - 1));
    if (got != 1) {
      throw Error(path.string() + ": cannot read byte " + std::to_string(offset - 1) + ": " +
                  (got < 0 ? std::strerror(errno) : "unexpected end of file"));
    }
    if (last != '\n') {
      throw Error(path.string() + ": cannot resume at byte " + std::to_string(offset) +
                  ": it is not the end of a line");
    }
  }

  AppendFile file_;
};

}  // namespace aclora::logs
