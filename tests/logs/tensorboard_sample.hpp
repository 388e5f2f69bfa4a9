#pragma once
// The fixed TensorBoard sample: scalars with fixed wall times written by EventWriter,
// including a resume in the middle. tests/logs/data/scalars.tfevents holds exactly these
// bytes, and tests/logs/data/tensorboard_readback.json what TensorBoard read from them
// (tests/fixtures/make_tensorboard_fixture.py). Used by test_tensorboard.cpp and by the
// write_tensorboard_sample program of the read-back ctest.

#include <cstdint>
#include <filesystem>
#include <vector>

#include "aclora/adapters/logs/tensorboard.hpp"

namespace aclora::test {

inline constexpr double kSampleStartTime = 1700000000.25;

/// Wall time of the sample's event at step (exact binary fractions, plus one odd value).
inline double sample_wall_time(std::int64_t step) {
  return step == 7 ? 1700000123.456789 : 1700000001.0 + 0.5 * static_cast<double>(step);
}

/// Writes the sample into folder and returns the event file's path.
inline std::filesystem::path write_tensorboard_sample(const std::filesystem::path& folder) {
  using aclora::logs::EventWriter;
  std::filesystem::path path;
  std::uint64_t saved_offset = 0;
  {
    EventWriter writer(folder, {.start_time = kSampleStartTime, .hostname = "aclora-fixture"});
    path = writer.path();
    for (std::int64_t step = 0; step < 5; ++step) {
      writer.add_scalars(step,
                         {{"train/loss", 0.5 / static_cast<double>(step + 1)},
                          {"train/lr", 1e-4 * static_cast<double>(step + 1) / 5}},
                         sample_wall_time(step));
    }
    writer.add_scalar("rank/total", 5120, 0, sample_wall_time(0));
    saved_offset = writer.offset();  // a training state saved here
    // Written after the saved state: a resumed run must not keep these.
    writer.add_scalars(5, {{"train/loss", 99.0}, {"train/lr", 99.0}}, sample_wall_time(5));
    writer.add_scalar("rank/total", 99, 5, sample_wall_time(5));
  }
  EventWriter writer = EventWriter::resume(path, saved_offset);
  for (std::int64_t step = 5; step < 10; ++step) {
    writer.add_scalars(step,
                       {{"train/loss", 0.5 / static_cast<double>(step + 1)},
                        {"train/lr", 1e-4 * (1.0 - 0.1 * static_cast<double>(step - 5))}},
                       sample_wall_time(step));
  }
  writer.add_scalars(5, {{"rank/total", 3391}, {"restart/p", 0.97}}, sample_wall_time(5));
  writer.add_scalar("values/extremes", -2.5, 0, sample_wall_time(0));
  writer.add_scalar("values/extremes", 1e-30, 1, sample_wall_time(1));
  writer.add_scalar("values/extremes", 3.0e38, 2, sample_wall_time(2));
  writer.add_scalar("values/extremes", 0.0, 3, sample_wall_time(3));
  writer.add_scalar("values/extremes", 0.1, std::int64_t{1} << 40, sample_wall_time(4));
  writer.add_scalar("unicode/pérte ✓", 1.5, 9, sample_wall_time(9));
  return path;
}

}  // namespace aclora::test
