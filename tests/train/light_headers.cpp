// The light headers of the training layer compile without LibTorch: this translation unit
// is built without torch's include directories, and no torch, ATen or c10 header may reach
// it (those define C10_API / TORCH_API).
#include <aclora/adapters/train/distributed/launch.hpp>
#include <aclora/adapters/train/error.hpp>
#include <aclora/adapters/train/lr_schedule.hpp>

#if defined(C10_API) || defined(TORCH_API) || defined(C10_LIKELY)
#error "a light header of aclora/adapters/train includes LibTorch"
#endif

namespace {

// Uses each header's main type, so that the check covers more than the declarations.
[[maybe_unused]] double warmup_lr() {
  const aclora::train::LrSchedule schedule{aclora::train::lr_schedule_kind("cosine"), 1e-4, 10,
                                           100};
  return schedule.at(5);
}

[[maybe_unused]] bool writes(const aclora::train::distributed::Launch& launch) {
  return launch.writes_files();
}

}  // namespace
