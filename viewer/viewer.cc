#include "viewer/viewer.h"

#define GL_GLEXT_PROTOTYPES 1
#include <GLFW/glfw3.h>
#include <GL/gl.h>
#include <GL/glext.h>
#include <backends/imgui_impl_glfw.h>
#include <backends/imgui_impl_opengl3.h>
#include <imgui.h>
#include <stb/stb_image_write.h>

#include <algorithm>
#include <array>
#include <cfloat>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/atomic_file.h"
#include "core/errors.h"
#include "core/export.h"
#include "core/geometry.h"
#include "core/interrupt.h"
#include "core/kv/format.h"
#include "viewer/gl_renderer.h"
#include "viewer/view_camera.h"

namespace streamrecon::viewer {

namespace {

// The last message GLFW reported, for our own error messages.
std::string last_glfw_error;

void OnGlfwError(int code, const char* description) {
  last_glfw_error = std::string(description ? description : "") + " (GLFW error " +
                    std::to_string(code) + ")";
}

std::string HeadlessHint(const ViewerOptions& o) {
  return "Use `streamrecon run` for a headless reconstruction, or run the viewer on a virtual "
         "display: xvfb-run -a -s \"-screen 0 " + std::to_string(o.width) + "x" +
         std::to_string(o.height) + "x24\" streamrecon view ...";
}

std::string FormatBytes(double bytes) {
  char text[64];
  if (bytes >= 1024.0 * 1048576.0) {
    std::snprintf(text, sizeof(text), "%.2f GiB", bytes / (1024.0 * 1048576.0));
  } else if (bytes >= 1048576.0) {
    std::snprintf(text, sizeof(text), "%.1f MiB", bytes / 1048576.0);
  } else {
    std::snprintf(text, sizeof(text), "%.0f KiB", bytes / 1024.0);
  }
  return text;
}

void WritePng(const std::string& path, const RgbImage& image) {
  WriteFileAtomically(path, [&](const std::filesystem::path& tmp) {
    if (!stbi_write_png(tmp.string().c_str(), image.width, image.height, 3, image.data.data(),
                        image.width * 3)) {
      throw FileError("cannot write the screenshot " + path + ": stb's PNG writer failed");
    }
  });
}

// The pruning policies and storage formats offered for a restart, from the cache vocabulary
// (core/kv/format.h; the app checks the combination).
template <typename Table>
std::vector<const char*> NamesOf(const Table& table) {
  std::vector<const char*> names;
  for (const auto& entry : table) names.push_back(entry.name);
  return names;
}
const std::vector<const char*> kPolicies = NamesOf(kPrunePolicies);
const int kPolicyCount = static_cast<int>(kPolicies.size());
const std::vector<const char*> kFormats = NamesOf(kCacheFormats);
const int kFormatCount = static_cast<int>(kFormats.size());

// Index of name in names (0 when absent).
int IndexOf(const char* const* names, int count, const std::string& name) {
  for (int i = 0; i < count; ++i)
    if (name == names[i]) return i;
  return 0;
}

// Set by the GLFW input callbacks (chained before ImGui's): the user did something, so redraw.
bool input_seen = true;
// Keys pressed since the last frame. ImGui 1.86 only sees the key state at each frame, so a tap
// shorter than a frame (software GL can take 200 ms per frame) would be lost.
std::vector<int> pressed_keys;

void InstallInputCallbacks(GLFWwindow* window) {
  glfwSetCursorPosCallback(window, [](GLFWwindow*, double, double) { input_seen = true; });
  glfwSetMouseButtonCallback(window, [](GLFWwindow*, int, int, int) { input_seen = true; });
  glfwSetScrollCallback(window, [](GLFWwindow*, double, double) { input_seen = true; });
  glfwSetKeyCallback(window, [](GLFWwindow*, int key, int, int action, int) {
    input_seen = true;
    if (action == GLFW_PRESS) pressed_keys.push_back(key);
  });
  glfwSetCharCallback(window, [](GLFWwindow*, unsigned int) { input_seen = true; });
  glfwSetWindowSizeCallback(window, [](GLFWwindow*, int, int) { input_seen = true; });
  glfwSetWindowRefreshCallback(window, [](GLFWwindow*) { input_seen = true; });
}

}  // namespace

bool HaveDisplay() {
  const char* x11 = std::getenv("DISPLAY");
  const char* wayland = std::getenv("WAYLAND_DISPLAY");
  return (x11 && *x11) || (wayland && *wayland);
}

void ViewerOptions::Check() const {
  if (width < 320 || height < 240) {
    throw OptionError("viewer window: expected at least 320x240, found " + std::to_string(width) +
                      "x" + std::to_string(height));
  }
  if (panel_width < 0 || panel_width > width - 100) {
    throw OptionError("panel_width: expected 0 .. window width - 100 (" +
                      std::to_string(width - 100) + "), found " + std::to_string(panel_width));
  }
  if (!(point_size >= 1.0f && point_size <= 64.0f)) {
    throw OptionError("point size: expected 1 .. 64 pixels, found " + std::to_string(point_size));
  }
  if (!std::isfinite(conf_threshold)) {
    throw OptionError("confidence threshold: expected a finite number, found " +
                      std::to_string(conf_threshold));
  }
  if (exit_after_frames < -1) {
    throw OptionError("exit after frames: expected -1 (off) or a count >= 0, found " +
                      std::to_string(exit_after_frames));
  }
  if (!(max_fps > 0.0)) {
    throw OptionError("max fps: expected a positive rate, found " + std::to_string(max_fps));
  }
}

// The box the view frames: 2nd..98th percentiles of the shown points per axis (so a few stray
// points do not shrink everything); the camera centres while there are no points yet.
// *points_scale is the diagonal of the points' box (it sizes the frusta), 0 without points.
void SceneBounds(const PipelineSnapshot& s, float conf_threshold, Vec3* lo, Vec3* hi, float* points_scale) {
  std::array<std::vector<float>, 3> axis;
  const size_t step = std::max<size_t>(1, s.cloud.points / 20000);
  size_t i = 0;
  for (const auto& chunk : s.cloud.chunks) {
    for (const CloudVertex& v : chunk->vertices) {
      if (i++ % step != 0 || !(v.conf > conf_threshold)) continue;
      axis[0].push_back(v.x);
      axis[1].push_back(v.y);
      axis[2].push_back(v.z);
    }
  }
  bool any = false;
  *points_scale = 0.0f;
  if (axis[0].size() >= 10) {
    float sq = 0.0f;
    for (int k = 0; k < 3; ++k) {
      auto& a = axis[k];
      const auto at = [&a](double q) {
        const auto nth = a.begin() + static_cast<std::ptrdiff_t>(q * (a.size() - 1));
        std::nth_element(a.begin(), nth, a.end());
        return *nth;
      };
      (*lo)[k] = at(0.02);
      (*hi)[k] = at(0.98);
      sq += ((*hi)[k] - (*lo)[k]) * ((*hi)[k] - (*lo)[k]);
    }
    *points_scale = std::sqrt(sq);
    any = true;
  }
  const size_t first_camera = any ? s.cameras.size() : 0;
  for (size_t c = first_camera; c < s.cameras.size(); ++c) {
    const auto center = geometry::CameraCenter(geometry::PoseEncodingToExtrinsics(s.cameras[c].pose_enc));
    if (!std::isfinite(center[0]) || !std::isfinite(center[1]) || !std::isfinite(center[2])) continue;
    for (int k = 0; k < 3; ++k) {
      const float x = static_cast<float>(center[k]);
      (*lo)[k] = any ? std::min((*lo)[k], x) : x;
      (*hi)[k] = any ? std::max((*hi)[k], x) : x;
    }
    any = true;
  }
  if (!any) {
    *lo = {-1, -1, 0};
    *hi = {1, 1, 2};
  }
}

// Frusta (every camera when there are few, else a subsample and the newest) and the trajectory.
std::vector<LineVertex> CameraLines(const CameraLog& cameras, float scale) {
  std::vector<LineVertex> lines;
  if (cameras.empty()) return lines;
  const size_t every = std::max<size_t>(1, cameras.size() / 300);
  const auto add = [&lines](const std::array<double, 3>& a, const std::array<double, 3>& b,
                            const std::array<float, 3>& rgb) {
    lines.push_back({static_cast<float>(a[0]), static_cast<float>(a[1]), static_cast<float>(a[2]),
                     rgb[0], rgb[1], rgb[2]});
    lines.push_back({static_cast<float>(b[0]), static_cast<float>(b[1]), static_cast<float>(b[2]),
                     rgb[0], rgb[1], rgb[2]});
  };
  std::array<double, 3> previous{};
  for (size_t i = 0; i < cameras.size(); ++i) {
    const CameraRecord& c = cameras[i];
    const Rigid3 world_from_cam = geometry::Inverse(geometry::PoseEncodingToExtrinsics(c.pose_enc));
    const std::array<double, 3> center = world_from_cam.t;
    if (i > 0) add(previous, center, {0.25f, 0.9f, 0.45f});  // trajectory
    previous = center;
    const bool current = i + 1 == cameras.size();
    if (!current && i % every != 0) continue;
    const Intrinsics k = geometry::PoseEncodingToIntrinsics(c.pose_enc, c.width, c.height);
    if (!(k.fx > 0) || !(k.fy > 0)) continue;
    const double d = scale * (current ? 0.08 : 0.04);
    const std::array<std::array<double, 2>, 4> pixels{
        {{0.0, 0.0}, {double(c.width), 0.0}, {double(c.width), double(c.height)}, {0.0, double(c.height)}}};
    std::array<std::array<double, 3>, 4> corners;
    for (int j = 0; j < 4; ++j) {
      corners[j] = geometry::Apply(world_from_cam, {(pixels[j][0] - k.cx) / k.fx * d,
                                                    (pixels[j][1] - k.cy) / k.fy * d, d});
    }
    const std::array<float, 3> rgb = current ? std::array<float, 3>{1.0f, 0.45f, 0.1f}
                                             : std::array<float, 3>{0.55f, 0.62f, 0.78f};
    for (int j = 0; j < 4; ++j) {
      add(center, corners[j], rgb);
      add(corners[j], corners[(j + 1) % 4], rgb);
    }
  }
  return lines;
}

// Everything that needs the GL context, the running session, the panel's state, and the pieces of
// one frame (snapshot, input, panel, scene) that Viewer::Run's loop calls.
struct Viewer::State {
  GLFWwindow* window = nullptr;
  ViewerOptions options;
  Session session;
  double last_draw_ms = 0.0;  // CPU time of the previous draw (software GL makes this large)

