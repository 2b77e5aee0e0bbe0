// Evaluation metrics as in the reference protocols: depth (AbsRel, SqRel, RMSE, log-RMSE, delta
// thresholds, after median or L1 scale alignment), point clouds (accuracy, completeness, normal
// consistency through Open3D) and camera trajectories (ATE, RPE). Plain C++, no LibTorch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/geometry.h"
#include "core/types.h"

namespace streamrecon::metrics {

// ---- depth -----------------------------------------------------------------------------------

// How predicted depth is scaled onto the ground truth before measuring.
enum class DepthAlignment {
  kNone,             // metric depth as predicted
  kMedianPerFrame,   // each frame times median(gt) / median(pred) over its valid pixels
  kL1PerSequence,    // one scale s for the sequence minimising sum |s pred - gt| (IRLS)
};

// "none", "median", "l1"; ParseDepthAlignment throws OptionError for anything else.
std::string DepthAlignmentName(DepthAlignment alignment);
DepthAlignment ParseDepthAlignment(const std::string& name);

struct DepthMetricsOptions {
  // Scale alignment of the prediction.
  DepthAlignment alignment = DepthAlignment::kMedianPerFrame;
  // A pixel is valid when its ground truth is finite and in (min_depth, max_depth) metres and
  // its prediction is finite.
  double min_depth = 1e-3;
  // Upper cap on valid ground truth in metres; 0 = none.
  double max_depth = 0.0;
  // Clamp aligned predictions to [min_depth, max_depth] (max only when max_depth > 0).
  bool clip_predictions = false;
  // Reweighting rounds of the L1 scale fit (kL1PerSequence).
  int irls_iterations = 10;
  // kL1PerSequence needs the pixels of the whole sequence for its scale: it keeps at most this
  // many (prediction, ground truth) pairs, 9 bytes each; beyond that a pseudo-random subset
  // (each valid pixel kept with probability 2^-k, the same pixels on every run) is kept and
  // measured, and DepthMetrics::pixels_measured says how many. The other alignments keep none.
  int64_t max_kept_pixels = int64_t{1} << 26;

  // Throws OptionError naming the bad field.
  void Check() const;
};

// Errors over all valid pixels of all frames pooled (each pixel counts once).
struct DepthMetrics {
  double abs_rel = 0;   // mean |p - g| / g
  double sq_rel = 0;    // mean (p - g)^2 / g
  double rmse = 0;      // sqrt(mean (p - g)^2), metres
  double log_rmse = 0;  // sqrt(mean (log p - log g)^2), p clamped to >= 1e-5
  double delta_1 = 0;   // fraction with max(p / g, g / p) < 1.25
  double delta_2 = 0;   // ... < 1.25^2
  double delta_3 = 0;   // ... < 1.25^3
  double scale = 1;     // the sequence scale, or the median of the per-frame scales
  int64_t pixels = 0;   // valid pixels
  int64_t pixels_measured = 0;  // pixels the errors are over: all valid ones, or the subset kept
  int64_t frames = 0;   // frames added
};

// Collects frames, then measures. Per-frame and no alignment accumulate the errors as frames
// come (constant memory); the per-sequence L1 scale keeps valid pairs (see max_kept_pixels).
class DepthEvaluator {
 public:
  // Throws OptionError when options.Check() fails.
  explicit DepthEvaluator(const DepthMetricsOptions& options);

  // predicted and ground_truth are [H, W] (any layout, same size). Throws Error when the sizes
  // differ. A frame without valid pixels is counted but adds nothing.
  void AddFrame(const std::vector<float>& predicted, const std::vector<float>& ground_truth);

  // Throws Error when no pixel was valid (naming the caps and the frame count).
  DepthMetrics Compute() const;

 private:
  // Error sums over measured pixels.
  struct Sums {
    double abs_rel = 0, sq_rel = 0, sq = 0, log_sq = 0;
    int64_t d1 = 0, d2 = 0, d3 = 0, n = 0;
    void Add(double predicted, double ground_truth, const DepthMetricsOptions& options);
  };

