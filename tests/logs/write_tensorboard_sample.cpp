// Writes the fixed TensorBoard sample (tensorboard_sample.hpp) into the folder given as
// the only argument and prints the event file's path. Used by tensorboard_readback_test.sh
// and to remake tests/logs/data/scalars.tfevents (see tests/logs/data/README.md).

#include <exception>
#include <iostream>

#include "tensorboard_sample.hpp"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: write_tensorboard_sample FOLDER\n";
    return 2;
  }
  try {
    std::cout << aclora::test::write_tensorboard_sample(argv[1]).string() << '\n';
  } catch (const std::exception& error) {
    std::cerr << "write_tensorboard_sample: " << error.what() << '\n';
    return 1;
  }
  return 0;
}
