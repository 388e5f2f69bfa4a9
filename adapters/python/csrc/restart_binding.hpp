/// @file restart_binding.hpp
/// @brief aclora._core.Restart: aclora::Restart<aclora::backends::TorchBackend> for Python, with
/// the report handed back as plain tuples (aclora/_report.py turns them into dataclasses).
#pragma once

#include <c10/core/DispatchKeySet.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "aclora/backends/torch.hpp"
#include "lora_views.hpp"

namespace aclora::python {

namespace py = pybind11;

/// The noise policy named by `name` ("whole", "discarded" or "none").
/// @throws Error for any other name.
inline NoisePolicy noise_policy(const std::string& name) {
  if (name == "whole")
    return NoisePolicy::whole;
  if (name == "discarded")
    return NoisePolicy::discarded;
  if (name == "none")
    return NoisePolicy::none;
  throw Error("noise must be 'whole', 'discarded' or 'none', got '" + name + "'");
}

/// The report as nested tuples: (restart_index, mean_loss, alpha, threshold, modules), each
/// module (name, index, R, K, layers), each layer (rows, cols, axis, k, singular values as a
/// float64 CPU tensor, kept energy fraction, sigma).
inline py::tuple report_tuple(const RestartReport& report) {
  py::list modules;
  for (const ModuleReport& module : report.modules) {
    py::list layers;
    for (const LayerReport& layer : module.layers) {
      at::Tensor values =
          at::empty({static_cast<std::int64_t>(layer.singular_values.size())}, at::kDouble);
      if (!layer.singular_values.empty()) {
        std::memcpy(values.data_ptr<double>(), layer.singular_values.data(),
                    layer.singular_values.size() * sizeof(double));
      }
      layers.append(py::make_tuple(
          layer.shape.rows, layer.shape.cols, layer.axis == RankAxis::rows ? "rows" : "cols",
          layer.signal_count, values, layer.kept_energy_fraction, layer.sigma));
    }
    modules.append(py::make_tuple(module.name, module.index, module.allocated_rank,
                                  module.module_rank, layers));
  }
  return py::make_tuple(report.restart_index, report.mean_loss, report.alpha, report.threshold,
                        modules);
}

/// One aclora::Restart<TorchBackend> driver (its options and restart counter) for Python.
class RestartBinding {
 public:
  using Driver = Restart<backends::TorchBackend>;

  /// @throws Error for an unknown noise policy or a negative chunk size.
  RestartBinding(std::uint64_t seed, const std::string& noise, std::size_t min_rank,
                 std::int64_t chunk_elements)
      : driver_(make_options(seed, noise, min_rank), make_backend(chunk_elements)) {}

  /// The scheduled RESTART after 0-based epoch `epoch` of `total_epochs` with mean loss L.
  py::tuple scheduled(const std::vector<LoraInput>& inputs, int total_epochs, int epoch,
                      double mean_loss) {
    const Schedule schedule{total_epochs, 1};
    return run(
        [&](Driver& driver, const std::vector<Module<at::Tensor>>& modules) {
          return driver(modules, schedule, epoch, mean_loss);
        },
        inputs);
  }

  /// A RESTART at the explicit threshold p.
  py::tuple at_threshold(const std::vector<LoraInput>& inputs, double threshold) {
    return run(
        [&](Driver& driver, const std::vector<Module<at::Tensor>>& modules) {
          return driver.at_threshold(modules, threshold);
        },
        inputs);
  }

  /// Restarts done so far (part of every noise key).
  std::uint64_t restart_count() const { return driver_.restart_count(); }
  /// Sets the restart counter (to resume a run with the same noise).
  void set_restart_count(std::uint64_t count) { driver_.set_restart_count(count); }
  /// The seed.
  std::uint64_t seed() const { return driver_.options().seed; }
  /// The noise policy's name.
  const char* noise() const { return noise_name(driver_.options().noise).data(); }
  /// The floor of K.
  std::size_t min_rank() const { return driver_.options().min_rank; }
  /// Wall seconds of the last call spent inside aclora::Restart (validation, analysis,
  /// selection, writes), without the conversions to and from Python.
  double last_core_seconds() const { return last_core_seconds_; }

 private:
  static Driver::Options make_options(std::uint64_t seed, const std::string& noise,
                                      std::size_t min_rank) {
    Driver::Options options;
    options.seed = seed;
    options.noise = noise_policy(noise);
    options.min_rank = min_rank;
    return options;
  }

  static backends::TorchBackend make_backend(std::int64_t chunk_elements) {
    if (chunk_elements < 0)
      throw Error("chunk_elements must be >= 0 (0: automatic)");
    backends::TorchBackend::Options options;
    options.chunk_elements = chunk_elements;
    return backends::TorchBackend(options);
  }

  template <class Call>
  py::tuple run(Call&& call, const std::vector<LoraInput>& inputs) {
    RestartReport report;
    {
      py::gil_scoped_release release;
      const std::vector<Module<at::Tensor>> modules = restart_modules(inputs);
      ::torch::NoGradGuard no_grad;
      c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
      const auto start = std::chrono::steady_clock::now();
      report = call(driver_, modules);
      last_core_seconds_ =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
    return report_tuple(report);
  }

  Driver driver_;
  double last_core_seconds_ = 0.0;
};

}  // namespace aclora::python
