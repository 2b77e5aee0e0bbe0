// Ground-truth sequences: layout detection, the text formats of TUM RGB-D, 7-Scenes and RGB-D
// folders (plain C++), and image decoding through OpenCV (compiled only with
// STREAMRECON_HAVE_OPENCV; without it only the synthetic source opens).
#include "datasets/ground_truth.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <utility>

#include "core/errors.h"
#include "core/geometry.h"
#include "datasets/dataset_text.h"

#ifdef STREAMRECON_HAVE_OPENCV
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#endif

namespace streamrecon::datasets {
namespace fs = std::filesystem;

std::string LayoutName(DatasetLayout layout) {
  switch (layout) {
    case DatasetLayout::kSynthetic: return "synthetic";
    case DatasetLayout::kTum: return "tum";
    case DatasetLayout::kSevenScenes: return "7scenes";
    case DatasetLayout::kRgbdFolder: return "rgbd-folder";
  }
  return "unknown";
}

void DatasetOptions::Check() const {
  if (every < 1) {
    throw OptionError("DatasetOptions.every: expected >= 1 (take every K-th frame), got " +
                      std::to_string(every));
  }
  if (max_frames < -1) {
    throw OptionError("DatasetOptions.max_frames: expected -1 (no limit) or >= 0, got " +
                      std::to_string(max_frames));
  }
  if (!(max_time_difference > 0) || !std::isfinite(max_time_difference)) {
    throw OptionError("DatasetOptions.max_time_difference: expected a positive number of "
                      "seconds, got " + std::to_string(max_time_difference));
  }
  if (!(depth_scale >= 0) || !std::isfinite(depth_scale)) {
    throw OptionError("DatasetOptions.depth_scale: expected 0 (the layout's own) or a positive "
                      "number of PNG units per metre, got " + std::to_string(depth_scale));
  }
  synthetic.Check();
}

namespace {

constexpr double kTumDepthScale = 5000.0;    // TUM RGB-D: 16-bit PNG units per metre
constexpr double kMillimetreScale = 1000.0;  // 7-Scenes, Neural-RGBD, ScanNet
constexpr uint16_t kSevenScenesInvalid = 65535;
const Intrinsics kSevenScenesIntrinsics{585.0, 585.0, 320.0, 240.0};
const Intrinsics kTumDefaultIntrinsics{525.0, 525.0, 319.5, 239.5};  // ROS default, TUM's advice
constexpr const char* kSyntheticPrefix = "synthetic";

// ---- small helpers ---------------------------------------------------------------------------

std::string Lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

// The value of the last run of digits in s, or -1 when there is none.
int64_t LastNumber(const std::string& s) {
  size_t end = s.size();
  while (end > 0 && !std::isdigit(static_cast<unsigned char>(s[end - 1]))) --end;
  if (end == 0) return -1;
  size_t begin = end;
  while (begin > 0 && std::isdigit(static_cast<unsigned char>(s[begin - 1]))) --begin;
  if (end - begin > 15) return -1;
  return std::stoll(s.substr(begin, end - begin));
}

// Names with numbers in them sort by value (seq-2 before seq-10), then bytewise.
bool NumberedLess(const std::string& a, const std::string& b) {
  const int64_t na = LastNumber(a), nb = LastNumber(b);
  if (na != nb) return na < nb;
  return a < b;
}

// The folder's own name, also for "x/" and ".".
std::string FolderName(const fs::path& dir) {
  fs::path normal = fs::absolute(dir).lexically_normal();
  if (normal.filename().empty()) normal = normal.parent_path();
  return normal.filename().string();
}

bool IsFile(const fs::path& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec);
}

bool IsFolder(const fs::path& path) {
  std::error_code ec;
  return fs::is_directory(path, ec);
}

// The entries of a folder; FileError when it cannot be listed.
std::vector<fs::path> ListFolder(const fs::path& dir) {
  std::vector<fs::path> entries;
  try {
    for (const fs::directory_entry& entry : fs::directory_iterator(dir)) {
      entries.push_back(entry.path());
    }
  } catch (const fs::filesystem_error& e) {
    throw FileError("cannot list folder '" + dir.string() + "': " + e.what());
  }
  return entries;
}

// ---- sequence plans (no pixels read yet) -------------------------------------------------------

struct FrameRecord {
  std::string name;  // colour path relative to the sequence folder
  double timestamp = 0;
  fs::path color, depth;
  Rigid3 world_from_cam;
  std::string color_listed_at, depth_listed_at;  // e.g. "x/rgb.txt line 5"; empty = found by name
};

struct SequencePlan {
  DatasetLayout layout = DatasetLayout::kTum;
  fs::path dir;
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

void Note(const DatasetOptions& options, const std::string& message) {
  if (options.on_note) options.on_note(message);
}

// Applies every / max_frames.
void SelectFrames(SequencePlan& plan, const DatasetOptions& options) {
  plan.available = static_cast<int64_t>(plan.frames.size());
  std::vector<FrameRecord> selected;
  for (size_t i = 0; i < plan.frames.size(); i += options.every) {
    if (options.max_frames >= 0 && static_cast<int64_t>(selected.size()) >= options.max_frames) {
      break;
    }
    selected.push_back(std::move(plan.frames[i]));
  }
  plan.frames = std::move(selected);
}

void RequireFiles(const SequencePlan& plan) {
  auto listed = [](const std::string& where) { return where.empty() ? "" : " (" + where + ")"; };
  for (const FrameRecord& record : plan.frames) {
    if (!IsFile(record.color)) {
      throw FileError(plan.origin + ": missing colour image for frame '" + record.name +
                      "': expected the file '" + record.color.string() + "'" +
                      listed(record.color_listed_at) + ", found none");
    }
    if (!IsFile(record.depth)) {
      throw FileError(plan.origin + ": missing depth for frame '" + record.name +
                      "': expected the file '" + record.depth.string() + "'" +
                      listed(record.depth_listed_at) + ", found none");
    }
  }
}

// ---- TUM RGB-D -------------------------------------------------------------------------------

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

// The fields every layout's plan starts with; `kind` names the layout in messages.
SequencePlan NewPlan(DatasetLayout layout, const fs::path& dir, const std::string& kind, double depth_scale) {
  SequencePlan plan;
  plan.layout = layout;
  plan.dir = dir;
  plan.name = FolderName(dir);
  plan.origin = kind + " '" + dir.string() + "'";
  plan.depth_scale = depth_scale;
  return plan;
}

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

// ---- 7-Scenes --------------------------------------------------------------------------------

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

// ---- RGB-D folders (Neural-RGBD, ScanNet exports) ----------------------------------------------

const char* const kColourFolders[] = {"images", "color", "rgb"};

fs::path ColourFolder(const fs::path& dir) {
  for (const char* name : kColourFolders) {
    if (IsFolder(dir / name)) return dir / name;
  }
  return {};
}

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

// ---- layout detection ------------------------------------------------------------------------

bool IsSyntheticSpec(const std::string& spec) {
  const std::string prefix = kSyntheticPrefix;
  return spec == prefix || spec.compare(0, prefix.size() + 1, prefix + ":") == 0;
}

// nullopt when dir shows no sign of any layout; FileError when it shows one but is incomplete.
std::optional<DatasetLayout> TryDetectFolder(const fs::path& dir) {
  const bool rgb = IsFile(dir / "rgb.txt"), depth = IsFile(dir / "depth.txt"),
             gt = IsFile(dir / "groundtruth.txt");
  if (rgb || depth || gt) {
    if (rgb && depth && gt) return DatasetLayout::kTum;
    std::string missing;
    for (const auto& [present, file] : {std::pair<bool, const char*>{rgb, "rgb.txt"},
                                        {depth, "depth.txt"},
                                        {gt, "groundtruth.txt"}}) {
      if (!present) missing += (missing.empty() ? "" : ", ") + std::string(file);
    }
    throw FileError("TUM RGB-D folder '" + dir.string() +
                    "': expected rgb.txt, depth.txt and groundtruth.txt, missing " + missing);
  }
  for (const fs::path& entry : ListFolder(dir)) {
    if (IsSevenScenesColor(entry)) return DatasetLayout::kSevenScenes;
  }
  const fs::path colour_dir = ColourFolder(dir);
  if (!colour_dir.empty() && IsFolder(dir / "depth")) {
    if (IsFile(dir / "poses.txt") || IsFolder(dir / "pose")) return DatasetLayout::kRgbdFolder;
    throw FileError("RGB-D folder '" + dir.string() + "': has " +
                    colour_dir.filename().string() +
                    "/ and depth/ but no poses (expected poses.txt or a pose/ folder)");
  }
  return std::nullopt;
}

std::string LayoutHelp() {
  return "expected 'synthetic' (or synthetic:walk, synthetic:orbit), a TUM RGB-D folder (rgb.txt, "
         "depth.txt, groundtruth.txt), a 7-Scenes sequence (frame-XXXXXX.color.png, "
         ".depth.png, .pose.txt) or an RGB-D folder (images/ or color/, depth/, poses.txt or "
         "pose/)";
}

void RequireFolder(const std::string& spec) {
  std::error_code ec;
  const fs::file_status status = fs::status(spec, ec);
  if (!fs::exists(status)) {
    throw FileError("dataset path does not exist: '" + spec + "' (" + LayoutHelp() + ")");
  }
  if (!fs::is_directory(status)) {
    throw FileError("dataset '" + spec + "' is a file: " + LayoutHelp());
  }
}

// ---- sources ---------------------------------------------------------------------------------

class SyntheticGroundTruth final : public GroundTruthSource {
 public:
  SyntheticGroundTruth(const SyntheticOptions& scene_options, const DatasetOptions& options)
      : scene_(scene_options) {
    for (int64_t i = 0; i < scene_.size(); i += options.every) {
      if (options.max_frames >= 0 && static_cast<int64_t>(indices_.size()) >= options.max_frames) {
        break;
      }
      indices_.push_back(i);
    }
  }

