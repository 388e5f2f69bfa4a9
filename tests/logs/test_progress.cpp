// Tests of logs::Progress with an injected clock, stream and terminal decision: the
// redrawn line on a terminal, one line per epoch elsewhere, messages, widths, throttling.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstddef>
#include <sstream>
#include <string>
#include <vector>

#include "aclora/adapters/logs/progress.hpp"
#include "logs_test_support.hpp"

namespace logs = aclora::logs;

namespace {

struct FakeRun {
  double now = 0;
  std::ostringstream out;

  logs::ProgressOutput output(bool terminal, std::size_t width = 80) {
    logs::ProgressOutput result;
    result.stream = &out;
    result.is_terminal = terminal;
    result.terminal_width = [width] { return width; };
    return result;
  }
  logs::ProgressClock clock() {
    return [this] { return now; };
  }
};

// The pieces of terminal output between carriage returns, trailing padding removed.
std::vector<std::string> redraws(const std::string& text) {
  std::vector<std::string> pieces;
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t end = text.find('\r', start);
    if (end == std::string::npos) {
      end = text.size();
    }
    std::string piece = text.substr(start, end - start);
    while (!piece.empty() && (piece.back() == ' ' || piece.back() == '\n')) {
      piece.pop_back();
    }
    if (!piece.empty()) {
      pieces.push_back(piece);
    }
    start = end + 1;
  }
  return pieces;
}

}  // namespace

// Durations print as H:MM:SS (hours unbounded); unknown ones as "?".
TEST(Progress, FormatsDurationsAndRates) {
  EXPECT_EQ(logs::format_duration(0), "0:00:00");
  EXPECT_EQ(logs::format_duration(59.99), "0:00:59");
  EXPECT_EQ(logs::format_duration(3599.9), "0:59:59");
  EXPECT_EQ(logs::format_duration(3600), "1:00:00");
  EXPECT_EQ(logs::format_duration(100000), "27:46:40");
  EXPECT_EQ(logs::format_duration(std::nan("")), "?");
  EXPECT_EQ(logs::format_duration(-1), "?");
  EXPECT_EQ(logs::format_rate(4.2), "4.20 it/s");
  EXPECT_EQ(logs::format_rate(1.0 / 10.8), "10.80 s/it");
  EXPECT_EQ(logs::format_rate(0), "? it/s");
}

// Not a terminal: nothing during the epoch, then exactly one line per finished epoch with
// epoch, steps, mean loss, speed and elapsed time.
TEST(Progress, NonTerminalWritesOneLinePerEpoch) {
  FakeRun run;
  {
    logs::Progress progress(3, 4, run.output(false), run.clock());
    progress.begin_epoch(0);
    for (const double loss : {0.5, 0.25, 0.125, 0.125}) {
      run.now += 2;
      progress.step(loss);
      EXPECT_EQ(run.out.str(), "");
    }
    progress.end_epoch();
    EXPECT_EQ(run.out.str(), "epoch 1/3: 4 steps, mean loss 0.25, 2.00 s/it, elapsed 0:00:08\n");
    progress.begin_epoch(1);
    run.now += 10.8;
    progress.step(1.0);
    progress.end_epoch();
  }
  EXPECT_EQ(run.out.str(),
            "epoch 1/3: 4 steps, mean loss 0.25, 2.00 s/it, elapsed 0:00:08\n"
            "epoch 2/3: 1 steps, mean loss 1, 10.80 s/it, elapsed 0:00:10\n");
}

// Not a terminal: a message is a plain line of its own.
TEST(Progress, NonTerminalMessagesArePlainLines) {
  FakeRun run;
  logs::Progress progress(2, 4, run.output(false), run.clock());
  progress.begin_epoch(0);
  progress.step(0.5);
  progress.message("restart 1: total rank 5120 -> 3391");
  EXPECT_EQ(run.out.str(), "restart 1: total rank 5120 -> 3391\n");
}

