#include "commands.hpp"

#include <ATen/Parallel.h>
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include <aclora/backends/torch/blas_threads.hpp>

#include "aclora_cli.hpp"
#include "evidence/base_model.hpp"
#include "evidence/classifier.hpp"
#include "evidence/experiment.hpp"
#include "evidence/fashion_mnist.hpp"
#include "evidence/job.hpp"
#include "evidence/report.hpp"
#include "process_pool.hpp"

namespace evidence_app {
namespace {

namespace cli = aclora::cli;
namespace fs = std::filesystem;

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void log_line(const std::string& line) {
  std::cerr << line << std::endl;
}

// `threads` LibTorch threads; with one, OpenBLAS is held to one too (its own threads would
// spin beside the other jobs, and the jobs run at a fraction of their speed).
class ThreadLimit {
 public:
  explicit ThreadLimit(int threads) {
    at::set_num_threads(threads);
    if (threads == 1)
      one_blas_thread_.emplace();
  }

 private:
  std::optional<aclora::backends::libtorch::SingleThreadedOpenBlas> one_blas_thread_;
};

std::string fixed(double value, int digits) {
  std::ostringstream out;
  out.setf(std::ios::fixed);
  out.precision(digits);
  out << value;
  return out.str();
}

int run_pretrain(const PretrainArguments& args) {
  const ThreadLimit thread_limit(args.threads);
  const auto start = std::chrono::steady_clock::now();
  const evidence::FashionMnist data = evidence::read_fashion_mnist();
  evidence::Pretraining settings;
  settings.steps = args.steps;
  settings.batch = args.batch;
  settings.seed = args.seed;
  settings.log = log_line;
  const evidence::BaseModel model =
      evidence::pretrain_base_model(data.train, evidence::base_unet_config(), settings);
  std::ostringstream command;
  command << "aclora-evidence pretrain --steps " << args.steps << " --batch " << args.batch
          << " --seed " << args.seed << " --threads " << args.threads;
  evidence::save_base_model(model, args.output,
                            {{"command", command.str()},
                             {"held_out_class", std::to_string(settings.held_out_class)},
                             {"seconds", fixed(seconds_since(start), 0)}});
  std::cout << "wrote " << args.output << " (" << fixed(seconds_since(start), 0) << " s)\n";
  return cli::kExitSuccess;
}

int run_classifier(const ClassifierArguments& args) {
  const ThreadLimit thread_limit(args.threads);
  const auto start = std::chrono::steady_clock::now();
  const evidence::FashionMnist data = evidence::read_fashion_mnist();
  const auto judge_set = [](const evidence::ImageSet& set) {
    const torch::Tensor plain = evidence::to_model_range(set.images);
    return std::pair{torch::cat({plain, evidence::apply_style(plain)}),
                     torch::cat({set.labels, set.labels + 10})};
  };
  const auto [train_images, train_labels] = judge_set(data.train);
  evidence::ClassifierTraining settings;
  settings.epochs = args.epochs;
  settings.seed = args.seed;
  settings.log = log_line;
  evidence::Classifier judge =
      evidence::train_classifier(train_images, train_labels, evidence::kJudgeClasses, settings);
  const auto [test_images, test_labels] = judge_set(data.test);
  const double accuracy = evidence::accuracy(judge, test_images, test_labels);
  evidence::save_classifier(judge, args.output);
  std::cout << "wrote " << args.output << ": test accuracy " << fixed(100 * accuracy, 2)
            << " % (20 classes), " << fixed(seconds_since(start), 0) << " s\n";
  return cli::kExitSuccess;
}

int run_job(const JobArguments& args) {
  const ThreadLimit thread_limit(1);  // the other jobs run beside this one
  const evidence::Plan plan = evidence::plan_named(args.plan);
  const evidence::Task& task = evidence::task_named(plan, args.task);
  const evidence::Arm& arm = evidence::arm_named(plan, args.arm);
  const evidence::Resources resources = evidence::load_resources(evidence::data_folder());
  for (const evidence::JobResult& result :
       evidence::run_job(plan, task, arm, args.seed, resources, args.output))
    std::cout << result.task << " " << result.arm << " seed " << result.seed << ": held-out loss "
              << fixed(result.held_out_loss, 5) << ", content " << fixed(result.content_accuracy, 3)
              << ", FD " << fixed(result.frechet_distance, 2) << ", mean rank "
              << fixed(result.mean_rank, 2) << ", " << fixed(result.train_seconds, 1) << " s\n";
  return cli::kExitSuccess;
}

std::string machine_description() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line, model = "unknown CPU";
  while (std::getline(cpuinfo, line))
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  return model + ", " + std::to_string(std::thread::hardware_concurrency()) + " cores";
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
  return text;
}

// A run replaces the results of an earlier run in its folder, never anything else.
void check_output_folder(const fs::path& output) {
  if (!fs::exists(output))
    return;
  if (!fs::is_directory(output))
    throw std::runtime_error(output.string() + " is a file, not a folder");
  const std::set<std::string> ours{"results", "logs", "run.json", "evidence.md", "images"};
  for (const auto& entry : fs::directory_iterator(output))
    if (!ours.count(entry.path().filename().string()))
      throw std::runtime_error(output.string() + " holds other files (" +
                               entry.path().filename().string() +
                               "): give a new folder or one an earlier run wrote");
}

fs::path page_of(const std::string& page, const fs::path& output) {
  return page.empty() ? output / "evidence.md" : fs::path(page);
}

int run_run(const RunArguments& args, const std::vector<std::string>& command_line) {
  const auto start = std::chrono::steady_clock::now();
  const evidence::Plan plan = evidence::plan_named(args.plan);
  const fs::path output =
      args.output.empty() ? fs::path("evidence-" + plan.name) : fs::path(args.output);
  // Check the committed files before starting any job.
  (void)evidence::load_resources(evidence::data_folder());
  check_output_folder(output);
  fs::remove_all(output / "results");
  fs::remove_all(output / "logs");
  fs::create_directories(output / "logs");

  // Longest jobs first (more images, higher rank), so the last ones to end are short.
  std::vector<ChildCommand> children;
  std::vector<std::pair<int64_t, std::size_t>> cost;
  for (const evidence::Task& task : plan.tasks)
    for (const evidence::Arm& arm : plan.arms) {
      const bool has_fixed_arm = std::any_of(
          plan.arms.begin(), plan.arms.end(),
          [&](const auto& a) { return !a.restarts && !a.resize_energy && a.rank == arm.rank; });
      if (arm.resize_energy && has_fixed_arm)
        continue;  // measured by the job of the fixed-rank arm it resizes
      for (const uint64_t seed : plan.seeds) {
        const std::string label = task.name + " " + arm.name + " seed " + std::to_string(seed);
        children.push_back(
            {{"/proc/self/exe", "job", "--plan", plan.name, "--task", task.name, "--arm", arm.name,
              "--seed", std::to_string(seed), "-o", output.string()},
             output / "logs" /
                 (task.name + "." + arm.name + ".seed-" + std::to_string(seed) + ".log"),
             label});
        cost.emplace_back(-(task.images * 1000 + arm.rank), children.size() - 1);
      }
    }
  std::stable_sort(cost.begin(), cost.end());
  std::vector<ChildCommand> ordered;
  for (const auto& [weight, index] : cost)
    ordered.push_back(children[index]);
  std::cerr << "aclora-evidence: " << plan.name << " plan, " << ordered.size() << " jobs, "
            << args.jobs << " at a time; logs in " << (output / "logs").string() << std::endl;
  std::size_t ended = 0;
  std::vector<std::string> failures;
  evidence_app::run_children(ordered, args.jobs, [&](const ChildOutcome& outcome) {
    ++ended;
    std::cerr << "[" << ended << "/" << ordered.size() << "] " << outcome.command->label << ": "
              << (outcome.exit_status == 0
                      ? "done"
                      : "FAILED (exit status " + std::to_string(outcome.exit_status) + ")")
              << " in " << fixed(outcome.seconds, 1) << " s (" << fixed(seconds_since(start), 0)
              << " s in all)" << std::endl;
    if (outcome.exit_status != 0) {
      std::ifstream log(outcome.command->log);
      std::string line, last;
      while (std::getline(log, line))
        if (!line.empty())
          last = line;
      failures.push_back(outcome.command->label + ": " + last);
    }
  });
  if (!failures.empty()) {
    std::string message = std::to_string(failures.size()) + " of " +
                          std::to_string(ordered.size()) +
                          " jobs failed; the first: " + failures.front() + " (logs in " +
                          (output / "logs").string() + ")";
    throw std::runtime_error(message);
  }
  evidence::RunRecord record;
  record.plan = plan.name;
  for (const std::string& part : command_line)
    record.command += (record.command.empty() ? "" : " ") + part;
  record.jobs = args.jobs;
  record.machine = machine_description();
  record.finished = utc_now();
  record.wall_seconds = seconds_since(start);
  evidence::write_run_record(record, output);
  const fs::path page = page_of(args.page, output);
  evidence::write_report(plan, output, page, record);
  std::cout << "wrote " << page.string() << " (" << plan.name << " plan, " << ordered.size()
            << " jobs, " << fixed(seconds_since(start), 0) << " s)\n";
  return cli::kExitSuccess;
}

int run_report(const ReportArguments& args) {
  const evidence::Plan plan = evidence::plan_named(args.plan);
  const fs::path output =
      args.output.empty() ? fs::path("evidence-" + plan.name) : fs::path(args.output);
  const fs::path page = page_of(args.page, output);
  evidence::write_report(plan, output, page, evidence::read_run_record(output));
  std::cout << "wrote " << page.string() << "\n";
  return cli::kExitSuccess;
}

void add_plan_option(CLI::App& command, std::string& plan) {
  command.add_option("--plan", plan, "full (default), quick or smoke")
      ->check(CLI::IsMember({"full", "quick", "smoke"}))
      ->type_name("NAME");
}

}  // namespace

