/// @file eigen.hpp
/// @brief The Eigen backend: `aclora::Restart<aclora::backends::Eigen>`.
#pragma once

#include "aclora/aclora.hpp"
#include "aclora/backends/eigen/backend.hpp"
