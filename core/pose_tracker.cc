// Camera tracking on the model's depth (core/pose_tracker.h).
#include "core/pose_tracker.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "core/errors.h"
#include "core/geometry.h"

#ifdef STREAMRECON_HAVE_TRACKING
#include <opencv2/calib3d.hpp>
#include <opencv2/core.hpp>
#include <opencv2/core/hal/hal.hpp>
#include <opencv2/features2d.hpp>
#include <opencv2/imgproc.hpp>
#endif

namespace streamrecon {

void PoseTrackerOptions::Check() const {
  auto fail = [](const std::string& field, const std::string& expected, double found) {
    throw OptionError("pose tracker " + field + ": expected " + expected + ", found " + std::to_string(found));
  };
  if (max_features < 16) fail("max_features", ">= 16", max_features);
  if (!(contrast_threshold > 0 && contrast_threshold < 1)) fail("contrast_threshold", "in (0, 1)", contrast_threshold);
  if (!(search_radius >= 1 && search_radius <= 1000)) fail("search_radius", "in [1, 1000] pixels", search_radius);
  if (!(ratio > 0 && ratio <= 1)) fail("ratio", "in (0, 1]", ratio);
  if (!(reprojection_error > 0 && reprojection_error <= 100)) fail("reprojection_error", "in (0, 100] pixels", reprojection_error);
  if (ransac_iterations < 1) fail("ransac_iterations", ">= 1", ransac_iterations);
  if (min_inliers < 6) fail("min_inliers", ">= 6 (a PnP needs at least 4 points, its refinement 6)", min_inliers);
}

#ifdef STREAMRECON_HAVE_TRACKING

// The previous frame: what the next one is matched against.
struct PoseTracker::State {
  bool has_previous = false;
  std::vector<cv::KeyPoint> keypoints;
  cv::Mat descriptors;             // [N, 128] float
  std::vector<float> depth;        // [H, W]
  int width = 0, height = 0;
  Intrinsics intrinsics;
  Rigid3 head_cam_from_world;      // the camera head's pose of that frame
  Rigid3 world_from_cam;           // its tracked pose
  // The last measured step (cam_t from cam_{t-1}): the second prior, for a step the camera head's
  // motion does not find.
  bool has_measured = false;
  Rigid3 last_measured;
  cv::Ptr<cv::SIFT> sift;
};

PoseTracker::PoseTracker(const PoseTrackerOptions& options) : options_(options), state_(std::make_unique<State>()) {
  options_.Check();
  state_->sift = cv::SIFT::create(options_.max_features, 3, options_.contrast_threshold);
}

PoseTracker::~PoseTracker() = default;

bool PoseTracker::Available() { return true; }

void PoseTracker::Reset() {
  cv::Ptr<cv::SIFT> sift = state_->sift;
  *state_ = State{};
  state_->sift = sift;
}

namespace {

Rigid3 FromRvecTvec(const cv::Mat& rvec, const cv::Mat& tvec) {
  cv::Mat R;
  cv::Rodrigues(rvec, R);
  Rigid3 T;
  for (int i = 0; i < 9; ++i) T.R[i] = R.at<double>(i / 3, i % 3);
  for (int i = 0; i < 3; ++i) T.t[i] = tvec.at<double>(i);
  return T;
}

cv::Matx33d CameraMatrix(const Intrinsics& k) { return {k.fx, 0, k.cx, 0, k.fy, k.cy, 0, 0, 1}; }

// Guided matching: previous keypoint i (with a valid depth) is projected into the new frame by
// the prior motion and matched among the new keypoints within `radius` of that place: the best
// descriptor distance, if below ratio x the second best there, and if i is in turn the best
// previous keypoint for that new one (mutual). OpenCV's BFMatcher with a mask would compute every
// pair's distance (3000 x 3000 x 128 per frame); the grid below computes only the candidates'.
struct Matches {
  std::vector<cv::Point3f> object;  // previous camera's coordinates
  std::vector<cv::Point2f> image;   // pixel in the new frame
};

// The new frame's keypoints binned into cells of the search radius, built once per frame for
// every guided search in it.
struct KeypointGrid {
  float cell = 1;
  int cols = 1, rows = 1;
  std::vector<std::vector<int>> cells;  // keypoint indices, row-major

