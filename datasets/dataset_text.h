// The text formats of ground-truth datasets, read with line-numbered errors: TUM RGB-D lists
// (rgb.txt, depth.txt) and trajectories (groundtruth.txt), 4x4 pose matrices (7-Scenes, ScanNet,
// Neural-RGBD), intrinsics files and focal.txt. Plain C++; every reader throws FileError naming
// the file, the line and what it expected, never a crash on damaged text (fuzzed by
// tests/fuzz/fuzz_dataset_text.cc).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "core/types.h"

namespace streamrecon::datasets {

// A non-empty, non-comment line of a text file, split at whitespace (and commas).
struct TextLine {
  int number = 0;  // 1-based line number in the file
  std::string text;
  std::vector<std::string> words;
};

// The data lines of a text file ('#' comments and blank lines skipped).
std::vector<TextLine> ReadDataLines(const std::filesystem::path& file);

// True when every element of the pose is finite.
bool IsFinite(const Rigid3& T);

// Four lines of a 4x4 row-major world_from_cam, starting at lines[first] (which must exist). A
// finite matrix must end in the row 0 0 0 1; non-finite matrices (invalid poses in ScanNet) are
// returned as they are for the caller to drop.
Rigid3 ParseMatrixLines(const std::filesystem::path& file, const std::vector<TextLine>& lines, size_t first);

// A file holding one 4x4 matrix (7-Scenes frame-*.pose.txt, ScanNet pose/*.txt).
Rigid3 ReadMatrixFile(const std::filesystem::path& file);

// "fx fy cx cy", a 3x3 or a 4x4 matrix (any line breaks); focal lengths must be positive.
Intrinsics ReadIntrinsicsFile(const std::filesystem::path& file);

// One positive focal length in pixels.
double ReadFocalFile(const std::filesystem::path& file);

// One line of a TUM rgb.txt / depth.txt.
struct Stamped {
  double timestamp = 0;
  std::string path;  // relative to the sequence folder
  int line = 0;
};

// A TUM image list, sorted by time (stable).
std::vector<Stamped> ReadStampedList(const std::filesystem::path& file);

struct StampedPose {
  double timestamp = 0;
  Rigid3 world_from_cam;
};

// A TUM trajectory (timestamp tx ty tz qx qy qz qw), sorted by time; at least one pose.
std::vector<StampedPose> ReadTumPoses(const std::filesystem::path& file);

}  // namespace streamrecon::datasets
