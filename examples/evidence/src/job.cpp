#include "evidence/job.hpp"

#include <aclora/adapters/io/atomic_file.hpp>
#include <aclora/adapters/json/dump.hpp>
#include <aclora/adapters/logs/rank_picture.hpp>
#include <aclora/adapters/safetensors.hpp>
#include <aclora/adapters/train/network.hpp>
#include <aclora/adapters/train/run.hpp>
#include <aclora/adapters/train/targets.hpp>
#include <aclora/adapters/train/tensor_io.hpp>
#include <aclora/backends/torch/product.hpp>
#include <aclora/product.hpp>

#include <chrono>
#include <cmath>
#include <stdexcept>

#include "evidence/frechet.hpp"
#include "evidence/lora_cut.hpp"
#include "evidence/measures.hpp"

namespace evidence {
namespace {

namespace fs = std::filesystem;
namespace json = aclora::json;
namespace train = aclora::train;

constexpr int64_t kGridColumns = 9;  // generated images of seed 0 per grid row of the report

// A key for torch::manual_seed from the seed and a counter (a step, an epoch): the same
// for every arm, so all arms see the same noise, timesteps and data order.
uint64_t key_of(uint64_t seed, uint64_t counter, uint64_t stream) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull ^ (counter + 1) * 0xBF58476D1CE4E5B9ull ^
               (stream + 1) * 0x94D049BB133111EBull;
  x ^= x >> 31;
  x *= 0xD6E8FEB86659FD93ull;
  return x ^ (x >> 29);
}

// "attn1.to_q", "ff.net.0.proj", "proj_in": a module's place inside its transformer.
std::string family_of(const std::string& path) {
  const std::string marker = "transformer_blocks.";
  if (const auto at = path.find(marker); at != std::string::npos) {
    const auto dot = path.find('.', at + marker.size());
    if (dot != std::string::npos)
      return path.substr(dot + 1);
  }
  const auto dot = path.rfind('.');
  return dot == std::string::npos ? path : path.substr(dot + 1);
}

std::vector<double> ranks_as_doubles(const std::vector<std::size_t>& ranks) {
  return std::vector<double>(ranks.begin(), ranks.end());
}

void fill_ranks(JobResult& result, const train::LoraNetwork& network,
                const std::vector<std::size_t>& ranks) {
  std::map<std::string, std::pair<double, int>> families;
  double sum = 0.0;
  result.parameters = 0;
  for (std::size_t i = 0; i < network.size(); ++i) {
    const train::LoraModuleEntry& entry = network.modules()[i];
    const auto& geometry = entry.adapter->geometry();
    const int64_t in = geometry.in_features * geometry.kernel_h * geometry.kernel_w;
    result.parameters += static_cast<int64_t>(ranks[i]) * (in + geometry.out_features);
    auto& family = families[family_of(entry.path)];
    family.first += static_cast<double>(ranks[i]);
    family.second += 1;
    sum += static_cast<double>(ranks[i]);
  }
  result.mean_rank = network.size() == 0 ? 0.0 : sum / static_cast<double>(network.size());
  result.family_ranks.clear();
  for (const auto& [name, total] : families)
    result.family_ranks[name] = total.first / total.second;
}

// The generated images a grid row of the report shows: one per class for the style task
// (classes 0..8 in order), the first ones for the subject task.
torch::Tensor grid_row(const torch::Tensor& images, const Task& task, const Plan& plan) {
  if (task.kind == TaskKind::subject)
    return images.slice(0, 0, kGridColumns);
  return images.index({torch::arange(kGridColumns) * plan.style_samples_per_class});
}

void save_samples(const torch::Tensor& row, const fs::path& file) {
  aclora::safetensors::Writer writer;
  writer.set_metadata("format", "aclora-evidence-samples");
  train::add_tensor(writer, "images", row.contiguous().to(torch::kFloat32));
  writer.write(file);
}

json::Value number_or_null(const std::optional<double>& value) {
  return value ? json::Value(*value) : json::Value(nullptr);
}

const json::Value& member(const json::Value& object, const char* key) {
  const json::Value* value = object.find(key);
  if (value == nullptr)
    throw std::runtime_error(std::string("result: no key '") + key + "'");
  return *value;
}

// Measures the model as it is now (with its LoRAs) and fills the result's measures.
// `held_out_features` are the judge's features of data.test_images (the same for every
// measure of a job, so computed once).
void measure(JobResult& result, BaseModel& model, const Plan& plan, const Task& task,
             const TaskData& data, const torch::Tensor& held_out_features,
             const Resources& resources, const std::optional<fs::path>& samples_file) {
  const torch::Tensor held_out = data.test_images.slice(0, 0, plan.held_out_images);
  const torch::Tensor held_out_labels = data.test_labels.slice(0, 0, plan.held_out_images);
  result.held_out_loss = grid_loss(model, held_out, held_out_labels);
  result.training_set_loss = grid_loss(model, data.train_images, data.train_labels);
  const torch::Tensor samples = sample_images(model, data.sample_labels, plan.sampling);
  Classifier judge = resources.judge;
  const JudgeScores scores = judge_samples(judge, samples, data.wanted_judge_classes);
  result.content_accuracy = scores.content_accuracy;
  if (task.kind == TaskKind::style)
    result.style_accuracy = scores.style_accuracy;
  result.frechet_distance = frechet_distance(features(judge, samples), held_out_features);
  if (samples_file)
    save_samples(grid_row(samples, task, plan), *samples_file);
}

}  // namespace

