// Known camera intrinsics given by the user (--intrinsics, a batch manifest's `intrinsics`): four
// numbers, or a calibration file (COLMAP cameras.txt, OpenCV YAML/XML), and their scaling to the
// model's input size.
#pragma once

#include <string>

#include "core/types.h"

namespace streamrecon::datasets {

struct KnownCamera {
  Intrinsics k;            // pixels, at the input's resolution
  int width = 0, height = 0;  // the resolution the file states; 0 when not stated
  std::string source;      // "fx,fy,cx,cy" or the file, for messages and run.json
  std::string note;        // e.g. distortion parameters that were ignored; empty when none
};

// "fx,fy,cx,cy" (pixels, positive focal lengths), or a file: COLMAP cameras.txt (its first camera:
// PINHOLE, SIMPLE_PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV, FULL_OPENCV; distortion is ignored and
// said in `note`) or an OpenCV FileStorage file (.yaml, .yml, .xml) with `camera_matrix` (3x3) and
// optionally `image_width`/`image_height`. Values are taken as written, in the convention our own
// COLMAP export writes (so an exported model's cameras.txt reads back unchanged). Throws
// OptionError for text that is neither, FileError for a file it cannot read (naming the line).
KnownCamera ParseIntrinsics(const std::string& text);

// k for a frame of from_w x from_h resized to to_w x to_h (no crop): focal lengths scale, and the
// principal point keeps its place relative to the pixel centres: (c + 0.5) * s - 0.5.
Intrinsics ScaleIntrinsics(const Intrinsics& k, int from_w, int from_h, int to_w, int to_h);

}  // namespace streamrecon::datasets
