// Camera tracking on the model's own depth: each frame's pose is measured against the previous
// frame from SIFT matches, searched where the camera head's motion puts them, and a RANSAC PnP on
// the previous frame's predicted depth. It replaces the camera head's pose, which drifts over a
// stream, by one chained from measured steps. Torch-free; needs OpenCV (features2d, calib3d).
#pragma once

#include <memory>

#include "core/types.h"

namespace streamrecon {

struct PoseTrackerOptions {
  // SIFT keypoints kept per frame (the strongest).
  int max_features = 3000;
  // SIFT's contrast threshold; below OpenCV's 0.04 so that the model's small frames (224 wide)
  // give enough keypoints (docs/training.md, "Tracked poses").
  double contrast_threshold = 0.02;
  // Pixels: a previous keypoint's match is looked for within this radius of where its depth and
  // the camera head's motion (or, on a second try, the last measured step) put it in the new frame.
  double search_radius = 25.0;
  // Lowe's ratio test among the candidates within the radius (best < ratio * second best).
  double ratio = 0.9;
  // RANSAC PnP inlier threshold in pixels, and its iterations.
  double reprojection_error = 1.5;
  int ransac_iterations = 1000;
  // A step is measured only with at least this many inliers. When the camera head's motion finds
  // too few, or fewer than half of its matches, the search is repeated around the last measured
  // step and the attempt with more inliers is kept; failing both, the camera head's motion is
  // used for the step.
  int min_inliers = 15;
  // Track with square pixels: one focal length sqrt(fx fy) from the model's two fields of view.
  // The model was trained on 4:3 frames; at other aspect ratios its fx and fy disagree (at 308x224:
  // 363 and 225 pixels against a true 267 for both), while their geometric mean stays close (286).
  // The tracked camera's fields of view become this focal length's, so that the exports'
  // intrinsics agree with the point map. Ignored for a known camera (--intrinsics).
  bool square_pixels = true;
  // The point map after tracking: the depth unprojected with the tracked camera and the
  // intrinsics the tracker used (true), or the point head's map moved rigidly by the camera's
  // correction (false). The point head drifts on its own, not as the camera head does, so moving
  // its map with the camera's correction can make the cloud worse (docs/training.md).
  bool points_from_depth = true;

  void Check() const;  // throws OptionError naming the bad field
};

// What happened to one frame.
struct TrackStep {
  bool measured = false;  // the step from the previous frame was measured (else: the head's motion)
  bool from_last_step = false;  // measured with the last measured step as the prior, not the head's motion
  int matches = 0;        // candidate matches with a valid depth
  int inliers = 0;        // PnP inliers
};

// Tracks the camera of one stream. Frames must come in stream order; Reset() starts a new stream.
class PoseTracker {
 public:
  explicit PoseTracker(const PoseTrackerOptions& options = {});
  ~PoseTracker();
  PoseTracker(const PoseTracker&) = delete;
  PoseTracker& operator=(const PoseTracker&) = delete;

  // Whether this build has the tracker (OpenCV's features2d and calib3d); Track throws otherwise.
  static bool Available();

  // Replaces prediction's camera (pose_enc: translation, rotation and, with square_pixels, the
  // fields of view) by the tracked one, and its point map by one consistent with it
  // (options.points_from_depth). The first frame keeps the model's camera (the identity). Uses the
  // prediction's image, depth and intrinsics (its known camera when set). Throws Error on a
  // prediction whose arrays do not match its size.
  TrackStep Track(FramePrediction& prediction);

  void Reset();

 private:
  struct State;
  PoseTrackerOptions options_;
  std::unique_ptr<State> state_;
};

}  // namespace streamrecon
