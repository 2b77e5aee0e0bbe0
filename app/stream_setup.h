// Shared by `run` and `view`: the --size parser, opening the input (video, camera, images or
// synthetic frames), and the StreamingModel wrapped as the pipeline's model stage.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/pipeline.h"
#include "core/pose_tracker.h"
#include "datasets/calibration.h"
#include "datasets/frame_source.h"
#include "datasets/preprocess.h"
#include "models/streaming_model.h"

namespace streamrecon::app {

// --size: "W" or "WxH"; empty = the model's own training width (config img_size: 518 for the 1B
// model, 224 for recon-small) with the height from the aspect ratio.
datasets::PreprocessOptions ParseSize(const std::string& size, int patch, int default_width);

// Opens `input` (image folder, glob, video file or camera:N) or, when synthetic_frames > 0,
// a synthetic scene rendered directly at the model size (4:3 unless pre gives both sides).
// Exactly one must be given (OptionError otherwise). Notes about conversions are logged.
// strict: a damaged frame is an error instead of a skipped frame (SourceOptions::strict).
std::unique_ptr<datasets::FrameSource> OpenInput(const std::string& input, int synthetic_frames, const std::string& scene,
                                                 const datasets::PreprocessOptions& pre,
                                                 int every, int64_t max_frames, bool strict = false);

// The model stage: each frame is resized to the model input size fixed by the first frame
// (logged as "model input WxH (from wxh)"), run through StreamingModel::Step and converted to a
// FramePrediction (index = the frame's index; model_ms = Step + conversion). Step() and
// CacheStatsNow() run on the pipeline's model thread only; the model must outlive the pipeline.
class ModelStage {
 public:
  ModelStage(std::shared_ptr<models::StreamingModel> model, const datasets::PreprocessOptions& pre);

  // One frame through the model, before conversion.
  struct Output {
    models::StepOutput tensors;              // on the model's device, in its dtype
    RgbImage image;                          // the frame as the model saw it (resized)
    double model_ms = 0;                     // StreamingModel::Step alone
    std::optional<Intrinsics> known_intrinsics;  // the known camera at the model's size
  };
  // defer_pose: Step's (the pose may still be computed as this returns: StartPoseCopy takes it).
  Output Run(const Frame& frame, bool defer_pose = false);
  // Run, with the results on their way to the host (on a GPU: copies into pinned memory queued
  // behind the frame's work); the returned function waits for them and converts them to a
  // FramePrediction (model_ms covers the step, the wait and the conversion). The pipeline's
  // submit stage: frame t + 1 can be queued before frame t is completed.
  std::function<FramePrediction()> Submit(const Frame& frame);
  // Submit, completed at once.
  FramePrediction Step(const Frame& frame);
  // Every Step also writes folder/frame_%06d.safetensors (%06d = the frame's index): depth [H, W],
  // depth_conf, world_points [H, W, 3], world_points_conf and pose_enc [9] in the model's dtype,
  // unrounded (for comparisons and tools that want the raw arrays). The folder is created.
  void WriteRawOutputs(const std::filesystem::path& folder);
  // A known camera (at the input's resolution): every prediction carries it, scaled to the model's
  // input size. Frames of another size than the calibration states are an error.
  void SetKnownCamera(const datasets::KnownCamera& camera) { known_ = camera; }
  CacheStats CacheStatsNow() const;
  // The same as they were when the last step began (no wait on the device): for a frame completed
  // after the next one was submitted.
  CacheStats CacheStatsBeforeLastStep() const;
  // The model input size {width, height}; {0, 0} before the first frame.
  std::pair<int, int> InputSize() const;

  // next_frame from `source` (which must outlive the pipeline), submit and the cache figures from this.
  static PipelineStages MakeStages(std::shared_ptr<ModelStage> stage,
                                   datasets::FrameSource& source);

 private:
  std::shared_ptr<models::StreamingModel> model_;
  datasets::PreprocessOptions pre_;
  std::optional<datasets::KnownCamera> known_;
  std::filesystem::path raw_folder_;
  mutable std::mutex size_mutex_;
  int width_ = 0;
  int height_ = 0;
};

// The pose tracker of one stream (--poses tracked) with its counts, as run.json and metrics.json
// report them. Track() runs on the pipeline's accumulator thread (PipelineStages::refine); read
// ToJson() once the stream is done.
class TrackedPoses {
 public:
  TrackedPoses() = default;
  void Track(FramePrediction& prediction);
  void Reset();
  // {"source": "tracked", "steps", "measured_steps", "measured_from_last_step", "inliers_median", "track_ms_mean"}
  nlohmann::json ToJson() const;
  // "23 of 23 steps measured (2 around the last step; median 180 inliers; the others took the
  // camera head's motion), 9.1 ms a frame"
  std::string Summary() const;

 private:
  PoseTracker tracker_;
  int64_t frames_ = 0, measured_ = 0, from_last_step_ = 0;
  std::vector<int> inliers_;
  double ms_ = 0;
};

}  // namespace streamrecon::app
