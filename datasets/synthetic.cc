// Procedural room scenes: seeded layout and solid textures, per-pixel ray casting over rows on
// std::threads, exact z-depth, and the camera trajectories.
#include "datasets/synthetic.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <string>
#include <thread>

#include "core/errors.h"

namespace streamrecon::datasets {
namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr double kCameraRadius = 2.5;     // both trajectories keep to this circle around the centre
constexpr double kCameraClearance = 0.7;  // free space between the camera circle and any object
constexpr int kInnerObjects = 4;          // objects inside the camera circle (besides the pillar)
constexpr int kOuterObjects = 12;         // objects between the camera circle and the walls
constexpr int kOuterObjectsOutdoor = 28;  // buildings and trees on the outdoor square
constexpr double kAmbient = 0.3;          // light reaching every surface (room)
constexpr double kDiffuse = 1.1;          // point light strength (room)
constexpr double kFalloff = 0.04;         // point light falloff: 1 / (1 + kFalloff * distance^2)
constexpr double kAmbientOutdoor = 0.6;   // sky light (it also keeps the sky, lit from below, bright)
constexpr double kDiffuseOutdoor = 0.55;  // the sun: far away, no falloff

struct Vec3 {
  double x = 0, y = 0, z = 0;
  double operator[](int axis) const { return axis == 0 ? x : axis == 1 ? y : z; }
};
Vec3 operator+(const Vec3& a, const Vec3& b) { return {a.x + b.x, a.y + b.y, a.z + b.z}; }
Vec3 operator-(const Vec3& a, const Vec3& b) { return {a.x - b.x, a.y - b.y, a.z - b.z}; }
Vec3 operator*(const Vec3& a, double s) { return {a.x * s, a.y * s, a.z * s}; }
double Dot(const Vec3& a, const Vec3& b) { return a.x * b.x + a.y * b.y + a.z * b.z; }
Vec3 Cross(const Vec3& a, const Vec3& b) {
  return {a.y * b.z - a.z * b.y, a.z * b.x - a.x * b.z, a.x * b.y - a.y * b.x};
}
Vec3 Normalized(const Vec3& a) { return a * (1.0 / std::sqrt(Dot(a, a))); }
Vec3 UnitAxis(int axis, double sign) {
  return {axis == 0 ? sign : 0.0, axis == 1 ? sign : 0.0, axis == 2 ? sign : 0.0};
}

uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

double UnitDouble(uint64_t bits) { return static_cast<double>(bits >> 11) * 0x1.0p-53; }

// SplitMix64: tiny and identical on every platform (std distributions are not).
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  double Uniform(double lo, double hi) { return lo + (hi - lo) * UnitDouble(Bits()); }
  int Below(int n) { return static_cast<int>(Bits() % static_cast<uint64_t>(n)); }
  uint64_t Bits() { return Mix64(state_ += 0x9E3779B97F4A7C15ull); }

 private:
  uint64_t state_;
};

// Smooth value noise in [0, 1] with unit lattice spacing.
double ValueNoise(const Vec3& p, uint64_t salt) {
  const double fx = std::floor(p.x), fy = std::floor(p.y), fz = std::floor(p.z);
  const auto ix = static_cast<int64_t>(fx), iy = static_cast<int64_t>(fy),
             iz = static_cast<int64_t>(fz);
  auto fade = [](double t) { return t * t * (3 - 2 * t); };
  const double wx = fade(p.x - fx), wy = fade(p.y - fy), wz = fade(p.z - fz);
  auto lattice = [&](int dx, int dy, int dz) {
    return UnitDouble(Mix64(static_cast<uint64_t>(ix + dx) * 0x8CB92BA72F3D8DD7ull ^
                            static_cast<uint64_t>(iy + dy) * 0x9E3779B97F4A7C15ull ^
                            static_cast<uint64_t>(iz + dz) * 0xC2B2AE3D27D4EB4Full ^ salt));
  };
  auto lerp = [](double a, double b, double t) { return a + (b - a) * t; };
  double along_y[2];
  for (int dz = 0; dz < 2; ++dz) {
    along_y[dz] = lerp(lerp(lattice(0, 0, dz), lattice(1, 0, dz), wx),
                       lerp(lattice(0, 1, dz), lattice(1, 1, dz), wx), wy);
  }
  return lerp(along_y[0], along_y[1], wz);
}

