// libFuzzer target: a model config JSON (strict: unknown or missing keys, ranges, consistency)
// and, for the configs it accepts, the expected parameter list derived from it.
#include <cstdint>

#include <nlohmann/json.hpp>

#include "core/errors.h"
#include "models/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;  // not JSON: the JSON library's business
  try {
    const auto config = streamrecon::models::ModelConfig::FromJson(j);
    config.Check();
    for (const auto& [name, shape] : streamrecon::models::ExpectedParameters(config)) {
      for (int64_t d : shape) {
        if (d <= 0) __builtin_trap();  // an accepted config must give positive shapes
      }
    }
    // What FromJson accepts, ToJson writes back identically.
    if (streamrecon::models::ModelConfig::FromJson(config.ToJson()).ToJson() != config.ToJson()) __builtin_trap();
  } catch (const streamrecon::Error&) {
  }
  return 0;
}
