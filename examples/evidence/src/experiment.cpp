#include "evidence/experiment.hpp"

#include <stdexcept>

#include "evidence/classifier.hpp"

namespace evidence {
namespace {

constexpr int64_t kSubjectClass = 9;          // Ankle boot, held out of pretraining
constexpr int64_t kStyleTrainingClasses = 3;  // T-shirt/top, Trouser, Pullover
constexpr int64_t kKnownClasses = 9;          // 0..8: what the base model learned
constexpr int64_t kStyleTestImages = 1000;    // as many as the subject class has

std::vector<Arm> sweep_arms(const std::vector<int64_t>& fixed_ranks,
                            const std::vector<int64_t>& ac_ranks, int64_t resized_rank) {
  std::vector<Arm> arms{{"base", 0, false, std::nullopt}};
  for (const int64_t rank : fixed_ranks)
    arms.push_back({"fixed-" + std::to_string(rank), rank, false, std::nullopt});
  for (const int64_t rank : ac_ranks)
    arms.push_back({"ac-" + std::to_string(rank), rank, true, std::nullopt});
  arms.push_back({"resize-" + std::to_string(resized_rank), resized_rank, false, 0.9});
  return arms;
}

// The first `count` indices of `labels` equal to `label`, in order.
torch::Tensor first_of_class(const torch::Tensor& labels, int64_t label, int64_t count) {
  const torch::Tensor all = (labels == label).nonzero().flatten();
  if (all.size(0) < count)
    throw std::invalid_argument("class " + std::to_string(label) + " has only " +
                                std::to_string(all.size(0)) + " images, " + std::to_string(count) +
                                " wanted");
  return all.slice(0, 0, count);
}

}  // namespace

Plan full_plan() {
  Plan plan;
  plan.name = "full";
  plan.tasks = {{"subject-15", TaskKind::subject, 15, 5},
                {"subject-150", TaskKind::subject, 150, 30},
                {"style-15", TaskKind::style, 15, 5}};
  plan.arms = sweep_arms({1, 2, 4, 8, 16, 32, 64}, {64, 32}, 64);
  plan.seeds = {0, 1, 2};
  return plan;
}

Plan quick_plan() {
  Plan plan = full_plan();
  plan.name = "quick";
  plan.tasks = {plan.tasks[2]};
  plan.arms = sweep_arms({1, 4, 16, 64}, {64}, 64);
  plan.seeds = {0};
  return plan;
}

Plan smoke_plan() {
  Plan plan = full_plan();
  plan.name = "smoke";
  plan.tasks = {{"style-15", TaskKind::style, 6, 3}};
  plan.arms = sweep_arms({2, 8}, {8}, 8);
  plan.seeds = {0};
  plan.epochs = 6;
  plan.restart_every = 2;
  plan.lr = 1e-2;
  plan.style_samples_per_class = 1;
  plan.held_out_images = 8;
  plan.sampling.steps = 4;
  return plan;
}

Plan plan_named(const std::string& name) {
  if (name == "full")
    return full_plan();
  if (name == "quick")
    return quick_plan();
  if (name == "smoke")
    return smoke_plan();
  throw std::invalid_argument("no plan '" + name + "' (full, quick, smoke)");
}

const Arm& arm_named(const Plan& plan, const std::string& name) {
  for (const Arm& arm : plan.arms)
    if (arm.name == name)
      return arm;
  throw std::invalid_argument("the " + plan.name + " plan has no arm '" + name + "'");
}

const Task& task_named(const Plan& plan, const std::string& name) {
  for (const Task& task : plan.tasks)
    if (task.name == name)
      return task;
  throw std::invalid_argument("the " + plan.name + " plan has no task '" + name + "'");
}

TaskData task_data(const Task& task, const Plan& plan, const FashionMnist& data) {
  if (task.images < 1)
    throw std::invalid_argument("task " + task.name + ": no training images");
  TaskData out;
  // Only the chosen images are converted (the whole training split is 188 MB as floats).
  const auto train_all = [&](const torch::Tensor& index) {
    return to_model_range(data.train.images.index({index}));
  };
  const auto test_all = [&](const torch::Tensor& index) {
    return to_model_range(data.test.images.index({index}));
  };
  if (task.kind == TaskKind::subject) {
    const torch::Tensor train = first_of_class(data.train.labels, kSubjectClass, task.images);
    out.train_images = train_all(train);
    out.train_labels = data.train.labels.index({train});
    const torch::Tensor test = (data.test.labels == kSubjectClass).nonzero().flatten();
    out.test_images = test_all(test);
    out.test_labels = data.test.labels.index({test});
    out.sample_labels = torch::full({plan.subject_samples}, kSubjectClass, torch::kInt64);
    out.wanted_judge_classes = out.sample_labels.clone();
    return out;
  }
  if (task.images % kStyleTrainingClasses != 0)
    throw std::invalid_argument("task " + task.name + ": the style task needs a multiple of " +
                                std::to_string(kStyleTrainingClasses) + " images");
  std::vector<torch::Tensor> train;
  for (int64_t label = 0; label < kStyleTrainingClasses; ++label)
    train.push_back(first_of_class(data.train.labels, label, task.images / kStyleTrainingClasses));
  const torch::Tensor train_index = torch::cat(train);
  out.train_images = apply_style(train_all(train_index));
  out.train_labels = data.train.labels.index({train_index});
  const torch::Tensor test =
      (data.test.labels < kKnownClasses).nonzero().flatten().slice(0, 0, kStyleTestImages);
  out.test_images = apply_style(test_all(test));
  out.test_labels = data.test.labels.index({test});
  out.sample_labels =
      torch::arange(kKnownClasses, torch::kInt64).repeat_interleave(plan.style_samples_per_class);
  out.wanted_judge_classes = out.sample_labels + 10;
  return out;
}

}  // namespace evidence
