/// @file experiment.hpp
/// What the experiment runs: the personalization tasks, the arms (fixed-rank LoRA, AC-LoRA,
/// train-then-resize, and the base model alone), the seeds and the training settings of the
/// full run, the quick mode and the smoke test.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "evidence/base_model.hpp"
#include "evidence/fashion_mnist.hpp"

namespace evidence {

/// The two kinds of personalization.
enum class TaskKind {
  subject,  ///< a class held out of pretraining (its label slot never trained)
  style,    ///< the outline style learned from a few classes, asked for on every class
};

/// One personalization task.
struct Task {
  std::string name;                   ///< "subject-15", "subject-150", "style-15"
  TaskKind kind = TaskKind::subject;  ///< subject or style
  int64_t images = 15;                ///< n, the training images
  int64_t batch = 5;                  ///< images per optimizer step
};

/// One arm: how the LoRA is trained and what is evaluated.
struct Arm {
  std::string name;       ///< "fixed-8", "ac-64", "resize-64", "base"
  int64_t rank = 0;       ///< r of a fixed-rank arm, R of AC-LoRA; 0: no LoRA (the base model)
  bool restarts = false;  ///< AC-LoRA (RESTART every E epochs) or plain fixed-rank LoRA
  /// Train-then-resize: after training, each module is cut to the smallest rank that keeps
  /// this share of the energy of its update (aclora-lora resize --energy).
  std::optional<double> resize_energy;
};

/// Everything one run of the experiment does.
struct Plan {
  std::string name;               ///< "full", "quick", "smoke"
  std::vector<Task> tasks;        ///< the tasks
  std::vector<Arm> arms;          ///< the arms, in the order of the tables
  std::vector<uint64_t> seeds;    ///< training seeds (LoRA init, noise, timesteps, data order)
  int epochs = 100;               ///< N
  int restart_every = 10;         ///< E
  double lr = 5e-3;               ///< AdamW learning rate, constant, all arms
  int64_t subject_samples = 100;  ///< generated images of the subject task
  int64_t style_samples_per_class = 10;  ///< generated images per class of the style task
  int64_t held_out_images = 100;         ///< test images of the held-out denoising loss
  Sampling sampling;                     ///< sampler settings of the generated images
};

/// The full experiment: 3 tasks, fixed ranks 1..64, AC-LoRA from 64 and 32, resize from 64,
/// the base model, 3 seeds, 100 epochs, E = 10.
Plan full_plan();
/// The quick mode: the style task, fixed ranks 1, 4, 16, 64, AC-LoRA from 64, resize from 64,
/// the base model, one seed.
Plan quick_plan();
/// The smoke test: the style task with few epochs, samples and steps (checks the pipeline).
Plan smoke_plan();
/// The plan called `name` (full, quick, smoke). @throws std::invalid_argument otherwise.
Plan plan_named(const std::string& name);

/// The arm of `plan` called `name`. @throws std::invalid_argument naming it otherwise.
const Arm& arm_named(const Plan& plan, const std::string& name);
/// The task of `plan` called `name`. @throws std::invalid_argument naming it otherwise.
const Task& task_named(const Plan& plan, const std::string& name);

/// A task's images: what the LoRA trains on, what it is tested against, what is generated.
struct TaskData {
  torch::Tensor train_images;   ///< float [n, 1, 28, 28] in [-1, 1]
  torch::Tensor train_labels;   ///< int64 [n], the labels the LoRA is trained with
  torch::Tensor test_images;    ///< held-out real images of what the task asks for
  torch::Tensor test_labels;    ///< their labels
  torch::Tensor sample_labels;  ///< int64, the labels of the generated images
  /// The judge's class that each generated image should get (kJudgeClasses): garment c plain
  /// is c, in the outline style 10 + c.
  torch::Tensor wanted_judge_classes;
};

/// The images of `task`. Subject: n training images of class 9 (Ankle boot, never seen in
/// pretraining), tested against the test split's class 9. Style: n training images of
/// classes 0, 1, 2 in the outline style (n / 3 each), tested against the first 1000 styled
/// test images of classes 0..8 (the classes the base model knows). The training images are the
/// first of their class in the training split's order, the same for every arm and seed.
/// @throws std::invalid_argument when n is not positive (or, for style, not a multiple of 3).
TaskData task_data(const Task& task, const Plan& plan, const FashionMnist& data);

}  // namespace evidence