  KeypointGrid(const std::vector<cv::KeyPoint>& keypoints, int width, int height, double radius)
      : cell(static_cast<float>(radius)),
        cols(std::max(1, static_cast<int>(std::ceil(width / radius)))),
        rows(std::max(1, static_cast<int>(std::ceil(height / radius)))),
        cells(static_cast<size_t>(cols) * rows) {
    for (int j = 0; j < static_cast<int>(keypoints.size()); ++j) {
      const int cx = std::min(cols - 1, std::max(0, static_cast<int>(keypoints[j].pt.x / cell)));
      const int cy = std::min(rows - 1, std::max(0, static_cast<int>(keypoints[j].pt.y / cell)));
      cells[static_cast<size_t>(cy) * cols + cx].push_back(j);
    }
  }
};

// points: the previous keypoints with a depth, in the previous camera (point_keypoint: their
// keypoint index); predicted: where the prior puts each in the new frame.
Matches GuidedMatches(const std::vector<std::array<double, 3>>& points, const std::vector<int>& point_keypoint,
                      const std::vector<cv::Point2f>& predicted, const cv::Mat& previous_descriptors,
                      const std::vector<cv::KeyPoint>& keypoints, const cv::Mat& descriptors, const KeypointGrid& grid,
                      int width, int height, double ratio) {
  const float r = grid.cell;
  const int cols = grid.cols, rows = grid.rows;
  const int dims = descriptors.cols;
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<int> best_new(points.size(), -1);
  std::vector<int> best_previous(keypoints.size(), -1);
  std::vector<float> best_previous_distance(keypoints.size(), inf);
  for (size_t i = 0; i < points.size(); ++i) {
    const cv::Point2f p = predicted[i];
    if (!std::isfinite(p.x) || !std::isfinite(p.y) || p.x < -r || p.y < -r || p.x > width + r || p.y > height + r) continue;
    const float* a = previous_descriptors.ptr<float>(point_keypoint[i]);
    float best = inf, second = inf;
    int best_j = -1;
    const int x0 = std::max(0, static_cast<int>((p.x - r) / r)), x1 = std::min(cols - 1, static_cast<int>((p.x + r) / r));
    const int y0 = std::max(0, static_cast<int>((p.y - r) / r)), y1 = std::min(rows - 1, static_cast<int>((p.y + r) / r));
    for (int gy = y0; gy <= y1; ++gy) {
      for (int gx = x0; gx <= x1; ++gx) {
        for (int j : grid.cells[static_cast<size_t>(gy) * cols + gx]) {
          const cv::Point2f d = keypoints[j].pt - p;
          if (d.x * d.x + d.y * d.y > r * r) continue;
          const float distance = std::sqrt(cv::hal::normL2Sqr_(a, descriptors.ptr<float>(j), dims));
          if (distance < best) {
            second = best;
            best = distance;
            best_j = j;
          } else if (distance < second) {
            second = distance;
          }
          if (distance < best_previous_distance[j]) {
            best_previous_distance[j] = distance;
            best_previous[j] = static_cast<int>(i);
          }
        }
      }
    }
    if (best_j >= 0 && best < ratio * second) best_new[i] = best_j;
  }
  Matches m;
  for (size_t i = 0; i < points.size(); ++i) {
    const int j = best_new[i];
    if (j < 0 || best_previous[j] != static_cast<int>(i)) continue;
    m.object.emplace_back(static_cast<float>(points[i][0]), static_cast<float>(points[i][1]), static_cast<float>(points[i][2]));
    m.image.push_back(keypoints[j].pt);
  }
  return m;
}

}  // namespace

TrackStep PoseTracker::Track(FramePrediction& p) {
  const size_t pixels = static_cast<size_t>(std::max(0, p.width)) * static_cast<size_t>(std::max(0, p.height));
  if (p.width <= 0 || p.height <= 0 || p.depth.size() != pixels || p.image.width != p.width || p.image.height != p.height ||
      p.image.data.size() != pixels * 3) {
    throw Error("pose tracking, frame " + std::to_string(p.index) + ": expected an image and a depth map of the frame's size (" +
                std::to_string(p.width) + " x " + std::to_string(p.height) + ", both positive), found an image of " +
                std::to_string(p.image.width) + " x " + std::to_string(p.image.height) + " and " + std::to_string(p.depth.size()) +
                " depth values");
  }
  State& s = *state_;
  if (s.has_previous && (p.width != s.width || p.height != s.height)) {
    throw Error("pose tracking, frame " + std::to_string(p.index) + ": the frame size changed from " + std::to_string(s.width) + " x " +
                std::to_string(s.height) + " to " + std::to_string(p.width) + " x " + std::to_string(p.height) + " within one stream");
  }
  Rigid3 head_cam_from_world;
  bool head_finite = true;
  for (double v : p.pose_enc) head_finite = head_finite && std::isfinite(v);
  if (head_finite) head_cam_from_world = geometry::PoseEncodingToExtrinsics(p.pose_enc);
  const Intrinsics model_k = geometry::PoseEncodingToIntrinsics(p.pose_enc, p.width, p.height);
  Intrinsics k = p.known_intrinsics ? *p.known_intrinsics : model_k;
  if (options_.square_pixels && !p.known_intrinsics) k.fx = k.fy = std::sqrt(k.fx * k.fy);

  cv::Mat rgb(p.height, p.width, CV_8UC3, p.image.data.data()), gray;
  cv::cvtColor(rgb, gray, cv::COLOR_RGB2GRAY);
  std::vector<cv::KeyPoint> keypoints;
  cv::Mat descriptors;
  s.sift->detectAndCompute(gray, cv::noArray(), keypoints, descriptors);

  TrackStep step;
  Rigid3 world_from_cam = geometry::Inverse(head_cam_from_world);  // the first frame: the head's (identity if not finite)
  if (s.has_previous) {
    // The camera head's motion from the previous frame: the prior, and the fallback.
    // A head pose that is not finite gives no prior: the step is measured without one (the
    // identity's) or, failing that, the camera holds still.
    const Rigid3 prior = head_finite ? geometry::Compose(head_cam_from_world, geometry::Inverse(s.head_cam_from_world))  // cam_t from cam_{t-1}
                                     : Rigid3{};
    // The previous frame's keypoints that have a depth, unprojected into its camera.
    std::vector<std::array<double, 3>> points;
    std::vector<int> point_keypoint;
    {
      const Intrinsics& kp = s.intrinsics;
      for (int i = 0; i < static_cast<int>(s.keypoints.size()); ++i) {
        const cv::Point2f uv = s.keypoints[i].pt;
        const int x = std::min(s.width - 1, std::max(0, static_cast<int>(std::lround(uv.x))));
        const int y = std::min(s.height - 1, std::max(0, static_cast<int>(std::lround(uv.y))));
        const float z = s.depth[static_cast<size_t>(y) * s.width + x];
        if (!std::isfinite(z) || z <= 0) continue;
        const std::array<double, 3> q = {(uv.x - kp.cx) * z / kp.fx, (uv.y - kp.cy) * z / kp.fy, static_cast<double>(z)};
        points.push_back(q);
        point_keypoint.push_back(i);
      }
    }
    const KeypointGrid grid(keypoints, p.width, p.height, options_.search_radius);
    // Matches those keypoints where `guess` (cam_t from cam_{t-1}) moves them and measures the
    // step from them (measured: at least min_inliers inliers).
    struct Attempt {
      bool measured = false;
      int matches = 0, inliers = 0;
      Rigid3 cam_from_previous;
    };
    auto measure = [&](const Rigid3& guess) {
      Attempt a;
      if (keypoints.empty() || points.empty()) return a;
      std::vector<cv::Point2f> predicted;
      predicted.reserve(points.size());
      for (const std::array<double, 3>& q : points) {
        const std::array<double, 3> c = geometry::Apply(guess, q);
        predicted.emplace_back(c[2] > 1e-6 ? cv::Point2f(static_cast<float>(k.fx * c[0] / c[2] + k.cx), static_cast<float>(k.fy * c[1] / c[2] + k.cy))
                                           : cv::Point2f(std::nanf(""), std::nanf("")));
      }
      const Matches m = GuidedMatches(points, point_keypoint, predicted, s.descriptors, keypoints, descriptors, grid, p.width, p.height,
                                      options_.ratio);
      a.matches = static_cast<int>(m.object.size());
      if (a.matches < options_.min_inliers) return a;
      try {
        cv::Mat rvec, tvec;
        std::vector<int> inliers;
        const cv::Matx33d camera = CameraMatrix(k);
        const bool ok = cv::solvePnPRansac(m.object, m.image, camera, cv::noArray(), rvec, tvec, false, options_.ransac_iterations,
                                           static_cast<float>(options_.reprojection_error), 0.999, inliers, cv::SOLVEPNP_AP3P);
        if (!ok || static_cast<int>(inliers.size()) < options_.min_inliers) return a;
        std::vector<cv::Point3f> object;
        std::vector<cv::Point2f> image;
        for (int i : inliers) {
          object.push_back(m.object[i]);
          image.push_back(m.image[i]);
        }
        cv::solvePnPRefineLM(object, image, camera, cv::noArray(), rvec, tvec);
        const Rigid3 measured = FromRvecTvec(rvec, tvec);
        for (double v : measured.R) if (!std::isfinite(v)) return a;
        for (double v : measured.t) if (!std::isfinite(v)) return a;
        a.measured = true;
        a.inliers = static_cast<int>(inliers.size());
        a.cam_from_previous = measured;
      } catch (const cv::Exception&) {
        // A degenerate configuration (e.g. a camera matrix that is not finite): not measured.
      }
      return a;
    };
    // The camera head's motion first. Where it misleads the search (its rotation can be off by
    // degrees on a step, which moves the true matches beyond search_radius and leaves repeated
    // texture to match), it finds too few inliers or fewer than half of its matches: then the
    // last measured step is tried too (a camera moves smoothly; after unmeasured steps it is the
    // last one measured), and the attempt with more inliers is kept. A step neither measures
    // takes the head's motion.
    Attempt best = measure(prior);
    if (s.has_measured && (!best.measured || 2 * best.inliers < best.matches)) {
      Attempt again = measure(s.last_measured);
      if (again.measured && (!best.measured || again.inliers > best.inliers)) {
        best = again;
        step.from_last_step = true;
      }
    }
    step.measured = best.measured;
    step.matches = best.matches;
    step.inliers = best.inliers;
    Rigid3 cam_from_previous = prior;
    if (best.measured) {
      cam_from_previous = best.cam_from_previous;
      s.has_measured = true;
      s.last_measured = best.cam_from_previous;
    }
    world_from_cam = geometry::Compose(s.world_from_cam, geometry::Inverse(cam_from_previous));
  }

  // The new camera into the pose encoding (camera_from_world), and the
  // point map: the depth unprojected with it, or the head's map moved by the same correction
  // (tracked world_from_cam x head cam_from_world).
  const Rigid3 cam_from_world = geometry::Inverse(world_from_cam);
  // The fields of view: those of the focal length tracked with (square pixels), so that the
  // exports' intrinsics and the point map agree; a known camera keeps the model's in the encoding
  // (the known one replaces them everywhere).
  p.pose_enc = geometry::ExtrinsicsIntrinsicsToPoseEncoding(cam_from_world, p.known_intrinsics ? model_k : k, p.width, p.height);
  if (options_.points_from_depth) {
    p.world_points = geometry::UnprojectDepth(p.depth, p.width, p.height, k, world_from_cam);
    if (p.depth_conf.size() == pixels) p.world_points_conf = p.depth_conf;  // the points are the depth's now
  } else if (s.has_previous && p.world_points.size() == pixels * 3) {
    const Rigid3 correction = geometry::Compose(world_from_cam, head_cam_from_world);
    for (size_t i = 0; i < pixels; ++i) {
      float* w = &p.world_points[i * 3];
      const std::array<double, 3> v = geometry::Apply(correction, {w[0], w[1], w[2]});
      for (int a = 0; a < 3; ++a) w[a] = static_cast<float>(v[a]);
    }
  }

  s.has_previous = true;
  s.keypoints = std::move(keypoints);
  s.descriptors = descriptors;
  s.depth = p.depth;
  s.width = p.width;
  s.height = p.height;
  s.intrinsics = k;
  if (head_finite) s.head_cam_from_world = head_cam_from_world;  // else the next prior is from the last finite one
  s.world_from_cam = world_from_cam;
  return step;
}

#else  // no OpenCV

struct PoseTracker::State {};

PoseTracker::PoseTracker(const PoseTrackerOptions& options) : options_(options), state_(std::make_unique<State>()) {
  options_.Check();
}
PoseTracker::~PoseTracker() = default;
bool PoseTracker::Available() { return false; }
void PoseTracker::Reset() {}
TrackStep PoseTracker::Track(FramePrediction&) {
  throw Error("pose tracking needs OpenCV (features2d, calib3d): this build has none; install libopencv-dev and rebuild, or use the camera head's poses (--poses head)");
}

#endif

}  // namespace streamrecon
