// The streaming pipeline shared by `run` and `view`: frame source -> model step -> point-cloud
// accumulator -> snapshot, each stage on its own thread, joined by bounded queues. Torch-free:
// the stages are injected as functions, so core does not depend on the model or the sources.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/accumulator.h"
#include "core/types.h"

namespace streamrecon {

// KV-cache figures read on the model thread right after each step (models are not thread-safe).
struct CacheStats {
  int64_t bytes = 0;                      // bytes held by every cache now
  int64_t budget_bytes = 0;               // the byte budget; 0 = unbounded or unknown
  std::vector<int64_t> tokens_per_layer;  // tokens kept by each global layer
};

// What the pipeline knows about one processed frame (carried from the model to the accumulator).
struct FrameReport {
  int64_t index = 0;          // the frame's index in the stream
  std::string name;           // the frame's name ("video:12", "0001.jpg", ...)
  int64_t processed = 0;      // frames processed so far, this one included
  double read_ms = 0;         // next_frame (decode, capture)
  double preprocess_ms = 0;   // step wall time minus prediction.model_ms (resize, conversion)
  double model_ms = 0;        // prediction.model_ms
  double refine_ms = 0;       // PipelineStages::refine (the pose tracker); 0 without it
  double accumulate_ms = 0;   // turning the prediction into points
  size_t points = 0;          // points in the cloud after this frame
  CacheStats cache;
};

// Where the pipeline is.
enum class PipelineState {
  kRunning,   // frames are flowing (or paused)
  kFinished,  // the source ended and every frame went through
  kStopped,   // RequestStop() was called before the end
  kFailed,    // a stage threw; error() says what
};
const char* PipelineStateName(PipelineState state);

// Live counters; cheap to read at any time.
struct PipelineStats {
  PipelineState state = PipelineState::kRunning;
  std::string error;            // what the failing stage threw (kFailed)
  int64_t total_frames = -1;    // frames the source expects to deliver; -1 = unknown
  int64_t frames_read = 0;      // delivered by the source
  int64_t frames_processed = 0; // through the model and the accumulator
  int64_t frames_dropped = 0;   // dropped by a full queue (real-time mode only)
  bool paused = false;
};

// The cameras of every processed frame, shared between snapshots instead of copied: full chunks
// of 1024 records are immutable and shared by every later snapshot; only the newest partial chunk
// is copied. A stream of N frames holds each record once (about 170 bytes), so memory grows by
// that per frame and not by N per snapshot.
class CameraLog {
 public:
  size_t size() const { return full_.size() * kChunk + partial_.size(); }
  bool empty() const { return size() == 0; }
  const CameraRecord& operator[](size_t i) const {
    return i / kChunk < full_.size() ? (*full_[i / kChunk])[i % kChunk] : partial_[i - full_.size() * kChunk];
  }
  const CameraRecord& back() const { return (*this)[size() - 1]; }
  void push_back(CameraRecord record);
  std::vector<CameraRecord> ToVector() const;

 private:
  static constexpr size_t kChunk = 1024;
  std::vector<std::shared_ptr<const std::vector<CameraRecord>>> full_;
  std::vector<CameraRecord> partial_;
};

// The newest state of the reconstruction, handed to viewers and exporters. Immutable.
struct PipelineSnapshot {
  uint64_t version = 0;                   // grows with every snapshot of one pipeline
  PipelineStats stats;                    // as of this snapshot
  CloudSnapshot cloud;                    // the accumulated points
  CameraLog cameras;                      // one per processed frame
  std::shared_ptr<const FramePrediction> latest;  // the newest prediction, with image and depth
  std::optional<FrameReport> latest_report;       // its timings and cache figures
  std::vector<float> history_ms;          // step ms (preprocess + model) of the last frames
  std::vector<float> history_cache_mib;   // cache MiB after each of the last frames
  double model_fps = 0;                   // 1000 / mean step ms over the last frames
};

// The stages, called each on its own thread.
struct PipelineStages {
  // The next frame, or nullopt at the end of the stream. Source thread. When it throws, the frames
  // read before still go through, then the pipeline fails with that exception; an exception in
  // the other stages fails it at once.
  std::function<std::optional<Frame>()> next_frame;
  // Runs the model (and its preprocessing) on one frame; sets model_ms to the model's share of
  // the wall time. Model thread.
  std::function<FramePrediction(const Frame&)> step;
  // Optional, instead of `step`: queues the model's work for one frame and returns the function
  // that completes it (waits for the device, converts the results). With it the model thread
  // queues frame t + 1 before it completes frame t whenever frame t + 1 is already waiting, so a
  // GPU is not left idle while the host converts frame t; a frame with no successor in the queue
  // (a live source, the end of the stream, a pause) is completed at once. Model thread.
  std::function<std::function<FramePrediction()>(const Frame&)> submit;
  // Optional: the cache figures after each step. Model thread.
  std::function<CacheStats()> cache_stats;
  // Optional, with submit: the cache figures as they were before the last submitted frame, for a
  // frame completed after its successor was queued (else cache_stats is used). Model thread.
  std::function<CacheStats()> cache_stats_before_last;
  // Optional: corrects each prediction in place, in stream order, before it joins the cloud (the
  // pose tracker: core/pose_tracker.h, which keeps its own time). Accumulator thread, so it runs
  // beside the model's next frames.
  std::function<void(FramePrediction&)> refine;
  // Optional: called with every prediction, in stream order, after it joined the cloud
  // (e.g. to write depth maps or log progress). Accumulator thread.
  std::function<void(const FramePrediction&, const FrameReport&)> on_frame;
};

struct PipelineOptions {
  // Real-time input (camera, or a video played at its own rate): when the model lags, a full
  // frame queue drops its oldest frame for the newest one and counts it. false = nothing is
  // dropped; the source waits for the model.
  bool realtime = false;
  // Deliver frame k no earlier than (timestamp_k - timestamp_0) seconds after the first, so a
  // video plays at its own rate (cameras pace themselves).
  bool pace_to_timestamps = false;
  // Frames the source may run ahead of the model.
  int frame_queue = 2;
  // Predictions the model may run ahead of the accumulator.
  int prediction_queue = 4;
  // Stop after this many frames from the source (-1 = no limit).
  int64_t max_frames = -1;
  // Frames the source expects to deliver (-1 = unknown); shown as "frame i/N".
  int64_t total_frames = -1;
  // Frames kept in the ms/frame and cache plots.
  int history = 200;
  // Start paused (step with Step()).
  bool start_paused = false;
  // The accumulator.
  AccumulatorOptions cloud;