Vec3 HsvToRgb(double h, double s, double v) {
  h = (h - std::floor(h)) * 6;
  auto channel = [&](double n) {
    const double k = std::fmod(n + h, 6.0);
    return v - v * s * std::clamp(std::min(k, 4 - k), 0.0, 1.0);
  };
  return {channel(5), channel(3), channel(1)};
}

// A solid texture: the albedo is a function of the world point, so every surface gets one
// without texture coordinates.
struct Material {
  enum class Pattern { kChecker, kStripes, kNoise };
  Pattern pattern = Pattern::kChecker;
  Vec3 color_a, color_b;  // linear RGB in [0, 1]
  double period = 1.0;    // metres per pattern cell
  Vec3 offset;            // keeps cell boundaries off the axis-aligned faces
  Vec3 stripe_direction;  // unit
  uint64_t salt = 0;

  Vec3 Albedo(const Vec3& p) const {
    const Vec3 q = (p + offset) * (1.0 / period);
    double mix = 0;
    switch (pattern) {
      case Pattern::kChecker:
        mix = static_cast<double>(
            static_cast<int64_t>(std::floor(q.x) + std::floor(q.y) + std::floor(q.z)) & 1);
        break;
      case Pattern::kStripes:
        mix = 0.5 + 0.5 * std::sin(2 * kPi * Dot(q, stripe_direction));
        break;
      case Pattern::kNoise:
        mix = 0.65 * ValueNoise(q * 2.0, salt) + 0.35 * ValueNoise(q * 6.0, salt + 1);
        break;
    }
    // Fine grain everywhere, so no surface is flat (image matching needs texture).
    const double grain = 0.8 + 0.4 * ValueNoise(p * 14.0 + offset, salt + 2);
    return (color_a * (1 - mix) + color_b * mix) * grain;
  }

  static Material Random(Rng& rng, Pattern pattern, double period) {
    Material m;
    m.pattern = pattern;
    const double hue = rng.Uniform(0, 1), value = rng.Uniform(0.6, 0.95);
    m.color_a = HsvToRgb(hue, rng.Uniform(0.2, 0.7), value);
    m.color_b = HsvToRgb(hue + rng.Uniform(0.1, 0.5), rng.Uniform(0.2, 0.8),
                         value * rng.Uniform(0.3, 0.6));
    m.period = period;
    m.offset = Vec3{rng.Uniform(0.1, 0.9), rng.Uniform(0.1, 0.9), rng.Uniform(0.1, 0.9)} * period;
    m.stripe_direction =
        Normalized({rng.Uniform(-1, 1), rng.Uniform(-1, 1), rng.Uniform(0.2, 1)});
    m.salt = rng.Bits();
    return m;
  }
};

struct Box {
  Vec3 lo, hi;
  int material = 0;
};

struct Sphere {
  Vec3 center;
  double radius = 0;
  int material = 0;
};

struct Hit {
  double t = 0;  // ray parameter; the z-depth when the ray's camera-space z component is 1
  Vec3 normal;   // unit, facing the ray origin's side
  int material = 0;
};

}  // namespace

struct SyntheticScene::Geometry {
  Vec3 room_lo, room_hi;             // the room is the box [room_lo, room_hi]; floor at z = 0
  std::array<int, 6> room_material;  // faces -x, +x, -y, +y, floor, ceiling
  std::vector<Box> boxes;
  std::vector<Sphere> spheres;
  std::vector<Material> materials;
  Vec3 light;
  double ambient = kAmbient, diffuse = kDiffuse, falloff = kFalloff;
  double start_angle = 0;  // where on the camera circle the trajectory starts, radians