void add_commands(CLI::App& app, Commands& commands) {
  CLI::App* run = app.add_subcommand(
      "run", "run the experiment's jobs in parallel processes and write its page");
  add_plan_option(*run, commands.run.plan);
  run->add_flag_callback(
      "--quick", [&commands] { commands.run.plan = "quick"; },
      "the quick mode: one task, a few arms, one seed (same as --plan quick)");
  run->add_option("-o,--output", commands.run.output,
                  "the run's folder: results, logs, page (default evidence-PLAN)")
      ->type_name("DIR");
  run->add_option("--page", commands.run.page,
                  "the page to write (default OUTPUT/evidence.md; pictures beside it in "
                  "images/evidence-PLAN/)")
      ->type_name("FILE");
  cli::add_whole(*run, "--jobs", commands.run.jobs,
                 "processes at once, one LibTorch thread each (default 2)", 1, 256);

  CLI::App* report = app.add_subcommand(
      "report", "write the page again from a finished run's results (no training)");
  add_plan_option(*report, commands.report.plan);
  report->add_option("-o,--output", commands.report.output, "the run's folder")->type_name("DIR");
  report->add_option("--page", commands.report.page, "the page to write")->type_name("FILE");

  CLI::App* job = app.add_subcommand("job", "one job of a run (run starts these)");
  job->group("");  // internal: not listed in --help
  job->add_option("--plan", commands.job.plan)->required();
  job->add_option("--task", commands.job.task)->required();
  job->add_option("--arm", commands.job.arm)->required();
  cli::add_whole(*job, "--seed", commands.job.seed, "training seed");
  job->add_option("-o,--output", commands.job.output)->required();

  CLI::App* pretrain = app.add_subcommand(
      "pretrain", "train the base model on Fashion-MNIST without class 9 (Ankle boot)");
  pretrain->add_option("-o,--output", commands.pretrain.output, "the .safetensors to write")
      ->required()
      ->type_name("FILE");
  cli::add_whole(*pretrain, "--steps", commands.pretrain.steps, "optimizer steps (default 5000)",
                 int64_t{1});
  cli::add_whole(*pretrain, "--batch", commands.pretrain.batch, "images per step (default 64)",
                 int64_t{1});
  cli::add_whole(*pretrain, "--seed", commands.pretrain.seed, "seed (default 0)");
  cli::add_whole(*pretrain, "--threads", commands.pretrain.threads, "LibTorch threads (default 1)",
                 1, 256);

  CLI::App* classifier = app.add_subcommand(
      "classifier", "train the judge: 20 classes, the 10 garments plain and in the outline style");
  classifier->add_option("-o,--output", commands.classifier.output, "the .safetensors to write")
      ->required()
      ->type_name("FILE");
  cli::add_whole(*classifier, "--epochs", commands.classifier.epochs, "epochs (default 2)",
                 int64_t{1});
  cli::add_whole(*classifier, "--seed", commands.classifier.seed, "seed (default 0)");
  cli::add_whole(*classifier, "--threads", commands.classifier.threads,
                 "LibTorch threads (default 1)", 1, 256);
}

int run_command(const std::string& name, const Commands& commands,
                const std::vector<std::string>& command_line) {
  if (name == "run")
    return run_run(commands.run, command_line);
  if (name == "report")
    return run_report(commands.report);
  if (name == "job")
    return run_job(commands.job);
  if (name == "pretrain")
    return run_pretrain(commands.pretrain);
  return run_classifier(commands.classifier);
}

}  // namespace evidence_app
