// Point clouds from predictions: selection (confidence, stride, finiteness), unprojection and
// voxel merging (see point_cloud.h).
#include "core/point_cloud.h"

#include <array>
#include <cmath>
#include <string>
#include <unordered_map>

#include "core/errors.h"
#include "core/geometry.h"

namespace streamrecon {
namespace {

// One point per voxel of edge `voxel_size`, at the mean position and colour of its points,
// in the order the voxels are first met.
PointCloud VoxelDownsample(const PointCloud& cloud, double voxel_size) {
  using Key = std::array<int64_t, 3>;
  struct KeyHash {
    size_t operator()(const Key& k) const {
      return static_cast<size_t>(static_cast<uint64_t>(k[0]) * 73856093u ^
                                 static_cast<uint64_t>(k[1]) * 19349669u ^
                                 static_cast<uint64_t>(k[2]) * 83492791u);
    }
  };
  std::unordered_map<Key, size_t, KeyHash> slot_of;
  std::vector<std::array<double, 6>> sums;  // x, y, z, r, g, b
  std::vector<size_t> counts;
  for (size_t i = 0; i < cloud.size(); ++i) {
    const float* p = &cloud.xyz[i * 3];
    const Key key{static_cast<int64_t>(std::floor(p[0] / voxel_size)),
                  static_cast<int64_t>(std::floor(p[1] / voxel_size)),
                  static_cast<int64_t>(std::floor(p[2] / voxel_size))};
    const auto [it, inserted] = slot_of.emplace(key, sums.size());
    if (inserted) {
      sums.push_back({});
      counts.push_back(0);
    }
    for (int k = 0; k < 3; ++k) {
      sums[it->second][k] += p[k];
      sums[it->second][3 + k] += cloud.rgb[i * 3 + k];
    }
    ++counts[it->second];
  }
  PointCloud out;
  out.xyz.reserve(sums.size() * 3);
  out.rgb.reserve(sums.size() * 3);
  for (size_t s = 0; s < sums.size(); ++s) {
    for (int k = 0; k < 3; ++k) out.xyz.push_back(static_cast<float>(sums[s][k] / counts[s]));
    for (int k = 0; k < 3; ++k) {
      out.rgb.push_back(static_cast<uint8_t>(std::lround(sums[s][3 + k] / counts[s])));
    }
  }
  return out;
}

}  // namespace

// Throws Error unless an array of the prediction holds H * W * channels values.
void CheckPredictionArray(const FramePrediction& p, const char* name, size_t found, size_t channels) {
  const size_t expected = static_cast<size_t>(p.height) * static_cast<size_t>(p.width) * channels;
  if (p.height <= 0 || p.width <= 0 || found != expected) {
    throw Error("frame " + std::to_string(p.index) + ": expected " + name + " of " +
                std::to_string(p.height) + " x " + std::to_string(p.width) + " x " +
                std::to_string(channels) + " values, found " + std::to_string(found));
  }
}

Rigid3 WorldFromCam(const CameraRecord& p) {
  return geometry::Inverse(geometry::PoseEncodingToExtrinsics(p.pose_enc));
}

Intrinsics CameraIntrinsics(const CameraRecord& p) {
  return p.known_intrinsics ? *p.known_intrinsics : geometry::PoseEncodingToIntrinsics(p.pose_enc, p.width, p.height);
}

void PointCloudOptions::Check() const {
  if (!std::isfinite(conf_threshold)) {
    throw OptionError("conf_threshold: expected a finite number, found " +
                      std::to_string(conf_threshold));
  }
  if (stride < 1) {
    throw OptionError("stride: expected an integer >= 1, found " + std::to_string(stride));
  }
  if (!(voxel_size >= 0.0) || !std::isfinite(voxel_size)) {
    throw OptionError("voxel_size: expected 0 (off) or a positive length, found " +
                      std::to_string(voxel_size));
  }
}

void ForEachFramePoint(const FramePrediction& p, const PointCloudOptions& options,
                       const std::function<void(const float* xyz, const uint8_t* rgb, float conf)>& visit) {
  if (p.image.width != p.width || p.image.height != p.height) {
    throw Error("frame " + std::to_string(p.index) + ": expected an image of " +
                std::to_string(p.width) + " x " + std::to_string(p.height) + ", found " +
                std::to_string(p.image.width) + " x " + std::to_string(p.image.height));
  }
  CheckPredictionArray(p, "image data", p.image.data.size(), 3);
  std::vector<float> unprojected;
  const std::vector<float>* points = &p.world_points;
  const std::vector<float>* conf = &p.world_points_conf;
  // A known camera rescales the geometry: depth unprojected with it (the point map assumes the
  // predicted camera).
  if (options.use_depth || p.known_intrinsics) {
    CheckPredictionArray(p, "depth", p.depth.size(), 1);
    CheckPredictionArray(p, "depth_conf", p.depth_conf.size(), 1);
    unprojected = geometry::UnprojectDepth(p.depth, p.width, p.height, CameraIntrinsics(p), WorldFromCam(p));
    points = &unprojected;
    conf = &p.depth_conf;
  } else {
    CheckPredictionArray(p, "world_points", p.world_points.size(), 3);
    CheckPredictionArray(p, "world_points_conf", p.world_points_conf.size(), 1);
  }
  for (int v = 0; v < p.height; v += options.stride) {
    for (int u = 0; u < p.width; u += options.stride) {
      const size_t i = static_cast<size_t>(v) * p.width + u;
      const float* xyz = &(*points)[i * 3];
      const float c = (*conf)[i];
      if (!(c > options.conf_threshold) || !std::isfinite(xyz[0]) || !std::isfinite(xyz[1]) ||
          !std::isfinite(xyz[2])) {
        continue;
      }
      visit(xyz, p.image.pixel(u, v), c);
    }
  }
}

PointCloud CollectPoints(const std::vector<FramePrediction>& predictions,
                         const PointCloudOptions& options) {
  options.Check();
  PointCloud cloud;
  for (const FramePrediction& p : predictions) {
    ForEachFramePoint(p, options, [&cloud](const float* xyz, const uint8_t* rgb, float) {
      cloud.xyz.insert(cloud.xyz.end(), xyz, xyz + 3);
      cloud.rgb.insert(cloud.rgb.end(), rgb, rgb + 3);
    });
  }
  return options.voxel_size > 0.0 ? VoxelDownsample(cloud, options.voxel_size) : cloud;
}

}  // namespace streamrecon
