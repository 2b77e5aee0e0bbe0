// Sequences with ground truth (colour, metric depth, camera pose, intrinsics) behind one pull
// interface: TUM RGB-D, 7-Scenes, Neural-RGBD / ScanNet-style folders and the synthetic scenes,
// plus a writer that saves any such sequence in the TUM RGB-D layout. Files go through OpenCV.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/types.h"
#include "datasets/synthetic.h"

namespace streamrecon::datasets {

// One frame with its ground truth. depth has the image's size.
struct GroundTruthFrame {
  Frame frame;               // image [H, W, 3] RGB; index = delivery position (0, 1, ...);
                             // name = file path relative to the sequence folder; timestamp in s
  std::vector<float> depth;  // [H, W] metres along the optical axis; 0 where invalid
  Rigid3 world_from_cam;     // OpenCV camera axes (x right, y down, z forward), dataset world
  Intrinsics intrinsics;     // pinhole, pixels, for the image as delivered
};

// The folder layouts OpenDataset understands.
enum class DatasetLayout {
  kSynthetic,    // "synthetic" or "synthetic:" + trajectory/environment words (datasets/synthetic.h)
  kTum,          // TUM RGB-D: rgb.txt, depth.txt, groundtruth.txt (+ rgb/, depth/)
  kSevenScenes,  // 7-Scenes sequence: frame-XXXXXX.{color.png, depth.png, pose.txt}
  kRgbdFolder,   // Neural-RGBD / ScanNet style: images/|color/|rgb/, depth/, poses.txt|pose/
};

// "synthetic", "tum", "7scenes" or "rgbd-folder".
std::string LayoutName(DatasetLayout layout);

// How the camera axes of a RGB-D folder's poses are meant (TUM and 7-Scenes are OpenCV).
enum class PoseAxes {
  kAuto,    // OpenGL when the folder holds focal.txt (Neural-RGBD), else OpenCV (ScanNet)
  kOpenCv,  // x right, y down, z forward
  kOpenGl,  // x right, y up, z backward; converted to OpenCV axes on reading
};

// How a sequence is read.
struct DatasetOptions {
  // Take every K-th frame of the sequence (after TUM association; 1 = every frame).
  int every = 1;
  // Stop after delivering this many frames (-1 = no limit).
  int64_t max_frames = -1;
  // TUM: the largest timestamp difference in seconds for pairing a colour image with a depth
  // image (one to one, closest pairs first, as TUM's associate.py) and with a ground-truth pose
  // (the nearest).
  double max_time_difference = 0.02;
  // Depth PNG units per metre; 0 = the layout's own (TUM 5000, 7-Scenes and RGB-D folders
  // 1000). A raw value of 0 (and 65535 in 7-Scenes) is invalid and reads as depth 0.
  double depth_scale = 0.0;
  // RGB-D folders: the camera axes of the poses.
  PoseAxes pose_axes = PoseAxes::kAuto;
  // "synthetic": the scene; synthetic.frames is the sequence length before every/max_frames.
  SyntheticOptions synthetic;
  // Receives notes about dropped frames and conversions (once per kind). Empty = silent.
  std::function<void(const std::string&)> on_note;

  // Throws OptionError naming the bad field.
  void Check() const;
};

// A sequence with ground truth. Not thread-safe: one consumer calls Next() until nullopt.
class GroundTruthSource {
 public:
  virtual ~GroundTruthSource() = default;

  // The next frame, or nullopt at the end. Throws FileError naming the file when a colour or
  // depth image cannot be decoded or does not match (sizes, 16-bit single channel depth).
  virtual std::optional<GroundTruthFrame> Next() = 0;

  // How many frames Next() delivers in total (known up front for every layout).
  virtual int64_t size() const = 0;

  // A short sequence name for reports: the folder name, or "synthetic-walk-seed0".
  virtual std::string name() const = 0;

  virtual DatasetLayout layout() const = 0;

