// Depth, point-cloud and trajectory metrics. Nearest neighbours, normals and ICP come from
// Open3D (compiled only with STREAMRECON_HAVE_OPEN3D); the rest is plain C++.
#include "datasets/metrics.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/errors.h"

#ifdef STREAMRECON_HAVE_OPEN3D
#include <open3d/geometry/KDTreeFlann.h>
#include <open3d/geometry/KDTreeSearchParam.h>
#include <open3d/geometry/PointCloud.h>
#include <open3d/pipelines/registration/Registration.h>
#include <open3d/pipelines/registration/TransformationEstimation.h>
#endif

namespace streamrecon::metrics {
namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr double kLogFloor = 1e-5;     // predictions are clamped to this before log and ratios
constexpr double kIrlsEpsilon = 1e-8;  // keeps IRLS weights 1 / |residual| finite
constexpr double kMinScale = 1e-3;     // the L1 scale is clamped to at least this

template <typename T>
double Median(std::vector<T> values) {
  if (values.empty()) return std::nan("");
  const size_t mid = values.size() / 2;
  std::nth_element(values.begin(), values.begin() + mid, values.end());
  const double upper = values[mid];
  if (values.size() % 2 == 1) return upper;
  const double lower = *std::max_element(values.begin(), values.begin() + mid);
  return 0.5 * (lower + upper);
}

double Mean(const std::vector<double>& values) {
  if (values.empty()) return std::nan("");
  return std::accumulate(values.begin(), values.end(), 0.0) / static_cast<double>(values.size());
}

double Rms(const std::vector<double>& values) {
  if (values.empty()) return std::nan("");
  double sum = 0;
  for (double v : values) sum += v * v;
  return std::sqrt(sum / static_cast<double>(values.size()));
}

bool Finite3(const float* p) {
  return std::isfinite(p[0]) && std::isfinite(p[1]) && std::isfinite(p[2]);
}

std::array<double, 3> Transform(const geometry::Sim3& T, const std::array<double, 3>& x) {
  std::array<double, 3> y;
  for (int r = 0; r < 3; ++r) {
    y[r] = T.scale * (T.T.R[r * 3] * x[0] + T.T.R[r * 3 + 1] * x[1] + T.T.R[r * 3 + 2] * x[2]) +
           T.T.t[r];
  }
  return y;
}

// The rotation angle of a rotation matrix in radians, accurate near zero.
double RotationAngle(const std::array<double, 9>& R) {
  const double cos_part = 0.5 * (R[0] + R[4] + R[8] - 1.0);
  const double sx = R[7] - R[5], sy = R[2] - R[6], sz = R[3] - R[1];
  const double sin_part = 0.5 * std::sqrt(sx * sx + sy * sy + sz * sz);
  return std::atan2(sin_part, cos_part);
}

}  // namespace

// ---- depth -----------------------------------------------------------------------------------

std::string DepthAlignmentName(DepthAlignment alignment) {
  switch (alignment) {
    case DepthAlignment::kNone: return "none";
    case DepthAlignment::kMedianPerFrame: return "median";
    case DepthAlignment::kL1PerSequence: return "l1";
  }
  return "unknown";
}

DepthAlignment ParseDepthAlignment(const std::string& name) {
  if (name == "none") return DepthAlignment::kNone;
  if (name == "median") return DepthAlignment::kMedianPerFrame;
  if (name == "l1") return DepthAlignment::kL1PerSequence;
  throw OptionError("depth alignment: expected none, median (per frame) or l1 (one scale per "
                    "sequence), got '" + name + "'");
}

void DepthMetricsOptions::Check() const {
  if (!(min_depth >= 0) || !std::isfinite(min_depth)) {
    throw OptionError("DepthMetricsOptions.min_depth: expected a finite value >= 0 metres, got " +
                      std::to_string(min_depth));
  }
  if (!(max_depth == 0 || max_depth > min_depth) || !std::isfinite(max_depth)) {
    throw OptionError("DepthMetricsOptions.max_depth: expected 0 (no cap) or a value above "
                      "min_depth (" + std::to_string(min_depth) + "), got " +
                      std::to_string(max_depth));
  }
  if (max_kept_pixels < 1) {
    throw OptionError("DepthMetricsOptions.max_kept_pixels: expected >= 1, got " + std::to_string(max_kept_pixels));
  }
  if (irls_iterations < 0 || irls_iterations > 1000) {
    throw OptionError("DepthMetricsOptions.irls_iterations: expected 0 .. 1000, got " +
                      std::to_string(irls_iterations));
  }
}