  std::optional<GroundTruthFrame> Next() override {
    if (next_ >= indices_.size()) return std::nullopt;
    SyntheticFrame rendered = scene_.Render(indices_[next_]);
    GroundTruthFrame out;
    out.frame = std::move(rendered.frame);
    out.frame.index = static_cast<int64_t>(next_++);
    out.depth = std::move(rendered.depth);
    out.world_from_cam = rendered.world_from_cam;
    out.intrinsics = rendered.intrinsics;
    return out;
  }

  int64_t size() const override { return static_cast<int64_t>(indices_.size()); }

  std::string name() const override {
    const SyntheticOptions& o = scene_.options();
    return "synthetic-" + o.Label() + "-seed" + std::to_string(o.seed);
  }

  DatasetLayout layout() const override { return DatasetLayout::kSynthetic; }

  std::string Describe() const override {
    const SyntheticOptions& o = scene_.options();
    return "synthetic " + o.Label() + " scene (seed " + std::to_string(o.seed) + ", " + std::to_string(size()) + " of " +
           std::to_string(o.frames) + " frames, " + std::to_string(o.width) + "x" +
           std::to_string(o.height) + ")";
  }

 private:
  SyntheticScene scene_;
  std::vector<int64_t> indices_;
  size_t next_ = 0;
};

#ifdef STREAMRECON_HAVE_OPENCV

class FileGroundTruth final : public GroundTruthSource {
 public:
  FileGroundTruth(SequencePlan plan, const DatasetOptions& options)
      : plan_(std::move(plan)), on_note_(options.on_note) {}