  // Throws OptionError naming the bad field.
  void Check() const;
};

class Pipeline {
 public:
  // Starts the three threads. Throws OptionError for bad options or a missing next_frame or
  // step/submit.
  Pipeline(PipelineStages stages, const PipelineOptions& options);
  // Requests a stop and joins every thread.
  ~Pipeline();
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  // The newest snapshot (never waits on the model; nullptr before the first one).
  std::shared_ptr<const PipelineSnapshot> Latest() const;
  PipelineStats Stats() const;

  // Pauses / resumes the model stage. In real-time mode the source keeps reading while paused,
  // so frames are dropped (and counted), as for any live stream.
  void SetPaused(bool paused);
  // While paused: lets one more frame through the model.
  void Step();
  // Re-bins the cloud with a new voxel size (applied on the accumulator thread, which then
  // publishes a snapshot, also after the end of the stream). Throws OptionError for a bad size.
  void SetVoxelSize(double voxel_size);

  // Asks every stage to stop; returns at once. The state becomes kStopped unless the stream
  // already finished or failed.
  void RequestStop();
  // Waits until the state is no longer kRunning; false on timeout.
  bool WaitUntilDone(std::chrono::milliseconds timeout);
  void WaitUntilDone();
  // Rethrows what the failing stage threw (its own type), if a stage failed.
  void RethrowIfFailed() const;

 private:
  template <typename T>
  class BoundedQueue;
  struct Item;

  void SourceLoop();
  void ModelLoop();
  struct InFlight;
  // Completes a submitted frame and hands it on; false when the stream is being torn down.
  bool Complete(InFlight& in_flight, bool successor_queued);
  // Waits while paused (completing `in_flight` first, so a paused viewer shows the last frame);
  // false on a stop request.
  bool WaitUnlessPaused(std::optional<InFlight>& in_flight);
  void AccumulatorLoop();
  void Fail(std::exception_ptr error);
  void Publish();
  bool Stopping() const;

  PipelineStages stages_;
  PipelineOptions options_;

  std::unique_ptr<BoundedQueue<Item>> frames_;
  std::unique_ptr<BoundedQueue<Item>> predictions_;

  mutable std::mutex mutex_;  // guards the members below
  std::condition_variable changed_;
  PipelineStats stats_;
  bool stop_requested_ = false;
  std::exception_ptr error_;
  std::exception_ptr source_error_;  // the source failed: reported once the frames before it are through
  int64_t step_tokens_ = 0;
  std::optional<double> pending_voxel_size_;
  bool done_ = false;  // the state left kRunning and the snapshot saying so is out

  mutable std::mutex snapshot_mutex_;
  std::shared_ptr<const PipelineSnapshot> latest_;

  // Owned by the accumulator thread.
  PointCloudAccumulator accumulator_;
  CameraLog cameras_;
  std::shared_ptr<const FramePrediction> latest_prediction_;
  std::optional<FrameReport> latest_report_;
  std::vector<float> history_ms_;
  std::vector<float> history_cache_mib_;
  uint64_t version_ = 0;

  std::thread source_thread_;
  std::thread model_thread_;
  std::thread accumulator_thread_;
};

}  // namespace streamrecon