  PointBuffer points;
  LineBuffer lines;
  Texture rgb;
  Texture depth;
  ViewCamera camera;

  float point_size = 2.0f;
  float conf_threshold = 1.5f;
  bool follow = false;
  bool auto_fit = true;  // re-frame the growing scene until the user moves the camera

  std::shared_ptr<const PipelineSnapshot> shown;  // what is on the GPU
  std::shared_ptr<const FramePrediction> thumbs_of;
  Vec3 scene_min{-1, -1, 0}, scene_max{1, 1, 2};
  float scene_scale = 1.0f;

  // Panel edits.
  float voxel_edit = 0.0f;
  bool voxel_touched = false;   // the user edited the field: stop mirroring the grid in effect
  float voxel_applied = -1.0f;  // the voxel size set in the panel (kept across restarts); < 0 = none
  int policy_index = 0;
  int format_index = 0;
  std::array<char, 32> budget{};  // the budget text field
  int cache_tokens = 0;
  int pool = 16;
  std::array<char, 512> ply_path{};
  std::array<char, 512> tum_path{};
  std::array<char, 512> png_path{};
  std::string status;
  bool status_is_error = false;
  bool want_screenshot = false;
  bool want_restart = false;

  // ---- one frame: snapshot, input, panel, scene ----

  // Takes the newest snapshot onto the GPU (never waits: Latest() only copies a pointer).
  void TakeSnapshot() {
    if (!session.pipeline) return;
    std::shared_ptr<const PipelineSnapshot> s = session.pipeline->Latest();
    if (!s || s == shown) return;
    shown = s;
    if (!voxel_touched) voxel_edit = static_cast<float>(s->cloud.voxel_size);
    points.Sync(s->cloud);
    float points_scale = 0.0f;
    SceneBounds(*s, conf_threshold, &scene_min, &scene_max, &points_scale);
    const float dx = scene_max[0] - scene_min[0], dy = scene_max[1] - scene_min[1], dz = scene_max[2] - scene_min[2];
    scene_scale = std::max(std::sqrt(dx * dx + dy * dy + dz * dz), 1e-3f);
    lines.Set(CameraLines(s->cameras, points_scale > 0.0f ? points_scale : scene_scale));
    if (s->latest && s->latest != thumbs_of) {
      thumbs_of = s->latest;
      rgb.Update(s->latest->image);
      depth.Update(ColorizeDepth(s->latest->depth, s->latest->width, s->latest->height));
    }
    if (auto_fit && !follow) camera.Fit(scene_min, scene_max);
  }