json::Value to_json(const JobResult& result) {
  json::Value out = json::Object{};
  out["plan"] = result.plan;
  out["task"] = result.task;
  out["arm"] = result.arm;
  out["seed"] = static_cast<int64_t>(result.seed);
  out["train_seconds"] = result.train_seconds;
  json::Array losses;
  for (const double loss : result.epoch_losses)
    losses.emplace_back(loss);
  out["epoch_losses"] = std::move(losses);
  out["held_out_loss"] = result.held_out_loss;
  out["training_set_loss"] = result.training_set_loss;
  out["content_accuracy"] = result.content_accuracy;
  out["style_accuracy"] = number_or_null(result.style_accuracy);
  out["frechet_distance"] = result.frechet_distance;
  out["parameters"] = result.parameters;
  out["mean_rank"] = result.mean_rank;
  json::Value families = json::Object{};
  for (const auto& [name, rank] : result.family_ranks)
    families[name] = rank;
  out["family_ranks"] = std::move(families);
  json::Array history;
  for (const RankPoint& point : result.rank_history) {
    json::Value entry = json::Object{};
    entry["epoch"] = point.epoch;
    entry["mean_rank"] = point.mean_rank;
    history.push_back(std::move(entry));
  }
  out["rank_history"] = std::move(history);
  return out;
}

JobResult result_from_json(const json::Value& value) {
  JobResult result;
  result.plan = member(value, "plan").as_string();
  result.task = member(value, "task").as_string();
  result.arm = member(value, "arm").as_string();
  result.seed = static_cast<uint64_t>(member(value, "seed").as_int());
  result.train_seconds = member(value, "train_seconds").as_double();
  for (const json::Value& loss : member(value, "epoch_losses").as_array())
    result.epoch_losses.push_back(loss.as_double());
  result.held_out_loss = member(value, "held_out_loss").as_double();
  result.training_set_loss = member(value, "training_set_loss").as_double();
  result.content_accuracy = member(value, "content_accuracy").as_double();
  if (const json::Value& style = member(value, "style_accuracy"); !style.is_null())
    result.style_accuracy = style.as_double();
  result.frechet_distance = member(value, "frechet_distance").as_double();
  result.parameters = member(value, "parameters").as_int();
  result.mean_rank = member(value, "mean_rank").as_double();
  for (const auto& [name, rank] : member(value, "family_ranks").as_object())
    result.family_ranks[name] = rank.as_double();
  for (const json::Value& point : member(value, "rank_history").as_array())
    result.rank_history.push_back({static_cast<int>(member(point, "epoch").as_int()),
                                   member(point, "mean_rank").as_double()});
  return result;
}

