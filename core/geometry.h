// Camera geometry in plain doubles: VGGT's pose encoding <-> extrinsics/intrinsics, rigid
// transforms, depth unprojection and Umeyama similarity alignment. No tensors, no Eigen here.
#pragma once

#include <array>
#include <vector>

#include "core/types.h"

namespace streamrecon::geometry {

// A similarity transform y = scale * R x + t.
struct Sim3 {
  double scale = 1.0;
  Rigid3 T;
};

// Unit quaternion [x, y, z, w] -> row-major 3x3 rotation. The input is normalised first;
// throws Error when its norm is zero or not finite.
std::array<double, 9> QuaternionToRotation(const std::array<double, 4>& q_xyzw);

// Row-major 3x3 rotation -> unit quaternion [x, y, z, w] with w >= 0.
std::array<double, 4> RotationToQuaternion(const std::array<double, 9>& R);

// Pose encoding [t_xyz, q_xyzw, fov_h, fov_w] (VGGT) -> cam_from_world (OpenCV axes:
// x right, y down, z forward).
Rigid3 PoseEncodingToExtrinsics(const std::array<double, 9>& pose_enc);

// Pose encoding -> pinhole intrinsics for a width x height image:
// fx = (W/2) / tan(fov_w/2), fy = (H/2) / tan(fov_h/2), cx = W/2, cy = H/2.
Intrinsics PoseEncodingToIntrinsics(const std::array<double, 9>& pose_enc, int width, int height);

// The inverse of the two above: cam_from_world and intrinsics -> pose encoding
// (fov_w = 2 atan((W/2)/fx), fov_h = 2 atan((H/2)/fy); the principal point is not encoded).
std::array<double, 9> ExtrinsicsIntrinsicsToPoseEncoding(const Rigid3& cam_from_world,
                                                         const Intrinsics& intrinsics, int width,
                                                         int height);

// b_from_a -> a_from_b.
Rigid3 Inverse(const Rigid3& T);

// a_from_b, b_from_c -> a_from_c (applies b first).
Rigid3 Compose(const Rigid3& a, const Rigid3& b);

// T * point.
std::array<double, 3> Apply(const Rigid3& T, const std::array<double, 3>& point);

// The camera centre in world coordinates, -R^T t.
std::array<double, 3> CameraCenter(const Rigid3& cam_from_world);

// depth [H, W] (z along the optical axis) -> world points [H, W, 3]. Pixel (u, v) with u the
// integer column and v the integer row maps to x = (u - cx) z / fx, y = (v - cy) z / fy, as in
// VGGT's unproject (no +0.5 pixel-centre shift). Non-finite depths give non-finite points.
// Throws Error when depth.size() != width * height.
std::vector<float> UnprojectDepth(const std::vector<float>& depth, int width, int height,
                                  const Intrinsics& intrinsics, const Rigid3& world_from_cam);

// The similarity minimising sum_i ||dst_i - (s R src_i + t)||^2 over proper rotations R
// (Umeyama 1991); s = 1 when with_scale is false. src and dst are [N, 3] with N >= 3.
// Throws Error on mismatched sizes, N < 3, or (with scale) coincident source points.
Sim3 Umeyama(const std::vector<double>& src, const std::vector<double>& dst, bool with_scale);

}  // namespace streamrecon::geometry