  // Mouse and keys over the scene (ImGui says when it wants them itself).
  void HandleInput(const PipelineStats& stats, float panel_w, float ratio, int fb_h) {
    ImGuiIO& io = ImGui::GetIO();
    if (!io.WantCaptureMouse && io.MousePos.x > panel_w) {
      const ImVec2 d = io.MouseDelta;
      bool moved = false;
      // A button counts from the frame after its press: the press frame's delta may hold the jump
      // of the cursor to where the drag starts (frames can be slow with software GL).
      const auto dragging = [&io](int button) { return io.MouseDown[button] && io.MouseDownDuration[button] > 0.0f; };
      if (dragging(ImGuiMouseButton_Left)) {
        camera.Orbit(-d.x * 0.006f, d.y * 0.006f);
        moved = true;
      }
      if (dragging(ImGuiMouseButton_Right) || dragging(ImGuiMouseButton_Middle)) {
        camera.Pan(d.x * ratio, d.y * ratio, static_cast<float>(fb_h));
        moved = true;
      }
      if (io.MouseWheel != 0.0f) {
        camera.Zoom(io.MouseWheel);
        moved = true;
      }
      if (moved && (d.x != 0 || d.y != 0 || io.MouseWheel != 0)) {
        auto_fit = false;
        follow = false;
        camera.StopFollowing();
      }
    }
    const std::vector<int> keys = std::exchange(pressed_keys, {});
    for (const int key : io.WantCaptureKeyboard ? std::vector<int>{} : keys) {
      if (key == GLFW_KEY_SPACE && session.pipeline) session.pipeline->SetPaused(!stats.paused);
      if (key == GLFW_KEY_N && session.pipeline) session.pipeline->Step();
      if (key == GLFW_KEY_R) ResetView();
      if (key == GLFW_KEY_F) {
        follow = !follow;
        if (!follow) camera.StopFollowing();
      }
      if (key == GLFW_KEY_Q || key == GLFW_KEY_ESCAPE) glfwSetWindowShouldClose(window, GLFW_TRUE);
    }
  }