  DepthMetricsOptions options_;
  Sums sums_;                                    // none / per-frame alignment
  std::vector<float> predicted_, ground_truth_;  // L1 per sequence: the pairs kept
  std::vector<uint8_t> levels_;                  // their levels (see AddFrame)
  int64_t valid_ = 0;                            // valid pixels seen
  int keep_level_ = 0;                           // L1: pairs of this level or above are kept
  std::vector<double> frame_scales_;
  int64_t frames_ = 0;
};

// One call for one array pair (one frame, or a whole sequence flattened).
DepthMetrics ComputeDepthMetrics(const std::vector<float>& predicted,
                                 const std::vector<float>& ground_truth,
                                 const DepthMetricsOptions& options);

// ---- point clouds ----------------------------------------------------------------------------

// How the predicted cloud is brought onto the ground truth before measuring.
enum class CloudAlignment {
  kNone,     // as predicted
  kMedian,   // per cloud: shift z by its median, scale so the median distance to the origin
             // matches; the prediction is then mapped into the ground truth's shift and scale
  kUmeyama,  // Sim(3) least squares over corresponding points (needs equal sizes, row i <-> i)
};

// "none", "median", "umeyama"; ParseCloudAlignment throws OptionError for anything else.
std::string CloudAlignmentName(CloudAlignment alignment);
CloudAlignment ParseCloudAlignment(const std::string& name);

struct CloudMetricsOptions {
  // Coarse alignment of the prediction.
  CloudAlignment alignment = CloudAlignment::kUmeyama;
  // Refine with point-to-point ICP (Open3D) after the coarse alignment.
  bool icp = false;
  // ICP: largest correspondence distance, ground-truth units (metres).
  double icp_max_distance = 0.1;
  // ICP: iteration limit.
  int icp_iterations = 30;
  // Neighbours used to estimate each point's normal (Open3D, KNN).
  int normal_neighbours = 30;
  // Use at most this many points of each cloud, taken at an even stride (0 = all).
  int64_t max_points = 0;

  // Throws OptionError naming the bad field.
  void Check() const;
};

struct CloudMetrics {
  double accuracy = 0;             // mean distance from each predicted point to the GT cloud
  double accuracy_median = 0;      // median of the same
  double completeness = 0;         // mean distance from each GT point to the predicted cloud
  double completeness_median = 0;  // median of the same
  double nc_accuracy = 0;          // mean |n_pred . n_gt(nearest)| over predicted points
  double nc_completeness = 0;      // mean |n_gt . n_pred(nearest)| over GT points
  double normal_consistency = 0;   // (nc_accuracy + nc_completeness) / 2
  geometry::Sim3 alignment;        // predicted -> GT, coarse alignment and ICP combined
  double icp_fitness = 0;          // inlier fraction of the ICP result (0 without ICP)
  int64_t predicted_points = 0;    // points measured (finite, after max_points)
  int64_t gt_points = 0;
};

// Whether this build has Open3D (point-cloud metrics work).
bool HaveCloudMetrics();

// predicted is [N, 3], ground_truth is [M, 3] (float32, same units). Non-finite points are
// dropped (pairs of points with kUmeyama). Throws OptionError for bad options, Error when a cloud
// has fewer than 3 finite points, when kUmeyama gets N != M, or when the build has no Open3D.
CloudMetrics ComputeCloudMetrics(const std::vector<float>& predicted,
                                 const std::vector<float>& ground_truth,
                                 const CloudMetricsOptions& options);

// Applies y = s R x + t to [N, 3] points.
std::vector<float> TransformPoints(const geometry::Sim3& transform, const std::vector<float>& xyz);

// ---- trajectories ----------------------------------------------------------------------------

struct TrajectoryMetricsOptions {
  // Align the predicted camera centres onto the ground truth by Umeyama before measuring.
  bool align = true;
  // With align: a similarity (scale too) rather than a rigid transform.
  bool with_scale = true;
  // RPE compares the motion from frame i to frame i + rpe_delta.
  int rpe_delta = 1;

  // Throws OptionError naming the bad field.
  void Check() const;
};

struct TrajectoryMetrics {
  double ate_rmse = 0;              // RMSE of camera-centre distances after alignment
  double ate_mean = 0;              // mean of the same
  double rpe_translation_rmse = 0;  // RMSE of |t| of inv(gt_rel) * pred_rel, scaled prediction
  double rpe_rotation_rmse_deg = 0; // RMSE of the rotation angle of the same, degrees
  double rpe_translation_mean = 0;
  double rpe_rotation_mean_deg = 0;
  geometry::Sim3 alignment;         // predicted world -> GT world
  int64_t poses = 0;
  int64_t pairs = 0;                // relative motions measured by RPE
};

// Both trajectories are world_from_cam, one per frame, same order. Throws Error on different
// lengths, with align and fewer than 3 poses (or coincident centres, with scale), or when there
// are no frame pairs rpe_delta apart.
TrajectoryMetrics ComputeTrajectoryMetrics(const std::vector<Rigid3>& predicted_world_from_cam,
                                           const std::vector<Rigid3>& gt_world_from_cam,
                                           const TrajectoryMetricsOptions& options);

}  // namespace streamrecon::metrics
