#include "viewer/view_camera.h"

#include <algorithm>
#include <cmath>

namespace streamrecon::viewer {

namespace {

constexpr float kFovY = 0.87266f;       // 50 degrees
constexpr float kMaxPitch = 1.45f;      // keeps the view direction off the up axis
constexpr Vec3 kWorldUp{0.0f, -1.0f, 0.0f};

Vec3 Add(const Vec3& a, const Vec3& b) { return {a[0] + b[0], a[1] + b[1], a[2] + b[2]}; }
Vec3 Sub(const Vec3& a, const Vec3& b) { return {a[0] - b[0], a[1] - b[1], a[2] - b[2]}; }
Vec3 Scale(const Vec3& a, float s) { return {a[0] * s, a[1] * s, a[2] * s}; }
float Dot(const Vec3& a, const Vec3& b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }
Vec3 Cross(const Vec3& a, const Vec3& b) {
  return {a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]};
}
Vec3 Normalize(const Vec3& a) {
  const float n = std::sqrt(Dot(a, a));
  return n > 0 ? Scale(a, 1.0f / n) : a;
}

}  // namespace

Mat4 Multiply(const Mat4& a, const Mat4& b) {
  Mat4 m{};
  for (int col = 0; col < 4; ++col) {
    for (int row = 0; row < 4; ++row) {
      float sum = 0;
      for (int k = 0; k < 4; ++k) sum += a[k * 4 + row] * b[col * 4 + k];
      m[col * 4 + row] = sum;
    }
  }
  return m;
}

Mat4 Perspective(float fov_y, float aspect, float z_near, float z_far) {
  const float f = 1.0f / std::tan(fov_y / 2.0f);
  Mat4 m{};
  m[0] = f / aspect;
  m[5] = f;
  m[10] = (z_far + z_near) / (z_near - z_far);
  m[11] = -1.0f;
  m[14] = 2.0f * z_far * z_near / (z_near - z_far);
  return m;
}

Mat4 LookAt(const Vec3& eye, const Vec3& target, const Vec3& up) {
  const Vec3 f = Normalize(Sub(target, eye));
  const Vec3 s = Normalize(Cross(f, up));
  const Vec3 u = Cross(s, f);
  Mat4 m{};
  m[0] = s[0];
  m[4] = s[1];
  m[8] = s[2];
  m[1] = u[0];
  m[5] = u[1];
  m[9] = u[2];
  m[2] = -f[0];
  m[6] = -f[1];
  m[10] = -f[2];
  m[12] = -Dot(s, eye);
  m[13] = -Dot(u, eye);
  m[14] = Dot(f, eye);
  m[15] = 1.0f;
  return m;
}

Vec3 ViewCamera::Forward() const {
  return {std::cos(pitch_) * std::sin(yaw_), std::sin(pitch_), std::cos(pitch_) * std::cos(yaw_)};
}

void ViewCamera::Orbit(float d_yaw, float d_pitch) {
  yaw_ += d_yaw;
  pitch_ = std::clamp(pitch_ + d_pitch, -kMaxPitch, kMaxPitch);
}

void ViewCamera::Pan(float dx, float dy, float viewport_height) {
  const Vec3 forward = Forward();
  const Vec3 right = Normalize(Cross(forward, kWorldUp));
  const Vec3 up = Cross(right, forward);
  const float per_pixel = 2.0f * std::tan(kFovY / 2.0f) * distance_ / std::max(viewport_height, 1.0f);
  target_ = Add(target_, Add(Scale(right, -dx * per_pixel), Scale(up, dy * per_pixel)));
}

void ViewCamera::Zoom(float steps) {
  distance_ = std::clamp(distance_ * std::pow(0.85f, steps), 1e-4f, 1e6f);
}

void ViewCamera::Fit(const Vec3& box_min, const Vec3& box_max) {
  target_ = Scale(Add(box_min, box_max), 0.5f);
  const float radius = std::max(0.5f * std::sqrt(Dot(Sub(box_max, box_min), Sub(box_max, box_min))), 1e-3f);
  distance_ = 0.9f * radius / std::sin(kFovY / 2.0f);
  yaw_ = 0.0f;
  pitch_ = 0.35f;
}

void ViewCamera::Follow(const Rigid3& world_from_cam, float scale) {
  const auto& R = world_from_cam.R;  // row-major; column k is the camera's axis k in the world
  const Vec3 center{static_cast<float>(world_from_cam.t[0]), static_cast<float>(world_from_cam.t[1]),
                    static_cast<float>(world_from_cam.t[2])};
  const Vec3 forward = Normalize({static_cast<float>(R[2]), static_cast<float>(R[5]), static_cast<float>(R[8])});
  const Vec3 up = Normalize({static_cast<float>(-R[1]), static_cast<float>(-R[4]), static_cast<float>(-R[7])});
  follow_scale_ = std::max(scale, 1e-3f);
  follow_eye_ = Add(center, Add(Scale(forward, -0.3f * follow_scale_), Scale(up, 0.12f * follow_scale_)));
  follow_target_ = Add(center, Scale(forward, 0.5f * follow_scale_));
  follow_up_ = up;
  following_ = true;
}

Vec3 ViewCamera::Eye() const {
  return following_ ? follow_eye_ : Sub(target_, Scale(Forward(), distance_));
}

Mat4 ViewCamera::View() const {
  if (following_) return LookAt(follow_eye_, follow_target_, follow_up_);
  return LookAt(Eye(), target_, kWorldUp);
}

Mat4 ViewCamera::Projection(float aspect) const {
  const float reach = following_ ? follow_scale_ : distance_;
  return Perspective(kFovY, std::max(aspect, 1e-3f), reach * 0.005f, reach * 200.0f);
}

}  // namespace streamrecon::viewer