  void DrawPanel(const PipelineStats& stats, float panel_w, int win_h) {
    ImGui::SetNextWindowPos(ImVec2(0, 0));
    ImGui::SetNextWindowSize(ImVec2(panel_w, static_cast<float>(win_h)));
    ImGui::Begin("StreamRecon", nullptr, ImGuiWindowFlags_NoMove | ImGuiWindowFlags_NoResize | ImGuiWindowFlags_NoCollapse);
    const PipelineSnapshot* s = shown.get();
    StreamSection(stats, s, panel_w);
    CacheSection(s, panel_w);
    ControlsSection(stats);
    RestartSection();
    ExportSection(s, panel_w);
    if (!status.empty()) {
      ImGui::PushStyleColor(ImGuiCol_Text, status_is_error ? ImVec4(1.0f, 0.5f, 0.45f, 1.0f) : ImVec4(0.6f, 0.9f, 0.6f, 1.0f));
      ImGui::TextWrapped("%s", status.c_str());
      ImGui::PopStyleColor();
    }
    if (ImGui::CollapsingHeader("Help")) {
      ImGui::TextDisabled("Mouse: left orbit, right/middle pan, wheel zoom");
      ImGui::TextDisabled("Keys: space pause, n step, r reset, f follow, q quit");
    }
    ImGui::End();
    ImGui::Render();
  }

  void StreamSection(const PipelineStats& stats, const PipelineSnapshot* s, float panel_w) {
    const ImGuiIO& io = ImGui::GetIO();
    ImGui::TextWrapped("Input: %s", session.input.c_str());
    const char* state = stats.state == PipelineState::kRunning && stats.paused ? "paused" : PipelineStateName(stats.state);
    if (stats.state == PipelineState::kFailed) {
      ImGui::TextColored(ImVec4(1.0f, 0.35f, 0.3f, 1.0f), "State: failed");
      ImGui::PushStyleColor(ImGuiCol_Text, ImVec4(1.0f, 0.55f, 0.5f, 1.0f));
      ImGui::TextWrapped("%s", stats.error.c_str());
      ImGui::PopStyleColor();
    } else {
      ImGui::Text("State: %s", session.pipeline ? state : "no stream (restart failed; change the settings)");
    }
    const std::string total = stats.total_frames >= 0 ? std::to_string(stats.total_frames) : "?";
    ImGui::Text("Frame %lld / %s   (read %lld, dropped %lld)", static_cast<long long>(stats.frames_processed), total.c_str(),
                static_cast<long long>(stats.frames_read), static_cast<long long>(stats.frames_dropped));
    if (s && s->latest_report) {
      const FrameReport& r = *s->latest_report;
      ImGui::Text("Model: %.2f fps, last frame %.0f ms", s->model_fps, r.preprocess_ms + r.model_ms);
      ImGui::TextDisabled("  read %.1f | prep %.1f | model %.1f ms", r.read_ms, r.preprocess_ms, r.model_ms);
      if (r.refine_ms > 0)  // the pose tracker, on the accumulator thread beside the model's next frames
        ImGui::TextDisabled("  pose tracker %.1f | cloud %.1f ms", r.refine_ms, r.accumulate_ms);
      else
        ImGui::TextDisabled("  cloud %.1f ms", r.accumulate_ms);
    } else {
      ImGui::Text("Model: waiting for the first frame");
    }
    ImGui::Text("Viewer: %.1f ms/draw, %.0f draws/s (redraws on change)", last_draw_ms, io.Framerate);
    if (s) {
      const size_t visible = s->cloud.Count(conf_threshold);
      if (s->cloud.voxel_size > 0) {
        ImGui::Text("Points: %zu shown / %zu  (voxel %.4g)", visible, s->cloud.points, s->cloud.voxel_size);
      } else {
        ImGui::Text("Points: %zu shown / %zu", visible, s->cloud.points);
      }
    }
    if (s && !s->history_ms.empty()) {
      char overlay[64];
      std::snprintf(overlay, sizeof(overlay), "ms/frame %.0f", s->history_ms.back());
      ImGui::PlotLines("##ms", s->history_ms.data(), static_cast<int>(s->history_ms.size()), 0, overlay, 0.0f, FLT_MAX,
                       ImVec2(panel_w - 20, 34));
    }
  }

