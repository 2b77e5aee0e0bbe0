// TUM RGB-D sequences: rgb.txt / depth.txt / groundtruth.txt, associated by time.
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

namespace {

// Index of the entry nearest in time to t, or -1 when none is within max_difference.
template <typename T>
int64_t Nearest(const std::vector<T>& sorted, double t, double max_difference) {
  const auto it = std::lower_bound(sorted.begin(), sorted.end(), t,
                                   [](const T& e, double value) { return e.timestamp < value; });
  int64_t best = -1;
  double best_difference = max_difference;
  for (auto candidate : {it, it == sorted.begin() ? sorted.end() : it - 1}) {
    if (candidate == sorted.end()) continue;
    const double difference = std::abs(candidate->timestamp - t);
    if (difference <= best_difference) {
      best_difference = difference;
      best = candidate - sorted.begin();
    }
  }
  return best;
}

Intrinsics TumIntrinsics(const fs::path& dir, std::string* source) {
  if (IsFile(dir / "intrinsics.txt")) {
    *source = "intrinsics.txt";
    return ReadIntrinsicsFile(dir / "intrinsics.txt");
  }
  const std::string name = Lower(FolderName(dir));
  // Published calibrations of the three Kinects (TUM RGB-D "file formats" page).
  if (name.find("freiburg1") != std::string::npos) {
    *source = "freiburg1 calibration";
    return {517.3, 516.5, 318.6, 255.3};
  }
  if (name.find("freiburg2") != std::string::npos) {
    *source = "freiburg2 calibration";
    return {520.9, 521.0, 325.1, 249.7};
  }
  if (name.find("freiburg3") != std::string::npos) {
    *source = "freiburg3 calibration";
    return {535.4, 539.2, 320.1, 247.6};
  }
  *source = "default calibration 525/525/319.5/239.5";
  return kTumDefaultIntrinsics;
}

// The depth image paired with each colour image, one to one as TUM's associate.py pairs them:
// every pair within max_difference is a candidate, the closest pairs are taken first, and an
// image already taken is not used again (a slower depth stream does not serve two colour
// images). -1 where a colour image has no partner. depth is sorted by time.
std::vector<int64_t> AssociateOneToOne(const std::vector<Stamped>& rgb, const std::vector<Stamped>& depth,
                                       double max_difference) {
  struct Candidate {
    double difference;
    int64_t colour, depth;
  };
  std::vector<Candidate> candidates;
  for (int64_t c = 0; c < static_cast<int64_t>(rgb.size()); ++c) {
    const double t = rgb[c].timestamp;
    auto it = std::lower_bound(depth.begin(), depth.end(), t - max_difference,
                               [](const Stamped& e, double value) { return e.timestamp < value; });
    for (; it != depth.end() && it->timestamp <= t + max_difference; ++it) {
      candidates.push_back({std::abs(it->timestamp - t), c, it - depth.begin()});
    }
  }
  std::sort(candidates.begin(), candidates.end(), [](const Candidate& a, const Candidate& b) {
    return std::tie(a.difference, a.colour, a.depth) < std::tie(b.difference, b.colour, b.depth);
  });
  std::vector<int64_t> match(rgb.size(), -1);
  std::vector<bool> taken(depth.size(), false);
  for (const Candidate& p : candidates) {
    if (match[p.colour] >= 0 || taken[p.depth]) continue;
    match[p.colour] = p.depth;
    taken[p.depth] = true;
  }
  return match;
}

}  // namespace

SequencePlan PlanTum(const fs::path& dir, const DatasetOptions& options) {
  SequencePlan plan = NewPlan(DatasetLayout::kTum, dir, "TUM RGB-D", options.depth_scale > 0 ? options.depth_scale : kTumDepthScale);
  std::string intrinsics_source;
  plan.intrinsics = TumIntrinsics(dir, &intrinsics_source);

  const std::vector<Stamped> rgb = ReadStampedList(dir / "rgb.txt");
  const std::vector<Stamped> depth = ReadStampedList(dir / "depth.txt");
  const std::vector<StampedPose> poses = ReadTumPoses(dir / "groundtruth.txt");
  if (rgb.empty()) throw FileError((dir / "rgb.txt").string() + ": expected images, found none");
  int64_t without_depth = 0, without_pose = 0;
  const std::vector<int64_t> depth_of = AssociateOneToOne(rgb, depth, options.max_time_difference);
  for (size_t c = 0; c < rgb.size(); ++c) {
    const Stamped& colour = rgb[c];
    const int64_t d = depth_of[c];
    const int64_t p = Nearest(poses, colour.timestamp, options.max_time_difference);
    without_depth += d < 0;
    without_pose += p < 0;
    if (d < 0 || p < 0) continue;
    FrameRecord record;
    record.name = colour.path;
    record.timestamp = colour.timestamp;
    record.color = dir / colour.path;
    record.depth = dir / depth[d].path;
    record.world_from_cam = poses[p].world_from_cam;
    record.color_listed_at = (dir / "rgb.txt").string() + " line " + std::to_string(colour.line);
    record.depth_listed_at =
        (dir / "depth.txt").string() + " line " + std::to_string(depth[d].line);
    plan.frames.push_back(std::move(record));
  }
  if (plan.frames.empty()) {
    throw FileError(plan.origin + ": expected colour images with a depth image and a pose within " +
                    std::to_string(options.max_time_difference) + " s, found none (" +
                    std::to_string(rgb.size()) + " colour images, " +
                    std::to_string(depth.size()) + " depth images, " +
                    std::to_string(poses.size()) + " poses)");
  }
  if (without_depth + without_pose > 0) {
    Note(options, plan.origin + ": dropped colour images without a match within " +
                      std::to_string(options.max_time_difference) + " s: " +
                      std::to_string(without_depth) + " without depth, " +
                      std::to_string(without_pose) + " without pose (of " +
                      std::to_string(rgb.size()) + ")");
  }
  SelectFrames(plan, options);
  RequireFiles(plan);
  plan.notes = std::to_string(plan.available) + " of " + std::to_string(rgb.size()) +
               " colour images associated, intrinsics from " + intrinsics_source;
  return plan;
}

}  // namespace streamrecon::datasets::internal
