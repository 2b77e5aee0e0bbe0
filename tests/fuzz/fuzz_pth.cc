// libFuzzer target: the weight loader's format detection and the PyTorch .pth (torch.save zip)
// path: the zip structure check in front of LibTorch's reader, the unpickler and the state-dict
// walk. A FileError is the expected answer to damage; anything else is a finding.
#include <cstdint>

#include "core/errors.h"
#include "models/weights.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = streamrecon::fuzz::WriteInput(data, size);
  try {
    const auto state = streamrecon::models::LoadStateDict(path);
    for (const auto& [name, tensor] : state) {
      if (name.empty() && tensor.numel() < 0) __builtin_trap();
    }
  } catch (const streamrecon::Error&) {
  }
  return 0;
}