  // The KV cache: bytes against the budget, format, policy, tokens per layer; the thumbnails.
  void CacheSection(const PipelineSnapshot* s, float panel_w) {
    ImGui::Separator();
    const CacheStats* cache = s && s->latest_report ? &s->latest_report->cache : nullptr;
    const std::string used = cache ? FormatBytes(static_cast<double>(cache->bytes)) : "-";
    const std::string budget_text = cache && cache->budget_bytes > 0 ? FormatBytes(static_cast<double>(cache->budget_bytes))
                                    : !session.cache_budget.empty()  ? session.cache_budget
                                                                     : "unbounded";
    ImGui::Text("KV cache: %s / %s", used.c_str(), budget_text.c_str());
    ImGui::Text("Format: %s, %s bits", session.cache_format.c_str(), session.cache_bits.c_str());
    if (session.cache.cache_tokens > 0) {
      ImGui::Text("Policy: %s, %lld tokens/layer, pool %d", session.cache.policy.c_str(),
                  static_cast<long long>(session.cache.cache_tokens), session.cache.pool);
    } else {
      ImGui::Text("Policy: %s", session.cache.policy.c_str());
    }
    if (s && !s->history_cache_mib.empty()) {
      char overlay[64];
      std::snprintf(overlay, sizeof(overlay), "cache %.1f MiB", s->history_cache_mib.back());
      ImGui::PlotLines("##cache", s->history_cache_mib.data(), static_cast<int>(s->history_cache_mib.size()), 0, overlay, 0.0f,
                       FLT_MAX, ImVec2(panel_w - 20, 34));
    }
    if (cache && !cache->tokens_per_layer.empty()) {
      std::vector<float> tokens(cache->tokens_per_layer.begin(), cache->tokens_per_layer.end());
      const auto [lo, hi] = std::minmax_element(tokens.begin(), tokens.end());
      ImGui::Text("Tokens kept per layer: %.0f .. %.0f (%zu layers)", *lo, *hi, tokens.size());
      ImGui::PlotHistogram("##tokens", tokens.data(), static_cast<int>(tokens.size()), 0, nullptr, 0.0f,
                           std::max(*hi, 1.0f) * 1.1f, ImVec2(panel_w - 20, 24));
    }

    // Thumbnails: the model's input frame and its depth.
    if (rgb.width() > 0) {
      const float w = (panel_w - 28) / 2;
      const float h = w * rgb.height() / std::max(rgb.width(), 1);
      ImGui::Image(reinterpret_cast<ImTextureID>(static_cast<intptr_t>(rgb.id())), ImVec2(w, h));
      ImGui::SameLine();
      ImGui::Image(reinterpret_cast<ImTextureID>(static_cast<intptr_t>(depth.id())), ImVec2(w, h));
    }
  }

  void ControlsSection(const PipelineStats& stats) {
    ImGui::Separator();
    if (session.pipeline) {
      if (ImGui::Button(stats.paused ? "Resume" : "Pause")) session.pipeline->SetPaused(!stats.paused);
      ImGui::SameLine();
      ImGui::BeginDisabled(!stats.paused);
      if (ImGui::Button("Step")) session.pipeline->Step();
      ImGui::EndDisabled();
      ImGui::SameLine();
    }
    if (ImGui::Button("Reset view")) ResetView();
    ImGui::SameLine();
    if (ImGui::Checkbox("Follow camera", &follow) && !follow) camera.StopFollowing();
    ImGui::SliderFloat("Confidence >", &conf_threshold, 1.0f, 20.0f, "%.2f", ImGuiSliderFlags_Logarithmic);
    ImGui::SliderFloat("Point size", &point_size, 1.0f, 8.0f, "%.1f");
    ImGui::SetNextItemWidth(120);
    ImGui::InputFloat("##voxel", &voxel_edit, 0.0f, 0.0f, "%.4f");
    if (ImGui::IsItemActive()) voxel_touched = true;
    ImGui::SameLine();
    if (ImGui::Button("Set voxel size") && session.pipeline) {
      try {
        session.pipeline->SetVoxelSize(voxel_edit);
        voxel_applied = voxel_edit;
        SetStatus("voxel size " + std::to_string(voxel_edit), false);
      } catch (const std::exception& e) {
        SetStatus(e.what(), true);
      }
    }
  }