  Geometry(uint64_t seed, Environment environment) {
    Rng rng(seed);
    using Pattern = Material::Pattern;
    auto add_material = [&](Pattern pattern, double period) {
      materials.push_back(Material::Random(rng, pattern, period));
      return static_cast<int>(materials.size()) - 1;
    };
    auto any_pattern = [&] { return static_cast<Pattern>(rng.Below(3)); };
    const bool outdoor = environment == Environment::kOutdoor;

    double half_x, half_y;
    if (!outdoor) {
      half_x = rng.Uniform(5.0, 5.8), half_y = rng.Uniform(4.2, 4.8);
      room_lo = {-half_x, -half_y, 0};
      room_hi = {half_x, half_y, rng.Uniform(2.7, 3.2)};
      for (int face = 0; face < 4; ++face) {
        room_material[face] = add_material(any_pattern(), rng.Uniform(0.3, 1.0));
      }
      room_material[4] = add_material(Pattern::kChecker, rng.Uniform(0.5, 0.8));
      room_material[5] = add_material(Pattern::kNoise, 1.0);
    } else {
      // The "room" is the square's bounds: ground below, and sky on its walls and ceiling (a
      // horizon 18-22 m away); buildings and trees stand on the ground (below).
      half_x = rng.Uniform(18.0, 22.0), half_y = rng.Uniform(15.0, 19.0);
      room_lo = {-half_x, -half_y, 0};
      room_hi = {half_x, half_y, rng.Uniform(25.0, 30.0)};
      Material ground = Material::Random(rng, Pattern::kNoise, rng.Uniform(0.6, 1.2));
      const double ground_hue = rng.Uniform(0.08, 0.33);  // earth to grass
      ground.color_a = HsvToRgb(ground_hue, rng.Uniform(0.35, 0.6), rng.Uniform(0.55, 0.75));
      ground.color_b = HsvToRgb(ground_hue + 0.05, rng.Uniform(0.3, 0.6), rng.Uniform(0.25, 0.4));
      materials.push_back(ground);
      room_material[4] = static_cast<int>(materials.size()) - 1;
      Material sky = Material::Random(rng, Pattern::kNoise, rng.Uniform(6.0, 10.0));  // soft clouds
      sky.color_a = HsvToRgb(rng.Uniform(0.55, 0.6), rng.Uniform(0.35, 0.5), 0.95);
      sky.color_b = HsvToRgb(0.58, 0.05, 1.0);
      materials.push_back(sky);
      for (int face = 0; face < 4; ++face) room_material[face] = static_cast<int>(materials.size()) - 1;
      room_material[5] = static_cast<int>(materials.size()) - 1;
    }

    // A pillar at the centre, then objects inside and outside the camera circle.
    const double pillar = rng.Uniform(0.2, 0.35);
    boxes.push_back({{-pillar, -pillar, 0}, {pillar, pillar, rng.Uniform(0.8, 1.6)},
                     add_material(any_pattern(), rng.Uniform(0.15, 0.4))});
    struct Footprint {
      double x, y, reach;  // a disc on the floor holding the object
    };
    std::vector<Footprint> footprints{{0, 0, pillar * std::sqrt(2.0)}};
    const int outer_objects = outdoor ? kOuterObjectsOutdoor : kOuterObjects;
    for (int object = 0; object < kInnerObjects + outer_objects; ++object) {
      const bool inside = object < kInnerObjects;
      // Rejection sampling: clear of the camera circle, the walls and the other objects (an
      // object that finds no spot in 200 tries is left out).
      for (int attempt = 0; attempt < 200; ++attempt) {
        const bool sphere = rng.Below(5) < 2;
        // Outdoors the outer objects are buildings (boxes) and tree crowns (spheres).
        const double size = inside ? rng.Uniform(0.15, 0.3) : outdoor ? rng.Uniform(0.6, 2.2) : rng.Uniform(0.2, 0.6);
        const double reach = sphere ? size : size * std::sqrt(2.0);
        const double margin = reach + 0.05;  // off the walls
        const Footprint spot{rng.Uniform(margin - half_x, half_x - margin),
                             rng.Uniform(margin - half_y, half_y - margin), reach};
        const double radial = std::hypot(spot.x, spot.y) - kCameraRadius;
        const bool clear =
            (inside ? -radial : radial) >= reach + kCameraClearance &&
            std::all_of(footprints.begin(), footprints.end(), [&](const Footprint& other) {
              return std::hypot(spot.x - other.x, spot.y - other.y) >= reach + other.reach + 0.1;
            });
        if (!clear) continue;
        footprints.push_back(spot);
        const int material = add_material(any_pattern(), inside || !outdoor ? rng.Uniform(0.08, 0.3) : rng.Uniform(0.3, 1.2));
        if (sphere) {
          const double lift = outdoor && !inside ? rng.Uniform(1.0, 2.5) : rng.Below(2) == 0 ? 0.0 : rng.Uniform(0.2, 0.9);
          spheres.push_back({{spot.x, spot.y, size + lift}, size, material});
        } else {
          const double height = inside ? rng.Uniform(0.3, 1.0) : outdoor ? rng.Uniform(2.0, 9.0) : rng.Uniform(0.3, 2.0);
          boxes.push_back({{spot.x - size, spot.y - size, 0},
                           {spot.x + size, spot.y + size, height},
                           material});
        }
        break;
      }
    }
    if (!outdoor) {
      light = {rng.Uniform(-1, 1), rng.Uniform(-1, 1), room_hi.z - 0.3};
    } else {
      light = {rng.Uniform(-1e3, 1e3), rng.Uniform(-1e3, 1e3), 1.5e3};  // the sun
      ambient = kAmbientOutdoor;
      diffuse = kDiffuseOutdoor;
      falloff = 0.0;
    }
    start_angle = rng.Uniform(0, 2 * kPi);
  }