DepthEvaluator::DepthEvaluator(const DepthMetricsOptions& options) : options_(options) {
  options_.Check();
}

namespace {

// SplitMix64's finaliser: a well-mixed 64-bit hash of an integer.
uint64_t Mix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

void DepthEvaluator::Sums::Add(double p, double g, const DepthMetricsOptions& options) {
  if (options.clip_predictions) {
    p = std::max(p, options.min_depth);
    if (options.max_depth > 0) p = std::min(p, options.max_depth);
  }
  const double diff = p - g;
  abs_rel += std::abs(diff) / g;
  sq_rel += diff * diff / g;
  sq += diff * diff;
  const double q = std::max(p, kLogFloor);
  const double log_diff = std::log(q) - std::log(g);
  log_sq += log_diff * log_diff;
  const double ratio = std::max(q / g, g / q);
  d1 += ratio < 1.25;
  d2 += ratio < 1.25 * 1.25;
  d3 += ratio < 1.25 * 1.25 * 1.25;
  ++n;
}

void DepthEvaluator::AddFrame(const std::vector<float>& predicted,
                              const std::vector<float>& ground_truth) {
  if (predicted.size() != ground_truth.size()) {
    throw Error("depth metrics, frame " + std::to_string(frames_) + ": expected predicted and "
                "ground-truth depth of the same size, found " + std::to_string(predicted.size()) +
                " and " + std::to_string(ground_truth.size()) + " values");
  }
  ++frames_;
  std::vector<float> frame_pred, frame_gt;  // this frame's valid pairs
  for (size_t i = 0; i < predicted.size(); ++i) {
    const float g = ground_truth[i], p = predicted[i];
    if (!std::isfinite(g) || !std::isfinite(p) || !(g > options_.min_depth)) continue;
    if (options_.max_depth > 0 && !(g < options_.max_depth)) continue;
    frame_pred.push_back(p);
    frame_gt.push_back(g);
  }
  if (frame_pred.empty()) return;
  if (options_.alignment == DepthAlignment::kL1PerSequence) {
    for (size_t i = 0; i < frame_pred.size(); ++i, ++valid_) {
      // Valid pixel number valid_ gets a level from a hash of its number: P(level >= k) = 2^-k,
      // with no pattern in space or time. Pixels at or above the current level are kept.
      const int level = __builtin_ctzll(Mix64(static_cast<uint64_t>(valid_)) | (uint64_t{1} << 63));
      if (level < keep_level_) continue;
      predicted_.push_back(frame_pred[i]);
      ground_truth_.push_back(frame_gt[i]);
      levels_.push_back(static_cast<uint8_t>(level));
      if (static_cast<int64_t>(predicted_.size()) > options_.max_kept_pixels) {
        ++keep_level_;  // about half of the pairs kept so far stay
        size_t out = 0;
        for (size_t j = 0; j < predicted_.size(); ++j) {
          if (levels_[j] < keep_level_) continue;
          predicted_[out] = predicted_[j];
          ground_truth_[out] = ground_truth_[j];
          levels_[out++] = levels_[j];
        }
        predicted_.resize(out);
        ground_truth_.resize(out);
        levels_.resize(out);
      }
    }
    return;
  }
  valid_ += static_cast<int64_t>(frame_pred.size());
  double scale = 1.0;
  if (options_.alignment == DepthAlignment::kMedianPerFrame) {
    const double pred_median = Median(frame_pred);
    if (!(pred_median > 0)) {
      throw Error("depth metrics, frame " + std::to_string(frames_ - 1) + ": median scaling "
                  "expected a positive median predicted depth, found " +
                  std::to_string(pred_median));
    }
    scale = Median(frame_gt) / pred_median;
    frame_scales_.push_back(scale);
  }
  for (size_t i = 0; i < frame_pred.size(); ++i) {
    // (the scaled prediction rounded to float, as the metrics have always been measured)
    const float p = scale == 1.0 ? frame_pred[i] : static_cast<float>(frame_pred[i] * scale);
    sums_.Add(p, frame_gt[i], options_);
  }
}

DepthMetrics DepthEvaluator::Compute() const {
  if (valid_ == 0) {
    throw Error("depth metrics: expected valid pixels (finite prediction, ground truth in (" +
                std::to_string(options_.min_depth) + ", " +
                (options_.max_depth > 0 ? std::to_string(options_.max_depth) : "inf") +
                ") m), found none in " + std::to_string(frames_) + " frame(s)");
  }
  DepthMetrics m;
  m.pixels = valid_;
  m.frames = frames_;
  Sums sums = sums_;
  if (options_.alignment == DepthAlignment::kL1PerSequence) {
    const size_t n = predicted_.size();
    // Start from the ratio of means, then reweight by 1 / |residual| (Weiszfeld-style IRLS).
    double sum_p = 0, sum_g = 0;
    for (size_t i = 0; i < n; ++i) {
      sum_p += predicted_[i];
      sum_g += ground_truth_[i];
    }
    if (!(sum_p > 0)) {
      throw Error("depth metrics: L1 scaling expected a positive mean predicted depth, found " +
                  std::to_string(sum_p / n));
    }
    double scale = sum_g / sum_p;
    for (int round = 0; round < options_.irls_iterations; ++round) {
      double numerator = 0, denominator = 0;
      for (size_t i = 0; i < n; ++i) {
        const double p = predicted_[i], g = ground_truth_[i];
        const double w = 1.0 / (std::abs(scale * p - g) + kIrlsEpsilon);
        numerator += w * p * g;
        denominator += w * p * p;
      }
      if (!(denominator > 0)) break;
      scale = numerator / denominator;
    }
    scale = std::max(scale, kMinScale);
    m.scale = scale;
    for (size_t i = 0; i < n; ++i) sums.Add(predicted_[i] * scale, ground_truth_[i], options_);
  } else if (options_.alignment == DepthAlignment::kMedianPerFrame) {
    m.scale = Median(frame_scales_);
  }
  const double count = static_cast<double>(sums.n);
  m.pixels_measured = sums.n;
  m.abs_rel = sums.abs_rel / count;
  m.sq_rel = sums.sq_rel / count;
  m.rmse = std::sqrt(sums.sq / count);
  m.log_rmse = std::sqrt(sums.log_sq / count);
  m.delta_1 = sums.d1 / count;
  m.delta_2 = sums.d2 / count;
  m.delta_3 = sums.d3 / count;
  return m;
}

DepthMetrics ComputeDepthMetrics(const std::vector<float>& predicted,
                                 const std::vector<float>& ground_truth,
                                 const DepthMetricsOptions& options) {
  DepthEvaluator evaluator(options);
  evaluator.AddFrame(predicted, ground_truth);
  return evaluator.Compute();
}

// ---- point clouds ----------------------------------------------------------------------------

std::string CloudAlignmentName(CloudAlignment alignment) {
  switch (alignment) {
    case CloudAlignment::kNone: return "none";
    case CloudAlignment::kMedian: return "median";
    case CloudAlignment::kUmeyama: return "umeyama";
  }
  return "unknown";
}

CloudAlignment ParseCloudAlignment(const std::string& name) {
  if (name == "none") return CloudAlignment::kNone;
  if (name == "median") return CloudAlignment::kMedian;
  if (name == "umeyama") return CloudAlignment::kUmeyama;
  throw OptionError("point-cloud alignment: expected none, median or umeyama, got '" + name +
                    "'");
}

void CloudMetricsOptions::Check() const {
  if (!(icp_max_distance > 0) || !std::isfinite(icp_max_distance)) {
    throw OptionError("CloudMetricsOptions.icp_max_distance: expected a positive distance, got " +
                      std::to_string(icp_max_distance));
  }
  if (icp_iterations < 1) {
    throw OptionError("CloudMetricsOptions.icp_iterations: expected >= 1, got " +
                      std::to_string(icp_iterations));
  }
  if (normal_neighbours < 3) {
    throw OptionError("CloudMetricsOptions.normal_neighbours: expected >= 3, got " +
                      std::to_string(normal_neighbours));
  }
  if (max_points < 0) {
    throw OptionError("CloudMetricsOptions.max_points: expected 0 (all) or a positive count, "
                      "got " + std::to_string(max_points));
  }
}

bool HaveCloudMetrics() {
#ifdef STREAMRECON_HAVE_OPEN3D
  return true;
#else
  return false;
#endif
}

std::vector<float> TransformPoints(const geometry::Sim3& transform, const std::vector<float>& xyz) {
  std::vector<float> out(xyz.size());
  for (size_t i = 0; i + 2 < xyz.size(); i += 3) {
    const std::array<double, 3> y = Transform(transform, {xyz[i], xyz[i + 1], xyz[i + 2]});
    for (int k = 0; k < 3; ++k) out[i + k] = static_cast<float>(y[k]);
  }
  return out;
}

namespace {

using Points = std::vector<std::array<double, 3>>;

// Keeps at most max_points (> 0) of points, at an even stride.
void Subsample(int64_t max_points, Points* points) {
  if (max_points <= 0 || static_cast<int64_t>(points->size()) <= max_points) return;
  const double stride = static_cast<double>(points->size()) / static_cast<double>(max_points);
  Points kept;
  kept.reserve(static_cast<size_t>(max_points));
  for (int64_t k = 0; k < max_points; ++k) {
    kept.push_back((*points)[static_cast<size_t>(static_cast<double>(k) * stride)]);
  }
  *points = std::move(kept);
}

// The finite points of each cloud; when paired, only pairs where both points are finite.
void SelectFinite(const std::vector<float>& predicted, const std::vector<float>& ground_truth,
                  bool paired, Points* pred, Points* gt) {
  auto take = [&](const std::vector<float>& xyz, const std::vector<float>* partner, Points* out) {
    for (size_t i = 0; i + 2 < xyz.size(); i += 3) {
      if (!Finite3(&xyz[i]) || (partner && !Finite3(&(*partner)[i]))) continue;
      out->push_back({xyz[i], xyz[i + 1], xyz[i + 2]});
    }
  };
  take(predicted, paired ? &ground_truth : nullptr, pred);
  take(ground_truth, paired ? &predicted : nullptr, gt);
}

// Median-z shift and median-distance scale of each cloud; maps pred into gt's shift and scale.
geometry::Sim3 MedianAlignment(const Points& pred, const Points& gt) {
  auto shift_and_scale = [](const Points& points, const char* which) {
    std::vector<double> z(points.size()), distance(points.size());
    for (size_t i = 0; i < points.size(); ++i) z[i] = points[i][2];
    const double shift = Median(z);
    for (size_t i = 0; i < points.size(); ++i) {
      const double dz = points[i][2] - shift;
      distance[i] = std::sqrt(points[i][0] * points[i][0] + points[i][1] * points[i][1] + dz * dz);
    }
    const double scale = Median(distance);
    if (!(scale > 0)) {
      throw Error(std::string("point-cloud median alignment: expected the ") + which +
                  " cloud to have a positive median distance from its centre, found " +
                  std::to_string(scale));
    }
    return std::pair<double, double>(shift, scale);
  };
  const auto [pred_shift, pred_scale] = shift_and_scale(pred, "predicted");
  const auto [gt_shift, gt_scale] = shift_and_scale(gt, "ground-truth");
  geometry::Sim3 sim;
  sim.scale = gt_scale / pred_scale;
  sim.T.t = {0, 0, gt_shift - sim.scale * pred_shift};
  return sim;
}

std::vector<double> Flatten(const Points& points) {
  std::vector<double> flat;
  flat.reserve(points.size() * 3);
  for (const auto& p : points) flat.insert(flat.end(), p.begin(), p.end());
  return flat;
}

}  // namespace

CloudMetrics ComputeCloudMetrics(const std::vector<float>& predicted,
                                 const std::vector<float>& ground_truth,
                                 const CloudMetricsOptions& options) {
  options.Check();
  if (predicted.size() % 3 != 0 || ground_truth.size() % 3 != 0) {
    throw Error("point-cloud metrics: expected [N, 3] point arrays, found " +
                std::to_string(predicted.size()) + " and " + std::to_string(ground_truth.size()) +
                " values");
  }
  const bool paired = options.alignment == CloudAlignment::kUmeyama;
  if (paired && predicted.size() != ground_truth.size()) {
    throw Error("point-cloud metrics: Umeyama alignment expected corresponding clouds of equal "
                "size, found " + std::to_string(predicted.size() / 3) + " predicted and " +
                std::to_string(ground_truth.size() / 3) + " ground-truth points");
  }
#ifndef STREAMRECON_HAVE_OPEN3D
  throw Error("point-cloud metrics (accuracy, completeness, normal consistency) need Open3D, but "
              "this build has none (install libopen3d-dev and reconfigure with "
              "STREAMRECON_OPEN3D=ON)");
#else
  Points pred, gt;
  SelectFinite(predicted, ground_truth, paired, &pred, &gt);
  if (pred.size() < 3 || gt.size() < 3) {
    throw Error("point-cloud metrics: expected at least 3 finite points in each cloud, found " +
                std::to_string(pred.size()) + " predicted and " + std::to_string(gt.size()) +
                " ground-truth");
  }

  CloudMetrics m;
  if (options.alignment == CloudAlignment::kUmeyama) {
    m.alignment = geometry::Umeyama(Flatten(pred), Flatten(gt), true);
  } else if (options.alignment == CloudAlignment::kMedian) {
    m.alignment = MedianAlignment(pred, gt);
  }
  // Subsampling after the coarse fit, so Umeyama sees every pair.
  Subsample(options.max_points, &pred);
  Subsample(options.max_points, &gt);

  open3d::geometry::PointCloud pred_cloud, gt_cloud;
  pred_cloud.points_.reserve(pred.size());
  for (const auto& p : pred) {
    const std::array<double, 3> q = Transform(m.alignment, p);
    pred_cloud.points_.emplace_back(q[0], q[1], q[2]);
  }
  gt_cloud.points_.reserve(gt.size());
  for (const auto& p : gt) gt_cloud.points_.emplace_back(p[0], p[1], p[2]);

  if (options.icp) {
    namespace reg = open3d::pipelines::registration;
    const reg::RegistrationResult result = reg::RegistrationICP(
        pred_cloud, gt_cloud, options.icp_max_distance, Eigen::Matrix4d::Identity(),
        reg::TransformationEstimationPointToPoint(false),
        reg::ICPConvergenceCriteria(1e-6, 1e-6, options.icp_iterations));
    const Eigen::Matrix4d& T = result.transformation_;
    pred_cloud.Transform(T);
    m.icp_fitness = result.fitness_;
    // Fold the rigid ICP step into the reported alignment: y = R_icp (s R x + t) + t_icp.
    geometry::Sim3 combined;
    combined.scale = m.alignment.scale;
    Rigid3 icp;
    for (int r = 0; r < 3; ++r) {
      for (int c = 0; c < 3; ++c) icp.R[r * 3 + c] = T(r, c);
      icp.t[r] = T(r, 3);
    }
    combined.T = geometry::Compose(icp, m.alignment.T);
    m.alignment = combined;
  }

  const open3d::geometry::KDTreeSearchParamKNN normal_search(options.normal_neighbours);
  pred_cloud.EstimateNormals(normal_search);
  gt_cloud.EstimateNormals(normal_search);

  // Distances from each point of `from` to its nearest neighbour in `to`, and |n . n_nearest|.
  auto nearest = [](const open3d::geometry::PointCloud& from,
                    const open3d::geometry::PointCloud& to, std::vector<double>* distances,
                    std::vector<double>* normal_dots) {
    const open3d::geometry::KDTreeFlann tree(to);
    std::vector<int> index(1);
    std::vector<double> distance2(1);
    distances->reserve(from.points_.size());
    normal_dots->reserve(from.points_.size());
    for (size_t i = 0; i < from.points_.size(); ++i) {
      if (tree.SearchKNN(from.points_[i], 1, index, distance2) < 1) continue;
      distances->push_back(std::sqrt(distance2[0]));
      normal_dots->push_back(std::abs(from.normals_[i].dot(to.normals_[index[0]])));
    }
  };
  std::vector<double> accuracy, completeness, nc_accuracy, nc_completeness;
  nearest(pred_cloud, gt_cloud, &accuracy, &nc_accuracy);
  nearest(gt_cloud, pred_cloud, &completeness, &nc_completeness);

  m.accuracy = Mean(accuracy);
  m.accuracy_median = Median(accuracy);
  m.completeness = Mean(completeness);
  m.completeness_median = Median(completeness);
  m.nc_accuracy = Mean(nc_accuracy);
  m.nc_completeness = Mean(nc_completeness);
  m.normal_consistency = 0.5 * (m.nc_accuracy + m.nc_completeness);
  m.predicted_points = static_cast<int64_t>(pred_cloud.points_.size());
  m.gt_points = static_cast<int64_t>(gt_cloud.points_.size());
  return m;
#endif
}

// ---- trajectories ----------------------------------------------------------------------------

void TrajectoryMetricsOptions::Check() const {
  if (rpe_delta < 1) {
    throw OptionError("TrajectoryMetricsOptions.rpe_delta: expected >= 1 frame, got " +
                      std::to_string(rpe_delta));
  }
}

TrajectoryMetrics ComputeTrajectoryMetrics(const std::vector<Rigid3>& predicted_world_from_cam,
                                           const std::vector<Rigid3>& gt_world_from_cam,
                                           const TrajectoryMetricsOptions& options) {
  options.Check();
  const size_t n = predicted_world_from_cam.size();
  if (gt_world_from_cam.size() != n) {
    throw Error("trajectory metrics: expected one predicted pose per ground-truth pose, found " +
                std::to_string(n) + " predicted and " + std::to_string(gt_world_from_cam.size()) +
                " ground-truth poses");
  }
  if (n <= static_cast<size_t>(options.rpe_delta)) {
    throw Error("trajectory metrics: expected more than rpe_delta = " +
                std::to_string(options.rpe_delta) + " poses, found " + std::to_string(n));
  }
  TrajectoryMetrics m;
  m.poses = static_cast<int64_t>(n);
  if (options.align) {
    if (n < 3) {
      throw Error("trajectory metrics: Umeyama alignment expected at least 3 poses, found " +
                  std::to_string(n));
    }
    std::vector<double> pred_centres, gt_centres;
    for (size_t i = 0; i < n; ++i) {
      pred_centres.insert(pred_centres.end(), predicted_world_from_cam[i].t.begin(),
                          predicted_world_from_cam[i].t.end());
      gt_centres.insert(gt_centres.end(), gt_world_from_cam[i].t.begin(),
                        gt_world_from_cam[i].t.end());
    }
    m.alignment = geometry::Umeyama(pred_centres, gt_centres, options.with_scale);
  }

  std::vector<double> ate(n);
  for (size_t i = 0; i < n; ++i) {
    const std::array<double, 3> p = Transform(m.alignment, predicted_world_from_cam[i].t);
    const std::array<double, 3>& g = gt_world_from_cam[i].t;
    ate[i] = std::sqrt((p[0] - g[0]) * (p[0] - g[0]) + (p[1] - g[1]) * (p[1] - g[1]) +
                       (p[2] - g[2]) * (p[2] - g[2]));
  }
  m.ate_rmse = Rms(ate);
  m.ate_mean = Mean(ate);

  // The alignment's rotation cancels in relative motions; only its scale remains.
  std::vector<double> rpe_translation, rpe_rotation;
  for (size_t i = 0; i + options.rpe_delta < n; ++i) {
    const size_t j = i + options.rpe_delta;
    const Rigid3 gt_rel =
        geometry::Compose(geometry::Inverse(gt_world_from_cam[i]), gt_world_from_cam[j]);
    Rigid3 pred_rel = geometry::Compose(geometry::Inverse(predicted_world_from_cam[i]),
                                        predicted_world_from_cam[j]);
    for (double& v : pred_rel.t) v *= m.alignment.scale;
    const Rigid3 error = geometry::Compose(geometry::Inverse(gt_rel), pred_rel);
    rpe_translation.push_back(std::sqrt(error.t[0] * error.t[0] + error.t[1] * error.t[1] +
                                        error.t[2] * error.t[2]));
    rpe_rotation.push_back(RotationAngle(error.R) * 180.0 / kPi);
  }
  m.pairs = static_cast<int64_t>(rpe_translation.size());
  m.rpe_translation_rmse = Rms(rpe_translation);
  m.rpe_rotation_rmse_deg = Rms(rpe_rotation);
  m.rpe_translation_mean = Mean(rpe_translation);
  m.rpe_rotation_mean_deg = Mean(rpe_rotation);
  return m;
}

}  // namespace streamrecon::metrics