  void RestartSection() {
    if (ImGui::CollapsingHeader("Restart with another cache", ImGuiTreeNodeFlags_DefaultOpen)) {
      ImGui::SetNextItemWidth(110);
      ImGui::Combo("Policy", &policy_index, kPolicies.data(), kPolicyCount);
      ImGui::SameLine();
      ImGui::SetNextItemWidth(90);
      ImGui::Combo("Format", &format_index, kFormats.data(), kFormatCount);
      ImGui::SetNextItemWidth(110);
      ImGui::InputText("Budget", budget.data(), budget.size());
      if (ImGui::IsItemHovered()) ImGui::SetTooltip("bytes of every cache, e.g. 512MiB or 2GB; empty = none");
      ImGui::SameLine();
      ImGui::SetNextItemWidth(90);
      ImGui::InputInt("Tokens", &cache_tokens, 0);
      ImGui::SetNextItemWidth(110);
      ImGui::InputInt("Pool", &pool, 0);
      ImGui::SameLine();
      if (ImGui::Button("Restart stream")) want_restart = true;
    }
  }

  void ExportSection(const PipelineSnapshot* s, float panel_w) {
    if (ImGui::CollapsingHeader("Export", ImGuiTreeNodeFlags_DefaultOpen)) {
      const float field = panel_w - 150;
      const auto export_row = [&](const char* id, std::array<char, 512>& path, const char* label) {
        ImGui::SetNextItemWidth(field);
        ImGui::InputText(id, path.data(), path.size());
        ImGui::SameLine();
        return ImGui::Button(label);
      };
      if (export_row("##ply", ply_path, "Export PLY") && s) {
        try {
          const PointCloud cloud = s->cloud.Collect(conf_threshold);
          WritePointCloudPly(ply_path.data(), cloud);
          SetStatus("wrote " + std::to_string(cloud.size()) + " points to " + ply_path.data(), false);
        } catch (const std::exception& e) {
          SetStatus(e.what(), true);
        }
      }
      if (export_row("##tum", tum_path, "Export TUM") && s) {
        try {
          WriteTrajectoryTum(tum_path.data(), s->cameras.ToVector());
          SetStatus("wrote " + std::to_string(s->cameras.size()) + " poses to " + tum_path.data(), false);
        } catch (const std::exception& e) {
          SetStatus(e.what(), true);
        }
      }
      if (export_row("##png", png_path, "Screenshot")) want_screenshot = true;
    }
  }

  void DrawScene(int fb_w, int fb_h, int scene_x, int scene_w, float ratio) {
    const PipelineSnapshot* s = shown.get();
    if (follow && s && !s->cameras.empty()) {
      camera.Follow(geometry::Inverse(geometry::PoseEncodingToExtrinsics(s->cameras.back().pose_enc)), scene_scale);
    }
    glViewport(0, 0, fb_w, fb_h);
    glClearColor(0.09f, 0.10f, 0.12f, 1.0f);
    glClear(GL_COLOR_BUFFER_BIT | GL_DEPTH_BUFFER_BIT);
    glViewport(scene_x, 0, scene_w, fb_h);
    glEnable(GL_DEPTH_TEST);
    glEnable(GL_PROGRAM_POINT_SIZE);
    const Mat4 mvp = Multiply(camera.Projection(static_cast<float>(scene_w) / std::max(fb_h, 1)), camera.View());
    points.Draw(mvp, point_size * ratio, conf_threshold);
    lines.Draw(mvp);
    glDisable(GL_DEPTH_TEST);
    glViewport(0, 0, fb_w, fb_h);
    ImGui_ImplOpenGL3_RenderDrawData(ImGui::GetDrawData());
  }

  // One frame, the Dear ImGui way: new frame, input, panel, render, scene, then the UI on top.
  // Leaves the image in the back buffer.
  PipelineStats DrawFrame() {
    TakeSnapshot();
    const PipelineStats stats = session.pipeline ? session.pipeline->Stats() : PipelineStats{};
    ImGui_ImplOpenGL3_NewFrame();
    ImGui_ImplGlfw_NewFrame();
    ImGui::NewFrame();
    int win_w = 0, win_h = 0, fb_w = 0, fb_h = 0;
    glfwGetWindowSize(window, &win_w, &win_h);
    glfwGetFramebufferSize(window, &fb_w, &fb_h);
    const float panel_w = static_cast<float>(options.panel_width);
    const float ratio = win_w > 0 ? static_cast<float>(fb_w) / win_w : 1.0f;
    const int scene_x = static_cast<int>(panel_w * ratio);
    HandleInput(stats, panel_w, ratio, fb_h);
    DrawPanel(stats, panel_w, win_h);
    ImGui::Render();
    DrawScene(fb_w, fb_h, scene_x, std::max(fb_w - scene_x, 1), ratio);
    ImGui_ImplOpenGL3_RenderDrawData(ImGui::GetDrawData());
    return stats;
  }

