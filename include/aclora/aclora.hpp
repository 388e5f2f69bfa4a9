/// @file aclora.hpp
/// @brief The whole core: schedule, selection, noise, reports and the Restart driver.
/// Include a backend header (aclora/backends/eigen.hpp, torch.hpp, cuda.cuh) beside it.
#pragma once

#include "aclora/backend.hpp"
#include "aclora/error.hpp"
#include "aclora/layer.hpp"
#include "aclora/memory.hpp"
#include "aclora/noise.hpp"
#include "aclora/philox.hpp"
#include "aclora/precision.hpp"
#include "aclora/report.hpp"
#include "aclora/restart.hpp"
#include "aclora/schedule.hpp"
#include "aclora/selection.hpp"
#include "aclora/spectrum.hpp"
