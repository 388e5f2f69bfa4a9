// Tests of safetensors::Writer: bit-exact round trips, header layout,
// input validation, and atomic replacement of the target file.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "aclora/adapters/safetensors.hpp"
#include "safetensors_test_support.hpp"

namespace st = aclora::safetensors;
using aclora::test::read_raw;
using aclora::test::ScratchDir;

namespace {

#define EXPECT_CONTAINS(haystack, needle)                          \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) \
      << "message: " << (haystack) << "\nexpected to contain: " << (needle)

std::vector<std::byte> random_bytes(std::size_t count, std::uint32_t seed) {
  std::mt19937 generator(seed);
  std::vector<std::byte> out(count);
  for (std::byte& b : out) {
    b = static_cast<std::byte>(generator() & 0xFF);
  }
  return out;
}

std::string writer_error(const std::function<void()>& action) {
  try {
    action();
  } catch (const st::Error& error) {
    return error.what();
  }
  ADD_FAILURE() << "no Error thrown";
  return {};
}

}  // namespace

// Every dtype round-trips through a file bit for bit (arbitrary bit patterns,
// NaN payloads included), with its dtype and shape; to_bytes() equals the file.
TEST(SafetensorsWriter, RoundTripsEveryDtypeBitExactly) {
  const ScratchDir dir;
  st::Writer writer;
  std::vector<std::vector<std::byte>> payloads;
  std::uint32_t seed = 1;
  for (const st::Dtype dtype : st::kAllDtypes) {
    const std::vector<std::int64_t> shape = {3, 5};
    std::vector<std::byte> bytes = random_bytes(15 * st::dtype_size(dtype), seed++);
    if (dtype == st::Dtype::BOOL) {
      for (std::byte& b : bytes) {
        b &= std::byte{1};
      }
    }
    writer.add(std::string(st::dtype_name(dtype)), dtype, shape, bytes);
    payloads.push_back(bytes);
  }
  writer.write(dir / "all.safetensors");
  EXPECT_EQ(read_raw(dir / "all.safetensors"), writer.to_bytes());
  const st::Reader file = st::Reader::open(dir / "all.safetensors");
  ASSERT_EQ(file.names().size(), st::kAllDtypes.size());
  for (std::size_t i = 0; i < st::kAllDtypes.size(); ++i) {
    const st::TensorView& view = file.tensor(st::dtype_name(st::kAllDtypes[i]));
    EXPECT_EQ(file.names()[i], view.name);  // insertion order = offset order
    EXPECT_EQ(view.dtype, st::kAllDtypes[i]);
    EXPECT_EQ(view.shape, (std::vector<std::int64_t>{3, 5}));
    ASSERT_EQ(view.bytes.size(), payloads[i].size());
    EXPECT_EQ(std::memcmp(view.bytes.data(), payloads[i].data(), payloads[i].size()), 0)
        << view.name;
  }
}

// The typed add() overloads store the C++ type's dtype and values.
TEST(SafetensorsWriter, TypedAddStoresMatchingDtype) {
  st::Writer writer;
  writer.add("f", {2}, std::vector<float>{1.5f, -2.0f});
  writer.add("d", {1}, std::vector<double>{0.1});
  writer.add("i", {2, 1}, std::vector<std::int32_t>{-5, 7});
  writer.add("l", {}, std::vector<std::int64_t>{1LL << 40});
  writer.add("u", {1}, std::vector<std::uint8_t>{255});
  const bool flags[] = {true, false};
  writer.add("b", {2}, std::span<const bool>(flags));
  const std::vector<std::uint16_t> half = {st::f32_to_f16(0.5f), st::f32_to_bf16(3.0f)};
  writer.add("h", st::Dtype::F16, {1}, std::as_bytes(std::span(half).first(1)));
  writer.add("bf", st::Dtype::BF16, {1}, std::as_bytes(std::span(half).last(1)));
  const st::Reader file = st::Reader::from_bytes(writer.to_bytes());
  EXPECT_EQ(file.as<float>("f")[1], -2.0f);
  EXPECT_EQ(file.as<double>("d")[0], 0.1);
  EXPECT_EQ(file.tensor("i").dtype, st::Dtype::I32);
  EXPECT_EQ(file.as<std::int32_t>("i")[0], -5);
  EXPECT_EQ(file.as<std::int64_t>("l")[0], 1LL << 40);
  EXPECT_EQ(file.as<std::uint8_t>("u")[0], 255);
  EXPECT_EQ(file.tensor("b").dtype, st::Dtype::BOOL);
  EXPECT_EQ(file.to_f32("b"), (std::vector<float>{1, 0}));
  EXPECT_EQ(file.to_f32("h"), std::vector<float>{0.5f});
  EXPECT_EQ(file.to_f32("bf"), std::vector<float>{3.0f});
}