  std::optional<GroundTruthFrame> Next() override {
    if (next_ >= plan_.frames.size()) return std::nullopt;
    const FrameRecord& record = plan_.frames[next_];
    GroundTruthFrame out;
    out.frame.index = static_cast<int64_t>(next_++);
    out.frame.timestamp = record.timestamp;
    out.frame.name = record.name;
    out.world_from_cam = record.world_from_cam;

    const cv::Mat depth = ReadDepth(record);
    cv::Mat colour = ReadColour(record);
    Intrinsics k = plan_.intrinsics;
    if (colour.size() != depth.size()) {
      if (!plan_.intrinsics_for_depth && !plan_.centre_from_size) {
        const double sx = static_cast<double>(depth.cols) / colour.cols;
        const double sy = static_cast<double>(depth.rows) / colour.rows;
        k = {k.fx * sx, k.fy * sy, (k.cx + 0.5) * sx - 0.5, (k.cy + 0.5) * sy - 0.5};
      }
      if (!noted_resize_ && on_note_) {
        on_note_(plan_.origin + ": colour images (" + std::to_string(colour.cols) + "x" +
                 std::to_string(colour.rows) + ") are resized to the depth size (" +
                 std::to_string(depth.cols) + "x" + std::to_string(depth.rows) + ")");
      }
      noted_resize_ = true;
      cv::Mat resized;
      cv::resize(colour, resized, depth.size(), 0, 0, cv::INTER_AREA);
      colour = resized;
    }
    if (plan_.centre_from_size) {
      k.cx = colour.cols / 2.0;
      k.cy = colour.rows / 2.0;
    }
    out.intrinsics = k;

    out.frame.image.width = colour.cols;
    out.frame.image.height = colour.rows;
    out.frame.image.data.assign(colour.data, colour.data + colour.total() * 3);
    out.depth.resize(depth.total());
    const double inverse_scale = 1.0 / plan_.depth_scale;
    for (int v = 0; v < depth.rows; ++v) {
      const uint16_t* row = depth.ptr<uint16_t>(v);
      for (int u = 0; u < depth.cols; ++u) {
        const uint16_t raw = row[u];
        const bool invalid = raw == 0 || (plan_.max_value_invalid && raw == kSevenScenesInvalid);
        out.depth[static_cast<size_t>(v) * depth.cols + u] =
            invalid ? 0.0f : static_cast<float>(raw * inverse_scale);
      }
    }
    return out;
  }

  int64_t size() const override { return static_cast<int64_t>(plan_.frames.size()); }
  std::string name() const override { return plan_.name; }
  DatasetLayout layout() const override { return plan_.layout; }
  std::string Describe() const override {
    return plan_.origin + " (" + std::to_string(size()) + " frames selected; " + plan_.notes +
           ")";
  }

