// Writing ground-truth sequences in the TUM RGB-D layout: PNGs through OpenCV, text files at the
// end, everything through core/atomic_file.h.
#include <cmath>
#include <cstdio>
#include <sstream>

#include "core/atomic_file.h"
#include "core/errors.h"
#include "core/geometry.h"
#include "datasets/ground_truth.h"

#ifdef STREAMRECON_HAVE_OPENCV
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#endif

namespace streamrecon::datasets {
namespace fs = std::filesystem;

namespace {

constexpr double kDepthUnitsPerMetre = 5000.0;  // TUM RGB-D
constexpr double kLargestRawDepth = 65535.0;

std::string Format(const char* format, double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), format, value);
  return buffer;
}

bool SameIntrinsics(const Intrinsics& a, const Intrinsics& b) {
  return a.fx == b.fx && a.fy == b.fy && a.cx == b.cx && a.cy == b.cy;
}

#ifdef STREAMRECON_HAVE_OPENCV
void WritePng(const fs::path& path, const cv::Mat& image) {
  WriteFileAtomically(path, [&](const fs::path& tmp) {
    bool ok = false;
    std::string reason = "the PNG encoder failed";
    try {
      ok = cv::imwrite(tmp.string(), image);
    } catch (const cv::Exception& e) {
      reason = e.what();
    }
    if (!ok) throw FileError("cannot write '" + path.string() + "': " + reason);
  });
}
#endif

}  // namespace

TumDatasetWriter::TumDatasetWriter(const fs::path& folder) : folder_(folder) {
#ifndef STREAMRECON_HAVE_OPENCV
  throw Error("writing a TUM RGB-D sequence needs OpenCV, but this build has none");
#endif
  for (const fs::path& dir : {folder_, folder_ / "rgb", folder_ / "depth"}) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (!fs::is_directory(dir, ec)) {
      throw FileError("cannot create the folder '" + dir.string() + "'" +
                      (ec ? ": " + ec.message() : std::string()));
    }
  }
}

void TumDatasetWriter::Add(const GroundTruthFrame& frame) {
  const RgbImage& image = frame.frame.image;
  const size_t pixels = static_cast<size_t>(image.width) * image.height;
  if (image.empty() || image.data.size() != pixels * 3) {
    throw Error("TumDatasetWriter: frame '" + frame.frame.name + "': expected an RGB image of " +
                "width * height * 3 bytes, found " + std::to_string(image.width) + "x" +
                std::to_string(image.height) + " with " + std::to_string(image.data.size()) +
                " bytes");
  }
  if (frame.depth.size() != pixels) {
    throw Error("TumDatasetWriter: frame '" + frame.frame.name + "': expected " +
                std::to_string(pixels) + " depth values (the image's size), found " +
                std::to_string(frame.depth.size()));
  }
  const std::string stamp = Format("%.6f", frame.frame.timestamp);
  if (!timestamps_.empty() && !(std::stod(stamp) > std::stod(timestamps_.back()))) {
    throw Error("TumDatasetWriter: frame '" + frame.frame.name +
                "': expected timestamps that increase (by at least 1e-6 s), found " + stamp +
                " after " + timestamps_.back());
  }
  if (timestamps_.empty()) {
    intrinsics_ = frame.intrinsics;
  } else if (!SameIntrinsics(intrinsics_, frame.intrinsics)) {
    throw Error("TumDatasetWriter: frame '" + frame.frame.name + "': the TUM layout holds one "
                "camera, expected the first frame's intrinsics, found different ones");
  }
#ifdef STREAMRECON_HAVE_OPENCV
  const cv::Mat rgb(image.height, image.width, CV_8UC3, const_cast<uint8_t*>(image.data.data()));
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  cv::Mat raw(image.height, image.width, CV_16UC1);
  for (int v = 0; v < image.height; ++v) {
    uint16_t* row = raw.ptr<uint16_t>(v);
    for (int u = 0; u < image.width; ++u) {
      const double d = frame.depth[static_cast<size_t>(v) * image.width + u];
      const double units = std::isfinite(d) && d > 0 ? std::round(d * kDepthUnitsPerMetre) : 0.0;
      if (units > kLargestRawDepth) ++clipped_depths_;
      row[u] = units > kLargestRawDepth ? 0 : static_cast<uint16_t>(units);
    }
  }
  WritePng(folder_ / "rgb" / (stamp + ".png"), bgr);
  WritePng(folder_ / "depth" / (stamp + ".png"), raw);
#endif
  timestamps_.push_back(stamp);
  poses_.push_back(frame.world_from_cam);
}

void TumDatasetWriter::Finish() {
  if (timestamps_.empty()) {
    throw Error("TumDatasetWriter: expected at least one frame before Finish(), found none");
  }
  std::ostringstream rgb, depth, groundtruth, intrinsics;
  rgb << "# colour images\n# timestamp filename\n";
  depth << "# depth images (16-bit PNG, metres * 5000, 0 = invalid)\n# timestamp filename\n";
  groundtruth << "# ground-truth trajectory (world_from_cam)\n# timestamp tx ty tz qx qy qz qw\n";
  for (size_t i = 0; i < timestamps_.size(); ++i) {
    const std::string& t = timestamps_[i];
    rgb << t << " rgb/" << t << ".png\n";
    depth << t << " depth/" << t << ".png\n";
    const std::array<double, 4> q = geometry::RotationToQuaternion(poses_[i].R);
    groundtruth << t;
    for (double v : poses_[i].t) groundtruth << ' ' << Format("%.9f", v);
    for (double v : q) groundtruth << ' ' << Format("%.9f", v);
    groundtruth << '\n';
  }
  intrinsics << "# fx fy cx cy (pixels)\n"
             << Format("%.17g", intrinsics_.fx) << ' ' << Format("%.17g", intrinsics_.fy) << ' '
             << Format("%.17g", intrinsics_.cx) << ' ' << Format("%.17g", intrinsics_.cy) << '\n';
  WriteTextAtomically(folder_ / "intrinsics.txt", intrinsics.str());
  WriteTextAtomically(folder_ / "depth.txt", depth.str());
  WriteTextAtomically(folder_ / "groundtruth.txt", groundtruth.str());
  WriteTextAtomically(folder_ / "rgb.txt", rgb.str());
}

int64_t WriteTumDataset(const fs::path& folder, GroundTruthSource& source) {
  TumDatasetWriter writer(folder);
  while (std::optional<GroundTruthFrame> frame = source.Next()) writer.Add(*frame);
  writer.Finish();
  return writer.frames();
}

}  // namespace streamrecon::datasets