// add_view refers to the caller's bytes instead of copying them: the file equals the one
// add writes, and it holds the bytes as they are at write time; the same checks apply.
TEST(SafetensorsWriter, AddViewWritesTheCallersBytes) {
  std::vector<float> values{1.0f, 2.0f, 3.0f};
  st::Writer copied;
  st::Writer viewed;
  copied.add("x", {3}, values);
  viewed.add_view("x", st::Dtype::F32, {3}, std::as_bytes(std::span(values)));
  EXPECT_EQ(viewed.to_bytes(), copied.to_bytes());
  values[1] = 7.0f;
  EXPECT_EQ(st::Reader::from_bytes(viewed.to_bytes()).as<float>("x")[1], 7.0f);
  EXPECT_EQ(st::Reader::from_bytes(copied.to_bytes()).as<float>("x")[1], 2.0f);
  EXPECT_THROW(viewed.add_view("x", st::Dtype::F32, {3}, std::as_bytes(std::span(values))),
               st::Error);
  EXPECT_THROW(viewed.add_view("y", st::Dtype::F32, {4}, std::as_bytes(std::span(values))),
               st::Error);
}

// Metadata survives exactly (quotes, newlines, UTF-8, empty values), is
// written first, and the header is padded with spaces to a multiple of 8.
TEST(SafetensorsWriter, MetadataRoundTripsAndHeaderLayout) {
  st::Writer writer;
  writer.set_metadata("ss_network_dim", "16");
  writer.set_metadata("json", R"({"r": 4, "alpha": [1, 2]})");
  writer.set_metadata("comment", "line 1\nline \"2\"\t\\ caf\xC3\xA9");
  writer.set_metadata("empty", "");
  writer.set_metadata("ss_network_dim", "32");  // replaces
  writer.add("t", {1}, std::vector<float>{1.0f});
  const std::string header = writer.header();
  ASSERT_EQ(header.size() % 8, 0u);
  std::uint64_t length = 0;
  std::memcpy(&length, header.data(), 8);
  EXPECT_EQ(length, header.size() - 8);
  EXPECT_EQ(header.substr(8, 17), "{\"__metadata__\":{");
  const std::size_t close = header.find_last_of('}');
  EXPECT_EQ(header.find_first_not_of(' ', close + 1), std::string::npos);
  const st::Reader file = st::Reader::from_bytes(writer.to_bytes());
  const std::map<std::string, std::string> expected = {
      {"comment", "line 1\nline \"2\"\t\\ caf\xC3\xA9"},
      {"empty", ""},
      {"json", R"({"r": 4, "alpha": [1, 2]})"},
      {"ss_network_dim", "32"}};
  EXPECT_EQ(file.metadata(), expected);
  EXPECT_EQ(writer.metadata(), expected);
}