  // ---- actions ----

  void ResetView() {
    auto_fit = true;
    follow = false;
    camera.StopFollowing();
    camera.Fit(scene_min, scene_max);
  }

  // The panel's restart fields from the settings a session runs with.
  void LoadEdits(const RestartRequest& r) {
    policy_index = IndexOf(kPolicies.data(), kPolicyCount, r.policy);
    format_index = IndexOf(kFormats.data(), kFormatCount, r.format);
    budget.fill('\0');
    r.budget.copy(budget.data(), std::min(r.budget.size(), budget.size() - 1));
    cache_tokens = static_cast<int>(r.cache_tokens);
    pool = r.pool;
  }

  // A new session with the panel's settings (the old one stops first); failures go to the status.
  void Restart(const SessionFactory& factory) {
    RestartRequest request;
    request.policy = kPolicies[std::clamp(policy_index, 0, kPolicyCount - 1)];
    request.format = kFormats[std::clamp(format_index, 0, kFormatCount - 1)];
    request.budget = budget.data();
    request.cache_tokens = std::max(cache_tokens, 0);
    request.pool = pool;
    session.pipeline.reset();  // stops and joins the old stream; its last snapshot stays shown
    try {
      Session next = factory(request);
      session = std::move(next);
      if (voxel_applied >= 0.0f) session.pipeline->SetVoxelSize(voxel_applied);
      LoadEdits(session.cache);
      auto_fit = true;
      SetStatus("restarted: policy " + request.policy + ", format " + request.format +
                    (request.budget.empty() ? std::string() : ", budget " + request.budget) + ", " +
                    std::to_string(request.cache_tokens) + " tokens, pool " + std::to_string(request.pool),
                false);
    } catch (const std::exception& e) {
      SetStatus(std::string("restart failed: ") + e.what(), true);
    }
  }

  void SaveScreenshot(const std::string& path) {
    int fb_w = 0, fb_h = 0;
    glfwGetFramebufferSize(window, &fb_w, &fb_h);
    WritePng(path, ReadFramebuffer(fb_w, fb_h));
  }

