/// @file error.hpp
/// @brief aclora::train::Error, the error of the training layer. Light: it needs no LibTorch,
/// so headers such as lr_schedule.hpp and distributed/launch.hpp include it alone.
#pragma once

#include <stdexcept>

namespace aclora::train {

/// Thrown for invalid injections, states, exports, schedules and launch environments: the
/// message names the layer, rule, file, option or variable at fault. When inject() throws,
/// no layer was changed.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace aclora::train
