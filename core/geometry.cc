#include "core/geometry.h"

#include <cmath>
#include <string>

#include <Eigen/Dense>

#include "core/errors.h"

namespace streamrecon::geometry {

std::array<double, 9> QuaternionToRotation(const std::array<double, 4>& q_xyzw) {
  const double norm = std::sqrt(q_xyzw[0] * q_xyzw[0] + q_xyzw[1] * q_xyzw[1] +
                                q_xyzw[2] * q_xyzw[2] + q_xyzw[3] * q_xyzw[3]);
  if (!(norm > 0.0) || !std::isfinite(norm)) {
    throw Error("quaternion: expected a finite, non-zero norm, found " + std::to_string(norm));
  }
  const double x = q_xyzw[0] / norm, y = q_xyzw[1] / norm, z = q_xyzw[2] / norm,
               w = q_xyzw[3] / norm;
  return {1 - 2 * (y * y + z * z), 2 * (x * y - z * w),     2 * (x * z + y * w),
          2 * (x * y + z * w),     1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
          2 * (x * z - y * w),     2 * (y * z + x * w),     1 - 2 * (x * x + y * y)};
}

std::array<double, 4> RotationToQuaternion(const std::array<double, 9>& R) {
  // Solve for the largest of |w|, |x|, |y|, |z| first (its square comes from the diagonal),
  // then the others from the off-diagonal sums and differences: no cancellation near 180 deg.
  const double trace = R[0] + R[4] + R[8];
  double x, y, z, w;
  if (trace >= R[0] && trace >= R[4] && trace >= R[8]) {
    const double s = 2.0 * std::sqrt(1.0 + trace);  // 4w
    w = 0.25 * s;
    x = (R[7] - R[5]) / s;
    y = (R[2] - R[6]) / s;
    z = (R[3] - R[1]) / s;
  } else if (R[0] >= R[4] && R[0] >= R[8]) {
    const double s = 2.0 * std::sqrt(1.0 + R[0] - R[4] - R[8]);  // 4x
    w = (R[7] - R[5]) / s;
    x = 0.25 * s;
    y = (R[1] + R[3]) / s;
    z = (R[2] + R[6]) / s;
  } else if (R[4] >= R[8]) {
    const double s = 2.0 * std::sqrt(1.0 + R[4] - R[0] - R[8]);  // 4y
    w = (R[2] - R[6]) / s;
    x = (R[1] + R[3]) / s;
    y = 0.25 * s;
    z = (R[5] + R[7]) / s;
  } else {
    const double s = 2.0 * std::sqrt(1.0 + R[8] - R[0] - R[4]);  // 4z
    w = (R[3] - R[1]) / s;
    x = (R[2] + R[6]) / s;
    y = (R[5] + R[7]) / s;
    z = 0.25 * s;
  }
  const double sign = w < 0.0 ? -1.0 : 1.0;
  const double norm = sign * std::sqrt(x * x + y * y + z * z + w * w);
  return {x / norm, y / norm, z / norm, w / norm};
}

Rigid3 PoseEncodingToExtrinsics(const std::array<double, 9>& pose_enc) {
  Rigid3 cam_from_world;
  cam_from_world.R = QuaternionToRotation({pose_enc[3], pose_enc[4], pose_enc[5], pose_enc[6]});
  cam_from_world.t = {pose_enc[0], pose_enc[1], pose_enc[2]};
  return cam_from_world;
}

Intrinsics PoseEncodingToIntrinsics(const std::array<double, 9>& pose_enc, int width, int height) {
  Intrinsics intrinsics;
  intrinsics.fx = (width / 2.0) / std::tan(pose_enc[8] / 2.0);
  intrinsics.fy = (height / 2.0) / std::tan(pose_enc[7] / 2.0);
  intrinsics.cx = width / 2.0;
  intrinsics.cy = height / 2.0;
  return intrinsics;
}

std::array<double, 9> ExtrinsicsIntrinsicsToPoseEncoding(const Rigid3& cam_from_world,
                                                         const Intrinsics& intrinsics, int width,
                                                         int height) {
  const std::array<double, 4> q = RotationToQuaternion(cam_from_world.R);
  return {cam_from_world.t[0],
          cam_from_world.t[1],
          cam_from_world.t[2],
          q[0],
          q[1],
          q[2],
          q[3],
          2.0 * std::atan((height / 2.0) / intrinsics.fy),
          2.0 * std::atan((width / 2.0) / intrinsics.fx)};
}

Rigid3 Inverse(const Rigid3& T) {
  Rigid3 inverse;
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 3; ++c) inverse.R[r * 3 + c] = T.R[c * 3 + r];
  }
  for (int r = 0; r < 3; ++r) {
    inverse.t[r] = -(inverse.R[r * 3] * T.t[0] + inverse.R[r * 3 + 1] * T.t[1] +
                     inverse.R[r * 3 + 2] * T.t[2]);
  }
  return inverse;
}

