// Tests of logs::MetricsFile: lines read back with the JSON layer equal what was written,
// numbers round-trip exactly, offsets and resume by truncation, error messages.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "aclora/adapters/json.hpp"
#include "aclora/adapters/logs/metrics.hpp"
#include "logs_test_support.hpp"

namespace json = aclora::json;
namespace logs = aclora::logs;
using aclora::test::logs_error;
using aclora::test::read_file;
using aclora::test::ScratchDir;

namespace {

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    lines.push_back(line);
  }
  return lines;
}

aclora::RestartReport sample_report() {
  aclora::RestartReport report;
  report.restart_index = 2;
  report.mean_loss = 0.123456789012345;
  report.alpha = 0.75;
  report.threshold = 1 - std::pow(report.mean_loss, report.alpha);
  for (int m = 0; m < 3; ++m) {
    aclora::ModuleReport module;
    module.name = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_" +
                  std::string(1, static_cast<char>('q' + m));
    module.index = static_cast<std::size_t>(m);
    module.allocated_rank = 8;
    module.module_rank = static_cast<std::size_t>(3 + m);
    for (int layer = 0; layer < 2; ++layer) {
      aclora::LayerReport report_layer;
      report_layer.kept_energy_fraction = 0.9 + 0.01 * m + 0.001 * layer;
      module.layers.push_back(report_layer);
    }
    report.modules.push_back(module);
  }
  return report;
}

// Doubles whose shortest decimal forms are long or unusual.
const std::vector<double> kAwkwardDoubles = {
    0.1 + 0.2, 1.0 / 3.0, 1e-300, 5e-324, 1.7976931348623157e308, -2.5e-8, 123456789.0, 0.0};

}  // namespace

// Every step line parses back (with the project's JSON layer) to exactly the record
// that was written, awkward doubles included, and the offset is the file's size.
TEST(MetricsFile, StepLinesParseBackToTheRecordsWritten) {
  const ScratchDir dir;
  const auto path = dir / "metrics.jsonl";
  std::vector<json::Value> written;
  {
    logs::MetricsFile metrics(path);
    EXPECT_EQ(metrics.offset(), 0U);
    for (std::size_t i = 0; i < kAwkwardDoubles.size(); ++i) {
      const double loss = kAwkwardDoubles[i];
      const double lr = kAwkwardDoubles[kAwkwardDoubles.size() - 1 - i];
      const std::vector<logs::MetricField> extra = {{"grad_norm", loss / 3}, {"scale", -lr}};
      metrics.write_step(static_cast<int>(i / 3), static_cast<std::int64_t>(i) * 1000000007LL, loss,
                         lr, extra);
      written.push_back(logs::step_record(
          static_cast<int>(i / 3), static_cast<std::int64_t>(i) * 1000000007LL, loss, lr, extra));
      EXPECT_EQ(metrics.offset(), std::filesystem::file_size(path));
    }
  }
  const std::vector<std::string> lines = lines_of(read_file(path));
  ASSERT_EQ(lines.size(), written.size());
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const json::Value parsed = json::parse(lines[i]);
    EXPECT_EQ(parsed, written[i]) << lines[i];
    EXPECT_EQ(parsed.find("type")->as_string(), "step");
    EXPECT_EQ(parsed.find("loss")->as_double(), kAwkwardDoubles[i]) << "bit-exact loss";
    EXPECT_EQ(parsed.find("grad_norm")->as_double(), kAwkwardDoubles[i] / 3);
  }
  EXPECT_TRUE(lines[0].starts_with(R"({"type":"step","epoch":0,"step":0,"loss":)")) << lines[0];
}

// A restart record holds epoch, step, restart_index, L, alpha, p, total_rank, seconds
// and K and R per module, in module order; kept energy only when asked for.
TEST(MetricsFile, RestartRecordHoldsTheReport) {
  const ScratchDir dir;
  const auto path = dir / "metrics.jsonl";
  const aclora::RestartReport report = sample_report();
  {
    logs::MetricsFile metrics(path);
    metrics.write_restart(report, 20, 12345, 0.625);
    metrics.write_restart(report, 30, 23456, 0.5, /*with_kept_energy=*/true);
  }
  const std::vector<std::string> lines = lines_of(read_file(path));
  ASSERT_EQ(lines.size(), 2U);
  const json::Value record = json::parse(lines[0]);
  EXPECT_EQ(record.find("type")->as_string(), "restart");
  EXPECT_EQ(record.find("epoch")->as_int(), 20);
  EXPECT_EQ(record.find("step")->as_int(), 12345);
  EXPECT_EQ(record.find("restart_index")->as_int(), 2);
  EXPECT_EQ(record.find("L")->as_double(), report.mean_loss);
  EXPECT_EQ(record.find("alpha")->as_double(), 0.75);
  EXPECT_EQ(record.find("p")->as_double(), report.threshold);
  EXPECT_EQ(record.find("total_rank")->as_int(), 3 + 4 + 5);
  EXPECT_EQ(record.find("seconds")->as_double(), 0.625);
  const json::Array& modules = record.find("modules")->as_array();
  ASSERT_EQ(modules.size(), 3U);
  for (std::size_t m = 0; m < modules.size(); ++m) {
    EXPECT_EQ(modules[m].find("name")->as_string(), report.modules[m].name);
    EXPECT_EQ(modules[m].find("K")->as_int(), static_cast<std::int64_t>(3 + m));
    EXPECT_EQ(modules[m].find("R")->as_int(), 8);
    EXPECT_FALSE(modules[m].contains("kept_energy"));
  }
  const json::Value with_energy = json::parse(lines[1]);
  EXPECT_EQ(with_energy, logs::restart_record(report, 30, 23456, 0.5, true));
  const json::Array& energy =
      with_energy.find("modules")->as_array()[2].find("kept_energy")->as_array();
  ASSERT_EQ(energy.size(), 2U);
  EXPECT_EQ(energy[1].as_double(), report.modules[2].layers[1].kept_energy_fraction);
}