 private:
  // 8-bit RGB, continuous.
  cv::Mat ReadColour(const FrameRecord& record) const {
    cv::Mat bgr = Decode(record.color, cv::IMREAD_COLOR, "a colour image (PNG or JPEG)", record);
    cv::Mat rgb;
    cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
    return rgb;
  }

  // 16-bit single channel.
  cv::Mat ReadDepth(const FrameRecord& record) const {
    const cv::Mat raw =
        Decode(record.depth, cv::IMREAD_UNCHANGED, "a 16-bit single-channel depth PNG", record);
    if (raw.type() != CV_16UC1) {
      throw FileError("depth image '" + record.depth.string() + "' of frame '" + record.name +
                      "': expected a 16-bit single-channel PNG, found " +
                      std::to_string(raw.channels()) + " channel(s) of " +
                      (raw.depth() == CV_8U ? "8-bit" : raw.depth() == CV_16U ? "16-bit"
                                                                               : "other") +
                      " samples");
    }
    return raw;
  }

  static cv::Mat Decode(const fs::path& file, int flags, const std::string& expected,
                        const FrameRecord& record) {
    cv::Mat decoded;
    std::string reason = "a corrupt, truncated or unsupported file";
    try {
      decoded = cv::imread(file.string(), flags);
    } catch (const cv::Exception& e) {
      reason = e.what();
    }
    if (decoded.empty()) {
      throw FileError("cannot decode '" + file.string() + "' (frame '" + record.name +
                      "'): expected " + expected + ", found " + reason);
    }
    return decoded;
  }

  SequencePlan plan_;
  std::function<void(const std::string&)> on_note_;
  size_t next_ = 0;
  bool noted_resize_ = false;
};

std::unique_ptr<GroundTruthSource> MakeFileSource(SequencePlan plan,
                                                  const DatasetOptions& options) {
  return std::make_unique<FileGroundTruth>(std::move(plan), options);
}

#else

std::unique_ptr<GroundTruthSource> MakeFileSource(SequencePlan plan, const DatasetOptions&) {
  throw Error("reading " + plan.origin + " needs OpenCV, but this build has none (reconfigure "
              "with OpenCV installed and STREAMRECON_OPENCV=ON); 'synthetic' works without it");
}

#endif

}  // namespace

DatasetLayout DetectLayout(const std::string& spec) {
  if (IsSyntheticSpec(spec)) return DatasetLayout::kSynthetic;
  RequireFolder(spec);
  const std::optional<DatasetLayout> layout = TryDetectFolder(spec);
  if (!layout) {
    throw FileError("'" + spec + "' is not a dataset sequence: " + LayoutHelp());
  }
  return *layout;
}

std::vector<std::string> FindSequences(const std::string& spec) {
  if (IsSyntheticSpec(spec)) return {spec};
  RequireFolder(spec);
  if (TryDetectFolder(spec)) return {spec};
  std::vector<std::string> sequences;
  for (const fs::path& entry : ListFolder(spec)) {
    const std::string name = entry.filename().string();
    if (name.empty() || name[0] == '.' || !IsFolder(entry)) continue;
    if (TryDetectFolder(entry)) sequences.push_back(entry.string());
  }
  if (sequences.empty()) {
    throw FileError("'" + spec +
                    "' is not a dataset sequence and none of its sub-folders is one: " +
                    LayoutHelp());
  }
  std::sort(sequences.begin(), sequences.end(), [](const std::string& a, const std::string& b) {
    return NumberedLess(fs::path(a).filename().string(), fs::path(b).filename().string());
  });
  return sequences;
}

std::unique_ptr<GroundTruthSource> OpenDataset(const std::string& spec,
                                               const DatasetOptions& options) {
  options.Check();
  switch (DetectLayout(spec)) {
    case DatasetLayout::kSynthetic: {
      SyntheticOptions scene = options.synthetic;
      // "synthetic", or "synthetic:" and words such as "pan:outdoor".
      if (spec.size() > 9 && spec[9] != ':')
        throw OptionError("expected synthetic or synthetic:<trajectory>[:<environment>], got '" + spec + "'");
      ApplySyntheticVariant(spec.size() > 10 ? spec.substr(10) : "", scene, spec);
      return std::make_unique<SyntheticGroundTruth>(scene, options);
    }
    case DatasetLayout::kTum: return MakeFileSource(PlanTum(spec, options), options);
    case DatasetLayout::kSevenScenes:
      return MakeFileSource(PlanSevenScenes(spec, options), options);
    case DatasetLayout::kRgbdFolder: return MakeFileSource(PlanRgbdFolder(spec, options), options);
  }
  throw Error("OpenDataset: unhandled layout");
}

}  // namespace streamrecon::datasets
