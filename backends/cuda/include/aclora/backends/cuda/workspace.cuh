/// @file workspace.cuh
/// @brief The backend's persistent state: handles, the cached plan of the last layer list,
/// its device workspace and pinned staging buffer. A plan is reused while the layer list
/// (pointers, shapes, strides, types), the limit and the precision stay the same, so a
/// training run pays for planning, allocation and table uploads once.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "aclora/backends/cuda/plan.hpp"
#include "aclora/backends/cuda/runtime.cuh"
#include "aclora/backends/cuda/stream_device.cuh"

namespace aclora::backends::cuda {

/// Everything a backend object keeps between calls.
struct Workspace {
  Handles handles;                         ///< cuBLAS / cuSOLVER handles
  DeviceBuffer device;                     ///< the plan's device workspace
  PinnedBuffer pinned;                     ///< staging: tables, write parameters, records
  std::vector<unsigned char> solver_host;  ///< cuSOLVER host workspace
  Plan plan;                               ///< plan of the last layer list
  std::vector<PlanInput> inputs;           ///< the layer list the plan was made for
  std::size_t planned_limit = 0;           ///< the scratch limit it was made with
  bool planned = false;                    ///< plan, memory and tables are ready
  bool tables_uploaded = false;            ///< the tables are on the device
  std::uint64_t generation = 0;            ///< incremented by every analysis
  std::size_t pinned_writes = 0;           ///< byte offset of the write parameters (pinned)
  std::size_t pinned_records = 0;          ///< byte offset of the spectrum records (pinned)

  /// Makes (or reuses) the plan for `layer_inputs` in the resolved `precision`, allocates its
  /// memory and stages its tables. Throws aclora::Error (nothing written anywhere) on failure.
  void prepare(const std::vector<PlanInput>& layer_inputs, std::size_t scratch_limit,
               Precision precision, cudaStream_t stream) {
    handles.bind(stream);
    if (planned && scratch_limit == planned_limit && precision == plan.precision &&
        layer_inputs == inputs)
      return;
    planned = false;
    plan = make_plan(layer_inputs, scratch_limit, precision,
                     [&](std::int32_t rank, std::size_t count) {
                       return solver_workspace(handles, rank, count);
                     });
    device.reserve(plan.device_bytes());
    pinned_writes = plan.layout.tables_end;
    pinned_records = pinned_writes + align_bytes(plan.slots.size() * sizeof(WriteSlot));
    pinned.reserve(pinned_records + align_bytes(plan.record_doubles * sizeof(double)));
    solver_host.resize(plan.solver_host_bytes);
    stage_tables(plan, pinned.data(), device.data());
    inputs = layer_inputs;
    planned_limit = scratch_limit;
    planned = true;
    tables_uploaded = false;
  }
};

}  // namespace aclora::backends::cuda