// A terminal: one line redrawn with '\r' showing epoch, step, bar, speed, loss, elapsed
// and ETA; it stays (newline) when the epoch ends.
TEST(Progress, TerminalRedrawsOneLine) {
  FakeRun run;
  logs::Progress progress(3, 4, run.output(true, 80), run.clock());
  progress.begin_epoch(0);
  EXPECT_EQ(run.out.str(), "\repoch 1/3 step 0/4 [.................] ? it/s loss ? 0:00:00<?");
  for (const double loss : {0.5, 0.25, 0.125, 0.0625}) {
    run.now += 1;
    progress.step(loss);
  }
  const std::vector<std::string> lines = redraws(run.out.str());
  ASSERT_EQ(lines.size(), 5U);
  EXPECT_EQ(lines[2], "epoch 1/3 step 2/4 [########.........] 1.00 it/s loss 0.25 0:00:02<0:00:02");
  EXPECT_EQ(lines[4],
            "epoch 1/3 step 4/4 [#################] 1.00 it/s loss 0.0625 0:00:04<0:00:00");
  EXPECT_EQ(run.out.str().find('\n'), std::string::npos) << "no newline during the epoch";
  progress.end_epoch();
  EXPECT_TRUE(run.out.str().ends_with("0:00:04<0:00:00\n"));
}

// Every redrawn line fits the terminal (one column to spare); a narrow one drops the bar
// and cuts the line.
TEST(Progress, TerminalLinesFitTheWidth) {
  for (const std::size_t width : {120U, 80U, 60U, 40U, 20U}) {
    FakeRun run;
    logs::Progress progress(100, 12345, run.output(true, width), run.clock());
    progress.begin_epoch(98);
    for (int step = 0; step < 50; ++step) {
      run.now += 0.5;
      progress.step(1.0 / 3.0);
    }
    for (const std::string& line : redraws(run.out.str())) {
      EXPECT_LE(line.size(), width - 1) << line;
    }
    const bool has_bar = run.out.str().find('[') != std::string::npos;
    EXPECT_EQ(has_bar, width >= 100) << "width " << width;
  }
}

// A message on a terminal clears the bar, stands on its own line, and the bar is drawn
// again below it.
TEST(Progress, TerminalMessageDoesNotBreakTheBar) {
  FakeRun run;
  logs::Progress progress(2, 4, run.output(true, 80), run.clock());
  progress.begin_epoch(0);
  run.now += 1;
  progress.step(0.5);
  const std::size_t bar_length = redraws(run.out.str()).back().size();
  run.out.str("");
  progress.message("restart 1: total rank 5120 -> 3391");
  const std::string text = run.out.str();
  EXPECT_TRUE(text.starts_with("\r" + std::string(bar_length, ' ') +
                               "\rrestart 1: total rank 5120 -> 3391\n\repoch 1/2 step 1/4"))
      << text;
}

// Redraws are throttled to one per redraw_interval, but the epoch's last step is always
// drawn.
TEST(Progress, TerminalRedrawsAreThrottled) {
  FakeRun run;
  logs::Progress progress(1, 1000, run.output(true, 100), run.clock());
  progress.begin_epoch(0);
  for (int step = 0; step < 1000; ++step) {
    run.now += 0.001;  // 1000 it/s: one second in all
    progress.step(0.1);
  }
  const std::vector<std::string> lines = redraws(run.out.str());
  EXPECT_LE(lines.size(), 13U);  // begin, first step, ~10 by time, last step
  EXPECT_TRUE(lines.back().starts_with("epoch 1/1 step 1000/1000")) << lines.back();
}

// A resumed epoch counts the steps done before the resume in step s/S and the line's step
// count, and only the new steps in the speed and mean loss.
TEST(Progress, ResumedEpochStartsAtItsStep) {
  FakeRun run;
  logs::Progress progress(2, 4, run.output(false), run.clock());
  progress.begin_epoch(1, 2);
  EXPECT_EQ(progress.steps_done(), 2U);
  run.now += 1;
  progress.step(0.5);
  run.now += 1;
  progress.step(0.25);
  progress.end_epoch();
  EXPECT_EQ(run.out.str(), "epoch 2/2: 4 steps, mean loss 0.375, 1.00 it/s, elapsed 0:00:02\n");
}

// Without a terminal the width falls back to 80 columns.
TEST(Progress, TerminalColumnsFallBackWhenNotATerminal) {
  const aclora::test::ScratchDir dir;
  const int fd = ::open((dir / "plain").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(logs::terminal_columns(fd), 80U);
  EXPECT_EQ(logs::terminal_columns(fd, 132), 132U);
  ::close(fd);
}