  // The first surface along origin + t * dir, t > 0; origin must lie in free space.
  Hit Trace(const Vec3& origin, const Vec3& dir) const {
    Hit hit;
    hit.t = std::numeric_limits<double>::infinity();
    for (int axis = 0; axis < 3; ++axis) {  // leaving the room through the nearest face
      if (dir[axis] == 0) continue;
      const bool positive = dir[axis] > 0;
      const double t = ((positive ? room_hi : room_lo)[axis] - origin[axis]) / dir[axis];
      if (t < hit.t) {
        hit = {t, UnitAxis(axis, positive ? -1 : 1), room_material[axis * 2 + positive]};
      }
    }
    for (const Box& box : boxes) {  // slab test; the entry face is the last slab entered
      double t_near = -std::numeric_limits<double>::infinity(), t_far = hit.t;
      int near_axis = -1;
      for (int axis = 0; axis < 3 && t_near <= t_far; ++axis) {
        if (dir[axis] == 0) {
          if (origin[axis] < box.lo[axis] || origin[axis] > box.hi[axis]) t_far = -1;
          continue;
        }
        double t0 = (box.lo[axis] - origin[axis]) / dir[axis];
        double t1 = (box.hi[axis] - origin[axis]) / dir[axis];
        if (t0 > t1) std::swap(t0, t1);
        if (t0 > t_near) {
          t_near = t0;
          near_axis = axis;
        }
        t_far = std::min(t_far, t1);
      }
      if (near_axis >= 0 && t_near <= t_far && t_near > 0 && t_near < hit.t) {
        hit = {t_near, UnitAxis(near_axis, dir[near_axis] > 0 ? -1 : 1), box.material};
      }
    }
    for (const Sphere& sphere : spheres) {
      const Vec3 oc = origin - sphere.center;
      const double a = Dot(dir, dir), b = Dot(oc, dir);
      const double disc = b * b - a * (Dot(oc, oc) - sphere.radius * sphere.radius);
      if (disc < 0) continue;
      const double t = (-b - std::sqrt(disc)) / a;
      if (t > 0 && t < hit.t) {
        hit = {t, (origin + dir * t - sphere.center) * (1.0 / sphere.radius), sphere.material};
      }
    }
    return hit;
  }

  // Lambert shading of the hit point p: ambient plus one point light, no shadows.
  Vec3 Shade(const Hit& hit, const Vec3& p) const {
    const Vec3 to_light = light - p;
    const double distance2 = Dot(to_light, to_light);
    const double lambert = std::max(0.0, Dot(hit.normal, to_light) / std::sqrt(distance2));
    const double intensity = ambient + diffuse * lambert / (1 + falloff * distance2);
    return materials[hit.material].Albedo(p) * intensity;
  }

  double SignedDistance(const Vec3& p) const {
    double distance = std::min({p.x - room_lo.x, room_hi.x - p.x, p.y - room_lo.y,
                                room_hi.y - p.y, p.z - room_lo.z, room_hi.z - p.z});
    for (const Box& box : boxes) {
      const Vec3 q = {std::abs(p.x - (box.lo.x + box.hi.x) / 2) - (box.hi.x - box.lo.x) / 2,
                      std::abs(p.y - (box.lo.y + box.hi.y) / 2) - (box.hi.y - box.lo.y) / 2,
                      std::abs(p.z - (box.lo.z + box.hi.z) / 2) - (box.hi.z - box.lo.z) / 2};
      const Vec3 outside{std::max(q.x, 0.0), std::max(q.y, 0.0), std::max(q.z, 0.0)};
      const double inside = std::min(std::max({q.x, q.y, q.z}), 0.0);
      distance = std::min(distance, std::sqrt(Dot(outside, outside)) + inside);
    }
    for (const Sphere& sphere : spheres) {
      const Vec3 d = p - sphere.center;
      distance = std::min(distance, std::sqrt(Dot(d, d)) - sphere.radius);
    }
    return distance;
  }
};