// An empty Writer writes a valid file with no tensors and no __metadata__.
TEST(SafetensorsWriter, EmptyWriterWritesValidFile) {
  const st::Writer writer;
  const std::vector<std::byte> image = writer.to_bytes();
  EXPECT_EQ(image.size(), 16u);  // 8 + "{}" padded to 8
  const st::Reader file = st::Reader::from_bytes(image);
  EXPECT_TRUE(file.names().empty());
  EXPECT_TRUE(file.metadata().empty());
}

// Zero-sized tensors are written and read back.
TEST(SafetensorsWriter, WritesEmptyTensors) {
  st::Writer writer;
  writer.add("e", {0, 3}, std::vector<float>{});
  writer.add("x", {2}, std::vector<float>{1, 2});
  writer.add("e2", st::Dtype::BF16, {4, 0}, {});
  const st::Reader file = st::Reader::from_bytes(writer.to_bytes());
  EXPECT_EQ(file.tensor("e").shape, (std::vector<std::int64_t>{0, 3}));
  EXPECT_EQ(file.to_f32("x"), (std::vector<float>{1, 2}));
  EXPECT_EQ(file.tensor("e2").numel(), 0);
}

// add() refuses duplicate, reserved and non-UTF-8 names, bad shapes and byte
// counts that do not match the shape; set_metadata() refuses non-UTF-8.
TEST(SafetensorsWriter, RejectsInvalidInput) {
  st::Writer writer;
  writer.add("a", {1}, std::vector<float>{1});
  EXPECT_CONTAINS(writer_error([&] { writer.add("a", {1}, std::vector<float>{2}); }),
                  "tensor 'a': duplicate tensor name");
  EXPECT_CONTAINS(writer_error([&] { writer.add("__metadata__", {1}, std::vector<float>{2}); }),
                  "reserved");
  EXPECT_CONTAINS(writer_error([&] { writer.add("\xFF", {1}, std::vector<float>{2}); }),
                  "not valid UTF-8");
  EXPECT_CONTAINS(writer_error([&] {
                    writer.add("b", {4, 8}, std::vector<float>(25));
                  }),
                  "tensor 'b': got 100 bytes but shape [4, 8] of F32 needs 128 bytes");
  EXPECT_CONTAINS(writer_error([&] { writer.add("c", {-1}, std::vector<float>{}); }),
                  "negative dimension");
  EXPECT_CONTAINS(writer_error([&] {
                    writer.add("d", {1LL << 40, 1LL << 40}, std::vector<float>{});
                  }),
                  "too many elements");
  EXPECT_CONTAINS(writer_error([&] { writer.set_metadata("k", "\xC0\x80"); }), "UTF-8");
  EXPECT_EQ(writer.size(), 1u);  // failed adds left nothing behind
  EXPECT_TRUE(writer.contains("a"));
  EXPECT_FALSE(writer.contains("b"));
}

// Writing replaces an existing file and leaves no temporary file behind.
TEST(SafetensorsWriter, WriteReplacesExistingFile) {
  const ScratchDir dir;
  st::Writer first;
  first.add("old", {1}, std::vector<float>{1});
  first.write(dir / "out.safetensors");
  st::Writer second;
  second.add("new", {2}, std::vector<float>{2, 3});
  second.write(dir / "out.safetensors");
  EXPECT_EQ(st::Reader::open(dir / "out.safetensors").names(), std::vector<std::string>{"new"});
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"out.safetensors"});
}

// A directory that does not exist: Error naming the path, nothing created.
TEST(SafetensorsWriter, WriteIntoMissingDirectoryThrowsAndCreatesNothing) {
  const ScratchDir dir;
  st::Writer writer;
  writer.add("t", {1}, std::vector<float>{1});
  const auto target = dir / "no" / "such" / "dir" / "out.safetensors";
  const std::string message = writer_error([&] { writer.write(target); });
  EXPECT_CONTAINS(message, target.string());
  EXPECT_CONTAINS(message, "cannot create a temporary file");
  EXPECT_CONTAINS(message, "No such file or directory");
  EXPECT_TRUE(dir.entries().empty());
}

