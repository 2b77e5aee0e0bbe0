// 7-Scenes sequences: frame-NNNNNN.color.png / .depth.png / .pose.txt.
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

bool IsSevenScenesColor(const fs::path& path) {
  const std::string name = path.filename().string();
  const std::string prefix = "frame-", suffix = ".color.png";
  return name.size() > prefix.size() + suffix.size() &&
         name.compare(0, prefix.size(), prefix) == 0 &&
         name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

SequencePlan PlanSevenScenes(const fs::path& dir, const DatasetOptions& options) {
  SequencePlan plan = NewPlan(DatasetLayout::kSevenScenes, dir, "7-Scenes sequence", options.depth_scale > 0 ? options.depth_scale : kMillimetreScale);
  plan.max_value_invalid = true;
  plan.intrinsics = kSevenScenesIntrinsics;

  std::vector<fs::path> colours;
  for (const fs::path& entry : ListFolder(dir)) {
    if (IsSevenScenesColor(entry) && IsFile(entry)) colours.push_back(entry);
  }
  std::sort(colours.begin(), colours.end(), [](const fs::path& a, const fs::path& b) {
    return NumberedLess(a.filename().string(), b.filename().string());
  });
  for (const fs::path& colour : colours) {
    const std::string name = colour.filename().string();
    const std::string stem = name.substr(0, name.size() - std::string(".color.png").size());
    FrameRecord record;
    record.name = name;
    record.timestamp = static_cast<double>(plan.frames.size());
    record.color = colour;
    record.depth = dir / (stem + ".depth.png");
    plan.frames.push_back(std::move(record));
  }
  SelectFrames(plan, options);
  RequireFiles(plan);
  for (FrameRecord& record : plan.frames) {
    const std::string stem =
        record.name.substr(0, record.name.size() - std::string(".color.png").size());
    const fs::path pose_file = dir / (stem + ".pose.txt");
    if (!IsFile(pose_file)) {
      throw FileError(plan.origin + ": missing pose for frame '" + record.name +
                      "': expected the file '" + pose_file.string() + "', found none");
    }
    record.world_from_cam = ReadMatrixFile(pose_file);
    if (!IsFinite(record.world_from_cam)) {
      throw FileError(pose_file.string() + ": expected a finite 4x4 camera-to-world matrix, "
                      "found non-finite values");
    }
  }
  plan.notes = std::to_string(plan.available) + " frames in the sequence";
  return plan;
}

}  // namespace streamrecon::datasets::internal
