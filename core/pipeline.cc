#include "core/pipeline.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <numeric>
#include <utility>

#include "core/errors.h"

namespace streamrecon {

void CameraLog::push_back(CameraRecord record) {
  if (partial_.capacity() < kChunk) partial_.reserve(kChunk);
  partial_.push_back(std::move(record));
  if (partial_.size() == kChunk) {
    full_.push_back(std::make_shared<const std::vector<CameraRecord>>(std::move(partial_)));
    partial_ = std::vector<CameraRecord>();
  }
}

std::vector<CameraRecord> CameraLog::ToVector() const {
  std::vector<CameraRecord> all;
  all.reserve(size());
  for (const auto& chunk : full_) all.insert(all.end(), chunk->begin(), chunk->end());
  all.insert(all.end(), partial_.begin(), partial_.end());
  return all;
}

namespace {

using Clock = std::chrono::steady_clock;

double MsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

std::string Describe(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "an unknown exception (not derived from std::exception)";
  }
}

// How long the accumulator waits for a prediction before it looks at pending option changes.
constexpr auto kAccumulatorPoll = std::chrono::milliseconds(50);

}  // namespace

const char* PipelineStateName(PipelineState state) {
  switch (state) {
    case PipelineState::kRunning: return "running";
    case PipelineState::kFinished: return "finished";
    case PipelineState::kStopped: return "stopped";
    case PipelineState::kFailed: return "failed";
  }
  return "?";
}

void PipelineOptions::Check() const {
  if (frame_queue < 1) {
    throw OptionError("frame_queue: expected at least 1 frame, found " + std::to_string(frame_queue));
  }
  if (prediction_queue < 1) {
    throw OptionError("prediction_queue: expected at least 1 prediction, found " +
                      std::to_string(prediction_queue));
  }
  if (max_frames < -1) {
    throw OptionError("max_frames: expected -1 (no limit) or a count >= 0, found " +
                      std::to_string(max_frames));
  }
  if (history < 1) {
    throw OptionError("history: expected at least 1 frame, found " + std::to_string(history));
  }
  cloud.Check();
}

// What travels between the stages: the frame, then its prediction, and their report.
struct Pipeline::Item {
  Frame frame;
  FramePrediction prediction;
  FrameReport report;
};

// A FIFO of at most `capacity` items. Close() lets consumers drain what is left; Abort() wakes
// everyone and makes every later call fail at once.
template <typename T>
class Pipeline::BoundedQueue {
 public:
  explicit BoundedQueue(size_t capacity) : capacity_(capacity) {}

  // Waits while full; false when the queue was closed or aborted (the item is dropped).
  bool Push(T item) {
    std::unique_lock<std::mutex> lock(mutex_);
    not_full_.wait(lock, [&] { return aborted_ || closed_ || items_.size() < capacity_; });
    if (aborted_ || closed_) return false;
    items_.push_back(std::move(item));
    not_empty_.notify_one();
    return true;
  }

  // Never waits: when full, the oldest item makes room. Returns how many items were dropped
  // (0 or 1), or -1 when the queue was closed or aborted.
  int PushDroppingOldest(T item) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (aborted_ || closed_) return -1;
    int dropped = 0;
    if (items_.size() >= capacity_) {
      items_.pop_front();
      dropped = 1;
    }
    items_.push_back(std::move(item));
    not_empty_.notify_one();
    return dropped;
  }

  // Waits for an item; nullopt once the queue is closed and empty, or aborted.
  std::optional<T> Pop() { return PopUntil(Clock::time_point::max(), nullptr); }

  // As Pop(), waiting at most `timeout`; *ended tells a closed/aborted queue from a timeout.
  std::optional<T> PopFor(Clock::duration timeout, bool* ended) {
    return PopUntil(Clock::now() + timeout, ended);
  }

  void Close() {
    std::lock_guard<std::mutex> lock(mutex_);
    closed_ = true;
    not_empty_.notify_all();
    not_full_.notify_all();
  }

  void Abort() {
    std::lock_guard<std::mutex> lock(mutex_);
    aborted_ = true;
    items_.clear();
    not_empty_.notify_all();
    not_full_.notify_all();
  }

 private:
  std::optional<T> PopUntil(Clock::time_point deadline, bool* ended) {
    std::unique_lock<std::mutex> lock(mutex_);
    const auto ready = [&] { return aborted_ || closed_ || !items_.empty(); };
    if (deadline == Clock::time_point::max()) {
      not_empty_.wait(lock, ready);
    } else {
      not_empty_.wait_until(lock, deadline, ready);
    }
    if (ended) *ended = aborted_ || (closed_ && items_.empty());
    if (aborted_ || items_.empty()) return std::nullopt;
    T item = std::move(items_.front());
    items_.pop_front();
    not_full_.notify_one();
    return item;
  }

  const size_t capacity_;
  std::mutex mutex_;
  std::condition_variable not_empty_;
  std::condition_variable not_full_;
  std::deque<T> items_;
  bool closed_ = false;
  bool aborted_ = false;
};

