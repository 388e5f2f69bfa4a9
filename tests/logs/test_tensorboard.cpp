// Tests of logs::EventWriter: exact record bytes, the committed sample that TensorBoard
// read back (tests/logs/data), file naming, resume by truncation, errors.

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "aclora/adapters/json.hpp"
#include "aclora/adapters/logs/tensorboard.hpp"
#include "event_file_reader.hpp"
#include "logs_test_support.hpp"
#include "tensorboard_sample.hpp"

namespace json = aclora::json;
namespace logs = aclora::logs;
using aclora::test::logs_error;
using aclora::test::read_events;
using aclora::test::read_file;
using aclora::test::ScratchDir;

namespace {

const std::filesystem::path kData = ACLORA_LOGS_TEST_DATA_DIR;

std::string bytes(std::initializer_list<unsigned> values) {
  std::string out;
  for (const unsigned value : values) {
    out.push_back(static_cast<char>(value));
  }
  return out;
}

std::string le32(std::uint32_t value) {
  return bytes({value & 0xFFU, (value >> 8) & 0xFFU, (value >> 16) & 0xFFU, value >> 24});
}

// One record framed by hand: length, masked CRC of the length, payload, masked CRC.
std::string framed(const std::string& payload) {
  std::string length;
  for (int i = 0; i < 8; ++i) {
    length.push_back(static_cast<char>((payload.size() >> (8 * i)) & 0xFFU));
  }
  return length + le32(logs::masked_crc32c(length)) + payload + le32(logs::masked_crc32c(payload));
}

}  // namespace

// A new writer creates its (nested) folder and a file named
// events.out.tfevents.<unix seconds>.<hostname>; a second file of the same second and
// host gets ".1" instead of overwriting the first.
TEST(EventWriter, NamesTheFileAfterTimeAndHost) {
  const ScratchDir dir;
  const auto folder = dir / "runs" / "a";
  const logs::EventWriter first(folder, {.start_time = 1700000000.9, .hostname = "node7"});
  EXPECT_EQ(first.path(), folder / "events.out.tfevents.1700000000.node7");
  const logs::EventWriter second(folder, {.start_time = 1700000000.1, .hostname = "node7"});
  EXPECT_EQ(second.path(), folder / "events.out.tfevents.1700000000.node7.1");
  const logs::EventWriter local(folder);
  EXPECT_TRUE(local.path().filename().string().starts_with("events.out.tfevents."));
}

// The file starts with the record of Event{wall_time, file_version "brain.Event:2"},
// byte for byte as assembled by hand here; offset() is the file size.
TEST(EventWriter, FirstRecordIsTheFileVersionEvent) {
  const ScratchDir dir;
  const logs::EventWriter writer(dir.path(), {.start_time = 1.0, .hostname = "h"});
  const std::string event = bytes({0x09, 0, 0, 0, 0, 0, 0, 0xF0, 0x3F, 0x1A, 13}) + "brain.Event:2";
  EXPECT_EQ(read_file(writer.path()), framed(event));
  EXPECT_EQ(writer.offset(), framed(event).size());
}

// A scalar is Event{wall_time (1, double), step (2, varint), summary (5) {value (1)
// {tag (1), simple_value (2, float)}}}: bytes assembled by hand from the wire format.
TEST(EventWriter, ScalarRecordMatchesTheWireFormat) {
  const ScratchDir dir;
  logs::EventWriter writer(dir.path(), {.start_time = 1.0, .hostname = "h"});
  const std::uint64_t start = writer.offset();
  writer.add_scalar("a", 1.0, 300, 1.0);
  const std::string value = bytes({0x0A, 1, 'a', 0x15, 0, 0, 0x80, 0x3F});
  const std::string summary = bytes({0x0A, 8}) + value;
  const std::string event =
      bytes({0x09, 0, 0, 0, 0, 0, 0, 0xF0, 0x3F, 0x10, 0xAC, 0x02, 0x2A, 10}) + summary;
  EXPECT_EQ(read_file(writer.path()).substr(start), framed(event));
  EXPECT_EQ(writer.offset(), start + framed(event).size());
}

