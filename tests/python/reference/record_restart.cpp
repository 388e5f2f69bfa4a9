// Records what aclora::Restart<aclora::backends::TorchBackend> does to a fixed set of LoRA factors,
// for tests/python/test_reference.py: the Python package must give the same results (bit for
// bit with fp64 factors on the same LibTorch and CPU; within the rounding of the storage type
// otherwise).
//
//   record_restart OUTPUT.safetensors
//
// The factors are made from aclora's Philox generator (no LibTorch RNG), so they are the same
// on every machine. Each case runs one or two RESTARTs on one driver (the second one has
// restart number 1); the file holds, per case and module, the factors before ("<case>/<module>/
// down.in") and after each RESTART ("down.out0", "down.out1"), and the reports as JSON in the
// metadata entry "reports" (K, k, sigma, kept energy per layer; p, alpha, L).
#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "aclora/adapters/json/dump.hpp"
#include "aclora/adapters/json/value.hpp"
#include "aclora/adapters/safetensors/writer.hpp"
#include "aclora/backends/torch.hpp"
#include "aclora/noise.hpp"

namespace {

namespace st = aclora::safetensors;
using aclora::json::Value;

struct FactorShape {
  std::vector<std::int64_t> down;  // [R, in] or [R, in, kh, kw]
  std::vector<std::int64_t> up;    // [out, R] or [out, R, 1, 1]
};

struct ModuleSpec {
  std::string name;
  FactorShape shape;
};

// One RESTART of a case: scheduled (epoch of total, mean loss) or at an explicit threshold.
struct Step {
  bool scheduled = true;
  int total_epochs = 10;
  int epoch = 0;
  double mean_loss = 0.3;
  double threshold = 0.0;
};

struct Case {
  std::string name;
  at::ScalarType dtype;
  std::uint64_t seed;
  aclora::NoisePolicy noise;
  std::size_t min_rank;
  bool named;
  std::vector<Step> steps;
};

const std::vector<ModuleSpec> kModules = {
    {"lora_unet_mid_block_attentions_0_proj_in", {{8, 24}, {20, 8}}},
    {"lora_unet_input_blocks_1_0_in_layers_2", {{6, 3, 3, 3}, {10, 6, 1, 1}}},
    {"lora_te1_text_model_encoder_layers_0_mlp_fc1", {{4, 33}, {7, 4}}},
    {"lora_unet_out_2", {{12, 16}, {16, 12}}},
};

// Factor entries: standard normal draws (Philox stream `stream`) times 0.8^row along the rank
// axis, so that spectra decay and the thresholds fall between components.
at::Tensor make_factor(const std::vector<std::int64_t>& sizes, bool rank_rows,
                       std::uint64_t stream) {
  at::Tensor out = at::empty(sizes, at::kDouble);
  const std::int64_t rank = rank_rows ? sizes[0] : sizes[1];
  const std::int64_t rows = sizes[0];
  const std::int64_t cols = out.numel() / rows;
  double* values = out.data_ptr<double>();
  const aclora::NoiseKey key{0x5EED, stream};
  for (std::int64_t i = 0; i < rows; ++i) {
    for (std::int64_t j = 0; j < cols; ++j) {
      const std::int64_t component = rank_rows ? i : j % rank;
      values[i * cols + j] =
          aclora::gaussian_at<double>(key, static_cast<std::uint64_t>(i * cols + j)) *
          std::pow(0.8, static_cast<double>(component)) * 0.05;
    }
  }
  return out;
}

// The matrix view RESTART works on (as the Python package makes it).
at::Tensor down_view(const at::Tensor& down) {
  return down.view({down.size(0), -1});
}
at::Tensor up_view(const at::Tensor& up) {
  return up.view({up.size(0), up.size(1)});
}

void add_tensor(st::Writer& writer, const std::string& name, const at::Tensor& tensor) {
  const at::Tensor host = tensor.detach().to(at::kCPU).contiguous();
  const std::vector<std::int64_t> shape(host.sizes().begin(), host.sizes().end());
  st::Dtype dtype = st::Dtype::F64;
  if (host.scalar_type() == at::kFloat)
    dtype = st::Dtype::F32;
  else if (host.scalar_type() == at::kBFloat16)
    dtype = st::Dtype::BF16;
  else if (host.scalar_type() == at::kHalf)
    dtype = st::Dtype::F16;
  const auto* bytes = static_cast<const std::byte*>(host.data_ptr());
  writer.add(name, dtype, shape,
             std::span<const std::byte>(bytes, static_cast<std::size_t>(host.nbytes())));
}

Value number(double value) {
  return std::isnan(value) ? Value() : Value(value);
}

Value report_json(const aclora::RestartReport& report) {
  Value out = aclora::json::Object{};
  out["restart_index"] = Value(static_cast<std::int64_t>(report.restart_index));
  out["mean_loss"] = number(report.mean_loss);
  out["alpha"] = number(report.alpha);
  out["threshold"] = Value(report.threshold);
  Value modules = aclora::json::Array{};
  for (const auto& module : report.modules) {
    Value entry = aclora::json::Object{};
    entry["name"] = Value(module.name);
    entry["allocated_rank"] = Value(static_cast<std::int64_t>(module.allocated_rank));
    entry["module_rank"] = Value(static_cast<std::int64_t>(module.module_rank));
    Value layers = aclora::json::Array{};
    for (const auto& layer : module.layers) {
      Value item = aclora::json::Object{};
      item["signal_count"] = Value(static_cast<std::int64_t>(layer.signal_count));
      item["kept_energy_fraction"] = Value(layer.kept_energy_fraction);
      item["sigma"] = Value(layer.sigma);
      Value values = aclora::json::Array{};
      for (double s : layer.singular_values)
        values.push_back(Value(s));
      item["singular_values"] = std::move(values);
      layers.push_back(std::move(item));
    }
    entry["layers"] = std::move(layers);
    modules.push_back(std::move(entry));
  }
  out["modules"] = std::move(modules);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: record_restart OUTPUT.safetensors\n");
    return 2;
  }
  const std::vector<Case> cases = {
      {"fp64_whole",
       at::kDouble,
       11,
       aclora::NoisePolicy::whole,
       1,
       true,
       {{true, 10, 0, 0.3, 0.0}, {false, 0, 0, 0.0, 0.95}}},
      {"fp64_discarded_unnamed",
       at::kDouble,
       5,
       aclora::NoisePolicy::discarded,
       0,
       false,
       {{true, 10, 9, 0.05, 0.0}}},
      {"fp64_none", at::kDouble, 0, aclora::NoisePolicy::none, 2, true, {{false, 0, 0, 0.0, 0.9}}},
      {"fp32_whole",
       at::kFloat,
       42,
       aclora::NoisePolicy::whole,
       1,
       true,
       {{true, 4, 2, 0.2, 0.0}, {true, 4, 3, 0.1, 0.0}}},
      {"bf16_whole",
       at::kBFloat16,
       7,
       aclora::NoisePolicy::whole,
       1,
       true,
       {{false, 0, 0, 0.0, 0.85}}},
  };
  try {
    torch::NoGradGuard no_grad;
    st::Writer writer;
    Value reports = aclora::json::Object{};
    for (const Case& c : cases) {
      std::vector<at::Tensor> downs;
      std::vector<at::Tensor> ups;
      std::vector<aclora::Module<at::Tensor>> modules;
      for (std::size_t m = 0; m < kModules.size(); ++m) {
        const ModuleSpec& spec = kModules[m];
        downs.push_back(make_factor(spec.shape.down, true, 2 * m).to(c.dtype));
        ups.push_back(make_factor(spec.shape.up, false, 2 * m + 1).to(c.dtype));
        const std::string prefix = c.name + "/" + spec.name + "/";
        add_tensor(writer, prefix + "down.in", downs.back());
        add_tensor(writer, prefix + "up.in", ups.back());
        modules.push_back(aclora::Module<at::Tensor>::lora(
            c.named ? spec.name : "", down_view(downs.back()), up_view(ups.back())));
      }
      aclora::Restart<aclora::backends::TorchBackend> restart({c.noise, c.min_rank, c.seed});
      Value case_reports = aclora::json::Array{};
      for (std::size_t s = 0; s < c.steps.size(); ++s) {
        const Step& step = c.steps[s];
        const aclora::RestartReport report =
            step.scheduled ? restart(modules, aclora::Schedule{step.total_epochs, 1}, step.epoch,
                                     step.mean_loss)
                           : restart.at_threshold(modules, step.threshold);
        Value entry = report_json(report);
        entry["scheduled"] = Value(step.scheduled);
        entry["total_epochs"] = Value(static_cast<std::int64_t>(step.total_epochs));
        entry["epoch"] = Value(static_cast<std::int64_t>(step.epoch));
        entry["given_loss"] = Value(step.mean_loss);
        entry["given_threshold"] = Value(step.threshold);
        case_reports.push_back(std::move(entry));
        for (std::size_t m = 0; m < kModules.size(); ++m) {
          const std::string prefix = c.name + "/" + kModules[m].name + "/";
          add_tensor(writer, prefix + "down.out" + std::to_string(s), downs[m]);
          add_tensor(writer, prefix + "up.out" + std::to_string(s), ups[m]);
        }
      }
      Value description = aclora::json::Object{};
      description["dtype"] = Value(std::string(c10::toString(c.dtype)));
      description["seed"] = Value(static_cast<std::int64_t>(c.seed));
      description["noise"] =
          Value(std::string(c.noise == aclora::NoisePolicy::whole       ? "whole"
                            : c.noise == aclora::NoisePolicy::discarded ? "discarded"
                                                                        : "none"));
      description["min_rank"] = Value(static_cast<std::int64_t>(c.min_rank));
      description["named"] = Value(c.named);
      description["restarts"] = std::move(case_reports);
      reports[c.name] = std::move(description);
    }
    Value names = aclora::json::Array{};
    for (const ModuleSpec& spec : kModules)
      names.push_back(Value(spec.name));
    writer.set_metadata("modules", aclora::json::dump(names));
    writer.set_metadata("cases", aclora::json::dump(reports));
    writer.set_metadata("torch_version", TORCH_VERSION);
    writer.write(argv[1]);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "record_restart: %s\n", error.what());
    return 1;
  }
  return 0;
}
