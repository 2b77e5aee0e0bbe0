// Deterministic procedural scenes with exact ground truth (depth, intrinsics, poses): a closed,
// textured room or an open outdoor square with boxes and spheres, ray cast in plain C++ (no
// OpenCV, no LibTorch), for tests, benchmarks and evaluation without data sets.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/types.h"
#include "datasets/frame_source.h"

namespace streamrecon::datasets {

// How the camera moves through the scene. All keep to a circle of radius 2.5 m around the scene
// centre, which objects stand inside and outside of (at least 0.7 m away; walls 1.7 m or more).
enum class Trajectory {
  kWalk,   // walks a third of the circle at eye height, looking ahead and 0.6 rad inwards with a
           // slow +-0.15 rad yaw sway; frame i at fraction i / (frames - 1) of the path
  kOrbit,  // goes once around the circle (frame i at angle 2 pi i / frames), looking at the centre
  kPan,    // stands still on the circle at eye height and turns from 1 rad left of the centre to
           // 1 rad right of it (frame i at fraction i / (frames - 1)), looking slightly down
};

// What surrounds the camera circle.
enum class Environment {
  kRoom,     // a closed room of about 10 x 9 x 3 m: textured walls, checker floor, ceiling
  kOutdoor,  // an open square of about 40 x 35 m: ground, sky on its far walls and 25-30 m up,
             // buildings and tree-like spheres, lit by a far sun (no falloff)
};

// What to render.
struct SyntheticOptions {
  // Image width in pixels.
  int width = 518;
  // Image height in pixels.
  int height = 392;
  // Number of frames; the whole trajectory is spread over them.
  int frames = 24;
  // Picks the room size, textures, colours, objects and where the trajectory starts.
  uint64_t seed = 0;
  // Camera path.
  Trajectory trajectory = Trajectory::kWalk;
  // Room or outdoor square.
  Environment environment = Environment::kRoom;
  // Horizontal field of view in degrees (square pixels, so it also fixes the vertical one).
  double fov_x_deg = 60.0;
  // Render threads; 0 = std::thread::hardware_concurrency().
  int threads = 0;

  // Throws OptionError when a value is out of range.
  void Check() const;
  // "walk", "orbit" or "pan", with "-outdoor" for the outdoor square.
  std::string Label() const;
};

// Sets the trajectory and environment from words joined by ':' ("pan", "orbit:outdoor",
// "outdoor"); words not given keep their value. Throws OptionError naming `spec` otherwise.
void ApplySyntheticVariant(const std::string& variant, SyntheticOptions& options, const std::string& spec);

// One rendered frame with its ground truth.
struct SyntheticFrame {
  Frame frame;               // image [H, W, 3] RGB; name "synthetic:<i>", timestamp i
  std::vector<float> depth;  // [H, W] metres, z along the optical axis; finite and > 0
  Intrinsics intrinsics;     // fx = fy = (W/2) / tan(fov_x/2), cx = W/2, cy = H/2
  Rigid3 world_from_cam;     // OpenCV camera axes (x right, y down, z forward); world z up
};

// The scene as plain data, for renderers other than SyntheticScene::Render (the LibTorch one in
// synthetic_torch.h). Patterns: 0 checker, 1 stripes, 2 value noise (see synthetic.cc).
struct SceneDescription {
  struct Material {
    int pattern = 0;
    std::array<double, 3> color_a{}, color_b{}, offset{}, stripe_direction{};
    double period = 1.0;
    uint64_t salt = 0;
  };
  struct Box {
    std::array<double, 3> lo{}, hi{};
    int material = 0;
  };
  struct Sphere {
    std::array<double, 3> center{};
    double radius = 0;
    int material = 0;
  };
  std::array<double, 3> room_lo{}, room_hi{};
  std::array<int, 6> room_material{};  // faces -x, +x, -y, +y, floor, ceiling
  std::vector<Box> boxes;
  std::vector<Sphere> spheres;
  std::vector<Material> materials;
  std::array<double, 3> light{};
  double ambient = 0, diffuse = 0, falloff = 0;  // intensity = ambient + diffuse * lambert / (1 + falloff * d^2)
};

// A scene and trajectory fixed by SyntheticOptions. Pixel convention (the same as
// geometry::UnprojectDepth and VGGT): pixel (u, v), u the integer column and v the integer row,
// is rendered with the ray through camera point ((u - cx) / fx, (v - cy) / fy, 1), so
// X_cam = depth(u, v) * ((u - cx) / fx, (v - cy) / fy, 1) lies exactly on the surface seen
// there. One ray per pixel, Lambert shading from one point light plus ambient, no shadows.
// Immutable after construction; Render() is safe to call from several threads.
class SyntheticScene {
 public:
  // Throws OptionError when options.Check() fails.
  explicit SyntheticScene(const SyntheticOptions& options);

  // Number of frames (options.frames).
  int64_t size() const { return options_.frames; }
  const SyntheticOptions& options() const { return options_; }

  // Renders frame index in [0, size()); throws Error otherwise.
  SyntheticFrame Render(int64_t index) const;

  // The camera of frame index in [0, size()) (no rendering); throws Error otherwise.
  Rigid3 WorldFromCam(int64_t index) const;
  Intrinsics intrinsics() const;
  SceneDescription Describe() const;

  // Signed distance in metres from a world point to the nearest surface: positive in free space
  // (inside the room, outside every object), zero on surfaces, negative inside solids.
  double SignedDistance(const std::array<double, 3>& world_point) const;

 private:
  struct Geometry;  // room, objects, materials, light (synthetic.cc)

  SyntheticOptions options_;
  std::shared_ptr<const Geometry> geometry_;
};

// A FrameSource delivering SyntheticScene(options).Render(i).frame for i = 0 .. frames - 1.
// Throws OptionError when options.Check() fails.
std::unique_ptr<FrameSource> MakeSyntheticSource(const SyntheticOptions& options);

}  // namespace streamrecon::datasets
