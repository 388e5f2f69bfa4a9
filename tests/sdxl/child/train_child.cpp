// The trainer tests' training run (trainer_fixture.hpp) as its own process, so a test can
// kill it with SIGKILL and resume it:   train_child OUT [--resume]
#include <cstdio>
#include <exception>
#include <string>

#include "trainer_fixture.hpp"

int main(int argc, char** argv) try {
  if (argc < 2) {
    std::fprintf(stderr, "usage: train_child OUT [--resume]\n");
    return 2;
  }
  auto options = sdxl_test::tiny_train_options(argv[1]);
  options.resume = argc > 2 && std::string(argv[2]) == "--resume";
  const auto result = sdxl::train(options, [](const std::string& line) {
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  });
  std::printf("epochs %d steps %lld\n", result.epochs, static_cast<long long>(result.steps));
  return 0;
} catch (const std::exception& error) {
  std::fprintf(stderr, "train_child: %s\n", error.what());
  return 1;
}
