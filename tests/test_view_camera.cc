// Tests of the viewer's camera math (GL-free): matrices, fitting a box, orbit/pan/zoom, follow.
#include <gtest/gtest.h>

#include <array>
#include <cmath>

#include "core/geometry.h"
#include "viewer/view_camera.h"

namespace streamrecon::viewer {
namespace {

// Clip-space position of a world point, divided by w.
std::array<float, 3> Project(const Mat4& m, const Vec3& p) {
  std::array<float, 4> c{};
  for (int row = 0; row < 4; ++row) {
    c[row] = m[0 * 4 + row] * p[0] + m[1 * 4 + row] * p[1] + m[2 * 4 + row] * p[2] + m[3 * 4 + row];
  }
  return {c[0] / c[3], c[1] / c[3], c[2] / c[3]};
}

TEST(ViewCamera, FitCentresTheBoxAndKeepsItInView) {
  ViewCamera camera;
  const Vec3 lo{-1, -0.5f, 2}, hi{1, 0.5f, 6};
  camera.Fit(lo, hi);
  const Mat4 mvp = Multiply(camera.Projection(1.6f), camera.View());
  const auto center = Project(mvp, {0, 0, 4});
  EXPECT_NEAR(center[0], 0.0f, 1e-4);
  EXPECT_NEAR(center[1], 0.0f, 1e-4);
  for (float x : {lo[0], hi[0]}) {
    for (float y : {lo[1], hi[1]}) {
      for (float z : {lo[2], hi[2]}) {
        const auto p = Project(mvp, {x, y, z});
        EXPECT_LT(std::abs(p[0]), 1.0f);
        EXPECT_LT(std::abs(p[1]), 1.0f);
        EXPECT_GT(p[2], -1.0f);
        EXPECT_LT(p[2], 1.0f);
      }
    }
  }
  // World "up" is -y (OpenCV axes): a point above the centre lands higher on screen.
  EXPECT_GT(Project(mvp, {0, -0.4f, 4})[1], 0.0f);
  // The default view looks along +z (the first camera's forward axis): +x is screen right.
  EXPECT_GT(Project(mvp, {0.5f, 0, 4})[0], 0.0f);
}

TEST(ViewCamera, ZoomPanAndOrbitMoveTheView) {
  ViewCamera camera;
  camera.Fit({-1, -1, 0}, {1, 1, 2});
  const float d0 = camera.distance();
  camera.Zoom(2);
  EXPECT_LT(camera.distance(), d0);
  const Mat4 before = Multiply(camera.Projection(1.0f), camera.View());
  camera.Pan(100, 0, 800);  // drag right: the scene follows the mouse
  const Mat4 after = Multiply(camera.Projection(1.0f), camera.View());
  EXPECT_GT(Project(after, {0, 0, 1})[0], Project(before, {0, 0, 1})[0]);
  const Vec3 eye = camera.Eye();
  camera.Orbit(0.5f, 0.0f);
  EXPECT_GT(std::abs(camera.Eye()[0] - eye[0]), 1e-3f);
  camera.Orbit(0.0f, 10.0f);  // pitch is clamped off the up axis: the matrix stays finite
  for (float v : camera.View()) EXPECT_TRUE(std::isfinite(v));
}

TEST(ViewCamera, FollowLooksWhereTheCameraLooks) {
  ViewCamera camera;
  // A camera at (1, 0, 0) turned 90 degrees about y: it looks along world +x.
  const std::array<double, 4> q{0.0, std::sin(M_PI / 4), 0.0, std::cos(M_PI / 4)};
  Rigid3 world_from_cam;
  world_from_cam.R = geometry::QuaternionToRotation(q);
  world_from_cam.t = {1.0, 0.0, 0.0};
  camera.Follow(world_from_cam, 2.0f);
  const Mat4 mvp = Multiply(camera.Projection(1.0f), camera.View());
  const auto ahead = Project(mvp, {3.0f, 0.0f, 0.0f});
  EXPECT_NEAR(ahead[0], 0.0f, 0.05f);
  EXPECT_LT(std::abs(ahead[1]), 0.5f);
  EXPECT_LT(Project(mvp, {3.0f, 0.0f, 0.0f})[2], 1.0f);
  camera.StopFollowing();
  camera.Fit({-1, -1, 0}, {1, 1, 2});
  EXPECT_NEAR(Project(Multiply(camera.Projection(1.0f), camera.View()), {0, 0, 1})[0], 0.0f, 1e-4);
}

}  // namespace
}  // namespace streamrecon::viewer