  // One line for logs, e.g. "TUM RGB-D 'x' (798 of 798 frames associated, every 1)".
  virtual std::string Describe() const = 0;
};

// The layout of one sequence: spec is "synthetic[:walk|:orbit]" or a folder. Throws FileError
// saying what each layout needs when the folder is none of them (or misses a required file).
DatasetLayout DetectLayout(const std::string& spec);

// The sequences under spec: {spec} when spec itself is a sequence, else the sub-folders that are
// sequences, in natural order (a 7-Scenes scene with seq-01, seq-02, ...; a folder of TUM
// sequences). Throws FileError when there are none.
std::vector<std::string> FindSequences(const std::string& spec);

// Opens one sequence (DetectLayout decides how). Poses, file lists and the presence of every
// selected colour and depth file are checked here: a missing file or a malformed line throws
// FileError naming the file (and line). Throws OptionError for bad options, Error when the build
// has no OpenCV (only "synthetic" works then).
//
// Per layout:
//   TUM: rgb.txt / depth.txt "timestamp path" lines, groundtruth.txt "timestamp tx ty tz qx qy qz
//     qw" (world_from_cam); each colour image is paired with the nearest depth image and pose
//     within max_time_difference, unpaired colour images are dropped (noted). Intrinsics from
//     intrinsics.txt ("fx fy cx cy", written by TumDatasetWriter) when present, else the
//     published values of freiburg1/2/3 when the folder name says which, else 525, 525, 319.5,
//     239.5.
//   7-Scenes: frame-XXXXXX.color.png, .depth.png (mm, 65535 invalid), .pose.txt (4x4
//     world_from_cam); intrinsics fx = fy = 585, cx = 320, cy = 240. (The depth camera is not
//     registered to the colour camera in the raw data; this is the common approximation.)
//   RGB-D folder: colour images in images/, color/ or rgb/; depth PNGs in depth/ paired by the
//     last number in the file name (img12.png <-> depth12.png); poses either poses.txt (4 rows
//     of 4 numbers per frame, in colour-image order) or pose/<number>.txt files (4x4
//     world_from_cam); frames whose pose is not finite are dropped (noted). Intrinsics from
//     intrinsics.txt (3x3 or 4x4 matrix, or "fx fy cx cy"), intrinsic/intrinsic_depth.txt or
//     intrinsic/intrinsic_color.txt (4x4), or focal.txt (fx = fy = f, cx = W/2, cy = H/2).
//     When the colour image's size differs from the depth image's, the colour image is resized
//     to the depth size (area interpolation) and colour intrinsics are scaled to it.
std::unique_ptr<GroundTruthSource> OpenDataset(const std::string& spec,
                                               const DatasetOptions& options = {});

// Saves frames in the TUM RGB-D layout, readable by OpenDataset: rgb/<t>.png (8-bit RGB),
// depth/<t>.png (16-bit, metres * 5000, 0 invalid; depths beyond 65535 / 5000 = 13.107 m are
// stored as invalid and counted), rgb.txt, depth.txt, groundtruth.txt and intrinsics.txt, with
// <t> the frame timestamp as "%.6f". Every file is written atomically, and the four text files
// only by Finish(), so an interrupted write leaves no readable half sequence.
class TumDatasetWriter {
 public:
  // Creates folder (and rgb/, depth/) when missing; throws FileError when that fails.
  explicit TumDatasetWriter(const std::filesystem::path& folder);

  // Throws Error when timestamps do not increase (at the 1e-6 s of the file names), when the
  // intrinsics differ from the first frame's (the layout holds one camera) or the depth size
  // differs from the image's; FileError when a file cannot be written.
  void Add(const GroundTruthFrame& frame);

  // Writes the text files. Throws Error when no frame was added.
  void Finish();

  int64_t frames() const { return static_cast<int64_t>(timestamps_.size()); }
  // Depth pixels stored as invalid because they were beyond 13.107 m.
  int64_t clipped_depths() const { return clipped_depths_; }

 private:
  std::filesystem::path folder_;
  std::vector<std::string> timestamps_;  // "%.6f" of each frame
  std::vector<Rigid3> poses_;
  Intrinsics intrinsics_;
  int64_t clipped_depths_ = 0;
};

// Writes every remaining frame of source with a TumDatasetWriter; returns the frame count.
int64_t WriteTumDataset(const std::filesystem::path& folder, GroundTruthSource& source);

}  // namespace streamrecon::datasets
