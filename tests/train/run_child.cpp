// The training run of run_fixture.hpp as its own process, so a test can SIGKILL it
// mid-epoch and resume it.   run_child OUT [--resume] [--kill-at-step N]
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "run_fixture.hpp"

int main(int argc, char** argv) try {
  if (argc < 2) {
    std::fprintf(stderr, "usage: run_child OUT [--resume] [--kill-at-step N]\n");
    return 2;
  }
  train_test::RunSettings settings;
  settings.output = argv[1];
  for (int i = 2; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--resume")
      settings.resume = true;
    else if (flag == "--kill-at-step" && i + 1 < argc)
      settings.kill_at_step = std::stoll(argv[++i]);
    else
      throw std::invalid_argument("unknown argument " + flag);
  }
  const auto summary = train_test::run_training(settings);
  std::printf("epochs %d steps %lld\n", summary.epochs_completed,
              static_cast<long long>(summary.global_step));
  return 0;
} catch (const std::exception& error) {
  std::fprintf(stderr, "run_child: %s\n", error.what());
  return 1;
}
