// Known camera intrinsics: parsing and scaling (calibration.h).
#include "datasets/calibration.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "core/check.h"

#ifdef STREAMRECON_HAVE_OPENCV
#include <opencv2/core.hpp>
#endif

namespace streamrecon::datasets {
namespace {

namespace fs = std::filesystem;

bool ParseFour(const std::string& text, Intrinsics* k) {
  std::vector<double> v;
  std::stringstream in(text);
  for (std::string field; std::getline(in, field, ',');) {
    size_t used = 0;
    try {
      v.push_back(std::stod(field, &used));
    } catch (const std::exception&) {
      return false;
    }
    if (used != field.size()) return false;
  }
  if (v.size() != 4) return false;
  *k = Intrinsics{v[0], v[1], v[2], v[3]};
  return true;
}

void CheckCamera(const KnownCamera& c) {
  const Intrinsics& k = c.k;
  SR_CHECK(std::isfinite(k.fx) && std::isfinite(k.fy) && std::isfinite(k.cx) && std::isfinite(k.cy) && k.fx > 0 && k.fy > 0, OptionError,
           "intrinsics " << c.source << ": expected finite values and positive focal lengths, found fx " << k.fx << ", fy " << k.fy
                         << ", cx " << k.cx << ", cy " << k.cy);
}

KnownCamera ReadColmap(const fs::path& path) {
  std::ifstream in(path);
  SR_CHECK(in, FileError, "cannot read the calibration file " << path.string());
  KnownCamera c;
  c.source = path.string();
  int number = 0;
  for (std::string line; std::getline(in, line);) {
    ++number;
    if (line.empty() || line[0] == '#') continue;
    std::istringstream f(line);
    std::string id, model;
    std::vector<double> params;
    f >> id >> model >> c.width >> c.height;
    for (double x; f >> x;) params.push_back(x);
    const std::string where = path.string() + ":" + std::to_string(number);
    SR_CHECK(!f.bad() && c.width > 0 && c.height > 0, FileError, where << ": expected 'CAMERA_ID MODEL WIDTH HEIGHT PARAMS...'");
    size_t used = 0;
    if (model == "SIMPLE_PINHOLE" || model == "SIMPLE_RADIAL" || model == "RADIAL") {
      SR_CHECK(params.size() >= 3, FileError, where << ": " << model << " needs f, cx, cy");
      c.k = Intrinsics{params[0], params[0], params[1], params[2]};
      used = 3;
    } else if (model == "PINHOLE" || model == "OPENCV" || model == "FULL_OPENCV") {
      SR_CHECK(params.size() >= 4, FileError, where << ": " << model << " needs fx, fy, cx, cy");
      c.k = Intrinsics{params[0], params[1], params[2], params[3]};
      used = 4;
    } else {
      throw FileError(where + ": camera model '" + model +
                      "' is not read (expected PINHOLE, SIMPLE_PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV or FULL_OPENCV)");
    }
    if (params.size() > used)
      c.note = "the distortion parameters of " + model + " in " + path.string() + " are ignored (a pinhole model is used)";
    return c;
  }
  throw FileError(path.string() + ": expected a camera line (COLMAP cameras.txt), found none");
}

KnownCamera ReadOpenCv(const fs::path& path) {
#ifdef STREAMRECON_HAVE_OPENCV
  KnownCamera c;
  c.source = path.string();
  cv::Mat m;
  try {
    cv::FileStorage fs(path.string(), cv::FileStorage::READ);
    SR_CHECK(fs.isOpened(), FileError, "cannot read the calibration file " << path.string());
    fs["camera_matrix"] >> m;
    if (!fs["image_width"].empty()) fs["image_width"] >> c.width;
    if (!fs["image_height"].empty()) fs["image_height"] >> c.height;
  } catch (const cv::Exception& e) {
    throw FileError(path.string() + ": not an OpenCV calibration file: " + e.what());
  }
  SR_CHECK(m.rows == 3 && m.cols == 3, FileError, path.string() << ": expected a 3x3 camera_matrix, found " << m.rows << "x" << m.cols);
  m.convertTo(m, CV_64F);
  c.k = Intrinsics{m.at<double>(0, 0), m.at<double>(1, 1), m.at<double>(0, 2), m.at<double>(1, 2)};
  return c;
#else
  throw FileError(path.string() + ": reading OpenCV calibration files needs OpenCV, which this build lacks; give fx,fy,cx,cy");
#endif
}

}  // namespace

KnownCamera ParseIntrinsics(const std::string& text) {
  KnownCamera c;
  if (ParseFour(text, &c.k)) {
    c.source = text;
  } else {
    const fs::path path(text);
    SR_CHECK(fs::is_regular_file(path), OptionError,
             "intrinsics '" << text << "': expected fx,fy,cx,cy (pixels) or a calibration file (COLMAP cameras.txt, OpenCV .yaml/.xml)");
    const std::string ext = path.extension().string();
    c = ext == ".yaml" || ext == ".yml" || ext == ".xml" ? ReadOpenCv(path) : ReadColmap(path);
  }
  CheckCamera(c);
  return c;
}

Intrinsics ScaleIntrinsics(const Intrinsics& k, int from_w, int from_h, int to_w, int to_h) {
  const double sx = static_cast<double>(to_w) / from_w, sy = static_cast<double>(to_h) / from_h;
  return Intrinsics{k.fx * sx, k.fy * sy, (k.cx + 0.5) * sx - 0.5, (k.cy + 0.5) * sy - 0.5};
}

}  // namespace streamrecon::datasets
