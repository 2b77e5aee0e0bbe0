// Exporters and atomic writes: TUM trajectory, cameras.json, point-cloud collection and PLY,
// depth maps, and what failed writes leave behind.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/errors.h"
#include "core/export.h"
#include "core/geometry.h"
#include "tests/test_util.h"

#ifdef STREAMRECON_HAVE_OPEN3D
#include <open3d/geometry/PointCloud.h>
#include <open3d/io/PointCloudIO.h>
#endif

#ifdef STREAMRECON_HAVE_OPENCV
#include <opencv2/imgcodecs.hpp>
#endif

namespace streamrecon {
namespace {

namespace fs = std::filesystem;
using streamrecon::testing::ScratchDir;

constexpr double kPi = 3.14159265358979323846;

// A rotation of `angle` about z, then a translation.
Rigid3 RotationZ(double angle, const std::array<double, 3>& t) {
  Rigid3 T;
  T.R = {std::cos(angle), -std::sin(angle), 0, std::sin(angle), std::cos(angle), 0, 0, 0, 1};
  T.t = t;
  return T;
}

// A width x height prediction of the plane z = 2 (camera coordinates) seen from world_from_cam,
// with fx = fy = width. Confidences cycle through 1, 1.5, 2, 2.5 along each row; the colour of
// pixel (u, v) is (u, v, index).
FramePrediction MakePrediction(int64_t index, int width, int height,
                               const Rigid3& world_from_cam = Rigid3{}) {
  FramePrediction p;
  p.index = index;
  p.width = width;
  p.height = height;
  const Intrinsics K{double(width), double(width), width / 2.0, height / 2.0};
  p.pose_enc = geometry::ExtrinsicsIntrinsicsToPoseEncoding(geometry::Inverse(world_from_cam), K,
                                                            width, height);
  p.depth.assign(static_cast<size_t>(width) * height, 2.0f);
  p.world_points = geometry::UnprojectDepth(p.depth, width, height, K, world_from_cam);
  p.image.width = width;
  p.image.height = height;
  for (int v = 0; v < height; ++v) {
    for (int u = 0; u < width; ++u) {
      const float conf = 1.0f + 0.5f * static_cast<float>(u % 4);
      p.depth_conf.push_back(conf);
      p.world_points_conf.push_back(conf);
      p.image.data.insert(p.image.data.end(), {uint8_t(u), uint8_t(v), uint8_t(index)});
    }
  }
  return p;
}

std::string ReadText(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

std::vector<fs::path> Listing(const fs::path& folder) {
  std::vector<fs::path> names;
  for (const auto& entry : fs::directory_iterator(folder)) names.push_back(entry.path().filename());
  return names;
}

TEST(Export, TumTrajectoryHasOneLinePerFrameOfWorldFromCam) {
  const fs::path dir = ScratchDir("export_tum");
  const std::vector<Rigid3> world_from_cam = {Rigid3{}, RotationZ(kPi / 3, {1.0, -2.0, 3.5})};
  std::vector<FramePrediction> predictions = {MakePrediction(5, 8, 6, world_from_cam[0]),
                                              MakePrediction(9, 8, 6, world_from_cam[1])};
  // Timestamps come from the source (e.g. video time), not from the delivery index.
  predictions[0].timestamp = 12.5;
  predictions[1].timestamp = 13.0;
  // Expected quaternions [x, y, z, w] of the two rotations about z.
  const std::vector<std::array<double, 4>> q = {{0, 0, 0, 1},
                                                {0, 0, std::sin(kPi / 6), std::cos(kPi / 6)}};

  for (const bool own_timestamps : {false, true}) {
    const std::vector<double> timestamps =
        own_timestamps ? std::vector<double>{0.5, 1.25} : std::vector<double>{};
    WriteTrajectoryTum(dir / "trajectory.txt", CameraRecords(predictions), timestamps);
    std::istringstream lines(ReadText(dir / "trajectory.txt"));
    std::string line;
    ASSERT_TRUE(std::getline(lines, line));
    EXPECT_EQ(line.rfind("#", 0), 0u) << line;
    for (size_t i = 0; i < 2; ++i) {
      ASSERT_TRUE(std::getline(lines, line));
      std::istringstream fields(line);
      double v[8];
      for (double& value : v) ASSERT_TRUE(fields >> value) << line;
      EXPECT_NEAR(v[0], own_timestamps ? timestamps[i] : predictions[i].timestamp, 1e-9);
      for (int k = 0; k < 3; ++k) EXPECT_NEAR(v[1 + k], world_from_cam[i].t[k], 1e-9) << line;
      for (int k = 0; k < 4; ++k) EXPECT_NEAR(v[4 + k], q[i][k], 1e-9) << line;
    }
    EXPECT_FALSE(std::getline(lines, line));
  }
  EXPECT_THROW(WriteTrajectoryTum(dir / "bad.txt", CameraRecords(predictions), {1.0}), Error);
  EXPECT_FALSE(fs::exists(dir / "bad.txt"));
}

TEST(Export, CamerasJsonRoundTripsIntrinsicsAndPoses) {
  const fs::path dir = ScratchDir("export_cameras");
  std::vector<FramePrediction> predictions = {
      MakePrediction(0, 28, 14), MakePrediction(1, 28, 14, RotationZ(0.4, {0.5, 0.0, -1.0}))};
  predictions[0].source_name = "IMG_0007.jpg";
  predictions[1].source_name = "IMG_0009.jpg";
  predictions[1].timestamp = 2.0;
  WriteCamerasJson(dir / "cameras.json", CameraRecords(predictions));
  const nlohmann::json root = nlohmann::json::parse(ReadText(dir / "cameras.json"));
  ASSERT_EQ(root.at("frames").size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    const nlohmann::json& frame = root["frames"][i];
    EXPECT_EQ(frame.at("index").get<int64_t>(), predictions[i].index);
    EXPECT_EQ(frame.at("source").get<std::string>(), predictions[i].source_name);
    EXPECT_EQ(frame.at("timestamp").get<double>(), predictions[i].timestamp);
    EXPECT_EQ(frame.at("width").get<int>(), 28);
    EXPECT_EQ(frame.at("height").get<int>(), 14);
    EXPECT_NEAR(frame.at("fx").get<double>(), 28.0, 1e-9);
    EXPECT_NEAR(frame.at("fy").get<double>(), 28.0, 1e-9);
    EXPECT_NEAR(frame.at("cx").get<double>(), 14.0, 1e-12);
    EXPECT_NEAR(frame.at("cy").get<double>(), 7.0, 1e-12);
    EXPECT_EQ(frame.at("pose_enc").get<std::vector<double>>().size(), 9u);
    const auto cam_from_world = frame.at("cam_from_world").get<std::vector<std::vector<double>>>();
    const auto world_from_cam = frame.at("world_from_cam").get<std::vector<std::vector<double>>>();
    ASSERT_EQ(cam_from_world.size(), 4u);
    ASSERT_EQ(world_from_cam.size(), 4u);
    for (int r = 0; r < 4; ++r) {
      for (int c = 0; c < 4; ++c) {
        double product = 0;
        for (int k = 0; k < 4; ++k) product += cam_from_world[r].at(k) * world_from_cam[k].at(c);
        EXPECT_NEAR(product, r == c ? 1.0 : 0.0, 1e-12);
      }
    }
  }
}

TEST(Export, CollectPointsFiltersByConfidenceAndStride) {
  // 4 x 3 pixels; confidences per row 1, 1.5, 2, 2.5.
  std::vector<FramePrediction> predictions = {MakePrediction(0, 4, 3)};
  PointCloudOptions options;
  EXPECT_EQ(CollectPoints(predictions, options).size(), 6u);  // > 1.5: two per row
  options.conf_threshold = 1.0f;
  EXPECT_EQ(CollectPoints(predictions, options).size(), 9u);  // 1.0 itself is not above 1.0
  options.conf_threshold = 0.0f;
  EXPECT_EQ(CollectPoints(predictions, options).size(), 12u);
  options.stride = 2;  // columns 0, 2 of rows 0, 2
  EXPECT_EQ(CollectPoints(predictions, options).size(), 4u);
  options.conf_threshold = 1.5f;
  EXPECT_EQ(CollectPoints(predictions, options).size(), 2u);

  predictions.push_back(MakePrediction(1, 4, 3));
  predictions[1].world_points[(1 * 4 + 3) * 3 + 1] = NAN;  // pixel (3, 1), confident
  options = PointCloudOptions{};
  const PointCloud cloud = CollectPoints(predictions, options);
  ASSERT_EQ(cloud.size(), 11u);
  ASSERT_EQ(cloud.rgb.size(), cloud.xyz.size());
  // The first point kept is pixel (2, 0) of frame 0: on the plane z = 2 at x = (2 - 2) * 2 / 4.
  EXPECT_EQ(cloud.rgb[0], 2);
  EXPECT_EQ(cloud.rgb[1], 0);
  EXPECT_EQ(cloud.rgb[2], 0);
  EXPECT_FLOAT_EQ(cloud.xyz[0], 0.0f);
  EXPECT_FLOAT_EQ(cloud.xyz[2], 2.0f);
}

TEST(Export, CollectPointsFromDepthMatchesThePointMap) {
  const std::vector<FramePrediction> predictions = {
      MakePrediction(3, 12, 8, RotationZ(0.7, {0.2, 0.3, -0.4}))};
  PointCloudOptions options;
  const PointCloud from_points = CollectPoints(predictions, options);
  options.use_depth = true;
  const PointCloud from_depth = CollectPoints(predictions, options);
  ASSERT_EQ(from_depth.size(), from_points.size());
  for (size_t i = 0; i < from_points.xyz.size(); ++i) {
    EXPECT_NEAR(from_depth.xyz[i], from_points.xyz[i], 1e-5);
  }
  EXPECT_EQ(from_depth.rgb, from_points.rgb);
}

TEST(Export, CollectPointsVoxelDownsampleAverages) {
  // A 4 x 1 strip at x = 10 + (u - 2) / 2 = 9, 9.5, 10, 10.5, y = 9.75, z = 2; colours (u, 0, 0).
  const std::vector<FramePrediction> predictions = {
      MakePrediction(0, 4, 1, RotationZ(0.0, {10.0, 10.0, 0.0}))};
  PointCloudOptions options;
  options.conf_threshold = 0.0f;
  options.voxel_size = 100.0;  // one voxel
  const PointCloud cloud = CollectPoints(predictions, options);
  ASSERT_EQ(cloud.size(), 1u);
  EXPECT_NEAR(cloud.xyz[0], 9.75f, 1e-5);
  EXPECT_NEAR(cloud.xyz[1], 9.75f, 1e-5);
  EXPECT_NEAR(cloud.xyz[2], 2.0f, 1e-5);
  EXPECT_EQ(cloud.rgb[0], 2);  // mean 1.5, rounded
  EXPECT_EQ(cloud.rgb[1], 0);

  options.voxel_size = 1.0;  // x in [9, 10) and [10, 11)
  const PointCloud two = CollectPoints(predictions, options);
  ASSERT_EQ(two.size(), 2u);
  EXPECT_NEAR(two.xyz[0], 9.25f, 1e-5);
  EXPECT_NEAR(two.xyz[3], 10.25f, 1e-5);
}

TEST(Export, CollectPointsRejectsBadOptionsAndInput) {
  const std::vector<FramePrediction> predictions = {MakePrediction(0, 4, 3)};
  PointCloudOptions options;
  options.stride = 0;
  EXPECT_THROW(CollectPoints(predictions, options), OptionError);
  options = PointCloudOptions{};
  options.voxel_size = -1.0;
  EXPECT_THROW(CollectPoints(predictions, options), OptionError);
  options = PointCloudOptions{};
  options.conf_threshold = NAN;
  EXPECT_THROW(CollectPoints(predictions, options), OptionError);

  std::vector<FramePrediction> bad = predictions;
  bad[0].world_points.pop_back();
  EXPECT_THROW(CollectPoints(bad, PointCloudOptions{}), Error);
  bad = predictions;
  bad[0].image.width = 5;
  EXPECT_THROW(CollectPoints(bad, PointCloudOptions{}), Error);
}

#ifdef STREAMRECON_HAVE_OPEN3D
TEST(Export, PlyRoundTripsThroughOpen3D) {
  const fs::path dir = ScratchDir("export_ply");
  PointCloudOptions options;
  options.conf_threshold = 0.0f;
  const PointCloud cloud = CollectPoints(
      {MakePrediction(0, 6, 5), MakePrediction(1, 6, 5, RotationZ(1.0, {0, 1, 2}))}, options);
  WritePointCloudPly(dir / "points.ply", cloud);
  EXPECT_EQ(Listing(dir), std::vector<fs::path>{"points.ply"});
  EXPECT_NE(ReadText(dir / "points.ply").find("format binary_little_endian"), std::string::npos);

  open3d::geometry::PointCloud read;
  ASSERT_TRUE(open3d::io::ReadPointCloud((dir / "points.ply").string(), read));
  ASSERT_EQ(read.points_.size(), cloud.size());
  ASSERT_EQ(read.colors_.size(), cloud.size());
  for (size_t i = 0; i < cloud.size(); ++i) {
    for (int k = 0; k < 3; ++k) {
      EXPECT_NEAR(read.points_[i](k), cloud.xyz[i * 3 + k], 1e-6);
      EXPECT_EQ(std::lround(read.colors_[i](k) * 255.0), cloud.rgb[i * 3 + k]);
    }
  }
}

TEST(Export, EmptyPlyIsAValidFileWithNoVertices) {
  const fs::path dir = ScratchDir("export_ply_empty");
  WritePointCloudPly(dir / "empty.ply", PointCloud{});
  const std::string text = ReadText(dir / "empty.ply");
  EXPECT_EQ(text.rfind("ply\n", 0), 0u);
  EXPECT_NE(text.find("element vertex 0\n"), std::string::npos);
  EXPECT_NE(text.find("end_header\n"), std::string::npos);
}

TEST(Export, PlyInAMissingFolderIsAFileError) {
  PointCloud cloud;
  cloud.xyz = {1, 2, 3};
  cloud.rgb = {4, 5, 6};
  EXPECT_THROW(WritePointCloudPly("/proc/streamrecon_nope/x.ply", cloud), FileError);
  cloud.rgb.pop_back();
  EXPECT_THROW(WritePointCloudPly(ScratchDir("export_ply_bad") / "x.ply", cloud), Error);
}
#else
TEST(Export, PlyWithoutOpen3DIsAClearError) {
  EXPECT_THROW(WritePointCloudPly(ScratchDir("export_ply") / "points.ply", PointCloud{}), Error);
}
#endif

#ifdef STREAMRECON_HAVE_OPENCV
TEST(Export, DepthMapsAreWrittenAsFloatTiffAndPreviewPng) {
  const fs::path dir = ScratchDir("export_depth") / "depth";  // created by WriteDepthMaps
  std::vector<FramePrediction> predictions = {MakePrediction(0, 10, 6), MakePrediction(12, 10, 6)};
  for (size_t i = 0; i < predictions[1].depth.size(); ++i) predictions[1].depth[i] = 0.1f * i;
  predictions[1].depth[7] = NAN;
  WriteDepthMaps(dir, predictions);
  EXPECT_EQ(Listing(dir).size(), 4u);
  for (const FramePrediction& p : predictions) {
    char stem[32];
    std::snprintf(stem, sizeof(stem), "depth_%06lld", static_cast<long long>(p.index));
    const cv::Mat depth = cv::imread((dir / (std::string(stem) + ".tiff")).string(),
                                     cv::IMREAD_UNCHANGED);
    ASSERT_EQ(depth.type(), CV_32FC1) << stem;
    ASSERT_EQ(depth.cols, p.width);
    ASSERT_EQ(depth.rows, p.height);
    for (size_t i = 0; i < p.depth.size(); ++i) {
      const float read = depth.at<float>(static_cast<int>(i));
      if (std::isnan(p.depth[i])) {
        EXPECT_TRUE(std::isnan(read));
      } else {
        EXPECT_EQ(read, p.depth[i]);
      }
    }
    const cv::Mat preview = cv::imread((dir / (std::string(stem) + ".png")).string(),
                                       cv::IMREAD_UNCHANGED);
    ASSERT_EQ(preview.type(), CV_8UC3) << stem;
    EXPECT_EQ(preview.cols, p.width);
    EXPECT_EQ(preview.rows, p.height);
  }
}
#else
TEST(Export, DepthMapsWithoutOpenCVAreAClearError) {
  EXPECT_THROW(WriteDepthMaps(ScratchDir("export_depth"), {MakePrediction(0, 4, 3)}), Error);
}
#endif

// A frame whose predicted focal lengths are not finite and positive (a zero or negative field of
// view) is left out of the COLMAP model and reported, instead of writing 'inf' or a negative focal.
TEST(Export, ColmapLeavesOutInvalidIntrinsics) {
  const fs::path dir = ScratchDir("export_colmap_invalid");
  std::vector<FramePrediction> predictions = {MakePrediction(0, 28, 14, Rigid3{}), MakePrediction(1, 28, 14, Rigid3{}),
                                              MakePrediction(2, 28, 14, Rigid3{})};
  predictions[1].pose_enc[8] = 0.0;   // fov_w 0: fx infinite
  predictions[2].pose_enc[7] = -0.5;  // fov_h negative: fy negative
  PointCloudOptions options;
  options.conf_threshold = 0;
  const std::vector<int64_t> left_out = WriteColmapSparse(dir, CameraRecords(predictions), CollectPoints(predictions, options));
  EXPECT_EQ(left_out, (std::vector<int64_t>{1, 2}));
  const std::string cameras = ReadText(dir / "sparse/0/cameras.txt");
  EXPECT_NE(cameras.find("# Number of cameras: 1"), std::string::npos) << cameras;
  EXPECT_EQ(cameras.find("inf"), std::string::npos) << cameras;
  EXPECT_NE(ReadText(dir / "sparse/0/images.txt").find("# Number of images: 1"), std::string::npos);
}

// A known camera replaces the predicted one: the cloud is the depth unprojected with it (also
// without --points-from-depth), and cameras.json, COLMAP and transforms.json carry it, with the
// prediction beside it in cameras.json.
TEST(Export, KnownIntrinsicsRescaleTheCloudAndReachEveryExport) {
  const fs::path dir = ScratchDir("export_known_intrinsics");
  FramePrediction p = MakePrediction(0, 8, 6);  // predicted fx = 8 (identity pose, depth 2)
  p.known_intrinsics = Intrinsics{16.0, 12.0, 3.0, 2.5};
  PointCloudOptions options;
  options.conf_threshold = 0;
  const PointCloud cloud = CollectPoints({p}, options);
  ASSERT_EQ(cloud.size(), 48u);
  for (size_t i = 0; i < cloud.size(); ++i) {  // pixel (u, v) in row-major order
    const int u = static_cast<int>(i % 8), v = static_cast<int>(i / 8);
    EXPECT_NEAR(cloud.xyz[3 * i], (u - 3.0) * 2.0 / 16.0, 1e-6) << i;
    EXPECT_NEAR(cloud.xyz[3 * i + 1], (v - 2.5) * 2.0 / 12.0, 1e-6) << i;
    EXPECT_NEAR(cloud.xyz[3 * i + 2], 2.0, 1e-6);
  }
  WriteCamerasJson(dir / "cameras.json", CameraRecords({p}));
  const nlohmann::json cams = nlohmann::json::parse(ReadText(dir / "cameras.json"));
  EXPECT_EQ(cams["frames"][0]["fx"], 16.0);
  EXPECT_EQ(cams["frames"][0]["cy"], 2.5);
  EXPECT_EQ(cams["frames"][0]["intrinsics_source"], "given");
  EXPECT_NEAR(cams["frames"][0]["predicted"]["fx"].get<double>(), 8.0, 1e-9);
  WriteTransformsJson(dir / "transforms.json", CameraRecords({p}), "images");
  EXPECT_EQ(nlohmann::json::parse(ReadText(dir / "transforms.json"))["frames"][0]["fl_y"], 12.0);
  WriteColmapSparse(dir / "colmap", CameraRecords({p}), cloud);
  EXPECT_NE(ReadText(dir / "colmap/sparse/0/cameras.txt").find("1 PINHOLE 8 6 16 12 3 2.5"), std::string::npos);
}

// transforms.json in nerfstudio's convention: file paths, per-frame intrinsics, and a
// camera-to-world whose axes are OpenGL's (x right, y up, looking down -z). Shown by projection: a
// point in front of each camera lands on the same pixel through the written matrix and intrinsics
// (the GL way: u = cx + fx x / -z, v = cy - fy y / -z) as through our own camera (OpenCV), and the
// matrix flips back to our world_from_cam exactly. A frame with an invalid focal is left out.
TEST(Export, TransformsJsonFollowsTheNerfstudioConvention) {
  const fs::path dir = ScratchDir("export_transforms");
  const std::vector<Rigid3> world_from_cam = {Rigid3{}, RotationZ(0.7, {0.5, -1.0, 2.0})};
  std::vector<FramePrediction> predictions = {MakePrediction(3, 28, 14, world_from_cam[0]), MakePrediction(4, 28, 14, world_from_cam[1]),
                                              MakePrediction(5, 28, 14, world_from_cam[1])};
  predictions[0].pose_enc[7] = 0.9;  // fov_h: fy differs from fx
  predictions[2].pose_enc[8] = 0.0;  // fov_w 0: fx infinite, left out
  const std::vector<int64_t> left_out = WriteTransformsJson(dir / "transforms.json", CameraRecords(predictions), "colmap/images");
  EXPECT_EQ(left_out, (std::vector<int64_t>{5}));
  const nlohmann::json doc = nlohmann::json::parse(ReadText(dir / "transforms.json"));
  EXPECT_EQ(doc.at("camera_model"), "PINHOLE");
  ASSERT_EQ(doc.at("frames").size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    const nlohmann::json& f = doc["frames"][i];
    EXPECT_EQ(f.at("file_path"), "colmap/images/frame_00000" + std::to_string(predictions[i].index) + ".png");
    const Intrinsics k = geometry::PoseEncodingToIntrinsics(predictions[i].pose_enc, 28, 14);
    const double fx = f.at("fl_x"), fy = f.at("fl_y"), cx = f.at("cx"), cy = f.at("cy");
    EXPECT_DOUBLE_EQ(fx, k.fx);
    EXPECT_DOUBLE_EQ(fy, k.fy);
    EXPECT_EQ(f.at("w"), 28);
    EXPECT_EQ(f.at("h"), 14);
    double M[4][4];
    for (int r = 0; r < 4; ++r)
      for (int c = 0; c < 4; ++c) M[r][c] = f.at("transform_matrix")[r][c];
    EXPECT_EQ(M[3][0], 0.0);
    EXPECT_EQ(M[3][3], 1.0);
    // Flipping y and z back gives our world_from_cam.
    const Rigid3& T = world_from_cam[i];
    for (int r = 0; r < 3; ++r) {
      EXPECT_NEAR(M[r][0], T.R[3 * r], 1e-12);
      EXPECT_NEAR(-M[r][1], T.R[3 * r + 1], 1e-12);
      EXPECT_NEAR(-M[r][2], T.R[3 * r + 2], 1e-12);
      EXPECT_NEAR(M[r][3], T.t[r], 1e-12);
    }
    // A point 2 m in front of the camera, off-centre: the same pixel both ways.
    const std::array<double, 3> in_cam{0.3, -0.2, 2.0};
    std::array<double, 3> world{};
    for (int r = 0; r < 3; ++r) world[r] = T.R[3 * r] * in_cam[0] + T.R[3 * r + 1] * in_cam[1] + T.R[3 * r + 2] * in_cam[2] + T.t[r];
    const double u_cv = k.fx * in_cam[0] / in_cam[2] + k.cx, v_cv = k.fy * in_cam[1] / in_cam[2] + k.cy;
    std::array<double, 3> gl{};  // M^-1 world = R^T (world - t)
    for (int c = 0; c < 3; ++c)
      for (int r = 0; r < 3; ++r) gl[c] += M[r][c] * (world[r] - M[r][3]);
    ASSERT_LT(gl[2], 0.0) << "in front of an OpenGL camera means negative z";
    EXPECT_NEAR(cx + fx * gl[0] / -gl[2], u_cv, 1e-9);
    EXPECT_NEAR(cy - fy * gl[1] / -gl[2], v_cv, 1e-9);
  }
  EXPECT_NEAR(doc.at("camera_angle_x").get<double>(), 2.0 * std::atan(14.0 / doc.at("fl_x").get<double>()), 1e-12);
}

// The COLMAP text model reads back: intrinsics, cam_from_world as (QW, QX, QY, QZ, T), the
// points with their colours, and (with OpenCV) the frames as PNGs named in images.txt.
TEST(Export, ColmapModelRoundTrips) {
  const fs::path dir = ScratchDir("export_colmap");
  const std::vector<Rigid3> world_from_cam = {Rigid3{}, RotationZ(0.7, {0.5, -1.0, 2.0})};
  const std::vector<FramePrediction> predictions = {MakePrediction(3, 28, 14, world_from_cam[0]),
                                                    MakePrediction(4, 28, 14, world_from_cam[1])};
  PointCloudOptions options;
  options.conf_threshold = 0;
  const PointCloud cloud = CollectPoints(predictions, options);
  if (CanWriteImages()) {
    for (const FramePrediction& p : predictions) WriteColmapImage(dir, p);
  } else {
    EXPECT_THROW(WriteColmapImage(dir, predictions[0]), Error);
  }
  WriteColmapSparse(dir, CameraRecords(predictions), cloud);

  auto data_lines = [&](const fs::path& file) {
    std::vector<std::string> lines;
    std::istringstream in(ReadText(file));
    for (std::string line; std::getline(in, line);)
      if (line.empty() || line[0] != '#') lines.push_back(line);
    return lines;
  };
  const std::vector<std::string> cameras = data_lines(dir / "sparse/0/cameras.txt");
  ASSERT_EQ(cameras.size(), 2u);
  for (const std::string& line : cameras) {
    std::istringstream f(line);
    int id, w, h;
    std::string model;
    double fx, fy, cx, cy;
    ASSERT_TRUE(f >> id >> model >> w >> h >> fx >> fy >> cx >> cy) << line;
    EXPECT_EQ(model, "PINHOLE");
    EXPECT_EQ(w, 28);
    EXPECT_EQ(h, 14);
    EXPECT_NEAR(fx, 28.0, 1e-6);
    EXPECT_NEAR(fy, 28.0, 1e-6);
    EXPECT_NEAR(cx, 14.0, 1e-9);
    EXPECT_NEAR(cy, 7.0, 1e-9);
  }
  // images.txt: two lines per image, the second (2D points) empty.
  std::vector<std::string> images;
  {
    std::istringstream in(ReadText(dir / "sparse/0/images.txt"));
    for (std::string line; std::getline(in, line);)
      if (line.empty() || line[0] != '#') images.push_back(line);
  }
  ASSERT_EQ(images.size(), 4u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_TRUE(images[2 * i + 1].empty()) << images[2 * i + 1];
    std::istringstream f(images[2 * i]);
    int id, camera;
    double qw, qx, qy, qz, tx, ty, tz;
    std::string name;
    ASSERT_TRUE(f >> id >> qw >> qx >> qy >> qz >> tx >> ty >> tz >> camera >> name) << images[2 * i];
    EXPECT_EQ(id, static_cast<int>(i + 1));
    EXPECT_EQ(camera, static_cast<int>(i + 1));
    EXPECT_EQ(name, "frame_00000" + std::to_string(predictions[i].index) + ".png");
    const Rigid3 expected = geometry::Inverse(world_from_cam[i]);
    const std::array<double, 9> R = geometry::QuaternionToRotation({qx, qy, qz, qw});
    for (int k = 0; k < 9; ++k) EXPECT_NEAR(R[k], expected.R[k], 1e-9) << "frame " << i;
    EXPECT_NEAR(tx, expected.t[0], 1e-9);
    EXPECT_NEAR(ty, expected.t[1], 1e-9);
    EXPECT_NEAR(tz, expected.t[2], 1e-9);
#ifdef STREAMRECON_HAVE_OPENCV
    const cv::Mat bgr = cv::imread((dir / "images" / name).string(), cv::IMREAD_COLOR);
    ASSERT_FALSE(bgr.empty()) << name;
    ASSERT_EQ(bgr.cols, 28);
    const cv::Vec3b px = bgr.at<cv::Vec3b>(5, 9);  // (u, v) = (9, 5): RGB (9, 5, index)
    EXPECT_EQ(px[2], 9);
    EXPECT_EQ(px[1], 5);
    EXPECT_EQ(px[0], predictions[i].index);
#endif
  }
  const std::vector<std::string> points = data_lines(dir / "sparse/0/points3D.txt");
  ASSERT_EQ(points.size(), cloud.size());
  std::istringstream f(points.back());
  int64_t id;
  double x, y, z, error;
  int r, g, b;
  ASSERT_TRUE(f >> id >> x >> y >> z >> r >> g >> b >> error) << points.back();
  const size_t last = cloud.size() - 1;
  EXPECT_EQ(id, static_cast<int64_t>(cloud.size()));
  EXPECT_NEAR(x, cloud.xyz[3 * last], 1e-5);
  EXPECT_NEAR(z, cloud.xyz[3 * last + 2], 1e-5);
  EXPECT_EQ(r, cloud.rgb[3 * last]);
  EXPECT_EQ(b, cloud.rgb[3 * last + 2]);
}

// The preview shows the cloud: a PNG of the asked size with many coloured (non-background)
// pixels, and the white camera path.
TEST(Export, CloudPreviewShowsThePoints) {
  const fs::path dir = ScratchDir("export_preview");
  const std::vector<FramePrediction> predictions = {MakePrediction(0, 40, 30), MakePrediction(1, 40, 30, RotationZ(0.2, {0.3, 0, 0}))};
  PointCloudOptions options;
  options.conf_threshold = 0;
  const PointCloud cloud = CollectPoints(predictions, options);
  if (!CanWriteImages()) {
    EXPECT_THROW(WriteCloudPreview(dir / "preview.png", cloud, CameraRecords(predictions)), Error);
    return;
  }
  EXPECT_THROW(WriteCloudPreview(dir / "none.png", cloud, {}), Error);
  WriteCloudPreview(dir / "preview.png", cloud, CameraRecords(predictions), 320, 240);
#ifdef STREAMRECON_HAVE_OPENCV
  const cv::Mat image = cv::imread((dir / "preview.png").string(), cv::IMREAD_COLOR);
  ASSERT_EQ(image.cols, 320);
  ASSERT_EQ(image.rows, 240);
  int coloured = 0, white = 0;
  for (int v = 0; v < image.rows; ++v)
    for (int u = 0; u < image.cols; ++u) {
      const cv::Vec3b px = image.at<cv::Vec3b>(v, u);
      coloured += px != cv::Vec3b(34, 26, 24);
      white += px == cv::Vec3b(255, 255, 255);
    }
  EXPECT_GT(coloured, image.rows * image.cols / 20) << "the cloud covers too little of the picture";
  EXPECT_GT(white, 5) << "no camera path";
#endif
}

TEST(AtomicFile, UnwritablePlacesAreFileErrorsAndLeaveNothing) {
  const fs::path dir = ScratchDir("atomic_unwritable");
  WriteTextAtomically(dir / "file.txt", "x");
  EXPECT_THROW(WriteTextAtomically("/proc/streamrecon_nope/x.txt", "data"), FileError);
  EXPECT_THROW(WriteCamerasJson(dir / "file.txt" / "cameras.json", CameraRecords({MakePrediction(0, 4, 3)})),
               FileError);
  try {
    WriteTextAtomically(dir / "file.txt" / "x.txt", "data");
  } catch (const FileError& e) {
    EXPECT_NE(std::string(e.what()).find((dir / "file.txt").string()), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(Listing(dir), std::vector<fs::path>{"file.txt"});
  EXPECT_EQ(ReadText(dir / "file.txt"), "x");
}

TEST(AtomicFile, TemporaryIsASiblingWithTheSameExtension) {
  const fs::path dir = ScratchDir("atomic_sibling");
  fs::path seen;
  WriteFileAtomically(dir / "points.ply", [&](const fs::path& tmp) {
    seen = tmp;
    std::ofstream(tmp) << "data";
  });
  EXPECT_EQ(seen.parent_path(), dir);
  EXPECT_EQ(seen.extension(), ".ply");
  EXPECT_EQ(seen.filename().string().rfind("points.tmp-", 0), 0u) << seen;
  EXPECT_EQ(Listing(dir), std::vector<fs::path>{"points.ply"});
  EXPECT_EQ(ReadText(dir / "points.ply"), "data");
}

TEST(AtomicFile, FailedWriterKeepsTheOldFileAndRemovesTheTemporary) {
  const fs::path dir = ScratchDir("atomic_failure");
  WriteTextAtomically(dir / "out.txt", "old");
  EXPECT_THROW(WriteFileAtomically(dir / "out.txt",
                                   [](const fs::path& tmp) {
                                     std::ofstream(tmp) << "partial";
                                     throw std::runtime_error("writer failed");
                                   }),
               std::runtime_error);
  EXPECT_THROW(WriteFileAtomically(dir / "out.txt", [](const fs::path&) {}), FileError);
  EXPECT_EQ(Listing(dir), std::vector<fs::path>{"out.txt"});
  EXPECT_EQ(ReadText(dir / "out.txt"), "old");
  WriteTextAtomically(dir / "out.txt", "new");
  EXPECT_EQ(ReadText(dir / "out.txt"), "new");
}

}  // namespace
}  // namespace streamrecon