// Writing the fixed sample again gives exactly the committed file that TensorBoard read
// (tests/logs/data/scalars.tfevents), resume in the middle included.
TEST(EventWriter, SampleEqualsTheCommittedFileTensorBoardRead) {
  const ScratchDir dir;
  const auto path = aclora::test::write_tensorboard_sample(dir.path());
  const std::string committed = read_file(kData / "scalars.tfevents");
  ASSERT_FALSE(committed.empty()) << "missing " << (kData / "scalars.tfevents");
  EXPECT_EQ(read_file(path), committed);
}

// Our own reader, checking both CRCs of every record, finds in the committed file exactly
// what TensorBoard's EventAccumulator read from it: the file_version and, per tag, every
// (step, wall_time, value) in order.
TEST(EventWriter, CommittedFileReadsBackAsTensorBoardReadIt) {
  const std::vector<aclora::test::ReadEvent> events =
      read_events(read_file(kData / "scalars.tfevents"));
  ASSERT_FALSE(events.empty());
  const json::Value readback = json::parse(read_file(kData / "tensorboard_readback.json"));
  EXPECT_EQ(events.front().file_version, readback.find("file_version")->as_string());
  EXPECT_EQ(events.front().wall_time, aclora::test::kSampleStartTime);

  std::map<std::string, std::vector<std::tuple<std::int64_t, double, double>>> ours;
  for (std::size_t i = 1; i < events.size(); ++i) {
    EXPECT_TRUE(events[i].has_summary);
    for (const auto& scalar : events[i].scalars) {
      ours[scalar.tag].emplace_back(events[i].step, events[i].wall_time,
                                    static_cast<double>(scalar.value));
    }
  }
  const json::Object& theirs = readback.find("scalars")->as_object();
  ASSERT_EQ(theirs.size(), ours.size());
  for (const auto& [tag, points] : theirs) {
    ASSERT_TRUE(ours.contains(tag)) << tag;
    const json::Array& list = points.as_array();
    ASSERT_EQ(list.size(), ours[tag].size()) << tag;
    for (std::size_t i = 0; i < list.size(); ++i) {
      EXPECT_EQ(list[i].find("step")->as_int(), std::get<0>(ours[tag][i])) << tag << " #" << i;
      EXPECT_EQ(list[i].find("wall_time")->as_double(), std::get<1>(ours[tag][i]))
          << tag << " #" << i;
      EXPECT_EQ(list[i].find("value")->as_double(), std::get<2>(ours[tag][i])) << tag << " #" << i;
    }
  }
  // The records written after the saved state are gone: no 99 anywhere.
  for (const auto& [tag, points] : ours) {
    for (const auto& point : points) {
      EXPECT_NE(std::get<2>(point), 99.0) << tag;
    }
  }
}

// The test reader really checks the CRCs: one flipped payload byte is reported.
TEST(EventWriter, TestReaderRejectsACorruptedRecord) {
  std::string file = read_file(kData / "scalars.tfevents");
  ASSERT_GT(file.size(), 40U);
  file[20] = static_cast<char>(file[20] ^ 0x01);
  EXPECT_THROW(read_events(file), std::runtime_error);
}

// add_scalars puts all scalars of a step in one Event; wall time "now" lies between the
// clock readings around the call.
TEST(EventWriter, AddScalarsWritesOneEventWithWallTimeNow) {
  const ScratchDir dir;
  logs::EventWriter writer(dir.path());
  const double before = logs::unix_seconds_now();
  writer.add_scalars(42, {{"train/loss", 0.25}, {"train/lr", 1e-4}});
  const double after = logs::unix_seconds_now();
  const auto events = read_events(read_file(writer.path()));
  ASSERT_EQ(events.size(), 2U);
  EXPECT_EQ(events[1].step, 42);
  EXPECT_GE(events[1].wall_time, before);
  EXPECT_LE(events[1].wall_time, after);
  ASSERT_EQ(events[1].scalars.size(), 2U);
  EXPECT_EQ(events[1].scalars[0].tag, "train/loss");
  EXPECT_EQ(events[1].scalars[0].value, 0.25F);
  EXPECT_EQ(events[1].scalars[1].tag, "train/lr");
  EXPECT_EQ(events[1].scalars[1].value, static_cast<float>(1e-4));
}