void SyntheticOptions::Check() const {
  auto fail = [](const std::string& field, const std::string& expected, const std::string& got) {
    throw OptionError("SyntheticOptions." + field + ": expected " + expected + ", got " + got);
  };
  if (width < 1 || width > 16384) fail("width", "1 .. 16384 pixels", std::to_string(width));
  if (height < 1 || height > 16384) fail("height", "1 .. 16384 pixels", std::to_string(height));
  if (frames < 1) fail("frames", ">= 1", std::to_string(frames));
  if (!(fov_x_deg >= 1 && fov_x_deg <= 170)) {
    fail("fov_x_deg", "1 .. 170 degrees", std::to_string(fov_x_deg));
  }
  if (threads < 0) fail("threads", ">= 0 (0 = all cores)", std::to_string(threads));
}

std::string SyntheticOptions::Label() const {
  const char* path = trajectory == Trajectory::kWalk ? "walk" : trajectory == Trajectory::kOrbit ? "orbit" : "pan";
  return std::string(path) + (environment == Environment::kOutdoor ? "-outdoor" : "");
}

void ApplySyntheticVariant(const std::string& variant, SyntheticOptions& options, const std::string& spec) {
  size_t start = 0;
  while (start <= variant.size() && !variant.empty()) {
    const size_t end = std::min(variant.find(':', start), variant.size());
    const std::string word = variant.substr(start, end - start);
    if (word == "walk") options.trajectory = Trajectory::kWalk;
    else if (word == "orbit") options.trajectory = Trajectory::kOrbit;
    else if (word == "pan") options.trajectory = Trajectory::kPan;
    else if (word == "room") options.environment = Environment::kRoom;
    else if (word == "outdoor") options.environment = Environment::kOutdoor;
    else
      throw OptionError("'" + spec + "': unknown synthetic scene word '" + word +
                        "' (expected walk, orbit or pan, and room or outdoor, joined by ':')");
    start = end + 1;
  }
}

SyntheticScene::SyntheticScene(const SyntheticOptions& options) : options_(options) {
  options_.Check();
  geometry_ = std::make_shared<const Geometry>(options_.seed, options_.environment);
}

Intrinsics SyntheticScene::intrinsics() const {
  Intrinsics k;
  k.fx = k.fy = options_.width / 2.0 / std::tan(options_.fov_x_deg * kPi / 360.0);
  k.cx = options_.width / 2.0;
  k.cy = options_.height / 2.0;
  return k;
}

Rigid3 SyntheticScene::WorldFromCam(int64_t index) const {
  if (index < 0 || index >= size()) {
    throw Error("SyntheticScene: expected a frame index in [0, " + std::to_string(size()) +
                "), got " + std::to_string(index));
  }
  Vec3 position, forward;
  if (options_.trajectory == Trajectory::kWalk) {
    const double s = size() > 1 ? static_cast<double>(index) / (size() - 1) : 0.0;
    const double angle = geometry_->start_angle + s * 2 * kPi / 3;
    // Heading: the circle's tangent, turned 0.6 rad towards the centre, swaying by 0.15 rad.
    const double yaw = angle + kPi / 2 + 0.6 + 0.15 * std::sin(2 * kPi * s);
    const double pitch = -0.2;
    position = {kCameraRadius * std::cos(angle), kCameraRadius * std::sin(angle), 1.6};
    forward = {std::cos(yaw) * std::cos(pitch), std::sin(yaw) * std::cos(pitch), std::sin(pitch)};
  } else if (options_.trajectory == Trajectory::kOrbit) {
    const double angle = geometry_->start_angle + 2 * kPi * static_cast<double>(index) / size();
    position = {kCameraRadius * std::cos(angle), kCameraRadius * std::sin(angle), 1.7};
    forward = Normalized(Vec3{0, 0, 0.6} - position);
  } else {
    const double s = size() > 1 ? static_cast<double>(index) / (size() - 1) : 0.5;
    const double angle = geometry_->start_angle;
    const double yaw = angle + kPi + (s - 0.5) * 2.0;  // towards the centre, +-1 rad
    const double pitch = -0.15;
    position = {kCameraRadius * std::cos(angle), kCameraRadius * std::sin(angle), 1.6};
    forward = {std::cos(yaw) * std::cos(pitch), std::sin(yaw) * std::cos(pitch), std::sin(pitch)};
  }
  // Camera axes in world coordinates (OpenCV: x right, y down, z forward; world z up).
  const Vec3 right = Normalized(Cross(forward, {0, 0, 1}));
  const Vec3 down = Cross(forward, right);
  Rigid3 world_from_cam;
  world_from_cam.R = {right.x, down.x, forward.x, right.y, down.y, forward.y,
                      right.z, down.z, forward.z};
  world_from_cam.t = {position.x, position.y, position.z};
  return world_from_cam;
}

