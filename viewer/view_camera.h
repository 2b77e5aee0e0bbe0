// The viewer's virtual camera: an orbit/pan/zoom camera around a target, a follow mode that sits
// behind the newest predicted camera, and the column-major 4x4 matrices OpenGL expects.
// World axes are the first camera's (OpenCV: x right, y down, z forward), so "up" is -y.
#pragma once

#include <array>

#include "core/types.h"

namespace streamrecon::viewer {

using Vec3 = std::array<float, 3>;
using Mat4 = std::array<float, 16>;  // column-major, as glUniformMatrix4fv wants it

Mat4 Multiply(const Mat4& a, const Mat4& b);
// Right-handed perspective; fov_y in radians.
Mat4 Perspective(float fov_y, float aspect, float z_near, float z_far);
// View matrix looking from eye at target with the given up direction.
Mat4 LookAt(const Vec3& eye, const Vec3& target, const Vec3& up);

class ViewCamera {
 public:
  // Orbit: yaw about the world up axis, pitch towards it (radians; > 0 looks down).
  void Orbit(float d_yaw, float d_pitch);
  // Pan: moves the target by (dx, dy) pixels of a viewport `viewport_height` pixels high.
  void Pan(float dx, float dy, float viewport_height);
  // Zoom: steps > 0 move closer.
  void Zoom(float steps);
  // Frames a box (the cloud and the cameras), looking along the first camera's forward axis
  // from behind and above.
  void Fit(const Vec3& box_min, const Vec3& box_max);
  // Follow mode: sits behind and above world_from_cam's camera, looking where it looks.
  // scale is the scene size, which sets how far behind.
  void Follow(const Rigid3& world_from_cam, float scale);
  void StopFollowing() { following_ = false; }

  Mat4 View() const;
  Mat4 Projection(float aspect) const;
  Vec3 Eye() const;
  float distance() const { return distance_; }

 private:
  Vec3 Forward() const;

  Vec3 target_{0, 0, 1};
  float distance_ = 3.0f;
  float yaw_ = 0.0f;
  float pitch_ = 0.35f;
  // Follow mode overrides the orbit parameters.
  bool following_ = false;
  Vec3 follow_eye_{0, 0, 0};
  Vec3 follow_target_{0, 0, 1};
  Vec3 follow_up_{0, -1, 0};
  float follow_scale_ = 1.0f;
};

}  // namespace streamrecon::viewer
