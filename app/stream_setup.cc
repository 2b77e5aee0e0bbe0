// Input opening and the model stage shared by `run` and `view`.
#include "app/stream_setup.h"

#include <ATen/ATen.h>
#include <c10/core/Event.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <tuple>

#include "core/errors.h"
#include "datasets/synthetic.h"
#include "models/weights.h"

namespace streamrecon::app {

datasets::PreprocessOptions ParseSize(const std::string& size, int patch, int default_width) {
  datasets::PreprocessOptions p;
  p.patch = patch;
  p.target_width = default_width;
  if (!size.empty() && !datasets::ParsePixelSize(size, &p.target_width, &p.target_height))
    throw OptionError("--size expects W or WxH in pixels (e.g. 518 or 518x392), got '" + size + "'");
  try {
    p.Check();
  } catch (const OptionError& e) {
    throw OptionError("--size " + (size.empty() ? std::to_string(default_width) : size) + ": " + e.what());
  }
  return p;
}

std::unique_ptr<datasets::FrameSource> OpenInput(const std::string& input, int synthetic_frames, const std::string& scene,
                                                 const datasets::PreprocessOptions& pre, int every,
                                                 int64_t max_frames, bool strict) {
  if (input.empty() == (synthetic_frames <= 0)) {
    throw OptionError("give exactly one of --input PATH or --synthetic N");
  }
  if (synthetic_frames > 0) {
    datasets::SyntheticOptions syn;
    syn.frames = synthetic_frames;
    datasets::ApplySyntheticVariant(scene, syn, "--scene " + scene);
    // Synthetic frames are rendered directly at the model size (4:3 unless --size gives both).
    std::tie(syn.width, syn.height) = datasets::ModelInputSize(640, 480, pre);
    return datasets::MakeSyntheticSource(syn);
  }
  datasets::SourceOptions so;
  so.every = every;
  so.max_frames = max_frames;
  so.on_note = [](const std::string& note) { spdlog::warn("{}", note); };
  so.on_skip = [](const std::string& message) { spdlog::warn("{}", message); };
  so.strict = strict;
  return datasets::OpenFrameSource(input, so);
}

ModelStage::ModelStage(std::shared_ptr<models::StreamingModel> model,
                       const datasets::PreprocessOptions& pre)
    : model_(std::move(model)), pre_(pre) {}

ModelStage::Output ModelStage::Run(const Frame& frame, bool defer_pose) {
  int width = 0, height = 0;
  {
    std::lock_guard<std::mutex> lock(size_mutex_);
    if (width_ == 0) {
      std::tie(width_, height_) = datasets::ModelInputSize(frame.image.width, frame.image.height, pre_);
      spdlog::info("model input {}x{} (from {}x{})", width_, height_, frame.image.width, frame.image.height);
    }
    width = width_;
    height = height_;
  }
  if (known_ && known_->width > 0 && (known_->width != frame.image.width || known_->height != frame.image.height))
    throw Error("frame " + std::to_string(frame.index) + " (" + frame.name + ") is " + std::to_string(frame.image.width) + "x" +
                std::to_string(frame.image.height) + ", but the intrinsics of " + known_->source + " are for " +
                std::to_string(known_->width) + "x" + std::to_string(known_->height));
  datasets::PreprocessOptions fixed = pre_;
  fixed.target_width = width;
  fixed.target_height = height;
  Output output;
  output.image = datasets::ResizeForModel(frame.image, fixed);
  const auto t0 = std::chrono::steady_clock::now();
  output.tensors = model_->Step(models::ImageToTensor(output.image), defer_pose);
  output.model_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (known_) output.known_intrinsics = datasets::ScaleIntrinsics(known_->k, frame.image.width, frame.image.height, width, height);
  return output;
}

namespace {

// The outputs the host needs, copied into pinned host memory behind the frame's work on a GPU
// (nothing waits here); on the CPU the tensors as they are. `ready` marks the end of the copies,
// `pose_ready` the pose's (StartPoseCopy: a deferred pose is copied once the camera head is done).
struct HostOutputs {
  models::StepOutput tensors;
  std::shared_ptr<c10::Event> ready, pose_ready;
};

HostOutputs StartHostCopies(const models::StepOutput& t) {
  HostOutputs host;
  if (!t.depth.is_cuda()) {
    host.tensors = t;
    return host;
  }
  auto copy = [](const at::Tensor& x) {
    return at::empty(x.sizes(), x.options().device(at::kCPU).pinned_memory(true)).copy_(x, /*non_blocking=*/true);
  };
  models::PoseCopy pose = models::StartPoseCopy(t);
  host.tensors.pose_enc = pose.host;
  host.pose_ready = pose.ready;
  host.tensors.depth = copy(t.depth);
  host.tensors.depth_conf = copy(t.depth_conf);
  host.tensors.world_points = copy(t.world_points);
  host.tensors.world_points_conf = copy(t.world_points_conf);
  host.tensors.camera_graph = t.camera_graph;
  host.ready = models::RecordOnCurrentStream(t.depth.device());
  return host;
}

}  // namespace

std::function<FramePrediction()> ModelStage::Submit(const Frame& frame) {
  // (the camera head may still run as Run returns: StartHostCopies copies its pose once it is done)
  Output output = Run(frame, /*defer_pose=*/true);
  const auto t0 = std::chrono::steady_clock::now();
  auto host = std::make_shared<HostOutputs>(StartHostCopies(output.tensors));
  const double submit_ms = output.model_ms + std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  output.tensors = models::StepOutput{};  // the device outputs are not needed past the copies
  auto pending = std::make_shared<Output>(std::move(output));
  return [this, host, pending, submit_ms, index = frame.index, timestamp = frame.timestamp, name = frame.name]() {
    const auto t1 = std::chrono::steady_clock::now();
    if (host->ready) host->ready->synchronize();
    if (host->pose_ready) host->pose_ready->synchronize();
    const models::StepOutput& t = host->tensors;
    FramePrediction prediction = models::ToFramePrediction(t, pending->image, index);
    prediction.timestamp = timestamp;
    prediction.source_name = name;
    prediction.known_intrinsics = pending->known_intrinsics;
    // The step, the wait for its results and the conversion (the resize before them is preprocessing).
    prediction.model_ms = submit_ms + std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t1).count();
    if (!raw_folder_.empty()) {
      char file[32];
      std::snprintf(file, sizeof(file), "frame_%06lld.safetensors", static_cast<long long>(index));
      models::WriteSafetensors(raw_folder_ / file,
                               {{"depth", t.depth.squeeze(-1).cpu().contiguous()},
                                {"depth_conf", t.depth_conf.cpu().contiguous()},
                                {"world_points", t.world_points.cpu().contiguous()},
                                {"world_points_conf", t.world_points_conf.cpu().contiguous()},
                                {"pose_enc", t.pose_enc.cpu().contiguous()}});
    }
    return prediction;
  };
}

