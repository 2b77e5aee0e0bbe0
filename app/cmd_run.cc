// `streamrecon run`: headless reconstruction of a video, image folder/glob or synthetic stream.
// Writes points.ply, preview.png, trajectory.txt (TUM), cameras.json, depth/ maps, run.json and, with --colmap,
// a COLMAP text model into --out.
#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>

#include <nlohmann/json.hpp>

#include "app/commands.h"
#include "app/common_options.h"
#include "app/reconstruct.h"
#include "app/stream_setup.h"
#include "core/atomic_file.h"
#include "core/errors.h"
#include "core/export.h"
#include "core/interrupt.h"
#include "core/pipeline.h"
#include "datasets/calibration.h"
#include "datasets/frame_source.h"
#include "datasets/preprocess.h"
#include "datasets/synthetic.h"
#include "models/streaming_model.h"

namespace streamrecon::app {
namespace {

namespace fs = std::filesystem;

}  // namespace

void CheckRunArgs(const RunArgs& args, const fs::path& out_dir) {
  if (args.in.input.empty() == (args.in.synthetic_frames <= 0))
    throw OptionError("give exactly one of --input PATH or --synthetic N");
  args.cloud.Check();
  CheckOutputFolder(out_dir);  // created only once the model and the input are open
  if (args.points && !CanWritePly())
    throw Error("this build cannot write points.ply (built without Open3D; install libopen3d-dev and rebuild, or pass --no-points)");
  if (args.colmap && !CanWriteImages())
    throw Error("--colmap: this build cannot write the model's images (built without OpenCV; install libopencv-dev and rebuild)");
  if (!args.in.intrinsics.empty()) datasets::ParseIntrinsics(args.in.intrinsics);  // before the model loads
  ResolvePoses(args.poses);
}

ReconstructResult Reconstruct(const RunArgs& args, const std::shared_ptr<models::StreamingModel>& model,
                              const models::LoadedModel& loaded, WeightsRecord& weights_record, const fs::path& out_dir) {
  model->Reset();

  datasets::PreprocessOptions pre = ParseSize(args.in.size, loaded.config.patch_size, loaded.config.img_size);
  std::unique_ptr<datasets::FrameSource> source =
      OpenInput(args.in.input, args.in.synthetic_frames, args.in.scene, pre, args.in.every, args.in.max_frames, args.in.strict);
  spdlog::info("input: {}", source->Describe());
  // A rerun into the same folder leaves nothing of the earlier run behind (other files stay).
  if (const int removed = RemoveEarlierOutputs(out_dir, {"points.ply", "preview.png", "trajectory.txt", "cameras.json", "run.json",
                                                          "depth", "colmap", "transforms.json", "raw"}))
    spdlog::info("removed {} output(s) of an earlier run from {}", removed, out_dir.string());
  const int64_t total = args.in.max_frames >= 0 && source->SizeHint() >= 0 ? std::min(args.in.max_frames, source->SizeHint())
                                                                         : source->SizeHint();

  // The same pipeline as `view` (source, model and accumulator threads), nothing dropped.
  auto stage = std::make_shared<ModelStage>(model, pre);
  std::optional<datasets::KnownCamera> known;
  if (!args.in.intrinsics.empty()) {
    known = datasets::ParseIntrinsics(args.in.intrinsics);
    if (!known->note.empty()) spdlog::warn("{}", known->note);
    stage->SetKnownCamera(*known);
  }
  if (args.raw_outputs) stage->WriteRawOutputs(out_dir / "raw");
  PipelineStages stages = ModelStage::MakeStages(stage, *source);
  // Ctrl-C / SIGTERM: the input ends where it is; the frames already read go through the model and
  // every output of the frames done is written (exit 130). A second signal aborts at once.
  InstallInterruptHandler();
  stages.next_frame = [read = std::move(stages.next_frame)]() -> std::optional<Frame> {
    if (Interrupted()) return std::nullopt;
    return read();
  };
  std::shared_ptr<TrackedPoses> tracked;
  if (ResolvePoses(args.poses)) {
    tracked = std::make_shared<TrackedPoses>();
    stages.refine = [tracked](FramePrediction& prediction) { tracked->Track(prediction); };
  }
  double total_ms = 0;
  stages.on_frame = [&](const FramePrediction& pred, const FrameReport& report) {
    total_ms += pred.model_ms;
    if (args.depth_maps) WriteDepthMaps(out_dir / "depth", {pred});
    if (args.colmap) WriteColmapImage(out_dir / "colmap", pred);
    const int64_t n = report.processed;
    spdlog::info("frame {}/{} {}: {:.0f} ms, {:.2f} fps, cache {:.1f} MiB, {} points", n,
                 total >= 0 ? std::to_string(total) : std::string("?"), report.name, pred.model_ms, 1000.0 * n / total_ms,
                 report.cache.bytes / 1048576.0, report.points);
  };
  PipelineOptions pipeline_options;
  pipeline_options.max_frames = args.in.max_frames;
  pipeline_options.total_frames = total;
  pipeline_options.cloud.frame = args.cloud;
  // The voxel size merges points across frames too, and the cloud stays under --max-points (the
  // grid coarsens), so that a long stream's cloud is bounded like its cache.
  pipeline_options.cloud.voxel_size = args.cloud.voxel_size;
  pipeline_options.cloud.max_points = args.max_points;
  pipeline_options.cloud.enabled = args.points || args.colmap;  // nothing else reads the cloud
  const auto t_start = std::chrono::steady_clock::now();
  std::shared_ptr<const PipelineSnapshot> result;
  {
    Pipeline pipeline(std::move(stages), pipeline_options);
    pipeline.WaitUntilDone();
    pipeline.RethrowIfFailed();
    result = pipeline.Latest();
  }
  const std::vector<CameraRecord> cameras = result ? result->cameras.ToVector() : std::vector<CameraRecord>{};
  const bool interrupted = Interrupted();
  ReconstructResult outcome;
  outcome.interrupted = interrupted;
  if (cameras.empty()) {
    if (interrupted) {
      spdlog::warn("interrupted before the first frame was done: nothing written");
      return outcome;
    }
    throw Error("no frames were read from " + source->Describe());
  }
  if (interrupted) spdlog::warn("interrupted: writing the outputs of the {} frame(s) done", cameras.size());
  const PointCloud cloud = result->cloud.Collect(-std::numeric_limits<float>::infinity());
  const auto [model_w, model_h] = stage->InputSize();

  if (args.points) WritePointCloudPly(out_dir / "points.ply", cloud);
  const bool preview = args.points && CanWriteImages();
  if (preview) WriteCloudPreview(out_dir / "preview.png", cloud, cameras);
  WriteTrajectoryTum(out_dir / "trajectory.txt", cameras);
  WriteCamerasJson(out_dir / "cameras.json", cameras);
  if (args.colmap) {
    WriteTransformsJson(out_dir / "transforms.json", cameras, "colmap/images");
    const std::vector<int64_t> left_out = WriteColmapSparse(out_dir / "colmap", cameras, cloud);
    if (!left_out.empty())
      spdlog::warn("{} frame(s) left out of the COLMAP model: their predicted focal lengths are not finite and positive (first: frame {})",
                   left_out.size(), left_out.front());
  }
  const double wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  nlohmann::json summary = {
      {"input", source->Describe()},
      {"frames", cameras.size()},
      {"model_input", {model_w, model_h}},
      {"model_ms_mean", total_ms / cameras.size()},
      {"wall_seconds", wall_s},
      {"points", cloud.size()},
      {"cache_bytes", model->CacheBytes()},
      {"cache_policy", args.cache.policy},
      {"cache_format", args.cache.format},
      {"kv_budget", args.cache.budget},
      {"weights", weights_record.Get()},
      {"device", args.model.Device()},
      {"dtype", args.model.dtype},
      {"model_options", args.model.ToJson()},
      {"kernel_options", args.cache.KernelJson()},
      {"version", "streamrecon 0.1.0"},
      {"interrupted", interrupted},
      {"frames_skipped", source->skipped()},
      {"config", loaded.config.ToJson()},
  };
  summary["camera_poses"] = tracked ? tracked->ToJson() : nlohmann::json{{"source", "head"}};
  if (tracked) spdlog::info("poses tracked: {}", tracked->Summary());
  if (known)
    summary["intrinsics"] = {{"source", known->source}, {"fx", known->k.fx}, {"fy", known->k.fy}, {"cx", known->k.cx}, {"cy", known->k.cy},
                             {"at", "the input's resolution; cameras.json holds them at the model's, and the predicted ones"}};
  WriteTextAtomically(out_dir / "run.json", summary.dump(2) + "\n");
  spdlog::info("wrote {} frames to {}: {}{}, trajectory.txt, cameras.json{}{}", cameras.size(), out_dir.string(),
               args.points ? "points.ply (" + std::to_string(cloud.size()) + " points)" : std::string("no points.ply"), preview ? ", preview.png" : "", args.depth_maps ? ", depth/" : "", args.colmap ? ", colmap/ (images/, sparse/0/), transforms.json" : "");
  outcome.frames = static_cast<int64_t>(cameras.size());
  outcome.points = cloud.size();
  outcome.model_ms_mean = total_ms / cameras.size();
  outcome.wall_seconds = wall_s;
  return outcome;
}

namespace {

int RunRun(const RunArgs& args) {
  const fs::path out_dir(args.out);
  CheckRunArgs(args, out_dir);
  const OpenedModel opened = OpenModel(args.model, &args.cache);
  WeightsRecord weights_record(opened.loaded, args.model.random_seed);
  const ReconstructResult result = Reconstruct(args, opened.model, opened.loaded, weights_record, out_dir);
  if (result.frames == 0) return 130;  // interrupted before the first frame
  return result.interrupted ? 130 : 0;
}

}  // namespace

void RunArgs::AddOutputOptions(CLI::App& cmd_ref) {
  CLI::App* cmd = &cmd_ref;
  RunArgs* args = this;
  AddPosesOption(*cmd, args->poses);
  cmd->add_option("--conf-threshold", args->cloud.conf_threshold, "Keep points with confidence above this (conf = 1 + exp(c))")
      ->capture_default_str();
  cmd->add_option("--stride", args->cloud.stride, "Take every N-th pixel for the point cloud")->capture_default_str();
  cmd->add_option("--voxel-size", args->cloud.voxel_size, "Voxel size for downsampling the cloud per frame (0 = off)")
      ->capture_default_str();
  cmd->add_flag("--points-from-depth", args->cloud.use_depth, "Build the cloud from depth + the cameras instead of the point map (with --poses head; tracked poses rebuild the point map from the depth anyway)");
  cmd->add_option("--max-points", args->max_points,
                  "Keep the cloud under this many points: the voxel grid coarsens as a long stream adds more (0 = no bound)")
      ->check(kNonNegative)->capture_default_str();
  cmd->add_flag_function("--no-depth-maps", [args](int64_t) { args->depth_maps = false; }, "Do not write per-frame depth maps");
  cmd->add_flag_function("--no-points", [args](int64_t) { args->points = false; },
                         "Do not write points.ply and preview.png (cameras, trajectory and depth only)");
  cmd->add_flag("--colmap", args->colmap,
                "Also write a COLMAP text model (colmap/images/frame_NNNNNN.png, colmap/sparse/0/{cameras,images,points3D}.txt) and "
                "transforms.json for nerfstudio / Gaussian splatting");
  cmd->add_flag("--raw-outputs", args->raw_outputs,
                "Also write raw/frame_NNNNNN.safetensors per frame: depth, depth_conf, world_points, world_points_conf and "
                "pose_enc in the model's dtype, unrounded: the model's own outputs, i.e. the camera head's poses and point maps before "
                "--poses tracked corrects them");
}

Runner AddRunCommand(CLI::App& parent) {
  auto args = std::make_shared<RunArgs>();
  CLI::App* cmd = parent.add_subcommand("run", "Reconstruct a video, image folder or glob headless");
  args->model.Add(*cmd);
  args->cache.Add(*cmd);
  args->in.Add(*cmd);
  cmd->add_option("--out,-o", args->out, "Output folder")->capture_default_str();
  args->AddOutputOptions(*cmd);
  return [cmd, args]() { return cmd->parsed() ? RunRun(*args) : -1; };
}

}  // namespace streamrecon::app