// Non-finite numbers (a diverged loss; L and alpha when p was given explicitly) are
// written as null instead of failing the run.
TEST(MetricsFile, NonFiniteNumbersBecomeNull) {
  const ScratchDir dir;
  const auto path = dir / "metrics.jsonl";
  aclora::RestartReport report = sample_report();
  report.mean_loss = std::numeric_limits<double>::quiet_NaN();
  report.alpha = std::numeric_limits<double>::quiet_NaN();
  {
    logs::MetricsFile metrics(path);
    metrics.write_step(0, 1, std::numeric_limits<double>::quiet_NaN(),
                       std::numeric_limits<double>::infinity());
    metrics.write_restart(report, 0, 1, 0.1);
  }
  const std::vector<std::string> lines = lines_of(read_file(path));
  ASSERT_EQ(lines.size(), 2U);
  EXPECT_TRUE(json::parse(lines[0]).find("loss")->is_null());
  EXPECT_TRUE(json::parse(lines[0]).find("lr")->is_null());
  EXPECT_TRUE(json::parse(lines[1]).find("L")->is_null());
  EXPECT_TRUE(json::parse(lines[1]).find("alpha")->is_null());
  EXPECT_EQ(json::parse(lines[1]).find("p")->as_double(), report.threshold);
}

// Resuming at a saved offset drops the lines written after it: the resumed run's file is
// byte for byte the file of a run that was never interrupted.
TEST(MetricsFile, ResumeAtASavedOffsetEqualsAnUninterruptedRun) {
  const ScratchDir dir;
  const auto write_steps = [](logs::MetricsFile& metrics, int first, int last) {
    for (int step = first; step < last; ++step) {
      metrics.write_step(step / 4, step, 1.0 / (step + 1), 1e-4);
    }
  };
  {
    logs::MetricsFile uninterrupted(dir / "straight.jsonl");
    write_steps(uninterrupted, 0, 12);
    uninterrupted.write_restart(sample_report(), 3, 12, 0.25);
  }
  std::uint64_t saved = 0;
  {
    logs::MetricsFile first_run(dir / "resumed.jsonl");
    write_steps(first_run, 0, 8);
    first_run.flush();
    saved = first_run.offset();
    // Written after the saved state, then the process "crashed".
    write_steps(first_run, 8, 11);
  }
  EXPECT_GT(std::filesystem::file_size(dir / "resumed.jsonl"), saved);
  {
    logs::MetricsFile resumed(dir / "resumed.jsonl", saved);
    EXPECT_EQ(resumed.offset(), saved);
    EXPECT_EQ(std::filesystem::file_size(dir / "resumed.jsonl"), saved);
    write_steps(resumed, 8, 12);
    resumed.write_restart(sample_report(), 3, 12, 0.25);
  }
  EXPECT_EQ(read_file(dir / "resumed.jsonl"), read_file(dir / "straight.jsonl"));
}

// Opening without a resume offset starts a fresh, empty file even when one exists.
TEST(MetricsFile, OffsetZeroStartsAFreshFile) {
  const ScratchDir dir;
  const auto path = dir / "metrics.jsonl";
  aclora::test::write_file(path, "{\"old\":1}\n");
  logs::MetricsFile metrics(path);
  EXPECT_EQ(metrics.offset(), 0U);
  EXPECT_EQ(std::filesystem::file_size(path), 0U);
}

// A file shorter than the resume offset is an error naming the file and both sizes, and
// the file is left as it was.
TEST(MetricsFile, ResumePastTheEndNamesTheFileAndBothSizes) {
  const ScratchDir dir;
  const auto path = dir / "metrics.jsonl";
  aclora::test::write_file(path, "{\"a\":1}\n");
  const std::string message = logs_error([&] { logs::MetricsFile metrics(path, 100); });
  EXPECT_CONTAINS(message, path.string());
  EXPECT_CONTAINS(message, "100");
  EXPECT_CONTAINS(message, "only 8 bytes");
  EXPECT_EQ(read_file(path), "{\"a\":1}\n");
}

