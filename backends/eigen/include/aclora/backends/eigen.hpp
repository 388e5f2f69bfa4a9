/// @file eigen.hpp
/// @brief The Eigen backend: `aclora::Restart<aclora::backends::EigenBackend>`.
#pragma once

#include "aclora/aclora.hpp"
#include "aclora/backends/eigen/backend.hpp"
