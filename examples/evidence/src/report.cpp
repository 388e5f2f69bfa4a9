#include "evidence/report.hpp"

#include <aclora/adapters/io/atomic_file.hpp>
#include <aclora/adapters/json/dump.hpp>
#include <aclora/adapters/json/parse.hpp>
#include <aclora/adapters/logs/image_grid.hpp>
#include <aclora/adapters/logs/line_plot.hpp>
#include <aclora/adapters/safetensors.hpp>
#include <aclora/adapters/train/network.hpp>
#include <aclora/adapters/train/targets.hpp>
#include <aclora/adapters/train/tensor_io.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iomanip>
#include <limits>
#include <map>
#include <sstream>
#include <stdexcept>

#include "evidence/measures.hpp"

namespace evidence {
namespace {

namespace fs = std::filesystem;
namespace json = aclora::json;
namespace logs = aclora::logs;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Mean and sample standard deviation over the seeds.
struct Spread {
  double mean = kNaN;
  double deviation = 0.0;
  std::size_t count = 0;
};

Spread spread_of(const std::vector<double>& values) {
  Spread out;
  out.count = values.size();
  if (values.empty())
    return out;
  double sum = 0.0;
  for (const double v : values)
    sum += v;
  out.mean = sum / static_cast<double>(values.size());
  if (values.size() > 1) {
    double squares = 0.0;
    for (const double v : values)
      squares += (v - out.mean) * (v - out.mean);
    out.deviation = std::sqrt(squares / static_cast<double>(values.size() - 1));
  }
  return out;
}

// One measure of the page: how to read it from a result and how to print it.
struct Measure {
  std::string key;    // file names
  std::string title;  // column and plot titles
  bool lower_is_better = true;
  int digits = 4;
  double scale = 1.0;  // printed value = scale x value (100 for shares shown in %)
  std::function<std::optional<double>(const JobResult&)> read;
};

std::vector<Measure> measures_of(const Task& task) {
  std::vector<Measure> out{
      {"held_out_loss", "held-out loss", true, 4, 1.0,
       [](const JobResult& r) { return std::optional<double>(r.held_out_loss); }},
      {"frechet_distance", "Frechet distance", true, 2, 1.0,
       [](const JobResult& r) { return std::optional<double>(r.frechet_distance); }},
      {"content_accuracy", "content accuracy (%)", false, 1, 100.0,
       [](const JobResult& r) { return std::optional<double>(r.content_accuracy); }}};
  if (task.kind == TaskKind::style)
    out.push_back({"style_accuracy", "style accuracy (%)", false, 1, 100.0,
                   [](const JobResult& r) { return r.style_accuracy; }});
  return out;
}

// The results of one task, by arm, over the seeds.
using ByArm = std::map<std::string, std::vector<const JobResult*>>;

Spread spread(const ByArm& by_arm, const std::string& arm,
              const std::function<std::optional<double>(const JobResult&)>& read,
              double scale = 1.0) {
  std::vector<double> values;
  if (const auto found = by_arm.find(arm); found != by_arm.end())
    for (const JobResult* result : found->second)
      if (const auto value = read(*result))
        values.push_back(scale * *value);
  return spread_of(values);
}

std::string number(double value, int digits) {
  if (!std::isfinite(value))
    return "n/a";
  std::ostringstream out;
  out << std::fixed << std::setprecision(digits) << value;
  return out.str();
}

std::string with_spread(const Spread& s, int digits) {
  if (s.count == 0 || !std::isfinite(s.mean))
    return "n/a";
  if (s.count == 1)
    return number(s.mean, digits);
  return number(s.mean, digits) + " ± " + number(s.deviation, digits);
}

std::string whole(double value) {
  std::ostringstream out;
  out << static_cast<int64_t>(std::llround(value));
  return out.str();
}

std::string arm_title(const Arm& arm) {
  if (arm.rank == 0)
    return "base model (no LoRA)";
  if (arm.restarts)
    return "AC-LoRA, R = " + std::to_string(arm.rank);
  if (arm.resize_energy)
    return "rank " + std::to_string(arm.rank) + ", then resize (energy " +
           number(*arm.resize_energy, 2) + ")";
  return "fixed rank " + std::to_string(arm.rank);
}

std::vector<const Arm*> arms_where(const Plan& plan, const std::function<bool(const Arm&)>& keep) {
  std::vector<const Arm*> out;
  for (const Arm& arm : plan.arms)
    if (keep(arm))
      out.push_back(&arm);
  return out;
}

bool is_fixed(const Arm& arm) {
  return arm.rank > 0 && !arm.restarts && !arm.resize_energy;
}
bool is_adaptive(const Arm& arm) {
  return arm.rank > 0 && !is_fixed(arm);
}

void write_text(const fs::path& file, const std::string& text) {
  try {
    aclora::io::write_file_atomically(file, text);
  } catch (const std::exception& error) {
    throw std::runtime_error(file.string() + ": " + error.what());
  }
}

// Measure against rank: the fixed ranks as a line with their spread, the adaptive arms as
// points at their mean kept rank, the base model as a flat line.
void draw_measure_plot(const Plan& plan, const Task& task, const ByArm& by_arm,
                       const Measure& measure, const fs::path& png) {
  std::vector<logs::PlotSeries> series;
  logs::PlotSeries fixed{"fixed rank", {}, {}, {}, {}, false};
  for (const Arm* arm : arms_where(plan, is_fixed)) {
    const Spread s = spread(by_arm, arm->name, measure.read, measure.scale);
    fixed.x.push_back(static_cast<double>(arm->rank));
    fixed.y.push_back(s.mean);
    fixed.y_low.push_back(s.mean - s.deviation);
    fixed.y_high.push_back(s.mean + s.deviation);
  }
  series.push_back(fixed);
  for (const Arm* arm : arms_where(plan, is_adaptive)) {
    const Spread s = spread(by_arm, arm->name, measure.read, measure.scale);
    const Spread rank = spread(
        by_arm, arm->name, [](const JobResult& r) { return std::optional<double>(r.mean_rank); });
    series.push_back({arm_title(*arm),
                      {rank.mean},
                      {s.mean},
                      {s.mean - s.deviation},
                      {s.mean + s.deviation},
                      true});
  }
  const Spread base = spread(by_arm, "base", measure.read, measure.scale);
  if (base.count > 0 && !fixed.x.empty())
    series.push_back(
        {"base model", {fixed.x.front(), fixed.x.back()}, {base.mean, base.mean}, {}, {}, false});
  logs::PlotOptions options;
  options.title = task.name + ": " + measure.title;
  options.x_label = "rank (fixed r; AC-LoRA and resize at their mean kept rank)";
  options.y_label =
      measure.title + (measure.lower_is_better ? ", lower is better" : ", higher is better");
  options.log2_x = true;
  logs::draw_line_plot(series, png, options);
}

// Mean kept rank after each RESTART, per AC-LoRA arm (mean and spread over seeds).
void draw_rank_plot(const Plan& plan, const Task& task, const ByArm& by_arm, const fs::path& png) {
  std::vector<logs::PlotSeries> series;
  for (const Arm* arm : arms_where(plan, [](const Arm& a) { return a.restarts; })) {
    std::map<int, std::vector<double>> by_epoch;
    if (const auto found = by_arm.find(arm->name); found != by_arm.end())
      for (const JobResult* result : found->second)
        for (const RankPoint& point : result->rank_history)
          by_epoch[point.epoch].push_back(point.mean_rank);
    logs::PlotSeries line{arm_title(*arm), {}, {}, {}, {}, false};
    for (const auto& [epoch, values] : by_epoch) {
      const Spread s = spread_of(values);
      line.x.push_back(epoch);
      line.y.push_back(s.mean);
      line.y_low.push_back(s.mean - s.deviation);
      line.y_high.push_back(s.mean + s.deviation);
    }
    if (!line.x.empty())
      series.push_back(line);
  }
  if (series.empty())
    return;
  logs::PlotOptions options;
  options.title = task.name + ": mean kept rank after each RESTART";
  options.x_label = "epoch";
  options.y_label = "mean K over the modules";
  logs::draw_line_plot(series, png, options);
}

torch::Tensor read_samples(const fs::path& file) {
  const auto reader = aclora::safetensors::Reader::open(file);
  return aclora::train::tensor_from(reader.tensor("images")).to(torch::kFloat32);
}

// Rows: held-out real images, then every arm's generated images (the first seed).
void draw_sample_grid(const Plan& plan, const Task& task, const TaskData& data,
                      const fs::path& run_folder, const fs::path& png) {
  std::vector<torch::Tensor> rows;
  std::vector<std::string> labels;
  const int64_t columns = 9;
  torch::Tensor real;
  if (task.kind == TaskKind::subject) {
    real = data.test_images.slice(0, 0, columns);
  } else {
    std::vector<torch::Tensor> one_per_class;
    for (int64_t c = 0; c < columns; ++c)
      one_per_class.push_back(
          data.test_images.index({(data.test_labels == c).nonzero().flatten()[0]}));
    real = torch::stack(one_per_class);
  }
  rows.push_back(real);
  labels.push_back("held-out real");
  for (const Arm& arm : plan.arms) {
    fs::path file = result_path(run_folder, task.name, arm.name, plan.seeds.front());
    file.replace_extension(".samples.safetensors");
    rows.push_back(read_samples(file).slice(0, 0, columns));
    labels.push_back(arm.name);
  }
  const torch::Tensor pixels =
      ((torch::stack(rows) + 1.0) / 2.0).clamp(0.0, 1.0).contiguous().to(torch::kFloat32);
  logs::ImageGridShape shape{static_cast<int>(rows.size()), static_cast<int>(columns), 28, 28};
  logs::ImageGridOptions options;
  options.title =
      task.name + ": generated images (seed " + std::to_string(plan.seeds.front()) + ")";
  options.row_labels = labels;
  options.scale = 2;
  logs::draw_image_grid(
      std::span<const float>(pixels.data_ptr<float>(), static_cast<std::size_t>(pixels.numel())),
      shape, png, options);
}

// The plain statements of one task: the best fixed rank per measure, where each adaptive
// arm stands among the fixed ranks, and its size.
std::string statements(const Plan& plan, const Task& task, const ByArm& by_arm) {
  std::ostringstream out;
  const auto fixed_arms = arms_where(plan, is_fixed);
  const auto parameters = [&](const std::string& arm) {
    return spread(by_arm, arm, [](const JobResult& r) {
      return std::optional<double>(static_cast<double>(r.parameters));
    });
  };
  for (const Measure& measure : measures_of(task)) {
    const Arm* best = nullptr;
    double best_value = kNaN;
    for (const Arm* arm : fixed_arms) {
      const double value = spread(by_arm, arm->name, measure.read, measure.scale).mean;
      if (!std::isfinite(value))
        continue;
      if (best == nullptr || (measure.lower_is_better ? value < best_value : value > best_value)) {
        best = arm;
        best_value = value;
      }
    }
    if (best == nullptr)
      continue;
    out << "- **" << measure.title << "**: the best fixed rank is r = " << best->rank << " ("
        << number(best_value, measure.digits) << ").";
    for (const Arm* arm : arms_where(plan, is_adaptive)) {
      const Spread s = spread(by_arm, arm->name, measure.read, measure.scale);
      if (!std::isfinite(s.mean))
        continue;
      std::vector<std::string> beaten_by;
      int better_than = 0;
      for (const Arm* fixed : fixed_arms) {
        const double value = spread(by_arm, fixed->name, measure.read, measure.scale).mean;
        const bool fixed_better = measure.lower_is_better ? value < s.mean : value > s.mean;
        if (fixed_better)
          beaten_by.push_back(std::to_string(fixed->rank));
        else
          ++better_than;
      }
      out << " " << arm_title(*arm) << ": " << number(s.mean, measure.digits);
      if (beaten_by.empty()) {
        out << ", as good as or better than every fixed rank";
      } else {
        out << ", better than or equal to " << better_than << " of " << fixed_arms.size()
            << " fixed ranks, worse than r = ";
        for (std::size_t i = 0; i < beaten_by.size(); ++i)
          out << (i ? ", " : "") << beaten_by[i];
      }
      const double gap = s.mean - best_value;
      out << " (" << (gap >= 0 ? "+" : "") << number(gap, measure.digits)
          << " from the best fixed rank";
      if (plan.seeds.size() > 1)
        out << ", whose spread over seeds is "
            << number(spread(by_arm, best->name, measure.read, measure.scale).deviation,
                      measure.digits);
      out << ").";
    }
    out << "\n";
  }
  for (const Arm* arm : arms_where(plan, is_adaptive)) {
    const Spread rank =
        spread(by_arm, arm->name, [](const JobResult& r) { return std::optional(r.mean_rank); });
    const double own = parameters(arm->name).mean;
    const double full = parameters("fixed-" + std::to_string(arm->rank)).mean;
    out << "- **size**: " << arm_title(*arm) << " kept a mean rank of " << number(rank.mean, 1)
        << " (" << whole(own) << " parameters";
    if (std::isfinite(full) && full > 0)
      out << ", " << number(100.0 * own / full, 0) << " % of fixed rank " << arm->rank;
    out << ").\n";
  }
  return out.str();
}

// One paragraph over all tasks and measures: for each adaptive arm, in how many (task,
// measure) pairs it is at least as good as the best fixed rank, within one spread (over
// seeds) of it, or worse; and the range of its mean kept rank.
std::string overall_summary(const Plan& plan, const std::map<std::string, ByArm>& by_task) {
  std::ostringstream out;
  for (const Arm* arm : arms_where(plan, is_adaptive)) {
    int as_good = 0, within = 0, worse = 0;
    double low_rank = std::numeric_limits<double>::infinity(), high_rank = 0.0;
    std::vector<std::string> losses;
    for (const Task& task : plan.tasks) {
      const auto found = by_task.find(task.name);
      if (found == by_task.end())
        continue;
      const ByArm& by_arm = found->second;
      const double rank = spread(by_arm, arm->name, [](const JobResult& r) {
                            return std::optional(r.mean_rank);
                          }).mean;
      low_rank = std::min(low_rank, rank);
      high_rank = std::max(high_rank, rank);
      for (const Measure& measure : measures_of(task)) {
        const Spread own = spread(by_arm, arm->name, measure.read, measure.scale);
        Spread best;
        int best_rank = 0;
        for (const Arm* fixed : arms_where(plan, is_fixed)) {
          const Spread s = spread(by_arm, fixed->name, measure.read, measure.scale);
          if (!std::isfinite(s.mean))
            continue;
          if (!std::isfinite(best.mean) ||
              (measure.lower_is_better ? s.mean < best.mean : s.mean > best.mean)) {
            best = s;
            best_rank = static_cast<int>(fixed->rank);
          }
        }
        if (!std::isfinite(own.mean) || !std::isfinite(best.mean))
          continue;
        const double gap = measure.lower_is_better ? own.mean - best.mean : best.mean - own.mean;
        if (gap <= 0.0) {
          ++as_good;
        } else if (gap <= std::max(best.deviation, own.deviation)) {
          ++within;
        } else {
          ++worse;
          losses.push_back(task.name + " " + measure.title + " (r = " + std::to_string(best_rank) +
                           ")");
        }
      }
    }
    out << "- **" << arm_title(*arm) << "** kept a mean rank of " << number(low_rank, 1)
        << (high_rank > low_rank + 0.05 ? " to " + number(high_rank, 1) : std::string())
        << " over the tasks. Against the best fixed rank of each task and measure it was at "
           "least as good in "
        << as_good << ", within one standard deviation in " << within << ", and worse in " << worse
        << " of " << as_good + within + worse << " cases";
    if (!losses.empty()) {
      out << ": ";
      for (std::size_t i = 0; i < losses.size(); ++i)
        out << (i ? ", " : "") << losses[i];
    }
    out << ".\n";
  }
  return out.str();
}

std::string table(const Plan& plan, const Task& task, const ByArm& by_arm) {
  const auto measures = measures_of(task);
  std::ostringstream out;
  out << "| arm | kept rank | parameters |";
  for (const Measure& m : measures)
    out << " " << m.title << " |";
  out << " training-set loss | training (s) |\n|---|---:|---:|";
  for (std::size_t i = 0; i < measures.size(); ++i)
    out << "---:|";
  out << "---:|---:|\n";
  for (const Arm& arm : plan.arms) {
    const auto read = [&](auto get) { return spread(by_arm, arm.name, get); };
    out << "| " << arm_title(arm) << " | "
        << with_spread(read([](const JobResult& r) { return std::optional(r.mean_rank); }), 1)
        << " | " << whole(read([](const JobResult& r) {
                            return std::optional(static_cast<double>(r.parameters));
                          }).mean)
        << " |";
    for (const Measure& m : measures)
      out << " " << with_spread(spread(by_arm, arm.name, m.read, m.scale), m.digits) << " |";
    out << " "
        << with_spread(read([](const JobResult& r) { return std::optional(r.training_set_loss); }),
                       4)
        << " | "
        << with_spread(read([](const JobResult& r) { return std::optional(r.train_seconds); }), 1)
        << " |\n";
  }
  return out.str();
}

std::string family_table(const Plan& plan, const ByArm& by_arm) {
  std::map<std::string, std::map<std::string, std::vector<double>>> families;
  std::vector<std::string> arms;
  for (const Arm* arm : arms_where(plan, [](const Arm& a) { return a.restarts; })) {
    arms.push_back(arm->name);
    if (const auto found = by_arm.find(arm->name); found != by_arm.end())
      for (const JobResult* result : found->second)
        for (const auto& [family, rank] : result->family_ranks)
          families[family][arm->name].push_back(rank);
  }
  if (arms.empty() || families.empty())
    return "";
  std::ostringstream out;
  out << "| module family |";
  for (const std::string& arm : arms)
    out << " " << arm << " |";
  out << "\n|---|";
  for (std::size_t i = 0; i < arms.size(); ++i)
    out << "---:|";
  out << "\n";
  for (const auto& [family, by] : families) {
    out << "| " << family << " |";
    for (const std::string& arm : arms) {
      const auto found = by.find(arm);
      out << " "
          << (found == by.end() ? std::string("n/a") : with_spread(spread_of(found->second), 1))
          << " |";
    }
    out << "\n";
  }
  return out.str();
}

std::string fixed_ranks_text(const Plan& plan) {
  std::string out;
  for (const Arm* arm : arms_where(plan, is_fixed))
    out += (out.empty() ? "" : ", ") + std::to_string(arm->rank);
  return out;
}

// The LoRA target layers: how many, and the smallest and largest min(in, out), the rank at
// which a LoRA on them is full.
std::string target_layers_text(const sdxl::UNetConfig& config) {
  BaseModel model(config);
  aclora::train::LoraNetwork network;
  aclora::train::InjectOptions inject;
  inject.rank = 1;
  inject.naming = aclora::train::Naming::sdxl_unet();
  network.inject(*model->unet, aclora::train::Targets::sdxl_unet_linear(), inject);
  int64_t low = std::numeric_limits<int64_t>::max(), high = 0;
  for (const auto& entry : network.modules()) {
    const auto& g = entry.adapter->geometry();
    const int64_t full = std::min(g.in_features * g.kernel_h * g.kernel_w, g.out_features);
    low = std::min(low, full);
    high = std::max(high, full);
  }
  return std::to_string(network.size()) + " modules; min(in, out) is " +
         (low == high ? std::to_string(low)
                      : "between " + std::to_string(low) + " and " + std::to_string(high)) +
         ", so a LoRA of that rank is full rank and higher ranks only add redundant components";
}

int64_t base_parameters(const sdxl::UNetConfig& config) {
  BaseModel model(config);
  int64_t count = 0;
  for (const auto& p : model->parameters())
    count += p.numel();
  return count;
}

// What limits the conclusions, from the results: the base model's own quality, the fit of
// the fixed ranks to their training images (optimisation, not only overfitting), the seeds.
std::string limits_text(const Plan& plan, const std::map<std::string, ByArm>& by_task) {
  std::ostringstream out;
  const auto content = [](const JobResult& r) { return std::optional(r.content_accuracy); };
  const auto fit = [](const JobResult& r) { return std::optional(r.training_set_loss); };
  for (const Task& task : plan.tasks) {
    const auto found = by_task.find(task.name);
    if (found == by_task.end() || task.kind != TaskKind::style)
      continue;
    out << "- **The base model is small and rough.** " << base_parameters(base_unet_config())
        << " parameters; the judge recognizes "
        << number(100.0 * spread(found->second, "base", content).mean, 1)
        << " % of the garments it draws when asked for classes 0 to 8 (" << task.name
        << ", base row; its samples are the grids' base rows). Frechet distances and "
           "accuracies are therefore poor for every arm: the comparisons between arms are the "
           "result, not the absolute values.\n";
    break;
  }
  for (const Task& task : plan.tasks) {
    const auto found = by_task.find(task.name);
    if (found == by_task.end())
      continue;
    const Arm* best = nullptr;
    double best_fit = kNaN;
    const Arm* highest = nullptr;
    for (const Arm* arm : arms_where(plan, is_fixed)) {
      const double value = spread(found->second, arm->name, fit).mean;
      if (best == nullptr || value < best_fit) {
        best = arm;
        best_fit = value;
      }
      highest = arm;
    }
    if (best == nullptr || best == highest)
      continue;
    const double top = spread(found->second, highest->name, fit).mean;
    out << "- **" << task.name << ": high ranks fit their own images worse.** The training-set "
        << "loss is lowest at r = " << best->rank << " (" << number(best_fit, 4) << ") and "
        << number(100.0 * (top / best_fit - 1.0), 0) << " % higher at r = " << highest->rank
        << ": at this learning rate (" << plan.lr << ", the same for every arm, alpha = rank) "
        << "part of what hurts high ranks is optimisation, not only overfitting.\n";
  }
  out << "- **" << plan.seeds.size() << " seed" << (plan.seeds.size() == 1 ? "" : "s")
      << " per arm.** Differences smaller than the spreads in the tables are not evidence "
         "either way.\n";
  return out.str();
}

// The command that made the committed base model, from its file's metadata.
std::string base_model_command() {
  const fs::path file = data_folder() / "base_model.safetensors";
  const auto reader = aclora::safetensors::Reader::open(file);
  const auto found = reader.metadata().find("command");
  if (found == reader.metadata().end())
    throw std::runtime_error(file.string() + ": no \"command\" in the metadata");
  return found->second;
}

std::string setup_text(const Plan& plan, const RunRecord& record) {
  const sdxl::UNetConfig config = base_unet_config();
  std::ostringstream out;
  std::string adaptive;
  for (const Arm* arm : arms_where(plan, is_adaptive))
    adaptive += (adaptive.empty() ? "" : "; ") + arm_title(*arm);
  std::string seeds;
  for (const uint64_t seed : plan.seeds)
    seeds += (seeds.empty() ? "" : ", ") + std::to_string(seed);
  out << "- **Data**: Fashion-MNIST (Debian's dataset-fashion-mnist; 60,000 training and 10,000 "
         "test images of 28 x 28 pixels in 10 classes).\n"
      << "- **Base model**: an SDXL-layout UNet (examples/evidence/data/base_unet.json: channels "
      << config.block_out_channels[0] << " and " << config.block_out_channels[1]
      << ", one transformer block with self- and cross-attention at the second level and in the "
         "middle block) with a learned label context in place of the text encoders, "
      << base_parameters(config)
      << " parameters. An image is folded into a 4 x 14 x 14 latent (each 2 x 2 pixel block "
         "becomes 4 channels). It was pretrained by `aclora-evidence pretrain` on every class "
         "but 9 (Ankle boot), epsilon prediction with linear betas 1e-4 to 0.02 over 1000 steps "
         "(the file's metadata holds the command and seed).\n"
      << "- **LoRA**: the SDXL trainer's default targets (every linear layer of the attention "
         "blocks: "
      << "proj_in, attn1 and attn2 to_q, to_k, to_v, to_out.0, ff.net.0.proj, "
         "ff.net.2, proj_out; "
      << target_layers_text(config) << "), alpha = rank, AdamW at learning rate " << plan.lr
      << " (constant, no weight decay), " << plan.epochs << " epochs; AC-LoRA restarts every "
      << plan.restart_every
      << " epochs (noise reinjected, optimizer state of rewritten factors reset). Every arm of a "
         "seed sees the same data order, noise and timesteps; seeds "
      << seeds << ".\n"
      << "- **Arms**: fixed rank r in {" << fixed_ranks_text(plan) << "}; " << adaptive
      << "; and the base model without LoRA. AC-LoRA is measured as exported (each module cut "
         "to the rank it kept at the last RESTART); resize cuts each module of the trained "
         "fixed-rank LoRA (the same training as that arm) to the smallest rank holding that "
         "share of its update's energy (`aclora-lora resize --energy`).\n"
      << "- **Measures**: *held-out loss*: the epsilon MSE on " << plan.held_out_images
      << " held-out test images of the task at timesteps 50, 150, ..., 950 with fixed noise. "
         "*Training-set loss*: the same on the task's training images (how well the LoRA fits "
         "them; its gap to the held-out loss shows overfitting). *Content accuracy*: the share of "
         "generated images (Euler, "
      << plan.sampling.steps << " steps, guidance " << number(plan.sampling.guidance, 1)
      << ") that our 20-class judge (examples/evidence/data/classifier.safetensors: the 10 "
         "garments plain and outlined) calls the asked-for garment. *Style accuracy*: the share "
         "it calls outlined. *Frechet distance*: between the judge's 128 features of the "
         "generated images and of the task's held-out test images (an FID for this domain). "
         "*Parameters*: the sum over modules of K x (in + out).\n"
      << "- **Machine**: " << record.machine << "; " << record.jobs
      << " jobs at a time, one LibTorch thread each.\n";
  return out.str();
}

std::string task_text(const Task& task) {
  if (task.kind == TaskKind::subject)
    return "Subject: class 9 (Ankle boot), never seen in pretraining (its label slot keeps "
           "its initial values), learned from its first " +
           std::to_string(task.images) +
           " training images. Generated images ask for label 9; "
           "the held-out images are the 1000 test images of class 9.";
  return "Style: the outline style (each image's 3 x 3 morphological gradient) learned from " +
         std::to_string(task.images) +
         " images of classes 0, 1 and 2 (T-shirt/top, Trouser, Pullover), then asked for on "
         "all nine classes the base model knows (0 to 8): the LoRA must learn the style without "
         "forgetting the other garments. The held-out images are the first 1000 outlined test "
         "images of classes 0 to 8.";
}

}  // namespace

void write_run_record(const RunRecord& record, const fs::path& run_folder) {
  json::Value value = json::Object{};
  value["plan"] = record.plan;
  value["command"] = record.command;
  value["wall_seconds"] = record.wall_seconds;
  value["jobs"] = record.jobs;
  value["machine"] = record.machine;
  value["finished"] = record.finished;
  write_text(run_folder / "run.json", json::dump(value, 2) + "\n");
}

RunRecord read_run_record(const fs::path& run_folder) {
  const fs::path file = run_folder / "run.json";
  std::ifstream in(file);
  if (!in)
    throw std::runtime_error(file.string() + ": cannot be read (no finished run there?)");
  std::stringstream text;
  text << in.rdbuf();
  try {
    const json::Value value = json::parse(text.str());
    RunRecord record;
    const auto get = [&](const char* key) -> const json::Value& {
      const json::Value* found = value.find(key);
      if (found == nullptr)
        throw std::runtime_error(std::string("no key '") + key + "'");
      return *found;
    };
    record.plan = get("plan").as_string();
    record.command = get("command").as_string();
    record.wall_seconds = get("wall_seconds").as_double();
    record.jobs = static_cast<int>(get("jobs").as_int());
    record.machine = get("machine").as_string();
    record.finished = get("finished").as_string();
    return record;
  } catch (const std::exception& error) {
    throw std::runtime_error(file.string() + ": " + error.what());
  }
}

std::vector<JobResult> read_results(const Plan& plan, const fs::path& run_folder) {
  std::vector<JobResult> results;
  for (const Task& task : plan.tasks)
    for (const Arm& arm : plan.arms)
      for (const uint64_t seed : plan.seeds) {
        const fs::path file = result_path(run_folder, task.name, arm.name, seed);
        std::ifstream in(file);
        if (!in)
          throw std::runtime_error(file.string() + ": missing (did its job fail?)");
        std::stringstream text;
        text << in.rdbuf();
        try {
          results.push_back(result_from_json(json::parse(text.str())));
        } catch (const std::exception& error) {
          throw std::runtime_error(file.string() + ": " + error.what());
        }
      }
  return results;
}

void write_report(const Plan& plan, const fs::path& run_folder, const fs::path& page,
                  const RunRecord& record) {
  const std::vector<JobResult> results = read_results(plan, run_folder);
  const fs::path pictures_name = fs::path("images") / ("evidence-" + plan.name);
  const fs::path pictures = page.parent_path() / pictures_name;
  fs::create_directories(pictures);
  const FashionMnist data = read_fashion_mnist();

  std::ostringstream md;
  const std::string anchor = plan.name == "full" ? "evidence" : "evidence_" + plan.name;
  md << "# Evidence: does AC-LoRA pick a good rank? {#" << anchor << "}\n\n"
     << "A controlled experiment of the paper's shape on real images, small enough for a "
        "2-core CPU: personalization of a small pretrained diffusion model from few images, "
        "AC-LoRA against a sweep of fixed ranks and against train-then-resize. This page is "
        "written by `aclora-evidence` from its results ("
     << plan.name
     << " plan); every number and picture below comes from the run described "
        "under [Reproduce](#"
     << anchor << "_reproduce).\n\n"
     << "## What the numbers show {#" << anchor << "_findings}\n\n"
     << "Means over seeds; a fixed rank counts as better when its mean is. The spreads are "
        "standard deviations over the seeds; \"within one standard deviation\" below uses the "
        "larger of the two compared. First each arm against the best fixed rank of every task "
        "and measure, then each task measure by measure.\n\n";
  std::map<std::string, ByArm> by_task;
  for (const JobResult& result : results)
    by_task[result.task][result.arm].push_back(&result);
  md << overall_summary(plan, by_task) << "\n";
  for (const Task& task : plan.tasks)
    md << "### " << task.name << "\n\n" << statements(plan, task, by_task[task.name]) << "\n";

  md << "### Limits of this setup\n\n" << limits_text(plan, by_task) << "\n";
  md << "## Setup {#" << anchor << "_setup}\n\n" << setup_text(plan, record) << "\n";
  for (const Task& task : plan.tasks) {
    const ByArm& by_arm = by_task[task.name];
    md << "## " << task.name << " {#" << anchor << "_" << task.name.substr(0, task.name.find('-'))
       << "_" << task.images << "}\n\n"
       << task_text(task) << " Batch " << task.batch << ", "
       << (task.images + task.batch - 1) / task.batch << " steps per epoch.\n\n"
       << table(plan, task, by_arm) << "\n";
    for (const Measure& measure : measures_of(task)) {
      const fs::path name = pictures_name / (task.name + "." + measure.key + ".png");
      draw_measure_plot(plan, task, by_arm, measure, page.parent_path() / name);
      md << "![" << task.name << ": " << measure.title << " against rank](" << name.string()
         << ")\n\n";
    }
    const fs::path ranks = pictures_name / (task.name + ".ranks.png");
    draw_rank_plot(plan, task, by_arm, page.parent_path() / ranks);
    md << "Kept rank per module family at the end (mean over the family's modules, then over "
          "seeds):\n\n"
       << family_table(plan, by_arm) << "\n"
       << "![" << task.name << ": mean kept rank after each RESTART](" << ranks.string() << ")\n\n";
    const fs::path grid = pictures_name / (task.name + ".samples.png");
    draw_sample_grid(plan, task, task_data(task, plan, data), run_folder,
                     page.parent_path() / grid);
    md << "![" << task.name << ": generated images per arm](" << grid.string() << ")\n\n";
  }
  md << "## Reproduce {#" << anchor << "_reproduce}\n\n"
     << "This page came from\n\n    " << record.command << "\n\n"
     << "which took " << number(record.wall_seconds / 60.0, 1) << " minutes (" << record.finished
     << ", " << record.machine << ", " << record.jobs
     << " jobs at a time). `aclora-evidence report` writes the page again from the run's "
        "results without training. The committed base model came from\n\n    "
     << base_model_command()
     << " -o examples/evidence/data/base_model.safetensors\n\n"
        "(the command in its metadata) and the judge from\n\n"
        "    aclora-evidence classifier -o examples/evidence/data/classifier.safetensors\n\n"
        "(2 epochs, seed 0: the defaults). Both are deterministic on one machine; CPUs with "
        "other instruction sets may round differently.\n";
  write_text(page, md.str());
}

}  // namespace evidence