fs::path result_path(const fs::path& run_folder, const std::string& task, const std::string& arm,
                     uint64_t seed) {
  return run_folder / "results" / task / arm / ("seed-" + std::to_string(seed) + ".json");
}

Resources load_resources(const fs::path& folder) {
  Resources resources;
  resources.data = read_fashion_mnist();
  resources.unet_config = base_unet_config(folder);
  resources.base_model_file = folder / "base_model.safetensors";
  resources.judge = load_classifier(folder / "classifier.safetensors", kJudgeClasses);
  return resources;
}

namespace {

std::vector<JobResult> train_and_measure(const Plan& plan, const Task& task, const Arm& arm,
                                         uint64_t seed, const Resources& resources,
                                         const fs::path& run_folder) {
  const TaskData data = task_data(task, plan, resources.data);
  Classifier judge = resources.judge;
  const torch::Tensor held_out_features = features(judge, data.test_images);
  BaseModel model = load_base_model(resources.base_model_file, resources.unet_config);
  for (auto& parameter : model->parameters())
    parameter.set_requires_grad(false);

  JobResult result;
  result.plan = plan.name;
  result.task = task.name;
  result.arm = arm.name;
  result.seed = seed;
  const auto paths = [&](const std::string& arm_name) {
    const fs::path json_file = result_path(run_folder, task.name, arm_name, seed);
    fs::create_directories(json_file.parent_path());
    return json_file;
  };
  const auto write = [&](const JobResult& done) {
    aclora::io::write_file_atomically(paths(done.arm), json::dump(to_json(done), 2) + "\n");
  };
  const auto samples_file = [&](const std::string& arm_name) -> std::optional<fs::path> {
    if (seed != plan.seeds.front())
      return std::nullopt;
    return fs::path(paths(arm_name)).replace_extension(".samples.safetensors");
  };

  if (arm.rank == 0) {
    measure(result, model, plan, task, data, held_out_features, resources, samples_file(arm.name));
    write(result);
    return {result};
  }

  // The LoRAs: the arms of one seed and one rank (AC-LoRA, fixed rank, resize) start from
  // the same factors. Arms of another rank do not share them, not even as a slice: the down
  // factors are drawn one module after another from one generator stream, R x fan-in
  // values each, so every module after the first starts at another place in the stream.
  torch::manual_seed(key_of(seed, 0, 1));
  train::LoraNetwork network;
  train::InjectOptions inject;
  inject.rank = arm.rank;
  inject.naming = train::Naming::sdxl_unet();
  network.inject(*model->unet, train::Targets::sdxl_unet_linear(), inject);
  model->train();
  std::vector<torch::Tensor> parameters = network.parameters();
  torch::optim::AdamW optimizer(parameters, torch::optim::AdamWOptions(plan.lr).weight_decay(0.0));

  const fs::path run_output = fs::path(paths(arm.name)).replace_extension(".run");
  fs::remove_all(run_output);
  train::RunOptions options;
  options.epochs = plan.epochs;
  options.restart_every = plan.restart_every;
  options.restarts = arm.restarts;
  options.restart.seed = seed;
  options.lr.base_lr = plan.lr;
  options.output = run_output;
  options.save_every_n_epochs = 0;
  options.tensorboard = false;
  options.progress = false;
  options.on_restart = [&](const aclora::logs::RankHistory& history) {
    const aclora::logs::RestartColumn& last = history.restarts.back();
    const std::vector<double> ranks = ranks_as_doubles(last.ranks);
    double sum = 0.0;
    for (const double rank : ranks)
      sum += rank;
    result.rank_history.push_back(
        {last.epoch + 1, ranks.empty() ? 0.0 : sum / static_cast<double>(ranks.size())});
    if (seed == plan.seeds.front())
      aclora::logs::draw_rank_picture(history,
                                      fs::path(paths(arm.name)).replace_extension(".ranks.png"));
  };

  const int64_t count = data.train_images.size(0);
  const int64_t steps_per_epoch = (count + task.batch - 1) / task.batch;
  const torch::Tensor abar = sdxl::alphas_cumprod_on(base_schedule().alphas_cumprod(), torch::kCPU);
  torch::Tensor order;
  int cached_epoch = -1;
  double epoch_sum = 0.0;
  const auto step = [&](const train::StepContext& context) -> double {
    if (context.epoch != cached_epoch) {
      if (cached_epoch >= 0)
        result.epoch_losses.push_back(epoch_sum / static_cast<double>(steps_per_epoch));
      epoch_sum = 0.0;
      torch::Generator shuffle = at::detail::createCPUGenerator(key_of(seed, context.epoch, 2));
      order = torch::randperm(count, shuffle);
      cached_epoch = context.epoch;
    }
    const torch::Tensor index = order.slice(0, context.step_in_epoch * task.batch,
                                            (context.step_in_epoch + 1) * task.batch);
    torch::manual_seed(key_of(seed, static_cast<uint64_t>(context.global_step), 3));
    const sdxl::TrainBatch batch =
        model->batch(data.train_images.index({index}), data.train_labels.index({index}));
    const sdxl::StepDraws draws = sdxl::draw_step(batch, {});
    const torch::Tensor loss = sdxl::diffusion_loss(model->unet, batch, draws, abar, {});
    optimizer.zero_grad();
    loss.backward();
    optimizer.step();
    const double value = loss.item<double>();
    epoch_sum += value;
    return value;
  };
  const auto start = std::chrono::steady_clock::now();
  train::TrainingRun run(network, optimizer, options);
  const train::RunSummary summary = run.run(steps_per_epoch, step);
  result.epoch_losses.push_back(epoch_sum / static_cast<double>(steps_per_epoch));
  result.train_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  fs::remove_all(run_output);
  model->eval();

  // As a user gets it: AC-LoRA exported at the rank each module kept, fixed rank as trained.
  std::vector<JobResult> results;
  if (!arm.resize_energy) {
    std::vector<std::size_t> ranks = summary.module_ranks;
    if (arm.restarts)
      cut_to_ranks(network, ranks);
    fill_ranks(result, network, ranks);
    measure(result, model, plan, task, data, held_out_features, resources, samples_file(arm.name));
    write(result);
    results.push_back(result);
  }

  // Train-then-resize: this training (that of the fixed rank) cut by energy afterwards, for
  // the resize arm itself or for the plan's resize arms of this fixed rank.
  if (arm.restarts)
    return results;
  for (const Arm& derived : plan.arms) {
    if (!derived.resize_energy || derived.rank != arm.rank ||
        (arm.resize_energy && derived.name != arm.name))
      continue;
    JobResult resized = result;
    resized.arm = derived.name;
    const std::vector<std::size_t> kept = ranks_for_energy(network, *derived.resize_energy);
    cut_to_ranks(network, kept);
    fill_ranks(resized, network, kept);
    measure(resized, model, plan, task, data, held_out_features, resources,
            samples_file(derived.name));
    write(resized);
    results.push_back(resized);
  }
  return results;
}

}  // namespace

std::vector<JobResult> run_job(const Plan& plan, const Task& task, const Arm& arm, uint64_t seed,
                               const Resources& resources, const fs::path& run_folder) {
  try {
    return train_and_measure(plan, task, arm, seed, resources, run_folder);
  } catch (const std::exception& error) {
    throw std::runtime_error(task.name + ", " + arm.name + ", seed " + std::to_string(seed) + ": " +
                             error.what());
  }
}

}  // namespace evidence
