// The point-cloud accumulator: turns each frame's prediction into coloured, confidence-tagged
// points, merges them in a voxel grid that bounds the count, and hands out cheap copy-on-write
// snapshots (chunks shared with readers are never modified) for viewers and exporters.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "core/point_cloud.h"
#include "core/types.h"

namespace streamrecon {

// One point as stored and as uploaded to a GPU: position, colour and confidence.
struct CloudVertex {
  float x = 0, y = 0, z = 0;  // world coordinates (the first camera's frame)
  uint8_t r = 0, g = 0, b = 0;
  uint8_t pad = 255;          // keeps the struct at 20 bytes
  float conf = 0;             // the model's confidence (highest of the points merged here)
};
static_assert(sizeof(CloudVertex) == 20, "CloudVertex is uploaded as is; keep it packed");

// A fixed-capacity block of vertices. Once handed out in a CloudSnapshot it is immutable; the
// accumulator copies it before changing it and gives the copy a new id.
struct CloudChunk {
  static constexpr size_t kCapacity = 16384;  // 320 KiB of vertices
  uint64_t id = 0;                            // unique per content version, never 0 once shared
  std::vector<CloudVertex> vertices;          // size() <= kCapacity
};

// The cloud at one moment: every chunk but the last is full, so vertex i is
// chunks[i / kCapacity]->vertices[i % kCapacity].
struct CloudSnapshot {
  std::vector<std::shared_ptr<const CloudChunk>> chunks;
  size_t points = 0;                        // vertices over all chunks
  double voxel_size = 0.0;                  // grid edge in effect (0 = every point kept)
  std::array<float, 3> min{0, 0, 0};        // bounding box; meaningless when points == 0
  std::array<float, 3> max{0, 0, 0};

  // The points whose confidence is above conf_threshold, as a PointCloud for the exporters.
  PointCloud Collect(float conf_threshold) const;
  // How many points have a confidence above conf_threshold.
  size_t Count(float conf_threshold) const;
};

// How predictions become points and how the cloud is bounded.
struct AccumulatorOptions {
  // Per-frame extraction, as CollectPoints does it: points with confidence above
  // frame.conf_threshold (a floor; viewers may filter higher later), world points or depth +
  // predicted camera (frame.use_depth), every frame.stride-th pixel, and frame.voxel_size > 0
  // merges each frame's points per voxel before they join the cloud (what `run --voxel-size` does).
  PointCloudOptions frame;
  // Edge of the global voxel grid in world units; > 0 merges the points of all frames that fall in
  // one voxel (mean position and colour, highest confidence). 0 = keep every point.
  double voxel_size = 0.0;
  // > 0: whenever the cloud holds more points, the grid is coarsened (the voxel size doubles, or
  // starts from the cloud's extent / 1024) and the points re-binned until it fits. 0 = no bound.
  int64_t max_points = 0;
  // false: cameras only, no points extracted or kept (a run that writes no cloud spends nothing on it).
  bool enabled = true;

  // Throws OptionError naming the bad field.
  void Check() const;
};

// Not thread-safe: one owner calls Add / SetVoxelSize / Snapshot. Snapshots may be read from any
// thread while the owner goes on adding.
class PointCloudAccumulator {
 public:
  // Throws OptionError when options.Check() fails.
  explicit PointCloudAccumulator(const AccumulatorOptions& options);

  // Adds the confident, finite points of one prediction, coloured by prediction.image. Without
  // a global grid and max_points, Add over frames 0..n-1 gives exactly the points (in order) of
  // CollectPoints over each frame concatenated. Throws Error for a prediction whose arrays do not
  // match its height and width (as CollectPoints does).
  void Add(const FramePrediction& prediction);

  // Re-bins the points held so far into a grid of edge voxel_size (0 keeps the current points as
  // they are) and uses it for the frames to come. Throws OptionError for a negative or non-finite
  // size.
  void SetVoxelSize(double voxel_size);

  // Forgets every point (the options stay).
  void Clear();

  // The current cloud; cheap (shares the chunks). Chunks changed since the previous snapshot
  // get new ids.
  CloudSnapshot Snapshot();

  size_t size() const { return size_; }
  // The grid edge in effect (differs from the options once max_points has coarsened it).
  double voxel_size() const { return voxel_size_; }
  const AccumulatorOptions& options() const { return options_; }

 private:
  // A point or a voxel's running sums before it becomes a vertex.
  struct Sample {
    double x = 0, y = 0, z = 0;  // sum of positions
    double r = 0, g = 0, b = 0;  // sum of colours
    uint32_t count = 0;          // points summed
    float conf = 0;              // highest confidence
  };
  using VoxelKey = std::array<int64_t, 3>;
  struct VoxelKeyHash {
    size_t operator()(const VoxelKey& k) const;
  };

  // The frame's points as samples of one point each (or merged per frame voxel).
  std::vector<Sample> ExtractFrame(const FramePrediction& prediction) const;
  // Adds a sample to the global store (appends, or merges into its voxel).
  void Insert(const Sample& sample);
  // Rebuilds the store from its own samples with a grid of edge voxel_size.
  void Rebin(double voxel_size);
  // Coarsens the grid until the cloud holds at most max_points points.
  void EnforceMaxPoints();
  // The writable vertex of slot; copies a published chunk first.
  CloudVertex& MutableVertex(size_t slot);
  void GrowBounds(const CloudVertex& v);

  AccumulatorOptions options_;
  double voxel_size_ = 0.0;
  size_t size_ = 0;
  std::vector<std::shared_ptr<CloudChunk>> chunks_;
  std::vector<bool> published_;  // chunk i was handed out and must be copied before a change
  std::vector<Sample> sums_;     // per slot, only while voxel_size_ > 0
  std::unordered_map<VoxelKey, uint32_t, VoxelKeyHash> slot_of_;
  std::array<float, 3> min_{0, 0, 0};
  std::array<float, 3> max_{0, 0, 0};
};

}  // namespace streamrecon
