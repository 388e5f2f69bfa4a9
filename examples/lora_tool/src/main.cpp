// aclora-lora: inspect, resize, restart and convert LoRA files (see tool.hpp).
#include <iostream>
#include <string>
#include <vector>

#include "lora_tool/tool.hpp"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  return aclora::lora_tool::run(args, std::cout, std::cerr);
}
