/// @file report.hpp
/// The experiment's page: tables (mean and spread over seeds of every arm and measure),
/// pictures (measures against the fixed rank with AC-LoRA at its mean kept rank, kept rank
/// over the RESTARTs, generated images per arm) and the statements the numbers support,
/// all regenerated from the jobs' result files.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "evidence/experiment.hpp"
#include "evidence/job.hpp"

namespace evidence {

/// How the run went, for the page's reproduction section.
struct RunRecord {
  std::string plan;           ///< full, quick, smoke
  std::string command;        ///< the command that ran it
  double wall_seconds = 0.0;  ///< the whole run, jobs and page
  int jobs = 1;               ///< processes at once
  std::string machine;        ///< CPU model and cores
  std::string finished;       ///< UTC date and time
};

/// Writes `run_folder`/run.json. @throws std::runtime_error naming the file.
void write_run_record(const RunRecord& record, const std::filesystem::path& run_folder);
/// Reads `run_folder`/run.json. @throws std::runtime_error naming the file and key.
RunRecord read_run_record(const std::filesystem::path& run_folder);

/// Every result of `plan` under `run_folder` (result_path), in the plan's order of tasks,
/// arms and seeds. @throws std::runtime_error naming the first missing or unreadable file.
std::vector<JobResult> read_results(const Plan& plan, const std::filesystem::path& run_folder);

/// Writes the page `page` (Markdown, a Doxygen page) and its pictures in
/// `page`'s folder/images/evidence-PLAN/, from the results under `run_folder`. Every file is
/// written atomically; pictures first, the page last.
/// @throws std::runtime_error naming a missing result or a file that cannot be written.
void write_report(const Plan& plan, const std::filesystem::path& run_folder,
                  const std::filesystem::path& page, const RunRecord& record);

}  // namespace evidence
