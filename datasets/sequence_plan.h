// Internal to datasets/: the plan of a ground-truth sequence (its frames' files and poses, read
// from the dataset's own text files before any pixel is decoded), shared by the format readers
// (dataset_tum.cc, dataset_7scenes.cc, dataset_rgbd_folder.cc) and the sources and layout
// detection of ground_truth.cc.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "core/types.h"
#include "datasets/ground_truth.h"

namespace streamrecon::datasets::internal {

constexpr double kTumDepthScale = 5000.0;    // TUM RGB-D: 16-bit PNG units per metre
constexpr double kMillimetreScale = 1000.0;  // 7-Scenes, Neural-RGBD, ScanNet
constexpr uint16_t kSevenScenesInvalid = 65535;
const Intrinsics kSevenScenesIntrinsics{585.0, 585.0, 320.0, 240.0};
const Intrinsics kTumDefaultIntrinsics{525.0, 525.0, 319.5, 239.5};  // ROS default, TUM's advice
constexpr const char* kSyntheticPrefix = "synthetic";

// ---- small helpers ---------------------------------------------------------------------------

std::string Lower(std::string text);
// The value of the last run of digits in s, or -1 when there is none.
int64_t LastNumber(const std::string& s);
// Names with numbers in them sort by value (seq-2 before seq-10), then bytewise.
bool NumberedLess(const std::string& a, const std::string& b);
// The folder's own name, also for "x/" and ".".
std::string FolderName(const std::filesystem::path& dir);
bool IsFile(const std::filesystem::path& path);
bool IsFolder(const std::filesystem::path& path);
// The entries of a folder; FileError when it cannot be listed.
std::vector<std::filesystem::path> ListFolder(const std::filesystem::path& dir);

// ---- sequence plans (no pixels read yet) -------------------------------------------------------

struct FrameRecord {
  std::string name;  // colour path relative to the sequence folder
  double timestamp = 0;
  std::filesystem::path color, depth;
  Rigid3 world_from_cam;
  std::string color_listed_at, depth_listed_at;  // e.g. "x/rgb.txt line 5"; empty = found by name
};

struct SequencePlan {
  DatasetLayout layout = DatasetLayout::kTum;
  std::filesystem::path dir;
  std::string name;
  std::string origin;  // e.g. "TUM RGB-D 'x'", for messages
  std::vector<FrameRecord> frames;  // selected (every, max_frames) and checked
  int64_t available = 0;            // frames before every / max_frames
  std::string notes;                // appended to Describe()
  Intrinsics intrinsics;
  bool centre_from_size = false;     // focal.txt: cx = W/2, cy = H/2 of the delivered image
  bool intrinsics_for_depth = false;  // intrinsics belong to the depth image's size
  double depth_scale = kMillimetreScale;
  bool max_value_invalid = false;  // 7-Scenes: 65535 marks invalid depth
};

void Note(const DatasetOptions& options, const std::string& message);
// Applies every / max_frames.
void SelectFrames(SequencePlan& plan, const DatasetOptions& options);
// FileError naming the first frame whose colour or depth file is missing.
void RequireFiles(const SequencePlan& plan);
SequencePlan NewPlan(DatasetLayout layout, const std::filesystem::path& dir, const std::string& kind, double depth_scale);

// ---- the format readers: a checked plan of the sequence in dir ---------------------------------

SequencePlan PlanTum(const std::filesystem::path& dir, const DatasetOptions& options);
bool IsSevenScenesColor(const std::filesystem::path& path);
SequencePlan PlanSevenScenes(const std::filesystem::path& dir, const DatasetOptions& options);
// The colour folder of an RGB-D folder (images/, color/ or rgb/), empty when there is none.
std::filesystem::path ColourFolder(const std::filesystem::path& dir);
SequencePlan PlanRgbdFolder(const std::filesystem::path& dir, const DatasetOptions& options);

}  // namespace streamrecon::datasets::internal