// The target is a directory: the rename fails, the directory is untouched and
// the temporary file is removed.
TEST(SafetensorsWriter, WriteOverDirectoryThrowsAndCleansUp) {
  const ScratchDir dir;
  std::filesystem::create_directory(dir / "taken");
  std::filesystem::create_directory(dir / "taken" / "inner");
  st::Writer writer;
  writer.add("t", {1}, std::vector<float>{1});
  const std::string message = writer_error([&] { writer.write(dir / "taken"); });
  EXPECT_CONTAINS(message, "cannot rename the temporary file over the target");
  EXPECT_TRUE(std::filesystem::is_directory(dir / "taken" / "inner"));
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"taken"});
  EXPECT_CONTAINS(writer_error([&] { writer.write(dir.path() / ""); }), "not a file");
}

// A directory without write permission: Error naming the cause, no file. Root ignores
// permissions, so as root the write runs in a child process that has given up root for the
// user nobody (the folder is readable and traversable by everyone, writable by no one).
TEST(SafetensorsWriter, WriteIntoReadOnlyDirectoryThrows) {
  const ScratchDir dir;
  std::filesystem::create_directory(dir / "ro");
  const auto everyone_reads =
      std::filesystem::perms::owner_read | std::filesystem::perms::owner_exec |
      std::filesystem::perms::group_read | std::filesystem::perms::group_exec |
      std::filesystem::perms::others_read | std::filesystem::perms::others_exec;
  std::filesystem::permissions(dir.path(), everyone_reads | std::filesystem::perms::owner_write);
  std::filesystem::permissions(dir / "ro", everyone_reads);
  const auto attempt = [&] {
    st::Writer writer;
    writer.add("t", {1}, std::vector<float>{1});
    return writer_error([&] { writer.write(dir / "ro" / "out.safetensors"); });
  };
  if (::geteuid() != 0) {
    EXPECT_CONTAINS(attempt(), "Permission denied");
  } else {
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      const bool dropped = ::setgid(65534) == 0 && ::setuid(65534) == 0;  // nobody
      const bool refused = dropped && attempt().find("Permission denied") != std::string::npos;
      ::_exit(refused ? 0 : (dropped ? 1 : 2));
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_NE(WEXITSTATUS(status), 2) << "could not give up root for the user nobody";
    EXPECT_EQ(WEXITSTATUS(status), 0) << "the write as nobody did not fail with EACCES";
  }
  std::filesystem::permissions(dir / "ro", std::filesystem::perms::owner_all);
  EXPECT_TRUE(std::filesystem::is_empty(dir / "ro"));
}

// A write that fails half-way (file size limit reached) leaves the existing
// target byte-identical and removes the temporary file.
TEST(SafetensorsWriter, FailedWriteDoesNotClobberExistingTarget) {
  const ScratchDir dir;
  const auto target = dir / "model.safetensors";
  st::Writer small;
  small.set_metadata("version", "1");
  small.add("t", {4}, std::vector<float>{1, 2, 3, 4});
  small.write(target);
  const std::vector<std::byte> before = read_raw(target);

  st::Writer big;
  big.add("t", {1 << 18}, std::vector<float>(1 << 18, 5.0f));  // 1 MiB of data

  // Limit this process's file size to 64 KiB so that the big write fails with
  // EFBIG instead of killing the process with SIGXFSZ.
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved), 0);
  const auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
  rlimit limited = saved;
  limited.rlim_cur = 64 * 1024;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &limited), 0);
  const std::string message = writer_error([&] { big.write(target); });
  ::setrlimit(RLIMIT_FSIZE, &saved);
  ::signal(SIGXFSZ, old_handler);

  EXPECT_CONTAINS(message, target.string() + ": cannot write: File too large");
  EXPECT_EQ(read_raw(target), before);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"model.safetensors"});
  EXPECT_EQ(st::Reader::open(target).metadata().at("version"), "1");
}