Pipeline::Pipeline(PipelineStages stages, const PipelineOptions& options)
    : stages_(std::move(stages)), options_(options), accumulator_(options.cloud) {
  options_.Check();
  if (!stages_.next_frame || (!stages_.step && !stages_.submit)) {
    throw OptionError("pipeline stages: expected next_frame and step (or submit) functions, found " +
                      std::string(stages_.next_frame ? "neither step nor submit" : "no next_frame"));
  }
  frames_ = std::make_unique<BoundedQueue<Item>>(options_.frame_queue);
  predictions_ = std::make_unique<BoundedQueue<Item>>(options_.prediction_queue);
  stats_.total_frames = options_.max_frames >= 0 && options_.total_frames >= 0
                            ? std::min(options_.max_frames, options_.total_frames)
                            : options_.total_frames;
  stats_.paused = options_.start_paused;
  source_thread_ = std::thread([this] { SourceLoop(); });
  model_thread_ = std::thread([this] { ModelLoop(); });
  accumulator_thread_ = std::thread([this] { AccumulatorLoop(); });
}

Pipeline::~Pipeline() {
  RequestStop();
  for (std::thread* t : {&source_thread_, &model_thread_, &accumulator_thread_}) {
    if (t->joinable()) t->join();
  }
}

std::shared_ptr<const PipelineSnapshot> Pipeline::Latest() const {
  std::lock_guard<std::mutex> lock(snapshot_mutex_);
  return latest_;
}

PipelineStats Pipeline::Stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void Pipeline::SetPaused(bool paused) {
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.paused = paused;
  step_tokens_ = 0;
  changed_.notify_all();
}

void Pipeline::Step() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (stats_.paused) ++step_tokens_;
  changed_.notify_all();
}

void Pipeline::SetVoxelSize(double voxel_size) {
  if (!(voxel_size >= 0.0) || !std::isfinite(voxel_size)) {
    throw OptionError("voxel size: expected 0 (off) or a positive length, found " +
                      std::to_string(voxel_size));
  }
  std::lock_guard<std::mutex> lock(mutex_);
  pending_voxel_size_ = voxel_size;
  changed_.notify_all();
}

void Pipeline::RequestStop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_requested_ = true;
    if (stats_.state == PipelineState::kRunning) stats_.state = PipelineState::kStopped;
    changed_.notify_all();
  }
  frames_->Abort();
  predictions_->Abort();
}

bool Pipeline::WaitUntilDone(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] { return done_; });
}

void Pipeline::WaitUntilDone() {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [&] { return done_; });
}

void Pipeline::RethrowIfFailed() const {
  std::exception_ptr error;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    error = error_;
  }
  if (error) std::rethrow_exception(error);
}

bool Pipeline::Stopping() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stop_requested_;
}

void Pipeline::Fail(std::exception_ptr error) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!error_ && stats_.state == PipelineState::kRunning) {
      error_ = error;
      stats_.error = Describe(error);
      stats_.state = PipelineState::kFailed;
    }
    stop_requested_ = true;
    changed_.notify_all();
  }
  frames_->Abort();
  predictions_->Abort();
}

