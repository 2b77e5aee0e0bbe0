// Training sequences with exact ground truth, drawn from the synthetic scenes: random rooms and
// outdoor squares, walk/orbit/pan paths, random field of view, as batches of tensors. Scene seeds
// below kFirstTrainingSeed are reserved for evaluation; training draws above them.
#pragma once

#include <cstdint>
#include <deque>
#include <future>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

namespace streamrecon::datasets {

// Scene seeds [0, kFirstTrainingSeed) are evaluation scenes: training never renders them.
constexpr uint64_t kFirstTrainingSeed = 100000;

// B sequences of S frames with ground truth (CPU tensors unless moved).
struct SequenceBatch {
  at::Tensor images;        // [B, S, 3, H, W] float32 RGB in [0, 1]
  at::Tensor depth;         // [B, S, H, W] float32 metres along the optical axis (0 = invalid)
  at::Tensor valid;         // [B, S, H, W] bool
  at::Tensor world_points;  // [B, S, H, W, 3] float32, in each sequence's first camera (OpenCV axes)
  at::Tensor pose_enc;      // [B, S, 9] float32: camera_from_first-camera as t, quaternion xyzw, fov_h, fov_w
  std::vector<uint64_t> scene_seeds;  // [B]

  int64_t batch() const { return images.size(0); }
  int64_t frames() const { return images.size(1); }
  // A copy on `device` (non-blocking from pinned memory).
  SequenceBatch To(at::Device device) const;
};

// How training batches are drawn.
struct TrainingDataOptions {
  // Frame sizes (width, height), multiples of the patch size; each batch picks one (the first
  // one half of the time, the others evenly).
  std::vector<std::pair<int, int>> sizes{{224, 168}, {196, 140}, {252, 182}, {168, 224}};
  // Frames per sequence: uniform in [min_frames, max_frames(step)], where the upper end grows
  // linearly from start_max_frames at step 0 to max_frames at step grow_steps.
  int min_frames = 2;
  int start_max_frames = 4;
  int max_frames = 8;
  int64_t grow_steps = 10000;
  // Frames per batch (sequences per batch = frames_per_batch / S, at least 1).
  int frames_per_batch = 32;
  // Horizontal field of view, degrees, uniform in [fov_min, fov_max].
  double fov_min = 45.0, fov_max = 90.0;
  // Share of sequences in the outdoor square (the rest in rooms).
  double outdoor_fraction = 0.3;
  // The whole camera path spans trajectory_factor x S frames (so neighbouring frames are
  // closer on longer paths), with the factor uniform in [trajectory_factor_min,
  // trajectory_factor_max]. At 1 a sequence covers its whole path (a full orbit).
  double trajectory_factor_min = 2.0;
  double trajectory_factor_max = 6.0;
  // Seeds everything; batch `step` depends only on (seed, step).
  uint64_t seed = 1;
  // Evaluation batches: scene seeds below kFirstTrainingSeed (training: above).
  bool evaluation = false;

  // Throws OptionError naming the bad field.
  void Check(int patch_size) const;
};

// Batch number `step`, rendered on the CPU (threads: renderer threads per frame; 0 = all cores).
SequenceBatch MakeTrainingBatch(const TrainingDataOptions& options, int64_t step, int threads = 1);

// Renders the next batches on background threads while the caller trains on the current one.
// Batches come back in step order, each exactly MakeTrainingBatch(options, step).
class BatchPrefetcher {
 public:
  // depth: batches rendered ahead (one thread each).
  BatchPrefetcher(TrainingDataOptions options, int64_t first_step, int depth);
  ~BatchPrefetcher();
  SequenceBatch Next();

 private:
  TrainingDataOptions options_;
  int64_t next_step_;
  int depth_;
  std::deque<std::future<SequenceBatch>> queue_;
};

}  // namespace streamrecon::datasets