SyntheticFrame SyntheticScene::Render(int64_t index) const {
  SyntheticFrame out;
  out.world_from_cam = WorldFromCam(index);
  out.intrinsics = intrinsics();
  const int width = options_.width, height = options_.height;
  out.frame.index = index;
  out.frame.timestamp = static_cast<double>(index);
  out.frame.name = "synthetic:" + std::to_string(index);
  out.frame.image.width = width;
  out.frame.image.height = height;
  out.frame.image.data.resize(static_cast<size_t>(width) * height * 3);
  out.depth.resize(static_cast<size_t>(width) * height);

  const std::array<double, 9>& R = out.world_from_cam.R;
  const Vec3 origin{out.world_from_cam.t[0], out.world_from_cam.t[1], out.world_from_cam.t[2]};
  const Intrinsics& k = out.intrinsics;
  auto render_row = [&](int v) {
    for (int u = 0; u < width; ++u) {
      // Camera-space direction with z = 1, so the hit's ray parameter is its z-depth.
      const double x = (u - k.cx) / k.fx, y = (v - k.cy) / k.fy;
      const Vec3 dir{R[0] * x + R[1] * y + R[2], R[3] * x + R[4] * y + R[5],
                     R[6] * x + R[7] * y + R[8]};
      const Hit hit = geometry_->Trace(origin, dir);
      const Vec3 color = geometry_->Shade(hit, origin + dir * hit.t);
      const size_t i = static_cast<size_t>(v) * width + u;
      out.depth[i] = static_cast<float>(hit.t);
      for (int c = 0; c < 3; ++c) {
        out.frame.image.data[i * 3 + c] =
            static_cast<uint8_t>(std::lround(std::clamp(color[c], 0.0, 1.0) * 255));
      }
    }
  };

  const int cores = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  const int threads = std::min(height, options_.threads > 0 ? options_.threads : cores);
  std::atomic<int> next_row{0};
  auto worker = [&] {
    for (int v = next_row++; v < height; v = next_row++) render_row(v);
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(worker);
  worker();
  for (std::thread& thread : pool) thread.join();
  return out;
}

SceneDescription SyntheticScene::Describe() const {
  const Geometry& g = *geometry_;
  auto arr = [](const Vec3& v) { return std::array<double, 3>{v.x, v.y, v.z}; };
  SceneDescription d;
  d.room_lo = arr(g.room_lo);
  d.room_hi = arr(g.room_hi);
  d.room_material = g.room_material;
  for (const Box& b : g.boxes) d.boxes.push_back({arr(b.lo), arr(b.hi), b.material});
  for (const Sphere& s : g.spheres) d.spheres.push_back({arr(s.center), s.radius, s.material});
  for (const Material& m : g.materials)
    d.materials.push_back({static_cast<int>(m.pattern), arr(m.color_a), arr(m.color_b), arr(m.offset), arr(m.stripe_direction), m.period, m.salt});
  d.light = arr(g.light);
  d.ambient = g.ambient;
  d.diffuse = g.diffuse;
  d.falloff = g.falloff;
  return d;
}

double SyntheticScene::SignedDistance(const std::array<double, 3>& world_point) const {
  return geometry_->SignedDistance({world_point[0], world_point[1], world_point[2]});
}

namespace {

class SyntheticSource final : public FrameSource {
 public:
  explicit SyntheticSource(const SyntheticOptions& options) : scene_(options) {}

  std::optional<Frame> Next() override {
    if (next_ >= scene_.size()) return std::nullopt;
    return scene_.Render(next_++).frame;
  }

  int64_t SizeHint() const override { return scene_.size(); }

  std::string Describe() const override {
    const SyntheticOptions& o = scene_.options();
    return "synthetic " + o.Label() + " scene (seed " + std::to_string(o.seed) + ", " + std::to_string(o.frames) +
           " frames, " + std::to_string(o.width) + "x" + std::to_string(o.height) + ")";
  }

 private:
  SyntheticScene scene_;
  int64_t next_ = 0;
};

}  // namespace

std::unique_ptr<FrameSource> MakeSyntheticSource(const SyntheticOptions& options) {
  return std::make_unique<SyntheticSource>(options);
}

}  // namespace streamrecon::datasets
