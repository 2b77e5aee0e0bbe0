// libFuzzer target: the safetensors reader (header length, JSON header, dtypes, shapes, data
// offsets) and the config stored in its metadata. A FileError is the expected answer to damage;
// anything else escaping, a crash or a sanitizer report is a finding.
#include <cstdint>

#include "core/errors.h"
#include "models/weights.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = streamrecon::fuzz::WriteInput(data, size);
  try {
    const auto file = streamrecon::models::ReadSafetensors(path);
    for (const auto& [name, tensor] : file.tensors) {
      if (tensor.numel() < 0) __builtin_trap();
    }
  } catch (const streamrecon::Error&) {
  }
  try {
    const auto config = streamrecon::models::ConfigFromWeightsFile(path);
    if (config) config->Check();
  } catch (const streamrecon::Error&) {
  }
  return 0;
}
