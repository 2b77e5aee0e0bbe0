// RGB-D folders (Neural-RGBD, ScanNet exports): numbered colour and depth images, poses and intrinsics.
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <map>
#include <sstream>
#include <utility>

#include "core/errors.h"
#include "core/geometry.h"
#include "datasets/dataset_text.h"
#include "datasets/sequence_plan.h"

namespace streamrecon::datasets::internal {
namespace fs = std::filesystem;

const char* const kColourFolders[] = {"images", "color", "rgb"};

fs::path ColourFolder(const fs::path& dir) {
  for (const char* name : kColourFolders) {
    if (IsFolder(dir / name)) return dir / name;
  }
  return {};
}

namespace {

// Files of a folder with one of the extensions (lower case, e.g. {".png"}) keyed by the last
// number in their name; FileError on a name without a number or two files for one number.
std::map<int64_t, fs::path> NumberedFiles(const fs::path& dir,
                                          const std::vector<std::string>& extensions) {
  std::map<int64_t, fs::path> files;
  for (const fs::path& entry : ListFolder(dir)) {
    const std::string name = entry.filename().string();
    const std::string ext = Lower(entry.extension().string());
    if (name.empty() || name[0] == '.' || !IsFile(entry) ||
        std::find(extensions.begin(), extensions.end(), ext) == extensions.end()) {
      continue;
    }
    const int64_t number = LastNumber(entry.stem().string());
    if (number < 0) {
      throw FileError("'" + entry.string() + "': expected a frame number in the file name "
                      "(e.g. img12.png, 000012.png, 12.txt), found none");
    }
    const auto [it, inserted] = files.emplace(number, entry);
    if (!inserted) {
      throw FileError("folder '" + dir.string() + "': expected one file per frame number, "
                      "found both '" + it->second.filename().string() + "' and '" + name +
                      "' for frame " + std::to_string(number));
    }
  }
  return files;
}

// world_from_cam in OpenGL camera axes -> OpenCV axes (flip the camera's y and z).
Rigid3 OpenGlToOpenCv(Rigid3 T) {
  for (int r = 0; r < 3; ++r) {
    T.R[r * 3 + 1] = -T.R[r * 3 + 1];
    T.R[r * 3 + 2] = -T.R[r * 3 + 2];
  }
  return T;
}

}  // namespace

SequencePlan PlanRgbdFolder(const fs::path& dir, const DatasetOptions& options) {
  SequencePlan plan = NewPlan(DatasetLayout::kRgbdFolder, dir, "RGB-D folder", options.depth_scale > 0 ? options.depth_scale : kMillimetreScale);

  const fs::path colour_dir = ColourFolder(dir);
  const std::map<int64_t, fs::path> colours =
      NumberedFiles(colour_dir, {".png", ".jpg", ".jpeg"});
  const std::map<int64_t, fs::path> depths = NumberedFiles(dir / "depth", {".png"});
  if (colours.empty()) {
    throw FileError(plan.origin + ": expected images in '" + colour_dir.string() +
                    "', found none");
  }

  // Intrinsics.
  std::string intrinsics_source;
  if (IsFile(dir / "intrinsics.txt")) {
    plan.intrinsics = ReadIntrinsicsFile(dir / "intrinsics.txt");
    intrinsics_source = "intrinsics.txt";
  } else if (IsFile(dir / "intrinsic" / "intrinsic_depth.txt")) {
    plan.intrinsics = ReadIntrinsicsFile(dir / "intrinsic" / "intrinsic_depth.txt");
    plan.intrinsics_for_depth = true;
    intrinsics_source = "intrinsic/intrinsic_depth.txt";
  } else if (IsFile(dir / "intrinsic" / "intrinsic_color.txt")) {
    plan.intrinsics = ReadIntrinsicsFile(dir / "intrinsic" / "intrinsic_color.txt");
    intrinsics_source = "intrinsic/intrinsic_color.txt";
  } else if (IsFile(dir / "focal.txt")) {
    const double f = ReadFocalFile(dir / "focal.txt");
    plan.intrinsics = {f, f, 0, 0};
    plan.centre_from_size = true;
    intrinsics_source = "focal.txt";
  } else {
    throw FileError(plan.origin + ": expected intrinsics in intrinsics.txt, "
                    "intrinsic/intrinsic_depth.txt, intrinsic/intrinsic_color.txt or focal.txt, "
                    "found none of them");
  }
  const bool opengl = options.pose_axes == PoseAxes::kOpenGl ||
                      (options.pose_axes == PoseAxes::kAuto && IsFile(dir / "focal.txt"));

  // Poses, one per colour image.
  std::vector<std::pair<int64_t, Rigid3>> posed;  // frame number, world_from_cam
  if (IsFile(dir / "poses.txt")) {
    const fs::path file = dir / "poses.txt";
    const std::vector<TextLine> lines = ReadDataLines(file);
    if (lines.size() % 4 != 0 || lines.size() / 4 != colours.size()) {
      throw FileError(file.string() + ": expected one 4x4 matrix (4 lines) per image in '" +
                      colour_dir.string() + "', i.e. " + std::to_string(colours.size() * 4) +
                      " lines, found " + std::to_string(lines.size()) + " non-empty lines");
    }
    size_t k = 0;
    for (const auto& [number, path] : colours) {
      posed.emplace_back(number, ParseMatrixLines(file, lines, 4 * k++));
    }
  } else {
    const std::map<int64_t, fs::path> pose_files = NumberedFiles(dir / "pose", {".txt"});
    for (const auto& [number, path] : colours) {
      const auto pose_file = pose_files.find(number);
      if (pose_file == pose_files.end()) {
        throw FileError(plan.origin + ": missing pose for frame '" +
                        path.lexically_relative(dir).string() + "': expected a .txt file "
                        "numbered " + std::to_string(number) + " in '" +
                        (dir / "pose").string() + "', found none");
      }
      posed.emplace_back(number, ReadMatrixFile(pose_file->second));
    }
  }

  int64_t dropped = 0;
  for (const auto& [number, pose] : posed) {
    if (!IsFinite(pose)) {
      ++dropped;
      continue;
    }
    const fs::path& colour = colours.at(number);
    FrameRecord record;
    record.name = colour.lexically_relative(dir).string();
    record.timestamp = static_cast<double>(number);
    record.color = colour;
    const auto depth = depths.find(number);
    if (depth == depths.end()) {
      throw FileError(plan.origin + ": missing depth for frame '" + record.name +
                      "': expected a PNG numbered " + std::to_string(number) + " in '" +
                      (dir / "depth").string() + "', found none");
    }
    record.depth = depth->second;
    record.world_from_cam = opengl ? OpenGlToOpenCv(pose) : pose;
    plan.frames.push_back(std::move(record));
  }
  if (dropped > 0) {
    Note(options, plan.origin + ": dropped " + std::to_string(dropped) + " of " +
                      std::to_string(posed.size()) + " frames whose pose is not finite");
  }
  if (plan.frames.empty()) {
    throw FileError(plan.origin + ": expected frames with a finite pose, found none");
  }
  SelectFrames(plan, options);
  RequireFiles(plan);
  plan.notes = std::to_string(plan.available) + " frames with poses, intrinsics from " +
               intrinsics_source +
               (opengl ? ", OpenGL poses" : "");
  return plan;
}

}  // namespace streamrecon::datasets::internal