void Pipeline::SourceLoop() {
  try {
    int64_t delivered = 0;
    std::optional<double> first_timestamp;
    Clock::time_point first_time;
    while (!Stopping()) {
      if (options_.max_frames >= 0 && delivered >= options_.max_frames) break;
      const auto t0 = Clock::now();
      std::optional<Frame> frame = stages_.next_frame();
      const double read_ms = MsSince(t0);
      if (!frame) break;
      if (options_.pace_to_timestamps) {
        if (!first_timestamp) {
          first_timestamp = frame->timestamp;
          first_time = Clock::now();
        }
        const auto due = first_time + std::chrono::duration_cast<Clock::duration>(
                                          std::chrono::duration<double>(
                                              std::max(0.0, frame->timestamp - *first_timestamp)));
        std::unique_lock<std::mutex> lock(mutex_);
        if (changed_.wait_until(lock, due, [&] { return stop_requested_; })) break;
      }
      Item item;
      item.report.index = frame->index;
      item.report.name = frame->name;
      item.report.read_ms = read_ms;
      item.frame = std::move(*frame);
      ++delivered;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        ++stats_.frames_read;
      }
      if (options_.realtime) {
        const int dropped = frames_->PushDroppingOldest(std::move(item));
        if (dropped < 0) break;
        std::lock_guard<std::mutex> lock(mutex_);
        stats_.frames_dropped += dropped;
      } else if (!frames_->Push(std::move(item))) {
        break;
      }
    }
  } catch (...) {
    // The frames read before the failure still go through; the accumulator reports it at the end.
    std::lock_guard<std::mutex> lock(mutex_);
    source_error_ = std::current_exception();
  }
  frames_->Close();
}

// A frame whose model work is queued (submit) and not completed yet.
struct Pipeline::InFlight {
  Item item;
  std::function<FramePrediction()> finish;
  double submit_ms = 0;  // host time of the submit
};

bool Pipeline::Complete(InFlight& in_flight, bool successor_queued) {
  Item& item = in_flight.item;
  const auto t0 = Clock::now();
  item.prediction = in_flight.finish();
  const double step_ms = in_flight.submit_ms + MsSince(t0);
  item.report.model_ms = item.prediction.model_ms;
  item.report.preprocess_ms = std::max(0.0, step_ms - item.prediction.model_ms);
  if (successor_queued && stages_.cache_stats_before_last) {
    item.report.cache = stages_.cache_stats_before_last();
  } else if (stages_.cache_stats) {
    item.report.cache = stages_.cache_stats();
  }
  item.frame = Frame{};  // the prediction carries the model's input image
  return predictions_->Push(std::move(item));
}

bool Pipeline::WaitUnlessPaused(std::optional<InFlight>& in_flight) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (in_flight && stats_.paused && step_tokens_ == 0 && !stop_requested_) {
    lock.unlock();
    const bool pushed = Complete(*in_flight, false);
    in_flight.reset();
    if (!pushed) return false;
    lock.lock();
  }
  changed_.wait(lock, [&] { return stop_requested_ || !stats_.paused || step_tokens_ > 0; });
  if (stop_requested_) return false;
  if (stats_.paused) --step_tokens_;
  return true;
}

void Pipeline::ModelLoop() {
  std::optional<InFlight> in_flight;  // submit only: the frame queued before this one
  try {
    for (;;) {
      std::optional<Item> item;
      if (in_flight) {
        // Queue the next frame before completing this one if it is already there; otherwise
        // complete this one now rather than hold its results while the source catches up.
        bool ended = false;
        item = frames_->PopFor(Clock::duration::zero(), &ended);
        if (!item) {
          const bool pushed = Complete(*in_flight, false);
          in_flight.reset();
          if (!pushed || ended) break;
          continue;
        }
      } else {
        item = frames_->Pop();
        if (!item) break;
      }
      if (!WaitUnlessPaused(in_flight)) break;
      const auto t0 = Clock::now();
      if (!stages_.submit) {  // step: the frame is done on return
        FramePrediction prediction = stages_.step(item->frame);
        InFlight done{std::move(*item), [&prediction] { return std::move(prediction); }, MsSince(t0)};
        if (!Complete(done, false)) break;
        continue;
      }
      std::function<FramePrediction()> finish;
      try {
        finish = stages_.submit(item->frame);
      } catch (...) {
        // The frame before this one is done on the device: it still goes through.
        if (in_flight) Complete(*in_flight, false);
        in_flight.reset();
        throw;
      }
      InFlight next{std::move(*item), std::move(finish), MsSince(t0)};
      if (in_flight && !Complete(*in_flight, true)) {
        in_flight.reset();
        break;
      }
      in_flight = std::move(next);
    }
    // The end of the stream (not a stop request): the last frame queued goes through too.
    if (in_flight && !Stopping()) Complete(*in_flight, false);
  } catch (...) {
    Fail(std::current_exception());
  }
  predictions_->Close();
}

