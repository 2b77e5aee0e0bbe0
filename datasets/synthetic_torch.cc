// LibTorch renderer of the synthetic scenes; every operation mirrors synthetic.cc in the same
// order, so the result matches the CPU renderer (depth exactly, colours to the 8-bit rounding).
#include "datasets/synthetic_torch.h"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>

namespace streamrecon::datasets {
namespace {

using at::Tensor;

struct V3 {
  Tensor x, y, z;
};

Tensor Dot(const V3& a, const V3& b) { return a.x * b.x + a.y * b.y + a.z * b.z; }

// 64-bit unsigned arithmetic on int64 tensors: multiplication wraps; >> must be logical.
Tensor ShiftRight(const Tensor& z, int k) { return at::bitwise_and(at::bitwise_right_shift(z, k), (int64_t{1} << (64 - k)) - 1); }
int64_t Bits(uint64_t v) { return static_cast<int64_t>(v); }

Tensor Mix64(Tensor z) {
  z = at::bitwise_xor(z, ShiftRight(z, 30)) * Bits(0xBF58476D1CE4E5B9ull);
  z = at::bitwise_xor(z, ShiftRight(z, 27)) * Bits(0x94D049BB133111EBull);
  return at::bitwise_xor(z, ShiftRight(z, 31));
}

Tensor UnitDouble(const Tensor& bits) { return ShiftRight(bits, 11).to(at::kDouble) * 0x1.0p-53; }

Tensor ValueNoise(const V3& p, uint64_t salt) {
  const Tensor fx = at::floor(p.x), fy = at::floor(p.y), fz = at::floor(p.z);
  const Tensor ix = fx.to(at::kLong), iy = fy.to(at::kLong), iz = fz.to(at::kLong);
  auto fade = [](const Tensor& t) { return t * t * (3 - 2 * t); };
  const Tensor wx = fade(p.x - fx), wy = fade(p.y - fy), wz = fade(p.z - fz);
  auto lattice = [&](int dx, int dy, int dz) {
    return UnitDouble(Mix64(at::bitwise_xor(at::bitwise_xor(at::bitwise_xor((ix + dx) * Bits(0x8CB92BA72F3D8DD7ull),
                                                                             (iy + dy) * Bits(0x9E3779B97F4A7C15ull)),
                                                              (iz + dz) * Bits(0xC2B2AE3D27D4EB4Full)),
                                            Bits(salt))));
  };
  auto lerp = [](const Tensor& a, const Tensor& b, const Tensor& t) { return a + (b - a) * t; };
  Tensor along_y[2];
  for (int dz = 0; dz < 2; ++dz)
    along_y[dz] = lerp(lerp(lattice(0, 0, dz), lattice(1, 0, dz), wx), lerp(lattice(0, 1, dz), lattice(1, 1, dz), wx), wy);
  return lerp(along_y[0], along_y[1], wz);
}

V3 Scale(const V3& a, double s) { return {a.x * s, a.y * s, a.z * s}; }
V3 Offset(const V3& a, const std::array<double, 3>& o) { return {a.x + o[0], a.y + o[1], a.z + o[2]}; }

// Albedo of material m at the points p (one channel tensor each).
V3 Albedo(const SceneDescription::Material& m, const V3& p) {
  const V3 q = Scale(Offset(p, m.offset), 1.0 / m.period);
  Tensor mix;
  if (m.pattern == 0) {
    mix = at::bitwise_and((at::floor(q.x) + at::floor(q.y) + at::floor(q.z)).to(at::kLong), 1).to(at::kDouble);
  } else if (m.pattern == 1) {
    const double two_pi = 2 * 3.14159265358979323846;
    mix = 0.5 + 0.5 * at::sin(two_pi * (q.x * m.stripe_direction[0] + q.y * m.stripe_direction[1] + q.z * m.stripe_direction[2]));
  } else {
    mix = 0.65 * ValueNoise(Scale(q, 2.0), m.salt) + 0.35 * ValueNoise(Scale(q, 6.0), m.salt + 1);
  }
  const Tensor grain = 0.8 + 0.4 * ValueNoise(Offset(Scale(p, 14.0), m.offset), m.salt + 2);
  return {(m.color_a[0] * (1 - mix) + m.color_b[0] * mix) * grain, (m.color_a[1] * (1 - mix) + m.color_b[1] * mix) * grain,
          (m.color_a[2] * (1 - mix) + m.color_b[2] * mix) * grain};
}

}  // namespace

TensorFrame RenderWithTorch(const SyntheticScene& scene, int64_t index, at::Device device) {
  const SceneDescription d = scene.Describe();
  const Rigid3 pose = scene.WorldFromCam(index);
  const Intrinsics k = scene.intrinsics();
  const int64_t W = scene.options().width, H = scene.options().height;
  const auto opts = at::TensorOptions().dtype(at::kDouble).device(device);
  const Tensor u = at::arange(W, opts).view({1, W}).expand({H, W}), v = at::arange(H, opts).view({H, 1}).expand({H, W});
  const Tensor x = (u - k.cx) / k.fx, y = (v - k.cy) / k.fy;
  const auto& R = pose.R;
  const V3 dir{R[0] * x + R[1] * y + R[2], R[3] * x + R[4] * y + R[5], R[6] * x + R[7] * y + R[8]};
  const std::array<double, 3> o = pose.t;
  const Tensor dirs[3] = {dir.x, dir.y, dir.z};

  Tensor t_hit = at::full({H, W}, std::numeric_limits<double>::infinity(), opts);
  Tensor n[3] = {at::zeros({H, W}, opts), at::zeros({H, W}, opts), at::zeros({H, W}, opts)};
  Tensor material = at::zeros({H, W}, opts.dtype(at::kLong));
  auto take = [&](const Tensor& mask, const Tensor& t, const Tensor (&normal)[3], const Tensor& mat) {
    t_hit = at::where(mask, t, t_hit);
    for (int a = 0; a < 3; ++a) n[a] = at::where(mask, normal[a], n[a]);
    material = at::where(mask, mat, material);
  };
  // Room faces.
  for (int axis = 0; axis < 3; ++axis) {
    const Tensor positive = dirs[axis] > 0;
    const Tensor bound = at::where(positive, at::full({H, W}, d.room_hi[axis], opts), at::full({H, W}, d.room_lo[axis], opts));
    const Tensor t = (bound - o[axis]) / dirs[axis];
    const Tensor normal_value = at::where(positive, at::full({H, W}, -1.0, opts), at::full({H, W}, 1.0, opts));
    Tensor normal[3] = {at::zeros({H, W}, opts), at::zeros({H, W}, opts), at::zeros({H, W}, opts)};
    normal[axis] = normal_value;
    const Tensor mat = at::where(positive, at::full({H, W}, d.room_material[axis * 2 + 1], opts.dtype(at::kLong)),
                                 at::full({H, W}, d.room_material[axis * 2], opts.dtype(at::kLong)));
    take((dirs[axis] != 0) & (t < t_hit), t, normal, mat);
  }
  // Boxes: slab test, the entry face is the last slab entered.
  for (const auto& box : d.boxes) {
    Tensor t_near = at::full({H, W}, -std::numeric_limits<double>::infinity(), opts), t_far = t_hit.clone();
    Tensor near_axis = at::full({H, W}, -1, opts.dtype(at::kLong));
    for (int axis = 0; axis < 3; ++axis) {
      const Tensor active = t_near <= t_far;
      const Tensor flat = dirs[axis] == 0;
      if (o[axis] < box.lo[axis] || o[axis] > box.hi[axis]) t_far = at::where(active & flat, at::full_like(t_far, -1.0), t_far);
      Tensor t0 = (box.lo[axis] - o[axis]) / dirs[axis], t1 = (box.hi[axis] - o[axis]) / dirs[axis];
      const Tensor lo = at::minimum(t0, t1), hi = at::maximum(t0, t1);
      const Tensor step = active & ~flat;
      const Tensor nearer = step & (lo > t_near);
      t_near = at::where(nearer, lo, t_near);
      near_axis = at::where(nearer, at::full_like(near_axis, axis), near_axis);
      t_far = at::where(step, at::minimum(t_far, hi), t_far);
    }
    const Tensor hit = (near_axis >= 0) & (t_near <= t_far) & (t_near > 0) & (t_near < t_hit);
    Tensor normal[3];
    for (int a = 0; a < 3; ++a)
      normal[a] = at::where(near_axis == a, at::where(dirs[a] > 0, at::full({H, W}, -1.0, opts), at::full({H, W}, 1.0, opts)),
                            at::zeros({H, W}, opts));
    take(hit, t_near, normal, at::full({H, W}, box.material, opts.dtype(at::kLong)));
  }
  // Spheres.
  for (const auto& s : d.spheres) {
    const double oc[3] = {o[0] - s.center[0], o[1] - s.center[1], o[2] - s.center[2]};
    const Tensor a = Dot(dir, dir), b = oc[0] * dir.x + oc[1] * dir.y + oc[2] * dir.z;
    const double c = (oc[0] * oc[0] + oc[1] * oc[1] + oc[2] * oc[2]) - s.radius * s.radius;
    const Tensor disc = b * b - a * c;
    const Tensor t = (-b - at::sqrt(at::clamp_min(disc, 0))) / a;
    const Tensor hit = (disc >= 0) & (t > 0) & (t < t_hit);
    Tensor normal[3];
    for (int i = 0; i < 3; ++i) normal[i] = ((o[i] + dirs[i] * t) - s.center[i]) * (1.0 / s.radius);
    take(hit, t, normal, at::full({H, W}, s.material, opts.dtype(at::kLong)));
  }
  // Shading: Lambert from one point light plus ambient, per material on its pixels.
  const V3 p{o[0] + dir.x * t_hit, o[1] + dir.y * t_hit, o[2] + dir.z * t_hit};
  const V3 to_light{d.light[0] - p.x, d.light[1] - p.y, d.light[2] - p.z};
  const Tensor distance2 = Dot(to_light, to_light);
  const Tensor lambert = at::clamp_min((n[0] * to_light.x + n[1] * to_light.y + n[2] * to_light.z) / at::sqrt(distance2), 0.0);
  const Tensor intensity = d.ambient + d.diffuse * lambert / (1 + d.falloff * distance2);
  Tensor color = at::zeros({H, W, 3}, opts);
  for (size_t m = 0; m < d.materials.size(); ++m) {
    const Tensor mask = material == static_cast<int64_t>(m);
    if (!mask.any().item<bool>()) continue;
    const V3 pm{p.x.index({mask}), p.y.index({mask}), p.z.index({mask})};
    const V3 albedo = Albedo(d.materials[m], pm);
    const Tensor i = intensity.index({mask});
    color.index_put_({mask}, at::stack({albedo.x * i, albedo.y * i, albedo.z * i}, 1));
  }
  TensorFrame out;
  out.rgb = at::floor(at::clamp(color, 0.0, 1.0) * 255 + 0.5).to(at::kByte);
  out.depth = t_hit.to(at::kFloat);
  return out;
}

}  // namespace streamrecon::datasets