Rigid3 Compose(const Rigid3& a, const Rigid3& b) {
  Rigid3 ab;
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 3; ++c) {
      ab.R[r * 3 + c] =
          a.R[r * 3] * b.R[c] + a.R[r * 3 + 1] * b.R[3 + c] + a.R[r * 3 + 2] * b.R[6 + c];
    }
  }
  ab.t = Apply(a, b.t);
  return ab;
}

std::array<double, 3> Apply(const Rigid3& T, const std::array<double, 3>& point) {
  std::array<double, 3> out;
  for (int r = 0; r < 3; ++r) {
    out[r] = T.R[r * 3] * point[0] + T.R[r * 3 + 1] * point[1] + T.R[r * 3 + 2] * point[2] + T.t[r];
  }
  return out;
}

std::array<double, 3> CameraCenter(const Rigid3& cam_from_world) {
  return Inverse(cam_from_world).t;
}

std::vector<float> UnprojectDepth(const std::vector<float>& depth, int width, int height,
                                  const Intrinsics& intrinsics, const Rigid3& world_from_cam) {
  const size_t pixels = static_cast<size_t>(width) * static_cast<size_t>(height);
  if (width <= 0 || height <= 0 || depth.size() != pixels) {
    throw Error("UnprojectDepth: expected a depth map of " + std::to_string(width) + " x " +
                std::to_string(height) + " values, found " + std::to_string(depth.size()));
  }
  std::vector<float> points(pixels * 3);
  for (int v = 0; v < height; ++v) {
    for (int u = 0; u < width; ++u) {
      const size_t i = static_cast<size_t>(v) * width + u;
      const double z = depth[i];
      const std::array<double, 3> world = Apply(
          world_from_cam, {(u - intrinsics.cx) * z / intrinsics.fx,
                           (v - intrinsics.cy) * z / intrinsics.fy, z});
      for (int k = 0; k < 3; ++k) points[i * 3 + k] = static_cast<float>(world[k]);
    }
  }
  return points;
}

Sim3 Umeyama(const std::vector<double>& src, const std::vector<double>& dst, bool with_scale) {
  if (src.size() != dst.size() || src.size() % 3 != 0 || src.size() < 9) {
    throw Error("Umeyama: expected two [N, 3] point sets of equal size with N >= 3, found " +
                std::to_string(src.size()) + " and " + std::to_string(dst.size()) + " values");
  }
  const Eigen::Index n = static_cast<Eigen::Index>(src.size() / 3);
  const Eigen::Map<const Eigen::Matrix3Xd> src_points(src.data(), 3, n);
  const Eigen::Map<const Eigen::Matrix3Xd> dst_points(dst.data(), 3, n);
  const Eigen::Vector3d src_mean = src_points.rowwise().mean();
  const Eigen::Vector3d dst_mean = dst_points.rowwise().mean();
  const Eigen::Matrix3Xd src_centred = src_points.colwise() - src_mean;
  const Eigen::Matrix3Xd dst_centred = dst_points.colwise() - dst_mean;

  // Cross-covariance Sigma = U D V^T; R = U S V^T with S flipping the last axis if needed so
  // that det(R) = +1; s = trace(D S) / var(src).
  const Eigen::Matrix3d sigma = dst_centred * src_centred.transpose() / static_cast<double>(n);
  const Eigen::JacobiSVD<Eigen::Matrix3d> svd(sigma, Eigen::ComputeFullU | Eigen::ComputeFullV);
  Eigen::Vector3d s_diag(1.0, 1.0, 1.0);
  if (svd.matrixU().determinant() * svd.matrixV().determinant() < 0.0) s_diag(2) = -1.0;
  const Eigen::Matrix3d R = svd.matrixU() * s_diag.asDiagonal() * svd.matrixV().transpose();

  Sim3 result;
  if (with_scale) {
    const double src_variance = src_centred.squaredNorm() / static_cast<double>(n);
    if (!(src_variance > 0.0)) {
      throw Error("Umeyama: expected source points that are not all identical, found " +
                  std::to_string(n) + " coincident points");
    }
    result.scale = svd.singularValues().dot(s_diag) / src_variance;
  }
  const Eigen::Vector3d t = dst_mean - result.scale * R * src_mean;
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 3; ++c) result.T.R[r * 3 + c] = R(r, c);
    result.T.t[r] = t(r);
  }
  return result;
}

}  // namespace streamrecon::geometry