  void SetStatus(std::string text, bool error) {
    status = std::move(text);
    status_is_error = error;
  }
};

Viewer::Viewer(const ViewerOptions& options) : options_(options) {
  options_.Check();
  glfwSetErrorCallback(OnGlfwError);
  if (!HaveDisplay()) {
    throw Error("cannot open the viewer window: expected a display, found none (DISPLAY and "
                "WAYLAND_DISPLAY are not set). " + HeadlessHint(options_));
  }
  if (!glfwInit()) {
    throw Error("cannot open the viewer window: GLFW could not start (" + last_glfw_error +
                "). " + HeadlessHint(options_));
  }
  glfwWindowHint(GLFW_CONTEXT_VERSION_MAJOR, 3);
  glfwWindowHint(GLFW_CONTEXT_VERSION_MINOR, 3);
  glfwWindowHint(GLFW_OPENGL_PROFILE, GLFW_OPENGL_CORE_PROFILE);
  glfwWindowHint(GLFW_OPENGL_FORWARD_COMPAT, GLFW_TRUE);
  window_ = glfwCreateWindow(options_.width, options_.height, options_.title.c_str(), nullptr, nullptr);
  if (!window_) {
    const std::string reason = last_glfw_error;
    glfwTerminate();
    throw Error("cannot open the viewer window: expected an OpenGL 3.3 core context, found none (" +
                reason + "). " + HeadlessHint(options_));
  }
  glfwMakeContextCurrent(window_);
  glfwSwapInterval(1);

  IMGUI_CHECKVERSION();
  ImGui::CreateContext();
  ImGui::GetIO().IniFilename = nullptr;  // no imgui.ini in the working folder
  ImGui::StyleColorsDark();
  ImGui::GetStyle().WindowRounding = 0.0f;
  InstallInputCallbacks(window_);  // before ImGui's, which chain to them
  ImGui_ImplGlfw_InitForOpenGL(window_, true);
  ImGui_ImplOpenGL3_Init("#version 330");

  state_ = std::make_unique<State>();
  state_->window = window_;
  state_->options = options_;
  state_->point_size = options_.point_size;
  state_->conf_threshold = options_.conf_threshold;
  state_->follow = options_.follow;
  const auto copy = [](std::array<char, 512>& to, const std::string& from) {
    std::snprintf(to.data(), to.size(), "%s", from.c_str());
  };
  copy(state_->ply_path, options_.export_ply);
  copy(state_->tum_path, options_.export_tum);
  copy(state_->png_path, options_.export_png);
}

Viewer::~Viewer() {
  glfwMakeContextCurrent(window_);
  state_.reset();  // GL objects go while the context lives
  ImGui_ImplOpenGL3_Shutdown();
  ImGui_ImplGlfw_Shutdown();
  ImGui::DestroyContext();
  glfwDestroyWindow(window_);
  glfwTerminate();
}

ViewerResult Viewer::Run(const SessionFactory& factory, const RestartRequest& initial) {
  using Clock = std::chrono::steady_clock;
  State& st = *state_;
  st.session = factory(initial);
  st.LoadEdits(st.session.cache);
  int settle_frames = 0;  // frames drawn since the exit condition held
  bool screenshot_written = false;
  PipelineStats last_stats;
  Clock::time_point last_input = Clock::now(), last_draw = Clock::time_point{};
  // Ctrl-C / SIGTERM in the terminal close the window like its close button (exports and the
  // --screenshot are written as on a normal close); a second signal aborts at once.
  while (!glfwWindowShouldClose(window_) && !Interrupted()) {
    const auto frame_start = Clock::now();
    glfwPollEvents();
    // Redraw only when something changed: new snapshot, recent input, a pending action, or now
    // and then for the live counters (every 250 ms, or 5 draw times when drawing is slow, as with
    // software GL and millions of points). An idle viewer leaves the CPU to the model.
    if (input_seen) last_input = frame_start;
    input_seen = false;
    const auto refresh = std::chrono::duration<double, std::milli>(std::max(250.0, 5.0 * st.last_draw_ms));
    const bool busy = frame_start - last_input < std::chrono::seconds(1) || st.want_restart || st.want_screenshot ||
                      frame_start - last_draw > refresh || (st.session.pipeline && st.session.pipeline->Latest() != st.shown);
    if (!busy) {
      glfwWaitEventsTimeout(0.02);
      continue;
    }
    last_draw = frame_start;
    last_stats = st.DrawFrame();
    st.last_draw_ms = std::chrono::duration<double, std::milli>(Clock::now() - frame_start).count();
    if (st.want_screenshot) {
      st.want_screenshot = false;
      try {
        st.SaveScreenshot(st.png_path.data());
        st.SetStatus(std::string("wrote ") + st.png_path.data(), false);
      } catch (const std::exception& e) {
        st.SetStatus(e.what(), true);
      }
    }
    // Headless mode: exit once N frames went through and were drawn (a few frames later, so the
    // panel has settled), writing the screenshot from this very frame.
    if (options_.exit_after_frames >= 0) {
      const bool reached =
          last_stats.frames_processed >= options_.exit_after_frames || last_stats.state != PipelineState::kRunning;
      const bool drawn = st.shown && (st.shown->stats.frames_processed >= options_.exit_after_frames ||
                                      st.shown->stats.state != PipelineState::kRunning);
      settle_frames = reached && (drawn || last_stats.state == PipelineState::kFailed) ? settle_frames + 1 : 0;
      if (settle_frames >= 3) {
        if (!options_.screenshot.empty()) {
          st.SaveScreenshot(options_.screenshot);
          screenshot_written = true;
        }
        glfwSwapBuffers(window_);
        break;
      }
    }
    glfwSwapBuffers(window_);
    if (st.want_restart) {
      st.want_restart = false;
      st.Restart(factory);
    }
    const auto frame_budget = std::chrono::duration<double>(1.0 / options_.max_fps);
    const auto spent = Clock::now() - frame_start;
    if (spent < frame_budget) std::this_thread::sleep_for(frame_budget - spent);
  }

  if (!options_.screenshot.empty() && !screenshot_written) {
    // The window was closed: draw once more and keep that.
    glfwPollEvents();
    st.DrawFrame();
    st.SaveScreenshot(options_.screenshot);
    screenshot_written = true;
  }
  if (st.session.pipeline) last_stats = st.session.pipeline->Stats();
  ViewerResult result;
  result.frames = last_stats.frames_processed;
  result.points = st.shown ? st.shown->cloud.Count(st.conf_threshold) : 0;
  result.failed = last_stats.state == PipelineState::kFailed;
  result.error = last_stats.error;
  if (screenshot_written) result.screenshot = options_.screenshot;
  st.session.pipeline.reset();
  return result;
}

}  // namespace streamrecon::viewer
