// Plain data types that flow between the stages of the pipeline (no LibTorch here):
// frames from a source, and per-frame predictions of the model.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace streamrecon {

// An 8-bit RGB image, row-major, channels interleaved: data is [height, width, 3].
struct RgbImage {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> data;

  bool empty() const { return width <= 0 || height <= 0 || data.empty(); }
  const uint8_t* pixel(int x, int y) const { return data.data() + (static_cast<size_t>(y) * width + x) * 3; }
};

// One frame as delivered by a FrameSource.
struct Frame {
  int64_t index = 0;       // 0-based position in the stream
  double timestamp = 0.0;  // seconds; the frame index when the source has no clock
  std::string name;        // file name or "video:<index>"
  RgbImage image;
};

// Pinhole intrinsics in pixels.
struct Intrinsics {
  double fx = 0, fy = 0, cx = 0, cy = 0;
};

// A rigid transform y = R x + t with R row-major 3x3. Named by what it maps, e.g. world_from_cam.
struct Rigid3 {
  std::array<double, 9> R{1, 0, 0, 0, 1, 0, 0, 0, 1};
  std::array<double, 3> t{0, 0, 0};
};

// One processed frame's camera and provenance, without per-pixel arrays: what trajectories,
// cameras.json, COLMAP models and the viewer's frusta need, kept for every frame of a stream
// (about 170 bytes each).
struct CameraRecord {
  int64_t index = 0;        // delivery position in this run (0, 1, 2, ...)
  double timestamp = 0.0;   // the source's time of the frame in seconds: video time, or the frame's
                            // position in the input (image folders, synthetic streams)
  std::string source_name;  // the source's name of the frame: its file name, or "video:N"
  int height = 0;
  int width = 0;
  // Pose encoding: t_xyz, quaternion xyzw, fov_h, fov_w (camera_from_world, OpenCV axes).
  std::array<double, 9> pose_enc{};
  // The user's camera (--intrinsics) at the model's input size, when known: it replaces the
  // predicted intrinsics in the point cloud (depth unprojected with it) and in every export.
  std::optional<Intrinsics> known_intrinsics;
  double model_ms = 0.0;    // wall time of the model step
};

// What the model predicts for one frame, at the model's input resolution.
struct FramePrediction : CameraRecord {
  std::vector<float> depth;              // [H, W]
  std::vector<float> depth_conf;         // [H, W]
  std::vector<float> world_points;       // [H, W, 3], in the first camera's frame
  std::vector<float> world_points_conf;  // [H, W]
  RgbImage image;                        // the model's input frame, [H, W, 3]
};

}  // namespace streamrecon
