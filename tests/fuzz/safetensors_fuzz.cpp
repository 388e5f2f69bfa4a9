// libFuzzer target for the safetensors reader (and the JSON parser under it).
//
// Every input is given to Reader::from_bytes. Rejected inputs must throw
// safetensors::Error and nothing else; accepted ones must satisfy the
// reader's promises, which are checked here (a broken promise aborts):
//   - every tensor's bytes lie inside the input and hold numel * dtype size,
//   - the tensors tile the data buffer exactly, in names() order,
//   - to_f32/to_f64 give numel values,
//   - writing the tensors and metadata back with Writer and reading that
//     image gives the same names, dtypes, shapes, bytes and metadata.
// A custom mutator also repairs the 8-byte header length after libFuzzer's
// mutation (half of the time), so mutations of the JSON reach the
// tensor-table checks instead of stopping at "header length runs past".
//
// Build and run: tests/fuzz/run_fuzz.sh safetensors <seconds>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "aclora/adapters/safetensors.hpp"

namespace st = aclora::safetensors;

namespace {

void require(bool condition) {
  if (!condition) {
    std::abort();
  }
}

// Checks the promises of an accepted file (see the top of this file).
void check_accepted(const st::Reader& file, std::size_t size) {
  static volatile unsigned sink = 0;
  require(file.names().size() == file.tensors().size());
  std::size_t data_bytes = 0;
  const std::byte* expected_start = nullptr;
  for (std::size_t i = 0; i < file.names().size(); ++i) {
    const std::string& name = file.names()[i];
    require(file.contains(name));
    const st::TensorView& view = file.tensor(name);
    require(&view == &file.tensors()[i]);
    require(view.numel() >= 0);
    require(static_cast<std::uint64_t>(view.numel()) * st::dtype_size(view.dtype) ==
            view.bytes.size());
    // Each tensor starts where the previous one ended.
    require(expected_start == nullptr || view.bytes.data() == expected_start);
    expected_start = view.bytes.data() + view.bytes.size();
    data_bytes += view.bytes.size();
    if (view.bytes.size() <= 4096) {
      const std::vector<float> f32 = file.to_f32(name);
      const std::vector<double> f64 = file.to_f64(name);
      require(f32.size() == static_cast<std::size_t>(view.numel()));
      require(f64.size() == f32.size());
      unsigned checksum = 0;
      for (const std::byte b : view.bytes) {  // every byte read under ASan
        checksum += std::to_integer<unsigned>(b);
      }
      sink = sink + checksum;
    }
  }
  require(8 + file.header_bytes() + data_bytes == size);
}

// Writes what the Reader returned and reads it back: must be the same.
void check_rewrite(const st::Reader& file) {
  st::Writer writer;
  for (const auto& [key, value] : file.metadata()) {
    writer.set_metadata(key, value);
  }
  for (const st::TensorView& view : file.tensors()) {
    writer.add(view.name, view.dtype, view.shape, view.bytes);
  }
  const st::Reader again = st::Reader::from_bytes(writer.to_bytes(), "rewrite");
  require(again.metadata() == file.metadata());
  require(again.names() == file.names());
  for (std::size_t i = 0; i < file.tensors().size(); ++i) {
    const st::TensorView& a = file.tensors()[i];
    const st::TensorView& b = again.tensors()[i];
    require(a.dtype == b.dtype && a.shape == b.shape && a.bytes.size() == b.bytes.size());
    require(a.bytes.empty() || std::memcmp(a.bytes.data(), b.bytes.data(), a.bytes.size()) == 0);
  }
}

// End of the top-level JSON object that starts at text[0] (a brace counter
// that skips strings), or 0 when there is none.
std::size_t json_object_end(const std::uint8_t* text, std::size_t size) {
  if (size == 0 || text[0] != '{') {
    return 0;
  }
  std::size_t depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < size; ++i) {
    const std::uint8_t c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      ++depth;
    } else if (c == '}' || c == ']') {
      if (--depth == 0) {
        return i + 1;
      }
    }
  }
  return 0;
}

}  // namespace

extern "C" std::size_t LLVMFuzzerMutate(std::uint8_t* data, std::size_t size, std::size_t max_size);

extern "C" std::size_t LLVMFuzzerCustomMutator(std::uint8_t* data, std::size_t size,
                                               std::size_t max_size, unsigned int seed) {
  size = LLVMFuzzerMutate(data, size, max_size);
  if ((seed & 1u) == 0 && size > 8) {
    const std::size_t end = json_object_end(data + 8, size - 8);
    if (end > 0) {
      for (int i = 0; i < 8; ++i) {
        data[i] = static_cast<std::uint8_t>((static_cast<std::uint64_t>(end) >> (8 * i)) & 0xFF);
      }
    }
  }
  return size;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::byte> bytes(size);
  if (size > 0) {
    std::memcpy(bytes.data(), data, size);
  }
  try {
    const st::Reader file = st::Reader::from_bytes(std::move(bytes), "fuzz");
    check_accepted(file, size);
    check_rewrite(file);
  } catch (const st::Error&) {
    // Rejected with a message: the expected outcome for most inputs.
  }
  return 0;
}
