// libFuzzer target: the size parsers users type into options: byte sizes (--kv-budget, "2GB",
// "512MiB") and pixel sizes (--size, "518x392"), with the properties they promise.
#include <cstdint>
#include <string>

#include "core/byte_size.h"
#include "core/errors.h"
#include "datasets/preprocess.h"

using namespace streamrecon;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const uint64_t bytes = ParseByteSize(text);
    // FormatBytes reads back to within its printed precision (two decimals of the unit).
    const uint64_t again = ParseByteSize(FormatBytes(bytes));
    const double difference = again > bytes ? double(again - bytes) : double(bytes - again);
    if (difference > 0.006 * double(bytes) + 1) __builtin_trap();
  } catch (const Error&) {
  }
  int width = 0, height = 0;
  if (datasets::ParsePixelSize(text, &width, &height)) {
    datasets::PreprocessOptions options;
    options.target_width = width;
    options.target_height = height;
    try {
      options.Check();
      for (const auto& [w, h] : {std::pair{640, 480}, std::pair{1, 100000}, std::pair{100000, 1}}) {
        const auto [mw, mh] = datasets::ModelInputSize(w, h, options);
        if (mw <= 0 || mh <= 0 || mw % options.patch || mh % options.patch) __builtin_trap();
      }
    } catch (const Error&) {
    }
  }
  return 0;
}
