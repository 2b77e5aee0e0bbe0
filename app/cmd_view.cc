// `streamrecon view`: the live desktop viewer. Runs the same pipeline as `run` (source, model and
// accumulator threads) and shows the reconstruction growing; --screenshot with
// --exit-after-frames renders headless (under xvfb-run) for tests and docs.
#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <iostream>
#include <memory>

#include "app/commands.h"
#include "app/common_options.h"
#include "app/stream_setup.h"
#include "datasets/calibration.h"
#include "core/errors.h"
#include "core/export.h"
#include "core/interrupt.h"
#include "core/kv/format.h"
#include "core/pipeline.h"
#include "viewer/viewer.h"  // ViewerOptions is plain data; the viewer itself is used only with STREAMRECON_HAVE_VIEWER

namespace streamrecon::app {
namespace {

struct ViewArgs {
  ModelArgs model;
  CacheArgs cache;
  InputArgs in;              // --input / --synthetic / --scene / --size / --max-frames / --every
  int camera = -1;           // >= 0: camera index (same as --input camera:N)
  bool realtime = false;     // drop frames when the model lags (implied by --camera)
  double fps = 10.0;         // real-time rate of image folders and synthetic frames
  PointCloudOptions cloud;   // conf_threshold: shown; voxel_size: the global grid
  int64_t max_points = 2000000;
  std::string poses = "auto";  // --poses: auto | tracked | head
  bool paused = false;
  viewer::ViewerOptions window;  // size, point size, follow, screenshot, exit after N frames
};

#ifdef STREAMRECON_HAVE_VIEWER

// Bits per stored K/V value of a --format name, as the panel shows it.
std::string CacheBits(const std::string& format, const std::string& dtype) {
  const CacheFormat f = ParseCacheFormat(format);
  if (f == CacheFormat::kDense) return dtype == "float64" ? "64" : dtype == "bfloat16" ? "16" : "32";  // the model dtype
  return std::to_string(FormatInfo(f).bits) + (IsQuantized(f) ? " + scales" : "");
}

viewer::Session StartSession(const ViewArgs& args, const std::string& input, const viewer::RestartRequest& request) {
  CacheArgs cache = args.cache;
  cache.policy = request.policy;
  cache.format = request.format;
  cache.budget = request.budget;
  cache.cache_tokens = request.cache_tokens;
  cache.pool = request.pool;
  const OpenedModel opened = OpenModel(args.model, &cache);  // bad cache combinations throw before the weights load
  const models::LoadedModel& loaded = opened.loaded;
  const std::shared_ptr<models::StreamingModel> model = opened.model;

  const datasets::PreprocessOptions pre = ParseSize(args.in.size, loaded.config.patch_size, loaded.config.img_size);
  std::shared_ptr<datasets::FrameSource> source =
      OpenInput(input, args.in.synthetic_frames, args.in.scene, pre, args.in.every, args.in.max_frames, args.in.strict);
  spdlog::info("input: {}", source->Describe());

  const bool live = args.camera >= 0 || input.rfind("camera:", 0) == 0;
  const bool realtime = args.realtime || live;
  auto stage = std::make_shared<ModelStage>(model, pre);
  if (!args.in.intrinsics.empty()) stage->SetKnownCamera(datasets::ParseIntrinsics(args.in.intrinsics));
  PipelineStages stages;
  stages.next_frame = [source, realtime, fps = args.fps]() -> std::optional<Frame> {
    std::optional<Frame> frame = source->Next();
    // Videos and cameras carry real timestamps; image folders and synthetic frames play at --fps.
    if (frame && realtime && frame->name.rfind("video:", 0) != 0 && frame->name.rfind("camera:", 0) != 0) {
      frame->timestamp = static_cast<double>(frame->index) / fps;
    }
    return frame;
  };
  stages.submit = [stage](const Frame& frame) { return stage->Submit(frame); };
  stages.cache_stats = [stage] { return stage->CacheStatsNow(); };
  stages.cache_stats_before_last = [stage] { return stage->CacheStatsBeforeLastStep(); };
  if (ResolvePoses(args.poses)) {
    auto tracked = std::make_shared<TrackedPoses>();
    stages.refine = [tracked](FramePrediction& prediction) { tracked->Track(prediction); };
  }

  PipelineOptions po;
  po.realtime = realtime;
  po.pace_to_timestamps = realtime;
  po.max_frames = args.in.max_frames;
  po.total_frames = source->SizeHint();
  po.start_paused = args.paused;
  po.cloud.frame = args.cloud;
  // Keep every point the threshold slider can show (confidences are 1 + exp(c) > 1).
  po.cloud.frame.conf_threshold = std::min(args.cloud.conf_threshold, 1.0f);
  po.cloud.frame.voxel_size = 0.0;
  po.cloud.voxel_size = args.cloud.voxel_size;
  po.cloud.max_points = args.max_points;

  viewer::Session session;
  session.pipeline = std::make_unique<Pipeline>(std::move(stages), po);
  session.input = source->Describe() + (realtime ? " (real time)" : "");
  session.cache_format = cache.format;
  session.cache_bits = CacheBits(cache.format, args.model.dtype);
  session.cache_budget = cache.budget;
  session.cache = request;
  return session;
}

#endif

int RunView(const ViewArgs& args) {
  const int inputs = (args.in.input.empty() ? 0 : 1) + (args.camera >= 0 ? 1 : 0) + (args.in.synthetic_frames > 0 ? 1 : 0);
  if (inputs != 1) throw OptionError("give exactly one of --input PATH, --camera N or --synthetic N");
  args.cloud.Check();
#ifndef STREAMRECON_HAVE_VIEWER
  throw Error("this streamrecon was built without the viewer (it needs GLFW, OpenGL and Debian's libimgui-dev "
              "at configure time); use `streamrecon run` for a headless reconstruction");
#else
  const std::string input = args.camera >= 0 ? "camera:" + std::to_string(args.camera) : args.in.input;
  viewer::ViewerOptions vo = args.window;
  vo.conf_threshold = args.cloud.conf_threshold;
  viewer::Viewer window(vo);  // fails early, with a hint, when there is no display

  viewer::RestartRequest initial;
  initial.policy = args.cache.policy;
  initial.format = args.cache.format;
  initial.budget = args.cache.budget;
  initial.cache_tokens = args.cache.cache_tokens;
  initial.pool = args.cache.pool;
  InstallInterruptHandler();
  const viewer::ViewerResult result =
      window.Run([&](const viewer::RestartRequest& r) { return StartSession(args, input, r); }, initial);
  std::cout << "frames: " << result.frames << "\n";
  std::cout << "points: " << result.points << "\n";
  if (!result.screenshot.empty()) std::cout << "screenshot: " << result.screenshot << "\n";
  std::cout.flush();
  if (result.failed) throw Error(result.error);
  return Interrupted() ? 130 : 0;
#endif
}

}  // namespace

Runner AddViewCommand(CLI::App& parent) {
  auto args = std::make_shared<ViewArgs>();
  CLI::App* cmd = parent.add_subcommand("view", "Watch the reconstruction grow in a desktop viewer (GLFW + ImGui)");
  args->model.Add(*cmd);
  args->cache.Add(*cmd);
  args->in.Add(*cmd);
  cmd->add_option("--camera", args->camera, "Camera index (real time)")->check(kNonNegative);
  cmd->add_flag("--realtime", args->realtime,
                "Play the input at its own rate and drop frames when the model lags (always on for cameras)");
  cmd->add_option("--fps", args->fps, "With --realtime: frame rate of image folders and synthetic frames")
      ->check(kPositive)->capture_default_str();
  cmd->add_option("--conf-threshold", args->cloud.conf_threshold, "Show points with confidence above this (a slider later)")
      ->capture_default_str();
  cmd->add_option("--stride", args->cloud.stride, "Take every N-th pixel for the point cloud")->capture_default_str();
  cmd->add_option("--voxel-size", args->cloud.voxel_size, "Voxel size of the global grid merging all frames (0 = off)")
      ->capture_default_str();
  cmd->add_option("--max-points", args->max_points, "Coarsen the voxel grid to keep at most this many points (0 = no bound)")
      ->check(kNonNegative)->capture_default_str();
  cmd->add_flag("--points-from-depth", args->cloud.use_depth, "Build the cloud from depth + the cameras instead of the point map (with --poses head; tracked poses rebuild the point map from the depth anyway)");
  AddPosesOption(*cmd, args->poses);
  cmd->add_flag("--paused", args->paused, "Start paused (step with the panel or the n key)");
  cmd->add_option("--width", args->window.width, "Window width")->capture_default_str();
  cmd->add_option("--height", args->window.height, "Window height")->capture_default_str();
  cmd->add_option("--point-size", args->window.point_size, "Point size in pixels")->capture_default_str();
  cmd->add_flag("--follow", args->window.follow, "Follow the newest camera");
  cmd->add_option("--screenshot", args->window.screenshot, "Write a PNG of the window when the viewer exits");
  cmd->add_option("--exit-after-frames", args->window.exit_after_frames,
                  "Exit once N frames went through and were drawn (or the stream ended): headless screenshots")
      ->check(kNonNegative);
  return [cmd, args]() { return cmd->parsed() ? RunView(*args) : -1; };
}

}  // namespace streamrecon::app
