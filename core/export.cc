#include "core/export.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/errors.h"
#include "core/geometry.h"
#include "core/point_cloud.h"

#ifdef STREAMRECON_HAVE_OPEN3D
#include <open3d/geometry/PointCloud.h>
#include <open3d/io/PointCloudIO.h>
#endif

#ifdef STREAMRECON_HAVE_OPENCV
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#endif

namespace streamrecon {
namespace fs = std::filesystem;

namespace {

nlohmann::json Matrix4(const Rigid3& T) {
  nlohmann::json rows = nlohmann::json::array();
  for (int r = 0; r < 3; ++r) rows.push_back({T.R[r * 3], T.R[r * 3 + 1], T.R[r * 3 + 2], T.t[r]});
  rows.push_back({0.0, 0.0, 0.0, 1.0});
  return rows;
}


#ifdef STREAMRECON_HAVE_OPENCV
void WriteImage(const fs::path& path, const cv::Mat& image) {
  WriteFileAtomically(path, [&](const fs::path& tmp) {
    bool ok = false;
    try {
      ok = cv::imwrite(tmp.string(), image);
    } catch (const cv::Exception& e) {
      throw FileError("cannot write " + path.string() + ": " + e.what());
    }
    if (!ok) throw FileError("cannot write " + path.string() + ": OpenCV's imwrite failed");
  });
}

// depth [H, W] -> BGR preview, TURBO between the 2nd and 98th percentiles of the finite depths.
cv::Mat DepthPreview(const std::vector<float>& depth, int width, int height) {
  std::vector<float> finite;
  finite.reserve(depth.size());
  for (float d : depth) {
    if (std::isfinite(d)) finite.push_back(d);
  }
  cv::Mat preview(height, width, CV_8UC3, cv::Scalar(0, 0, 0));
  if (finite.empty()) return preview;
  const auto percentile = [&finite](double q) {
    const auto nth = finite.begin() + static_cast<std::ptrdiff_t>(q * (finite.size() - 1));
    std::nth_element(finite.begin(), nth, finite.end());
    return static_cast<double>(*nth);
  };
  const double lo = percentile(0.02);
  const double hi = percentile(0.98);
  const double scale = hi > lo ? 255.0 / (hi - lo) : 0.0;
  cv::Mat gray(height, width, CV_8U);
  for (size_t i = 0; i < depth.size(); ++i) {
    gray.data[i] = cv::saturate_cast<uchar>((depth[i] - lo) * scale);
  }
  cv::applyColorMap(gray, preview, cv::COLORMAP_TURBO);
  for (size_t i = 0; i < depth.size(); ++i) {
    if (!std::isfinite(depth[i])) preview.at<cv::Vec3b>(static_cast<int>(i)) = cv::Vec3b(0, 0, 0);
  }
  return preview;
}
#endif

}  // namespace

void WriteTrajectoryTum(const fs::path& path, const std::vector<CameraRecord>& predictions,
                        const std::vector<double>& timestamps) {
  if (!timestamps.empty() && timestamps.size() != predictions.size()) {
    throw Error("TUM trajectory " + path.string() + ": expected one timestamp per prediction (" +
                std::to_string(predictions.size()) + "), found " +
                std::to_string(timestamps.size()));
  }
  std::string text = "# timestamp tx ty tz qx qy qz qw (world_from_cam, OpenCV camera axes)\n";
  for (size_t i = 0; i < predictions.size(); ++i) {
    const Rigid3 world_from_cam = WorldFromCam(predictions[i]);
    const std::array<double, 4> q = geometry::RotationToQuaternion(world_from_cam.R);
    const double timestamp = timestamps.empty() ? predictions[i].timestamp : timestamps[i];
    char line[256];
    std::snprintf(line, sizeof(line), "%.9f %.12f %.12f %.12f %.12f %.12f %.12f %.12f\n", timestamp,
                  world_from_cam.t[0], world_from_cam.t[1], world_from_cam.t[2], q[0], q[1], q[2],
                  q[3]);
    text += line;
  }
  WriteTextAtomically(path, text);
}

std::vector<CameraRecord> CameraRecords(const std::vector<FramePrediction>& predictions) {
  return std::vector<CameraRecord>(predictions.begin(), predictions.end());
}

void WriteCamerasJson(const fs::path& path, const std::vector<CameraRecord>& predictions) {
  nlohmann::json frames = nlohmann::json::array();
  for (const CameraRecord& p : predictions) {
    const Rigid3 cam_from_world = geometry::PoseEncodingToExtrinsics(p.pose_enc);
    const Intrinsics intrinsics = CameraIntrinsics(p);
    const Intrinsics predicted = geometry::PoseEncodingToIntrinsics(p.pose_enc, p.width, p.height);
    frames.push_back({{"index", p.index},
                      {"source", p.source_name},
                      {"timestamp", p.timestamp},
                      {"width", p.width},
                      {"height", p.height},
                      {"fx", intrinsics.fx},
                      {"fy", intrinsics.fy},
                      {"cx", intrinsics.cx},
                      {"cy", intrinsics.cy},
                      {"intrinsics_source", p.known_intrinsics ? "given" : "predicted"},
                      {"predicted", {{"fx", predicted.fx}, {"fy", predicted.fy}, {"cx", predicted.cx}, {"cy", predicted.cy}}},
                      {"pose_enc", p.pose_enc},
                      {"cam_from_world", Matrix4(cam_from_world)},
                      {"world_from_cam", Matrix4(geometry::Inverse(cam_from_world))}});
  }
  const nlohmann::json root = {
      {"convention",
       "pose_enc = [t_xyz, q_xyzw, fov_h, fov_w] of cam_from_world; OpenCV camera axes "
       "(x right, y down, z forward); world = first camera; matrices are rows"},
      {"frames", frames}};
  WriteTextAtomically(path, root.dump(2) + "\n");
}

bool CanWritePly() {
#ifdef STREAMRECON_HAVE_OPEN3D
  return true;
#else
  return false;
#endif
}

void WritePointCloudPly(const fs::path& path, const PointCloud& cloud) {
#ifdef STREAMRECON_HAVE_OPEN3D
  if (cloud.xyz.size() % 3 != 0 || cloud.rgb.size() != cloud.xyz.size()) {
    throw Error("PLY " + path.string() + ": expected xyz and rgb of [N, 3] values each, found " +
                std::to_string(cloud.xyz.size()) + " and " + std::to_string(cloud.rgb.size()));
  }
  if (cloud.size() == 0) {
    // Open3D refuses to write an empty cloud; an empty cloud is still a valid result.
    WriteTextAtomically(path,
                        "ply\nformat binary_little_endian 1.0\nelement vertex 0\n"
                        "property double x\nproperty double y\nproperty double z\n"
                        "property uchar red\nproperty uchar green\nproperty uchar blue\n"
                        "end_header\n");
    return;
  }
  open3d::geometry::PointCloud o3d_cloud;
  o3d_cloud.points_.reserve(cloud.size());
  o3d_cloud.colors_.reserve(cloud.size());
  for (size_t i = 0; i < cloud.size(); ++i) {
    const float* p = &cloud.xyz[i * 3];
    const uint8_t* c = &cloud.rgb[i * 3];
    o3d_cloud.points_.emplace_back(p[0], p[1], p[2]);
    o3d_cloud.colors_.emplace_back(c[0] / 255.0, c[1] / 255.0, c[2] / 255.0);
  }
  WriteFileAtomically(path, [&](const fs::path& tmp) {
    const open3d::io::WritePointCloudOption binary(
        open3d::io::WritePointCloudOption::IsAscii::Binary);
    if (!open3d::io::WritePointCloudToPLY(tmp.string(), o3d_cloud, binary)) {
      throw FileError("cannot write " + path.string() + ": Open3D's PLY writer failed");
    }
  });
#else
  throw Error("PLY export needs Open3D; rebuild with libopen3d-dev");
#endif
}

void WriteDepthMaps(const fs::path& folder, const std::vector<FramePrediction>& predictions) {
#ifdef STREAMRECON_HAVE_OPENCV
  std::error_code ec;
  fs::create_directories(folder, ec);
  if (ec) {
    throw FileError("cannot create depth map folder " + folder.string() + ": " + ec.message());
  }
  for (const FramePrediction& p : predictions) {
    CheckPredictionArray(p, "depth", p.depth.size(), 1);
    char stem[32];
    std::snprintf(stem, sizeof(stem), "depth_%06lld", static_cast<long long>(p.index));
    // imwrite only reads the pixels; the Mat wraps them without copying.
    const cv::Mat depth(p.height, p.width, CV_32F, const_cast<float*>(p.depth.data()));
    WriteImage(folder / (std::string(stem) + ".tiff"), depth);
    WriteImage(folder / (std::string(stem) + ".png"), DepthPreview(p.depth, p.width, p.height));
  }
#else
  throw Error("depth map export needs OpenCV; rebuild with libopencv-dev");
#endif
}


namespace {

std::string ColmapImageName(int64_t index) {
  char name[40];
  std::snprintf(name, sizeof(name), "frame_%06lld.png", static_cast<long long>(index));
  return name;
}

}  // namespace

bool CanWriteImages() {
#ifdef STREAMRECON_HAVE_OPENCV
  return true;
#else
  return false;
#endif
}

void WriteColmapImage(const fs::path& folder, const FramePrediction& p) {
#ifndef STREAMRECON_HAVE_OPENCV
  (void)folder, (void)p;
  throw Error("writing COLMAP images needs OpenCV, but this build has none; install libopencv-dev and rebuild");
#else
  if (p.image.width != p.width || p.image.height != p.height || p.image.data.size() != static_cast<size_t>(p.width) * p.height * 3)
    throw Error("COLMAP image, frame " + std::to_string(p.index) + ": expected a " + std::to_string(p.width) + "x" +
                std::to_string(p.height) + " RGB image, found " + std::to_string(p.image.width) + "x" + std::to_string(p.image.height));
  EnsureWritableFolder(folder / "images");
  const cv::Mat rgb(p.height, p.width, CV_8UC3, const_cast<uint8_t*>(p.image.data.data()));
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  WriteImage(folder / "images" / ColmapImageName(p.index), bgr);
#endif
}

std::vector<int64_t> WriteColmapSparse(const fs::path& folder, const std::vector<CameraRecord>& cameras, const PointCloud& cloud) {
  const fs::path sparse = folder / "sparse" / "0";
  EnsureWritableFolder(sparse);
  std::vector<int64_t> left_out;
  std::vector<size_t> kept;
  for (size_t i = 0; i < cameras.size(); ++i) {
    const CameraRecord& p = cameras[i];
    const Intrinsics k = CameraIntrinsics(p);
    const bool ok = std::isfinite(k.fx) && std::isfinite(k.fy) && k.fx > 0 && k.fy > 0;
    if (ok) kept.push_back(i);
    else left_out.push_back(p.index);
  }
  std::string cameras_txt = "# Camera list with one line of data per camera:\n#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n"
                            "# Number of cameras: " + std::to_string(kept.size()) + "\n";
  std::string images_txt = "# Image list with two lines of data per image:\n#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n"
                           "#   POINTS2D[] as (X, Y, POINT3D_ID)\n# Number of images: " + std::to_string(kept.size()) + "\n";
  char line[512];
  for (size_t i : kept) {
    const CameraRecord& p = cameras[i];
    const Intrinsics k = CameraIntrinsics(p);
    std::snprintf(line, sizeof(line), "%zu PINHOLE %d %d %.12g %.12g %.12g %.12g\n", i + 1, p.width, p.height, k.fx, k.fy, k.cx, k.cy);
    cameras_txt += line;
    const Rigid3 cam_from_world = geometry::PoseEncodingToExtrinsics(p.pose_enc);
    const std::array<double, 4> q = geometry::RotationToQuaternion(cam_from_world.R);  // x, y, z, w
    std::snprintf(line, sizeof(line), "%zu %.12f %.12f %.12f %.12f %.12f %.12f %.12f %zu %s\n\n", i + 1, q[3], q[0], q[1], q[2],
                  cam_from_world.t[0], cam_from_world.t[1], cam_from_world.t[2], i + 1, ColmapImageName(p.index).c_str());
    images_txt += line;
  }
  std::string points_txt = "# 3D point list with one line of data per point:\n#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as "
                           "(IMAGE_ID, POINT2D_IDX)\n# Number of points: " + std::to_string(cloud.size()) + "\n";
  points_txt.reserve(points_txt.size() + cloud.size() * 64);
  for (size_t i = 0; i < cloud.size(); ++i) {
    std::snprintf(line, sizeof(line), "%zu %.7g %.7g %.7g %d %d %d 0\n", i + 1, cloud.xyz[3 * i], cloud.xyz[3 * i + 1],
                  cloud.xyz[3 * i + 2], cloud.rgb[3 * i], cloud.rgb[3 * i + 1], cloud.rgb[3 * i + 2]);
    points_txt += line;
  }
  WriteTextAtomically(sparse / "cameras.txt", cameras_txt);
  WriteTextAtomically(sparse / "images.txt", images_txt);
  WriteTextAtomically(sparse / "points3D.txt", points_txt);
  return left_out;
}

std::vector<int64_t> WriteTransformsJson(const fs::path& path, const std::vector<CameraRecord>& cameras, const std::string& image_dir) {
  nlohmann::json frames = nlohmann::json::array(), doc;
  std::vector<int64_t> left_out;
  for (const CameraRecord& p : cameras) {
    const Intrinsics k = CameraIntrinsics(p);
    if (!(std::isfinite(k.fx) && std::isfinite(k.fy) && k.fx > 0 && k.fy > 0)) {
      left_out.push_back(p.index);
      continue;
    }
    const Rigid3 c2w = WorldFromCam(p);  // OpenCV camera axes
    nlohmann::json m = nlohmann::json::array();
    for (int r = 0; r < 3; ++r)  // columns x, -y, -z: OpenGL camera axes
      m.push_back({c2w.R[3 * r], -c2w.R[3 * r + 1], -c2w.R[3 * r + 2], c2w.t[r]});
    m.push_back({0.0, 0.0, 0.0, 1.0});
    nlohmann::json frame = {{"file_path", image_dir + "/" + ColmapImageName(p.index)}, {"transform_matrix", m},
                            {"fl_x", k.fx}, {"fl_y", k.fy}, {"cx", k.cx}, {"cy", k.cy}, {"w", p.width}, {"h", p.height},
                            {"timestamp", p.timestamp}};
    if (frames.empty()) {
      doc = {{"camera_model", "PINHOLE"}, {"fl_x", k.fx}, {"fl_y", k.fy}, {"cx", k.cx}, {"cy", k.cy}, {"w", p.width}, {"h", p.height},
             {"camera_angle_x", 2.0 * std::atan(0.5 * p.width / k.fx)}};
    }
    frames.push_back(frame);
  }
  if (frames.empty()) throw Error(path.string() + ": expected at least one camera with finite, positive focal lengths, found none");
  doc["frames"] = frames;
  WriteTextAtomically(path, doc.dump(2) + "\n");
  return left_out;
}

void WriteCloudPreview(const fs::path& path, const PointCloud& cloud, const std::vector<CameraRecord>& cameras, int width,
                       int height) {
#ifndef STREAMRECON_HAVE_OPENCV
  (void)path, (void)cloud, (void)cameras, (void)width, (void)height;
  throw Error("writing " + path.string() + " needs OpenCV, but this build has none; install libopencv-dev and rebuild");
#else
  if (cameras.empty()) throw Error("cloud preview " + path.string() + ": expected at least one camera, found none");
  if (width < 16 || height < 16) throw Error("cloud preview " + path.string() + ": expected a size of at least 16x16");
  using V3 = std::array<double, 3>;
  auto sub = [](const V3& a, const V3& b) { return V3{a[0] - b[0], a[1] - b[1], a[2] - b[2]}; };
  auto dot = [](const V3& a, const V3& b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; };
  auto unit = [&](const V3& a) {
    const double n = std::sqrt(dot(a, a));
    return n > 0 ? V3{a[0] / n, a[1] / n, a[2] / n} : V3{0, 0, 1};
  };
  auto cross = [](const V3& a, const V3& b) { return V3{a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]}; };
  const Rigid3 first = WorldFromCam(cameras.front());
  const V3 forward{first.R[2], first.R[5], first.R[8]}, down{first.R[1], first.R[4], first.R[7]};
  // Look at the median point from behind and above the first camera, far enough to see most points.
  V3 centre{first.t[0], first.t[1], first.t[2]};
  double reach = 1.0;
  if (cloud.size() > 0) {
    for (int k = 0; k < 3; ++k) {
      std::vector<float> c(cloud.size());
      for (size_t i = 0; i < cloud.size(); ++i) c[i] = cloud.xyz[3 * i + k];
      std::nth_element(c.begin(), c.begin() + c.size() / 2, c.end());
      centre[k] = c[c.size() / 2];
    }
    std::vector<float> distance(cloud.size());
    for (size_t i = 0; i < cloud.size(); ++i) {
      const V3 d = sub({cloud.xyz[3 * i], cloud.xyz[3 * i + 1], cloud.xyz[3 * i + 2]}, centre);
      distance[i] = static_cast<float>(std::sqrt(dot(d, d)));
    }
    const size_t q = distance.size() * 9 / 10;
    std::nth_element(distance.begin(), distance.begin() + q, distance.end());
    reach = std::max(1e-6, static_cast<double>(distance[q]));
  }
  // The cameras' path must fit too.
  for (const CameraRecord& c : cameras) {
    const Rigid3 T = WorldFromCam(c);
    const V3 d = sub({T.t[0], T.t[1], T.t[2]}, centre);
    reach = std::max(reach, std::sqrt(dot(d, d)));
  }
  const V3 eye{centre[0] - forward[0] * 2.2 * reach - down[0] * 1.1 * reach, centre[1] - forward[1] * 2.2 * reach - down[1] * 1.1 * reach,
               centre[2] - forward[2] * 2.2 * reach - down[2] * 1.1 * reach};
  // OpenCV axes for the view: z towards the centre, x right (down x z), y down.
  const V3 z = unit(sub(centre, eye)), x = unit(cross(down, z)), y = cross(z, x);
  const double f = 0.5 * width / std::tan(0.5 * 55.0 * 3.14159265358979323846 / 180.0);
  cv::Mat image(height, width, CV_8UC3, cv::Scalar(34, 26, 24));
  std::vector<float> zbuffer(static_cast<size_t>(width) * height, std::numeric_limits<float>::infinity());
  auto project = [&](const V3& p, int* u, int* v, double* depth) {
    const V3 d = sub(p, eye);
    *depth = dot(d, z);
    if (*depth <= 1e-9) return false;
    *u = static_cast<int>(std::lround(f * dot(d, x) / *depth + width / 2.0));
    *v = static_cast<int>(std::lround(f * dot(d, y) / *depth + height / 2.0));
    return true;
  };
  for (size_t i = 0; i < cloud.size(); ++i) {
    int u, v;
    double depth;
    if (!project({cloud.xyz[3 * i], cloud.xyz[3 * i + 1], cloud.xyz[3 * i + 2]}, &u, &v, &depth)) continue;
    for (int dv = 0; dv < 2; ++dv)
      for (int du = 0; du < 2; ++du) {
        const int uu = u + du, vv = v + dv;
        if (uu < 0 || uu >= width || vv < 0 || vv >= height) continue;
        float& zb = zbuffer[static_cast<size_t>(vv) * width + uu];
        if (depth >= zb) continue;
        zb = static_cast<float>(depth);
        image.at<cv::Vec3b>(vv, uu) = cv::Vec3b(cloud.rgb[3 * i + 2], cloud.rgb[3 * i + 1], cloud.rgb[3 * i]);
      }
  }
  // The cameras' path on top.
  std::vector<cv::Point> trail;
  for (const CameraRecord& c : cameras) {
    const Rigid3 T = WorldFromCam(c);
    int u, v;
    double depth;
    if (project({T.t[0], T.t[1], T.t[2]}, &u, &v, &depth)) trail.emplace_back(u, v);
  }
  if (trail.size() > 1) cv::polylines(image, trail, false, cv::Scalar(255, 255, 255), 2, cv::LINE_AA);
  for (const cv::Point& p : trail) cv::circle(image, p, 3, cv::Scalar(255, 255, 255), cv::FILLED, cv::LINE_AA);
  WriteImage(path, image);
#endif
}

}  // namespace streamrecon
