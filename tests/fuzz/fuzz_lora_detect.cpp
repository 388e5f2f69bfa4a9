// libFuzzer target: LoRA format detection and module reading over arbitrary bytes.
// Any input must either read (modules whose views stay inside the buffer) or raise
// aclora::lora::Error; no other exception, crash or sanitizer report.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "aclora/adapters/lora.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::byte> bytes(reinterpret_cast<const std::byte*>(data),
                               reinterpret_cast<const std::byte*>(data) + size);
  try {
    const aclora::lora::LoraFile file = aclora::lora::read_lora_bytes(std::move(bytes), "fuzz");
    double sink = 0.0;
    for (const auto& module : file.modules) {
      // Touch every factor element and the derived sizes.
      for (float v : aclora::safetensors::convert_to<float>(module.down))
        sink += v;
      for (float v : aclora::safetensors::convert_to<float>(module.up))
        sink += v;
      sink += module.scale() + static_cast<double>(module.parameters());
      if (module.rank * module.in_features != static_cast<std::size_t>(module.down.numel()))
        __builtin_trap();
    }
    for (const auto& module : file.lycoris)
      sink += static_cast<double>(module.parameters);
    // Writers must accept whatever the readers produced.
    std::vector<aclora::lora::OutputModule> out;
    for (const auto& module : file.modules)
      out.push_back(aclora::lora::unchanged_module(module));
    (void)aclora::lora::kohya_metadata(file.metadata, out, "fuzz", false);
    volatile double keep = sink;
    (void)keep;
  } catch (const aclora::lora::Error&) {
  }
  return 0;
}
