/// @file tool.hpp
/// @brief The aclora-lora command (inspect, resize, restart, convert) as a callable function.
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace aclora::lora_tool {

/// Runs one command line (without the program name), writing results to `out` and errors
/// and progress to `err`. Returns the exit status: 0 on success, 1 for bad input or a failed
/// write (one line "aclora-lora: error: ..." on `err`, no output file left behind, the input
/// untouched), 2 for a usage error.
int run(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

/// The usage text.
std::string usage();

}  // namespace aclora::lora_tool