// Resume cuts the records written after the saved offset; resuming at 0 restarts the
// file with a file_version event.
TEST(EventWriter, ResumeTruncatesToTheSavedOffset) {
  const ScratchDir dir;
  std::filesystem::path path;
  std::uint64_t saved = 0;
  {
    logs::EventWriter writer(dir.path(), {.start_time = 5.0, .hostname = "h"});
    writer.add_scalar("x", 1, 1, 6.0);
    saved = writer.offset();
    writer.add_scalar("x", 2, 2, 7.0);
    path = writer.path();
  }
  {
    logs::EventWriter resumed = logs::EventWriter::resume(path, saved);
    EXPECT_EQ(resumed.offset(), saved);
    resumed.add_scalar("x", 3, 2, 7.0);
  }
  const auto events = read_events(read_file(path));
  ASSERT_EQ(events.size(), 3U);
  EXPECT_EQ(events[2].scalars.at(0).value, 3.0F);
  {
    logs::EventWriter restarted = logs::EventWriter::resume(path, 0);
    const auto fresh = read_events(read_file(path));
    ASSERT_EQ(fresh.size(), 1U);
    EXPECT_EQ(fresh[0].file_version, "brain.Event:2");
    EXPECT_EQ(restarted.offset(), std::filesystem::file_size(path));
  }
}

// Resume offsets that do not fit are refused with the file named and the file left as it
// was: past the end (both sizes named), inside a record, in a file that is not an event
// file, on a missing file.
TEST(EventWriter, ResumeRefusesOffsetsThatDoNotFit) {
  const ScratchDir dir;
  std::filesystem::path path;
  {
    logs::EventWriter writer(dir.path(), {.start_time = 5.0, .hostname = "h"});
    writer.add_scalar("x", 1, 1, 6.0);
    path = writer.path();
  }
  const std::string before = read_file(path);
  const std::string size = std::to_string(before.size());

  const std::string past = logs_error([&] { logs::EventWriter::resume(path, 100000); });
  EXPECT_CONTAINS(
      past, path.string() + ": cannot resume at byte 100000: the file has only " + size + " bytes");
  const std::string inside = logs_error([&] { logs::EventWriter::resume(path, 20); });
  EXPECT_CONTAINS(inside,
                  path.string() + ": cannot resume at byte 20: it is not the end of a record");
  EXPECT_EQ(read_file(path), before);

  const auto text = dir / "notes.txt";
  aclora::test::write_file(text, "this is not an event file at all\n");
  EXPECT_CONTAINS(logs_error([&] { logs::EventWriter::resume(text, 10); }),
                  "has a bad length checksum (not an event file?)");
  const auto missing = dir / "missing.tfevents";
  EXPECT_CONTAINS(logs_error([&] { logs::EventWriter::resume(missing, 10); }),
                  missing.string() + ": cannot resume at byte 10: the file does not exist");
}

// Empty or non-UTF-8 tags are refused with the file named and nothing is written.
TEST(EventWriter, BadTagsAreRefusedAndNothingIsWritten) {
  const ScratchDir dir;
  logs::EventWriter writer(dir.path(), {.start_time = 5.0, .hostname = "h"});
  const std::uint64_t offset = writer.offset();
  EXPECT_CONTAINS(logs_error([&] {
                    writer.add_scalars(1, {{"ok", 1}, {"", 2}}, 6.0);
                  }),
                  writer.path().string() + ": TensorBoard scalar tag is empty");
  EXPECT_CONTAINS(logs_error([&] { writer.add_scalar("bad\xFF", 1, 1, 6.0); }),
                  "is not valid UTF-8");
  EXPECT_EQ(writer.offset(), offset);
  EXPECT_EQ(std::filesystem::file_size(writer.path()), offset);
}

// A folder that cannot be created is an error naming it.
TEST(EventWriter, UncreatableFolderIsNamed) {
  const ScratchDir dir;
  aclora::test::write_file(dir / "file", "x");
  const auto folder = dir / "file" / "sub";
  EXPECT_CONTAINS(logs_error([&] { logs::EventWriter writer(folder); }),
                  folder.string() + ": cannot create the folder");
}
