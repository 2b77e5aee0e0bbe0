// Tests of the synthetic scenes: determinism, a closed room, and ground truth that agrees with
// the scene geometry and with itself across frames.
#include "datasets/synthetic.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "core/errors.h"
#include "core/geometry.h"

namespace streamrecon::datasets {
namespace {

struct SceneCase {
  Trajectory trajectory;
  Environment environment;
};

SyntheticOptions SmallOptions(SceneCase c, uint64_t seed = 0) {
  SyntheticOptions options;
  options.width = 160;
  options.height = 120;
  options.frames = 24;
  options.seed = seed;
  options.trajectory = c.trajectory;
  options.environment = c.environment;
  return options;
}

SyntheticOptions SmallOptions(Trajectory trajectory, uint64_t seed = 0) { return SmallOptions({trajectory, Environment::kRoom}, seed); }

class SyntheticTrajectoryTest : public ::testing::TestWithParam<SceneCase> {};

TEST_P(SyntheticTrajectoryTest, SameSeedGivesSameBytesOtherSeedDiffers) {
  const SyntheticFrame a = SyntheticScene(SmallOptions(GetParam(), 7)).Render(3);
  const SyntheticFrame b = SyntheticScene(SmallOptions(GetParam(), 7)).Render(3);
  const SyntheticFrame c = SyntheticScene(SmallOptions(GetParam(), 8)).Render(3);
  EXPECT_EQ(a.frame.image.data, b.frame.image.data);
  EXPECT_EQ(a.depth, b.depth);
  EXPECT_NE(a.frame.image.data, c.frame.image.data);
}

TEST_P(SyntheticTrajectoryTest, ImageHasContentAndDepthIsFinitePositive) {
  const SyntheticScene scene(SmallOptions(GetParam()));
  for (int64_t i : {int64_t{0}, scene.size() / 2, scene.size() - 1}) {
    const SyntheticFrame f = scene.Render(i);
    ASSERT_EQ(f.frame.image.width, 160);
    ASSERT_EQ(f.frame.image.height, 120);
    ASSERT_EQ(f.frame.image.data.size(), 160u * 120u * 3u);
    ASSERT_EQ(f.depth.size(), 160u * 120u);
    const auto [lo, hi] = std::minmax_element(f.frame.image.data.begin(), f.frame.image.data.end());
    EXPECT_GT(*hi - *lo, 100) << "frame " << i << " is nearly constant";
    for (float d : f.depth) ASSERT_TRUE(std::isfinite(d) && d > 0) << "frame " << i << ": " << d;
  }
}

// Pixel (u, v) at integer coordinates (the convention of geometry::UnprojectDepth): its depth
// and the pose put it on a surface of the scene.
TEST_P(SyntheticTrajectoryTest, UnprojectedDepthLiesOnSurfaces) {
  const SyntheticScene scene(SmallOptions(GetParam()));
  for (int64_t i : {int64_t{0}, int64_t{5}, scene.size() - 1}) {
    const SyntheticFrame f = scene.Render(i);
    EXPECT_GT(scene.SignedDistance(f.world_from_cam.t), 0.5) << "camera " << i << " too close";
    const std::vector<float> points =
        geometry::UnprojectDepth(f.depth, 160, 120, f.intrinsics, f.world_from_cam);
    double worst = 0;
    for (size_t p = 0; p < f.depth.size(); ++p) {
      worst = std::max(worst, std::abs(scene.SignedDistance(
                                  {points[p * 3], points[p * 3 + 1], points[p * 3 + 2]})));
    }
    EXPECT_LT(worst, 1e-4) << "frame " << i;
  }
}

// A point seen in frame i projects into frame i + 1 where that frame's depth agrees, unless
// frame i + 1 sees something nearer there (occlusion) or it lands on a depth edge.
TEST_P(SyntheticTrajectoryTest, PointsReprojectIntoTheNextFrame) {
  const SyntheticScene scene(SmallOptions(GetParam()));
  for (int64_t i = 0; i < 3; ++i) {
    const SyntheticFrame a = scene.Render(i);
    const SyntheticFrame b = scene.Render(i + 1);
    const std::vector<float> points =
        geometry::UnprojectDepth(a.depth, 160, 120, a.intrinsics, a.world_from_cam);
    const Rigid3 b_from_world = geometry::Inverse(b.world_from_cam);
    int sampled = 0, in_view = 0, occluded = 0, agree = 0;
    for (size_t p = 0; p < a.depth.size(); p += 3) {
      ++sampled;
      const auto x = geometry::Apply(b_from_world, {points[p * 3], points[p * 3 + 1],
                                                    points[p * 3 + 2]});
      if (x[2] <= 0) continue;
      const long u = std::lround(b.intrinsics.fx * x[0] / x[2] + b.intrinsics.cx);
      const long v = std::lround(b.intrinsics.fy * x[1] / x[2] + b.intrinsics.cy);
      if (u < 0 || u >= 160 || v < 0 || v >= 120) continue;
      ++in_view;
      const double tolerance = 0.02 * x[2] + 0.01;  // the nearest pixel is up to 0.5 px off
      const float seen = b.depth[v * 160 + u];
      occluded += seen < x[2] - tolerance;
      agree += std::abs(seen - x[2]) < tolerance;
    }
    EXPECT_GT(in_view, sampled / 3) << "frames " << i << ", " << i + 1 << " barely overlap";
    EXPECT_LT(occluded, 0.3 * in_view) << "frames " << i << ", " << i + 1;
    EXPECT_GT(agree, 0.95 * (in_view - occluded)) << "frames " << i << ", " << i + 1;
  }
}

INSTANTIATE_TEST_SUITE_P(Scenes, SyntheticTrajectoryTest,
                         ::testing::Values(SceneCase{Trajectory::kWalk, Environment::kRoom}, SceneCase{Trajectory::kOrbit, Environment::kRoom},
                                           SceneCase{Trajectory::kPan, Environment::kRoom}, SceneCase{Trajectory::kWalk, Environment::kOutdoor},
                                           SceneCase{Trajectory::kOrbit, Environment::kOutdoor}, SceneCase{Trajectory::kPan, Environment::kOutdoor}),
                         [](const ::testing::TestParamInfo<SceneCase>& info) {
                           std::string label = SmallOptions(info.param).Label();
                           label.erase(std::remove(label.begin(), label.end(), '-'), label.end());
                           return label;
                         });

// The room is closed and a few metres across; the outdoor square opens onto far facades and sky.
TEST(Synthetic, OutdoorScenesSeeFartherThanRooms) {
  for (const Trajectory trajectory : {Trajectory::kWalk, Trajectory::kPan}) {
    const SyntheticFrame room = SyntheticScene(SmallOptions({trajectory, Environment::kRoom})).Render(0);
    const SyntheticFrame outdoor = SyntheticScene(SmallOptions({trajectory, Environment::kOutdoor})).Render(0);
    EXPECT_LT(*std::max_element(room.depth.begin(), room.depth.end()), 12.0f);
    EXPECT_GT(*std::max_element(outdoor.depth.begin(), outdoor.depth.end()), 15.0f);
  }
}

// Panning turns the camera on the spot: every frame has the same centre, and the view direction
// sweeps 2 rad from the first frame to the last.
TEST(Synthetic, PanTurnsOnTheSpot) {
  const SyntheticScene scene(SmallOptions(Trajectory::kPan));
  const Rigid3 first = scene.WorldFromCam(0), last = scene.WorldFromCam(scene.size() - 1);
  for (int axis = 0; axis < 3; ++axis) EXPECT_DOUBLE_EQ(first.t[axis], last.t[axis]);
  const double dot = first.R[2] * last.R[2] + first.R[5] * last.R[5];  // horizontal parts of the z axes
  const double horizontal = std::hypot(first.R[2], first.R[5]) * std::hypot(last.R[2], last.R[5]);
  EXPECT_NEAR(std::acos(dot / horizontal), 2.0, 1e-9);
}

TEST(Synthetic, VariantWordsSetTrajectoryAndEnvironment) {
  SyntheticOptions o;
  ApplySyntheticVariant("pan:outdoor", o, "synthetic:pan:outdoor");
  EXPECT_EQ(o.trajectory, Trajectory::kPan);
  EXPECT_EQ(o.environment, Environment::kOutdoor);
  EXPECT_EQ(o.Label(), "pan-outdoor");
  ApplySyntheticVariant("room", o, "room");
  EXPECT_EQ(o.Label(), "pan");
  ApplySyntheticVariant("", o, "synthetic");
  EXPECT_EQ(o.Label(), "pan");
  try {
    ApplySyntheticVariant("walk:beach", o, "synthetic:walk:beach");
    FAIL() << "expected OptionError";
  } catch (const OptionError& e) {
    EXPECT_NE(std::string(e.what()).find("beach"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("synthetic:walk:beach"), std::string::npos) << e.what();
  }
}

TEST(Synthetic, IntrinsicsFollowTheFieldOfView) {
  const Intrinsics k = SyntheticScene(SyntheticOptions{}).intrinsics();
  EXPECT_NEAR(k.fx, 259.0 * std::sqrt(3.0), 1e-9);  // (W/2) / tan(30 deg)
  EXPECT_DOUBLE_EQ(k.fy, k.fx);
  EXPECT_DOUBLE_EQ(k.cx, 259.0);
  EXPECT_DOUBLE_EQ(k.cy, 196.0);
}

TEST(Synthetic, ThreadCountDoesNotChangeTheImage) {
  SyntheticOptions one = SmallOptions(Trajectory::kWalk);
  one.threads = 1;
  SyntheticOptions three = one;
  three.threads = 3;
  EXPECT_EQ(SyntheticScene(one).Render(2).frame.image.data,
            SyntheticScene(three).Render(2).frame.image.data);
}

TEST(Synthetic, SourceDeliversTheRenderedFrames) {
  SyntheticOptions options = SmallOptions(Trajectory::kOrbit);
  options.frames = 3;
  const SyntheticScene scene(options);
  const std::unique_ptr<FrameSource> source = MakeSyntheticSource(options);
  EXPECT_EQ(source->SizeHint(), 3);
  EXPECT_NE(source->Describe().find("orbit"), std::string::npos) << source->Describe();
  for (int64_t i = 0; i < 3; ++i) {
    const std::optional<Frame> frame = source->Next();
    ASSERT_TRUE(frame.has_value());
    EXPECT_EQ(frame->index, i);
    EXPECT_EQ(frame->name, "synthetic:" + std::to_string(i));
    EXPECT_EQ(frame->image.data, scene.Render(i).frame.image.data);
  }
  EXPECT_FALSE(source->Next().has_value());
}

TEST(Synthetic, BadOptionsAndIndicesAreRejected) {
  SyntheticOptions options;
  options.width = 0;
  EXPECT_THROW(SyntheticScene{options}, OptionError);
  options = SyntheticOptions{};
  options.frames = 0;
  EXPECT_THROW(MakeSyntheticSource(options), OptionError);
  options = SyntheticOptions{};
  options.fov_x_deg = 180;
  EXPECT_THROW(options.Check(), OptionError);
  const SyntheticScene scene(SmallOptions(Trajectory::kWalk));
  EXPECT_THROW(scene.Render(-1), Error);
  EXPECT_THROW(scene.Render(scene.size()), Error);
}

}  // namespace
}  // namespace streamrecon::datasets
