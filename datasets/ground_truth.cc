// Ground-truth sequences: layout detection and the sources (frames decoded through OpenCV, compiled
// only with STREAMRECON_HAVE_OPENCV; without it only the synthetic source opens). The formats'
// readers are one file each: dataset_tum.cc, dataset_7scenes.cc, dataset_rgbd_folder.cc, over
// sequence_plan.h and the text readers of dataset_text.h.
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
#include "datasets/sequence_plan.h"

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

using namespace internal;

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