FramePrediction ModelStage::Step(const Frame& frame) { return Submit(frame)(); }

void ModelStage::WriteRawOutputs(const std::filesystem::path& folder) {
  std::error_code error;
  std::filesystem::create_directories(folder, error);
  if (error) throw FileError("cannot create the folder " + folder.string() + ": " + error.message());
  raw_folder_ = folder;
}

CacheStats ModelStage::CacheStatsBeforeLastStep() const {
  const models::StreamingModel::CacheCounts counts = model_->CacheBeforeLastStep();
  CacheStats stats;
  stats.bytes = counts.bytes;
  stats.budget_bytes = static_cast<int64_t>(counts.budget_bytes);
  stats.tokens_per_layer = counts.tokens_per_layer;
  return stats;
}

CacheStats ModelStage::CacheStatsNow() const {
  const models::CacheReport report = model_->Cache();
  CacheStats stats;
  stats.bytes = report.bytes;
  stats.budget_bytes = static_cast<int64_t>(report.budget_bytes);
  stats.tokens_per_layer = report.tokens_per_layer;
  return stats;
}

std::pair<int, int> ModelStage::InputSize() const {
  std::lock_guard<std::mutex> lock(size_mutex_);
  return {width_, height_};
}

PipelineStages ModelStage::MakeStages(std::shared_ptr<ModelStage> stage, datasets::FrameSource& source) {
  PipelineStages stages;
  stages.next_frame = [&source] { return source.Next(); };
  stages.submit = [stage](const Frame& frame) { return stage->Submit(frame); };
  stages.cache_stats = [stage] { return stage->CacheStatsNow(); };
  stages.cache_stats_before_last = [stage] { return stage->CacheStatsBeforeLastStep(); };
  return stages;
}

void TrackedPoses::Track(FramePrediction& prediction) {
  const auto t0 = std::chrono::steady_clock::now();
  const TrackStep step = tracker_.Track(prediction);
  ms_ += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (frames_++ > 0 && step.measured) {
    ++measured_;
    if (step.from_last_step) ++from_last_step_;
    inliers_.push_back(step.inliers);
  }
}

void TrackedPoses::Reset() {
  tracker_.Reset();
  frames_ = measured_ = from_last_step_ = 0;
  inliers_.clear();
  ms_ = 0;
}

namespace {
int Median(std::vector<int> v) {
  if (v.empty()) return 0;
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}
}  // namespace

nlohmann::json TrackedPoses::ToJson() const {
  return {{"source", "tracked"},
          {"steps", std::max<int64_t>(0, frames_ - 1)},
          {"measured_steps", measured_},
          {"measured_from_last_step", from_last_step_},
          {"inliers_median", Median(inliers_)},
          {"track_ms_mean", frames_ > 0 ? ms_ / frames_ : 0.0}};
}

std::string TrackedPoses::Summary() const {
  const nlohmann::json j = ToJson();
  char text[200];
  std::snprintf(text, sizeof(text),
                "%lld of %lld steps measured (%lld around the last step; median %d inliers; the others took the camera head's motion), %.1f ms a frame",
                j.at("measured_steps").get<long long>(), j.at("steps").get<long long>(), j.at("measured_from_last_step").get<long long>(),
                j.at("inliers_median").get<int>(), j.at("track_ms_mean").get<double>());
  return text;
}

}  // namespace streamrecon::app
