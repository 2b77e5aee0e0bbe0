// Geometry: quaternions, VGGT pose encoding, rigid transforms, unprojection, Umeyama.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/errors.h"
#include "core/geometry.h"

namespace streamrecon::geometry {
namespace {

constexpr double kPi = 3.14159265358979323846;

std::array<double, 4> RandomQuaternion(std::mt19937_64& rng) {
  std::normal_distribution<double> normal;
  std::array<double, 4> q{normal(rng), normal(rng), normal(rng), normal(rng)};
  const double norm = std::sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
  const double sign = q[3] < 0 ? -1.0 : 1.0;
  for (double& v : q) v *= sign / norm;
  return q;
}

Rigid3 RandomRigid(std::mt19937_64& rng) {
  std::uniform_real_distribution<double> uniform(-3.0, 3.0);
  Rigid3 T;
  T.R = QuaternionToRotation(RandomQuaternion(rng));
  T.t = {uniform(rng), uniform(rng), uniform(rng)};
  return T;
}

template <size_t N>
void ExpectNear(const std::array<double, N>& a, const std::array<double, N>& b, double tolerance) {
  for (size_t i = 0; i < N; ++i) EXPECT_NEAR(a[i], b[i], tolerance) << "element " << i;
}

void ExpectRigidNear(const Rigid3& a, const Rigid3& b, double tolerance) {
  ExpectNear(a.R, b.R, tolerance);
  ExpectNear(a.t, b.t, tolerance);
}

double Determinant(const std::array<double, 9>& R) {
  return R[0] * (R[4] * R[8] - R[5] * R[7]) - R[1] * (R[3] * R[8] - R[5] * R[6]) +
         R[2] * (R[3] * R[7] - R[4] * R[6]);
}

TEST(Geometry, QuaternionRoundTripsOnRandomRotations) {
  std::mt19937_64 rng(7);
  for (int i = 0; i < 1000; ++i) {
    const std::array<double, 4> q = RandomQuaternion(rng);
    const std::array<double, 9> R = QuaternionToRotation(q);
    EXPECT_NEAR(Determinant(R), 1.0, 1e-12);
    ExpectNear(RotationToQuaternion(R), q, 1e-12);
    ExpectNear(QuaternionToRotation(RotationToQuaternion(R)), R, 1e-12);
  }
}

TEST(Geometry, QuaternionRoundTripsNearHalfTurns) {
  // w = 0 (or nearly): the sign of q is ambiguous, so compare rotations.
  for (const std::array<double, 4>& q : std::vector<std::array<double, 4>>{
           {1, 0, 0, 0}, {0, 1, 0, 0}, {0, 0, 1, 0}, {0.6, 0, 0.8, 0}, {0.6, 0.8, 0, 1e-9}}) {
    const std::array<double, 9> R = QuaternionToRotation(q);
    const std::array<double, 4> back = RotationToQuaternion(R);
    EXPECT_GE(back[3], 0.0);
    ExpectNear(QuaternionToRotation(back), R, 1e-12);
  }
}

TEST(Geometry, QuaternionIsNormalisedAndZeroIsRejected) {
  ExpectNear(QuaternionToRotation({0, 0, 2, 2}), QuaternionToRotation({0, 0, 0.5, 0.5}), 1e-15);
  ExpectNear(QuaternionToRotation({0, 0, 1, 1}), {0, -1, 0, 1, 0, 0, 0, 0, 1}, 1e-15);
  EXPECT_THROW(QuaternionToRotation({0, 0, 0, 0}), Error);
  EXPECT_THROW(QuaternionToRotation({NAN, 0, 0, 1}), Error);
}

TEST(Geometry, IdentityPoseEncoding) {
  const std::array<double, 9> pose_enc{0, 0, 0, 0, 0, 0, 1, kPi / 2, kPi / 2};
  ExpectRigidNear(PoseEncodingToExtrinsics(pose_enc), Rigid3{}, 0.0);
}

TEST(Geometry, KnownFocalLengthsForKnownFieldsOfView) {
  // fov_w = 90 deg: fx = (W/2) / tan(45 deg) = W/2; fov_h = 2 atan(1/2): fy = (H/2) / (1/2) = H.
  const std::array<double, 9> pose_enc{0, 0, 0, 0, 0, 0, 1, 2 * std::atan(0.5), kPi / 2};
  const Intrinsics K = PoseEncodingToIntrinsics(pose_enc, 518, 392);
  EXPECT_NEAR(K.fx, 259.0, 1e-12);
  EXPECT_NEAR(K.fy, 392.0, 1e-12);
  EXPECT_DOUBLE_EQ(K.cx, 259.0);
  EXPECT_DOUBLE_EQ(K.cy, 196.0);
}

TEST(Geometry, PoseEncodingRoundTrips) {
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<double> focal(100.0, 900.0);
  for (int i = 0; i < 100; ++i) {
    const Rigid3 cam_from_world = RandomRigid(rng);
    const Intrinsics K{focal(rng), focal(rng), 259.0, 196.0};
    const std::array<double, 9> pose_enc =
        ExtrinsicsIntrinsicsToPoseEncoding(cam_from_world, K, 518, 392);
    ExpectRigidNear(PoseEncodingToExtrinsics(pose_enc), cam_from_world, 1e-12);
    const Intrinsics back = PoseEncodingToIntrinsics(pose_enc, 518, 392);
    EXPECT_NEAR(back.fx, K.fx, 1e-9);
    EXPECT_NEAR(back.fy, K.fy, 1e-9);
    const Rigid3 extrinsics = PoseEncodingToExtrinsics(pose_enc);
    ExpectNear(ExtrinsicsIntrinsicsToPoseEncoding(extrinsics, back, 518, 392), pose_enc, 1e-12);
  }
}

TEST(Geometry, InverseComposeApplyAndCameraCenter) {
  std::mt19937_64 rng(13);
  const Rigid3 a = RandomRigid(rng);
  const Rigid3 b = RandomRigid(rng);
  ExpectRigidNear(Compose(a, Inverse(a)), Rigid3{}, 1e-12);
  ExpectRigidNear(Compose(Inverse(a), a), Rigid3{}, 1e-12);
  const std::array<double, 3> p{0.3, -1.2, 2.5};
  ExpectNear(Apply(Compose(a, b), p), Apply(a, Apply(b, p)), 1e-12);
  ExpectNear(Apply(a, CameraCenter(a)), {0, 0, 0}, 1e-12);
}

TEST(Geometry, UnprojectedPlaneLandsOnThePlane) {
  // The plane n . X = d in camera coordinates, seen by a camera placed somewhere in the world.
  const int width = 40, height = 30;
  const Intrinsics K{50.0, 55.0, width / 2.0, height / 2.0};
  const std::array<double, 3> n{0.2, -0.1, 1.0};
  const double d = 3.0;
  std::vector<float> depth(width * height);
  for (int v = 0; v < height; ++v) {
    for (int u = 0; u < width; ++u) {
      const double ray_dot_n = n[0] * (u - K.cx) / K.fx + n[1] * (v - K.cy) / K.fy + n[2];
      depth[v * width + u] = static_cast<float>(d / ray_dot_n);
    }
  }
  std::mt19937_64 rng(17);
  const Rigid3 world_from_cam = RandomRigid(rng);
  const std::vector<float> points = UnprojectDepth(depth, width, height, K, world_from_cam);
  ASSERT_EQ(points.size(), depth.size() * 3);
  const Rigid3 cam_from_world = Inverse(world_from_cam);
  for (size_t i = 0; i < depth.size(); ++i) {
    const std::array<double, 3> X =
        Apply(cam_from_world, {points[i * 3], points[i * 3 + 1], points[i * 3 + 2]});
    EXPECT_NEAR(n[0] * X[0] + n[1] * X[1] + n[2] * X[2], d, 1e-4);
    EXPECT_NEAR(X[2], depth[i], 1e-4);
  }
  // Integer pixel coordinates, no +0.5: column cx and row cy lie on the optical axis.
  const size_t centre = static_cast<size_t>(K.cy) * width + static_cast<size_t>(K.cx);
  const std::array<double, 3> X = Apply(
      cam_from_world, {points[centre * 3], points[centre * 3 + 1], points[centre * 3 + 2]});
  EXPECT_NEAR(X[0], 0.0, 1e-5);
  EXPECT_NEAR(X[1], 0.0, 1e-5);
  EXPECT_THROW(UnprojectDepth(depth, width + 1, height, K, world_from_cam), Error);
}

TEST(Geometry, UmeyamaRecoversAKnownSimilarity) {
  std::mt19937_64 rng(19);
  std::uniform_real_distribution<double> uniform(-5.0, 5.0);
  const Rigid3 T = RandomRigid(rng);
  for (const bool with_scale : {true, false}) {
    const double scale = with_scale ? 2.5 : 1.0;
    std::vector<double> src, dst;
    for (int i = 0; i < 20; ++i) {
      const std::array<double, 3> p{uniform(rng), uniform(rng), uniform(rng)};
      const std::array<double, 3> q = Apply(T, {scale * p[0], scale * p[1], scale * p[2]});
      src.insert(src.end(), p.begin(), p.end());
      dst.insert(dst.end(), q.begin(), q.end());
    }
    const Sim3 sim = Umeyama(src, dst, with_scale);
    EXPECT_NEAR(sim.scale, scale, 1e-9);
    ExpectRigidNear(sim.T, T, 1e-9);
  }
}

TEST(Geometry, UmeyamaReturnsAProperRotationForMirroredPoints) {
  std::mt19937_64 rng(23);
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  std::vector<double> src, dst;
  for (int i = 0; i < 10; ++i) {
    const double x = uniform(rng), y = uniform(rng), z = uniform(rng);
    src.insert(src.end(), {x, y, z});
    dst.insert(dst.end(), {x, y, -z});
  }
  EXPECT_NEAR(Determinant(Umeyama(src, dst, true).T.R), 1.0, 1e-12);
}

TEST(Geometry, UmeyamaRejectsBadInput) {
  const std::vector<double> two(6, 1.0), three{0, 0, 0, 1, 0, 0, 0, 1, 0};
  EXPECT_THROW(Umeyama(two, two, true), Error);
  EXPECT_THROW(Umeyama(three, two, false), Error);
  EXPECT_THROW(Umeyama({0, 0, 0, 1, 0, 0, 0, 1}, {0, 0, 0, 1, 0, 0, 0, 1}, false), Error);
  EXPECT_THROW(Umeyama(std::vector<double>(9, 1.0), three, true), Error);
  EXPECT_NO_THROW(Umeyama(three, three, true));
}

}  // namespace
}  // namespace streamrecon::geometry
