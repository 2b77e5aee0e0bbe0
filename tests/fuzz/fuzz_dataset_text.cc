// libFuzzer target: the text formats of ground-truth datasets (TUM image lists and trajectories,
// 4x4 pose files, intrinsics, focal.txt). The first byte picks the reader, the rest is the file.
#include <cmath>
#include <cstdint>

#include "core/errors.h"
#include "datasets/dataset_text.h"
#include "tests/fuzz/fuzz_util.h"

using namespace streamrecon::datasets;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t which = data[0] % 6;
  const auto path = streamrecon::fuzz::WriteInput(data + 1, size - 1);
  try {
    switch (which) {
      case 0: {
        const auto list = ReadStampedList(path);
        for (size_t i = 1; i < list.size(); ++i)
          if (list[i].timestamp < list[i - 1].timestamp || !std::isfinite(list[i].timestamp)) __builtin_trap();
        break;
      }
      case 1: {
        const auto poses = ReadTumPoses(path);
        if (poses.empty()) __builtin_trap();
        for (const auto& p : poses)
          if (!IsFinite(p.world_from_cam)) __builtin_trap();  // quaternions normalised, finite
        break;
      }
      case 2:
        ReadMatrixFile(path);
        break;
      case 3: {
        const auto k = ReadIntrinsicsFile(path);
        if (!(k.fx > 0) || !(k.fy > 0)) __builtin_trap();
        break;
      }
      case 4:
        if (!(ReadFocalFile(path) > 0)) __builtin_trap();
        break;
      default: {  // a poses.txt: matrices of four lines each
        const auto lines = ReadDataLines(path);
        for (size_t first = 0; first + 4 <= lines.size(); first += 4) ParseMatrixLines(path, lines, first);
        break;
      }
    }
  } catch (const streamrecon::Error&) {
  }
  return 0;
}
