// Point clouds from the model's predictions: which pixels become points (confidence, stride,
// finite values), from the point map or the unprojected depth, optionally merged on a voxel grid.
// Used by the exporters (export.h) and the streaming accumulator (accumulator.h); no file I/O.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "core/types.h"

namespace streamrecon {

// A coloured point cloud: xyz is [N, 3] float32, rgb is [N, 3] uint8.
struct PointCloud {
  std::vector<float> xyz;
  std::vector<uint8_t> rgb;

  size_t size() const { return xyz.size() / 3; }
};

// How CollectPoints turns predictions into one cloud.
struct PointCloudOptions {
  // Keep pixels whose confidence is above this. The model's confidence is 1 + exp(c), so it is
  // always > 1 and a threshold <= 1 keeps every pixel. world_points_conf is used, or depth_conf
  // with use_depth.
  float conf_threshold = 1.5f;
  // Unproject the depth map with the predicted camera instead of using the point map.
  bool use_depth = false;
  // Take every stride-th pixel in x and y (1 = all).
  int stride = 1;
  // Voxel edge length in world units; > 0 keeps one point per voxel (mean position and colour).
  double voxel_size = 0.0;

  // Throws OptionError naming the bad field.
  void Check() const;
};

// Visits one prediction's points as CollectPoints selects them (every stride-th pixel, confidence
// above options.conf_threshold, finite), in raster order: xyz [3] world, rgb [3], confidence.
// Throws Error for a prediction whose arrays do not match H, W.
void ForEachFramePoint(const FramePrediction& prediction, const PointCloudOptions& options,
                       const std::function<void(const float* xyz, const uint8_t* rgb, float conf)>& visit);

// The confident, finite points of all predictions, coloured by prediction.image.
// Throws OptionError for bad options and Error for a prediction whose arrays do not match H, W.
PointCloud CollectPoints(const std::vector<FramePrediction>& predictions,
                         const PointCloudOptions& options);

// Throws Error unless an array of the prediction holds H * W * channels values.
void CheckPredictionArray(const FramePrediction& p, const char* name, size_t found, size_t channels);

// The camera-to-world transform of a record (the inverse of its pose encoding's cam_from_world).
Rigid3 WorldFromCam(const CameraRecord& p);
// The camera's intrinsics at its size: the known ones (--intrinsics) when given, else predicted.
Intrinsics CameraIntrinsics(const CameraRecord& p);

}  // namespace streamrecon