void Pipeline::AccumulatorLoop() {
  bool input_ended = false;
  try {
    for (;;) {
      std::optional<double> voxel_size;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        if (input_ended) {
          // The stream is over: stay to serve option changes until the pipeline is stopped.
          changed_.wait(lock, [&] { return stop_requested_ || pending_voxel_size_.has_value(); });
        }
        if (stop_requested_) break;
        std::swap(voxel_size, pending_voxel_size_);
      }
      if (voxel_size) {
        accumulator_.SetVoxelSize(*voxel_size);
        Publish();
      }
      if (input_ended) continue;

      bool ended = false;
      std::optional<Item> item = predictions_->PopFor(kAccumulatorPoll, &ended);
      if (!item) {
        if (!ended) continue;
        input_ended = true;
        {
          std::lock_guard<std::mutex> lock(mutex_);
          if (stop_requested_) break;  // aborted, not ended: the final publish is below
          if (source_error_) {
            error_ = source_error_;
            stats_.error = Describe(source_error_);
            stats_.state = PipelineState::kFailed;
          } else {
            stats_.state = PipelineState::kFinished;
          }
        }
        Publish();
        std::lock_guard<std::mutex> lock(mutex_);
        done_ = true;
        changed_.notify_all();
        continue;
      }

      FramePrediction& prediction = item->prediction;
      FrameReport& report = item->report;
      if (stages_.refine) {
        const auto r0 = Clock::now();
        stages_.refine(prediction);
        report.refine_ms = MsSince(r0);
      }
      const auto t0 = Clock::now();
      accumulator_.Add(prediction);
      report.accumulate_ms = MsSince(t0);
      report.points = accumulator_.size();
      {
        std::lock_guard<std::mutex> lock(mutex_);
        report.processed = ++stats_.frames_processed;
      }
      cameras_.push_back(static_cast<const CameraRecord&>(prediction));
      if (stages_.on_frame) stages_.on_frame(prediction, report);

      const auto push_history = [&](std::vector<float>& h, float value) {
        if (static_cast<int>(h.size()) >= options_.history) h.erase(h.begin());
        h.push_back(value);
      };
      push_history(history_ms_, static_cast<float>(report.preprocess_ms + report.model_ms));
      push_history(history_cache_mib_, static_cast<float>(report.cache.bytes / 1048576.0));
      prediction.world_points.clear();  // the viewer shows the image and the depth only
      prediction.world_points.shrink_to_fit();
      latest_prediction_ = std::make_shared<const FramePrediction>(std::move(prediction));
      latest_report_ = std::move(report);
      Publish();
    }
  } catch (...) {
    Fail(std::current_exception());
  }
  // Stopped or failed: one last snapshot that says so.
  try {
    Publish();
  } catch (...) {
    // Out of memory while copying; the stats still say what happened.
  }
  std::lock_guard<std::mutex> lock(mutex_);
  done_ = true;
  changed_.notify_all();
}

void Pipeline::Publish() {
  auto snapshot = std::make_shared<PipelineSnapshot>();
  snapshot->version = ++version_;
  snapshot->stats = Stats();
  snapshot->cloud = accumulator_.Snapshot();
  snapshot->cameras = cameras_;
  snapshot->latest = latest_prediction_;
  snapshot->latest_report = latest_report_;
  snapshot->history_ms = history_ms_;
  snapshot->history_cache_mib = history_cache_mib_;
  const size_t n = std::min<size_t>(history_ms_.size(), 30);
  if (n > 0) {
    const double sum = std::accumulate(history_ms_.end() - n, history_ms_.end(), 0.0);
    snapshot->model_fps = sum > 0 ? 1000.0 * n / sum : 0.0;
  }
  std::lock_guard<std::mutex> lock(snapshot_mutex_);
  latest_ = std::move(snapshot);
}

}  // namespace streamrecon