// A resume offset in the middle of a line, or on a missing file, is refused with the
// file named.
TEST(MetricsFile, ResumeOffsetMustEndALineOfAnExistingFile) {
  const ScratchDir dir;
  const auto path = dir / "metrics.jsonl";
  aclora::test::write_file(path, "{\"a\":1}\n{\"b\":2}\n");
  const std::string mid_line = logs_error([&] { logs::MetricsFile metrics(path, 5); });
  EXPECT_CONTAINS(mid_line,
                  path.string() + ": cannot resume at byte 5: it is not the end of a line");
  EXPECT_EQ(read_file(path), "{\"a\":1}\n{\"b\":2}\n");
  const auto missing = dir / "missing.jsonl";
  const std::string gone = logs_error([&] { logs::MetricsFile metrics(missing, 8); });
  EXPECT_CONTAINS(gone, missing.string() + ": cannot resume at byte 8: the file does not exist");
  EXPECT_FALSE(std::filesystem::exists(missing));
}

// A file that cannot be opened (its folder is missing) is an error naming it.
TEST(MetricsFile, CannotOpenNamesTheFile) {
  const ScratchDir dir;
  const auto path = dir / "no_such_folder" / "metrics.jsonl";
  const std::string message = logs_error([&] { logs::MetricsFile metrics(path); });
  EXPECT_CONTAINS(message, path.string() + ": cannot open: No such file or directory");
}

// A full disk (/dev/full) is reported as a failed write naming the file.
TEST(MetricsFile, DiskFullIsAWriteErrorNamingTheFile) {
  if (!std::filesystem::exists("/dev/full")) {
    GTEST_SKIP() << "no /dev/full on this system";
  }
  logs::MetricsFile metrics("/dev/full");
  const std::string message = logs_error([&] { metrics.write_step(0, 1, 0.5, 1e-4); });
  EXPECT_CONTAINS(message, "/dev/full: write failed: No space left on device");
}

// A write cut short (here by the file size limit) leaves the file exactly as before the
// failed line: it never ends in half a record, and offset() is unchanged.
TEST(MetricsFile, AFailedWriteLeavesNoHalfLine) {
  const ScratchDir dir;
  const auto path = dir / "metrics.jsonl";
  logs::MetricsFile metrics(path);
  metrics.write_step(0, 1, 0.5, 1e-4);
  const std::string before = read_file(path);
  const std::uint64_t offset = metrics.offset();

  // With SIGXFSZ ignored, writing past RLIMIT_FSIZE writes what fits, then fails (EFBIG).
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved), 0);
  const auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
  rlimit limited = saved;
  limited.rlim_cur = offset + 10;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &limited), 0);
  const std::string message = logs_error([&] { metrics.write_step(0, 2, 0.25, 1e-4); });
  ::setrlimit(RLIMIT_FSIZE, &saved);
  ::signal(SIGXFSZ, old_handler);

  EXPECT_CONTAINS(message, path.string() + ": write failed: File too large");
  EXPECT_EQ(read_file(path), before);
  EXPECT_EQ(metrics.offset(), offset);
  metrics.write_step(0, 2, 0.25, 1e-4);  // the file is usable again
  EXPECT_EQ(read_file(path), before + json::dump(logs::step_record(0, 2, 0.25, 1e-4)) + "\n");
}

// An extra field that repeats a record field is refused with the file named.
TEST(MetricsFile, ExtraFieldsMustNotRepeatRecordFields) {
  const ScratchDir dir;
  const auto path = dir / "metrics.jsonl";
  logs::MetricsFile metrics(path);
  const std::string message = logs_error([&] {
    metrics.write_step(0, 1, 0.5, 1e-4, {{"lr", 2.0}});
  });
  EXPECT_CONTAINS(message,
                  path.string() + ": cannot write a record: step record: extra field \"lr\"");
  EXPECT_EQ(metrics.offset(), 0U);
}

// Records of the caller's own kinds go through write(); a non-object is refused.
TEST(MetricsFile, WriteAcceptsObjectsOnly) {
  const ScratchDir dir;
  const auto path = dir / "metrics.jsonl";
  logs::MetricsFile metrics(path);
  json::Value custom = json::Object{};
  custom["type"] = "sample";
  custom["images"] = json::Array{"a.png", "b.png"};
  metrics.write(custom);
  EXPECT_EQ(read_file(path), "{\"type\":\"sample\",\"images\":[\"a.png\",\"b.png\"]}\n");
  EXPECT_CONTAINS(logs_error([&] { metrics.write(json::Value(3)); }),
                  "a record must be a JSON object, got number");
}
