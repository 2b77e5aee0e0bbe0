// The live desktop viewer (GLFW + Dear ImGui + OpenGL 3.3): draws the newest pipeline snapshot
// (points, camera frusta, trajectory) with a stats/controls panel, never waiting on the model.
// Depends on core only; the app supplies the pipeline through a SessionFactory.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "core/pipeline.h"

struct GLFWwindow;

namespace streamrecon::viewer {

struct ViewerOptions {
  // Window size in screen coordinates (the framebuffer may be larger on HiDPI screens).
  int width = 1280;
  int height = 800;
  // Window title.
  std::string title = "StreamRecon";
  // Width of the stats/controls panel on the left, in pixels; the points are drawn to its right.
  int panel_width = 390;
  // Point size in pixels.
  float point_size = 2.0f;
  // Points with confidence at or below this are hidden (and left out of PLY exports).
  float conf_threshold = 1.5f;
  // Follow the newest camera instead of the mouse-driven orbit camera.
  bool follow = false;
  // Written (PNG) when the viewer exits; empty = none.
  std::string screenshot;
  // >= 0: exit once this many frames went through the pipeline (or the stream ended or failed)
  // and were drawn. -1 = run until the window is closed.
  int64_t exit_after_frames = -1;
  // Upper bound on drawn frames per second (the model threads keep the rest of the CPU).
  double max_fps = 60.0;
  // Default paths of the panel's export and screenshot buttons.
  std::string export_ply = "viewer_points.ply";
  std::string export_tum = "viewer_trajectory.txt";
  std::string export_png = "viewer_screenshot.png";

  // Throws OptionError naming the bad field.
  void Check() const;
};

// Cache settings to (re)start a session with; edited in the panel.
struct RestartRequest {
  std::string policy = "none";  // a pruning policy name, e.g. none, xstream, window
  std::string format = "fp32";  // a storage format name: fp32, bf16, kivi4, kivi2, oscar4, oscar2
  std::string budget;           // byte budget of all caches, e.g. "512MiB" (empty = none)
  int64_t cache_tokens = 0;     // per-layer token capacity (0 = none)
  int pool = 16;                // XStreamVGGT query pool size
};

// One run of the stream: the pipeline plus what the panel shows about it.
struct Session {
  std::unique_ptr<Pipeline> pipeline;
  std::string input;         // e.g. "synthetic scene (24 frames)"
  std::string cache_format;  // storage format of the KV cache, e.g. "dense float32"
  std::string cache_bits;    // bits per stored value, e.g. "32"
  std::string cache_budget;  // the byte budget as given, e.g. "512MiB"; shown while the pipeline's
                             // CacheStats::budget_bytes is 0 (empty = unbounded)
  RestartRequest cache;      // the settings it runs with
};

// Builds a session (model + source + pipeline) from cache settings; throws Error for bad ones.
using SessionFactory = std::function<Session(const RestartRequest&)>;

// What the viewer saw when it exited.
struct ViewerResult {
  int64_t frames = 0;        // frames processed by the last session
  size_t points = 0;         // points shown (confidence above the threshold) at exit
  bool failed = false;       // the last session's pipeline failed
  std::string error;         // its message
  std::string screenshot;    // the PNG written at exit, if any
};

class Viewer {
 public:
  // Opens the window and the OpenGL 3.3 context. Throws Error with a hint (`streamrecon run`,
  // xvfb-run) when there is no display or no OpenGL 3.3.
  explicit Viewer(const ViewerOptions& options);
  ~Viewer();
  Viewer(const Viewer&) = delete;
  Viewer& operator=(const Viewer&) = delete;

  // Starts factory(initial) and shows it until the window is closed or exit_after_frames is
  // reached; the panel's restart button calls factory again. Errors of the first factory call
  // propagate; later ones and pipeline failures are shown in the panel.
  ViewerResult Run(const SessionFactory& factory, const RestartRequest& initial);

 private:
  struct State;
  ViewerOptions options_;
  GLFWwindow* window_ = nullptr;
  std::unique_ptr<State> state_;
};

// Whether this machine seems to have a display (DISPLAY or WAYLAND_DISPLAY set); for messages.
bool HaveDisplay();

}  // namespace streamrecon::viewer
