// Tests of the evaluation metrics with known answers: depth errors on hand-made arrays, scale
// alignment, point-cloud accuracy / completeness / normal consistency, ATE and RPE.
#include "datasets/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/errors.h"
#include "core/geometry.h"

namespace streamrecon::metrics {
namespace {

constexpr double kPi = 3.14159265358979323846;

// ---- depth -----------------------------------------------------------------------------------

std::vector<float> RampDepth(int n) {
  std::vector<float> depth(n);
  for (int i = 0; i < n; ++i) depth[i] = 0.5f + 4.5f * static_cast<float>((i * 37) % n) / n;
  return depth;
}

DepthMetricsOptions WithAlignment(DepthAlignment alignment) {
  DepthMetricsOptions options;
  options.alignment = alignment;
  return options;
}

TEST(DepthMetrics, IdenticalDepthHasNoError) {
  const std::vector<float> gt = RampDepth(500);
  for (DepthAlignment alignment : {DepthAlignment::kNone, DepthAlignment::kMedianPerFrame,
                                   DepthAlignment::kL1PerSequence}) {
    const DepthMetrics m = ComputeDepthMetrics(gt, gt, WithAlignment(alignment));
    SCOPED_TRACE(DepthAlignmentName(alignment));
    EXPECT_NEAR(m.abs_rel, 0, 1e-7);
    EXPECT_NEAR(m.sq_rel, 0, 1e-7);
    EXPECT_NEAR(m.rmse, 0, 1e-6);
    EXPECT_NEAR(m.log_rmse, 0, 1e-6);
    EXPECT_EQ(m.delta_1, 1.0);
    EXPECT_EQ(m.delta_2, 1.0);
    EXPECT_EQ(m.delta_3, 1.0);
    EXPECT_NEAR(m.scale, 1.0, 1e-6);
    EXPECT_EQ(m.pixels, 500);
  }
}

TEST(DepthMetrics, HandMadeArrays) {
  const std::vector<float> gt = {1, 2, 4, 5};
  const std::vector<float> pred = {1.1f, 2, 3, 5};
  const DepthMetrics m = ComputeDepthMetrics(pred, gt, WithAlignment(DepthAlignment::kNone));
  const double e0 = 1.1f - 1.0;  // the float 1.1 as it is stored
  EXPECT_NEAR(m.abs_rel, (e0 / 1 + 1.0 / 4) / 4, 1e-12);
  EXPECT_NEAR(m.sq_rel, (e0 * e0 / 1 + 1.0 / 4) / 4, 1e-12);
  EXPECT_NEAR(m.rmse, std::sqrt((e0 * e0 + 1.0) / 4), 1e-12);
  const double l0 = std::log(1.0 + e0), l2 = std::log(3.0 / 4.0);
  EXPECT_NEAR(m.log_rmse, std::sqrt((l0 * l0 + l2 * l2) / 4), 1e-12);
  EXPECT_EQ(m.delta_1, 0.75);  // ratios 1.1, 1, 4/3, 1
  EXPECT_EQ(m.delta_2, 1.0);
  EXPECT_EQ(m.delta_3, 1.0);
  EXPECT_EQ(m.pixels, 4);
}

TEST(DepthMetrics, DeltaThresholdsCountEachBand) {
  // Ratios 1.2 (< 1.25), 1.5 (< 1.5625), 1.9 (< 1.953125), 3 (none): 1/4, 2/4, 3/4.
  const std::vector<float> gt = {1, 1, 1, 1};
  const std::vector<float> pred = {1.2f, 1.0f / 1.5f, 1.9f, 3.0f};
  const DepthMetrics m = ComputeDepthMetrics(pred, gt, WithAlignment(DepthAlignment::kNone));
  EXPECT_EQ(m.delta_1, 0.25);
  EXPECT_EQ(m.delta_2, 0.5);
  EXPECT_EQ(m.delta_3, 0.75);
}

TEST(DepthMetrics, CapsExcludeInvalidGroundTruthAndPredictions) {
  const float nan = std::nanf("");
  const std::vector<float> gt = {0, nan, 2, 50, 3, 1e-4f};
  const std::vector<float> pred = {9, 9, 2, 9, nan, 9};
  DepthMetricsOptions options = WithAlignment(DepthAlignment::kNone);
  options.max_depth = 10;
  const DepthMetrics m = ComputeDepthMetrics(pred, gt, options);
  EXPECT_EQ(m.pixels, 1);  // only gt = 2 with pred = 2 survives
  EXPECT_EQ(m.abs_rel, 0.0);
  options.min_depth = 5;  // nothing valid left
  EXPECT_THROW(ComputeDepthMetrics(pred, gt, options), Error);
}

TEST(DepthMetrics, MedianScalingRecoversPerFrameScales) {
  DepthEvaluator evaluator(WithAlignment(DepthAlignment::kMedianPerFrame));
  const std::vector<float> gt = RampDepth(301);
  for (float factor : {0.5f, 2.0f, 0.25f}) {
    std::vector<float> pred(gt);
    for (float& d : pred) d *= factor;
    evaluator.AddFrame(pred, gt);
  }
  const DepthMetrics m = evaluator.Compute();
  EXPECT_NEAR(m.abs_rel, 0, 1e-6);
  EXPECT_EQ(m.delta_1, 1.0);
  EXPECT_NEAR(m.scale, 2.0, 1e-6);  // median of the scales 2, 0.5, 4
  EXPECT_EQ(m.frames, 3);
  EXPECT_EQ(m.pixels, 3 * 301);
}

TEST(DepthMetrics, L1ScaleIgnoresOutliers) {
  // The L1 scale is the median of gt / pred weighted by pred: 90 % of the pixels say 3, 10 %
  // (with a tenth of the weight each) say 30. Least squares would land near 3.03.
  const std::vector<float> gt = RampDepth(1000);
  std::vector<float> pred(gt.size());
  for (size_t i = 0; i < gt.size(); ++i) pred[i] = gt[i] / (i % 10 == 0 ? 30 : 3);
  const DepthMetrics l1 =
      ComputeDepthMetrics(pred, gt, WithAlignment(DepthAlignment::kL1PerSequence));
  EXPECT_NEAR(l1.scale, 3.0, 1e-6);
  EXPECT_NEAR(l1.delta_1, 0.9, 1e-9);
  EXPECT_NEAR(l1.abs_rel, 0.1 * 0.9, 1e-6);  // outliers: |3 g / 30 - g| / g = 0.9
}

// Over a long sequence the L1 evaluator keeps a pseudo-random subset of at most max_kept_pixels
// pairs: the scale is the same, and the errors differ only by sampling (10 % outliers among
// >= 10000 kept pixels: sigma 0.003; the bound is 5 sigma).
TEST(DepthMetrics, L1OverALongSequenceKeepsABoundedEvenSubset) {
  DepthMetricsOptions bounded = WithAlignment(DepthAlignment::kL1PerSequence);
  bounded.max_kept_pixels = 20000;
  DepthMetricsOptions everything = WithAlignment(DepthAlignment::kL1PerSequence);
  DepthEvaluator small(bounded), full(everything);
  for (int frame = 0; frame < 60; ++frame) {
    const std::vector<float> gt = RampDepth(1000);
    std::vector<float> pred(gt.size());
    for (size_t i = 0; i < gt.size(); ++i) pred[i] = gt[i] / (i % 10 == 0 ? 30 : 3);  // as above: scale 3
    small.AddFrame(pred, gt);
    full.AddFrame(pred, gt);
  }
  const DepthMetrics a = small.Compute(), b = full.Compute();
  EXPECT_EQ(a.pixels, 60000);
  EXPECT_EQ(b.pixels_measured, 60000);
  EXPECT_LE(a.pixels_measured, 20000);
  EXPECT_GE(a.pixels_measured, 10000);
  EXPECT_NEAR(a.scale, 3.0, 1e-6);
  EXPECT_NEAR(b.scale, 3.0, 1e-6);
  EXPECT_NEAR(a.delta_1, b.delta_1, 0.015);
  EXPECT_NEAR(a.abs_rel, b.abs_rel, 0.9 * 0.015);  // each outlier adds 0.9 to the sum
}

TEST(DepthMetrics, BadInputAndOptionsAreRejected) {
  EXPECT_THROW(ComputeDepthMetrics({1, 2}, {1, 2, 3}, {}), Error);
  DepthMetricsOptions options;
  options.max_depth = -1;
  EXPECT_THROW(options.Check(), OptionError);
  options.max_depth = 1e-4;  // below min_depth
  EXPECT_THROW(options.Check(), OptionError);
  EXPECT_THROW(ParseDepthAlignment("mean"), OptionError);
  options = DepthMetricsOptions{};
  options.max_kept_pixels = 0;
  EXPECT_THROW(options.Check(), OptionError);
  EXPECT_EQ(ParseDepthAlignment("l1"), DepthAlignment::kL1PerSequence);
}

// ---- point clouds ----------------------------------------------------------------------------

// Points on three faces of a box (x = 0, y = 0, z = 0 planes) on a grid with step `step`, with
// a deterministic sub-grid jitter so no two points are equidistant from a query by accident.
std::vector<float> BoxCorner(int n, double step) {
  std::vector<float> xyz;
  for (int face = 0; face < 3; ++face) {
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j < n; ++j) {
        const double a = (i + 0.1 * std::sin(7.0 * j + i)) * step;
        const double b = (j + 0.1 * std::cos(5.0 * i + j)) * step;
        const double p[3] = {face == 0 ? 0.0 : a, face == 1 ? 0.0 : (face == 0 ? a : b),
                             face == 2 ? 0.0 : b};
        for (double v : p) xyz.push_back(static_cast<float>(v));
      }
    }
  }
  return xyz;
}

geometry::Sim3 SomeSim3() {
  geometry::Sim3 T;
  T.scale = 1.7;
  T.T.R = geometry::QuaternionToRotation({0.2, -0.4, 0.3, 0.8});
  T.T.t = {0.5, -1.25, 2.0};
  return T;
}

geometry::Sim3 InverseSim3(const geometry::Sim3& T) {
  geometry::Sim3 inverse;
  inverse.scale = 1.0 / T.scale;
  inverse.T = geometry::Inverse(T.T);
  for (double& v : inverse.T.t) v /= T.scale;
  return inverse;
}

#ifdef STREAMRECON_HAVE_OPEN3D

TEST(CloudMetrics, IdenticalCloudsHaveZeroDistanceAndNormalConsistencyOne) {
  ASSERT_TRUE(HaveCloudMetrics());
  const std::vector<float> cloud = BoxCorner(20, 0.05);
  for (CloudAlignment alignment :
       {CloudAlignment::kNone, CloudAlignment::kMedian, CloudAlignment::kUmeyama}) {
    SCOPED_TRACE(CloudAlignmentName(alignment));
    CloudMetricsOptions options;
    options.alignment = alignment;
    const CloudMetrics m = ComputeCloudMetrics(cloud, cloud, options);
    EXPECT_NEAR(m.accuracy, 0, 1e-9);
    EXPECT_NEAR(m.accuracy_median, 0, 1e-9);
    EXPECT_NEAR(m.completeness, 0, 1e-9);
    EXPECT_NEAR(m.completeness_median, 0, 1e-9);
    EXPECT_NEAR(m.normal_consistency, 1, 1e-9);
    EXPECT_NEAR(m.nc_accuracy, 1, 1e-9);
    EXPECT_NEAR(m.nc_completeness, 1, 1e-9);
    EXPECT_EQ(m.predicted_points, 1200);
    EXPECT_EQ(m.gt_points, 1200);
  }
}

TEST(CloudMetrics, UmeyamaUndoesASimilarityTransform) {
  const std::vector<float> gt = BoxCorner(20, 0.05);
  const geometry::Sim3 T = SomeSim3();
  const std::vector<float> pred = TransformPoints(InverseSim3(T), gt);
  const CloudMetrics m = ComputeCloudMetrics(pred, gt, {});
  EXPECT_NEAR(m.alignment.scale, T.scale, 1e-6);
  for (int k = 0; k < 9; ++k) EXPECT_NEAR(m.alignment.T.R[k], T.T.R[k], 1e-6);
  for (int k = 0; k < 3; ++k) EXPECT_NEAR(m.alignment.T.t[k], T.T.t[k], 1e-6);
  EXPECT_LT(m.accuracy, 1e-6);  // float32 storage of the transformed cloud
  EXPECT_LT(m.completeness, 1e-6);
  EXPECT_NEAR(m.normal_consistency, 1, 1e-9);
}

TEST(CloudMetrics, KnownOffsetGivesThatDistance) {
  // A plane z = 0 against the same plane lifted by 0.02 (grid step 0.1): every nearest neighbour
  // is the point straight above or below.
  std::vector<float> gt, pred;
  for (int i = 0; i < 30; ++i) {
    for (int j = 0; j < 30; ++j) {
      for (float z : {0.0f, 0.02f}) {
        std::vector<float>& cloud = z == 0 ? gt : pred;
        cloud.insert(cloud.end(), {0.1f * i, 0.1f * j, z});
      }
    }
  }
  CloudMetricsOptions options;
  options.alignment = CloudAlignment::kNone;
  const CloudMetrics m = ComputeCloudMetrics(pred, gt, options);
  EXPECT_NEAR(m.accuracy, 0.02, 1e-7);
  EXPECT_NEAR(m.accuracy_median, 0.02, 1e-7);
  EXPECT_NEAR(m.completeness, 0.02, 1e-7);
  EXPECT_NEAR(m.completeness_median, 0.02, 1e-7);
  EXPECT_NEAR(m.normal_consistency, 1, 1e-9);
}

TEST(CloudMetrics, MedianAlignmentUndoesScaleAndZShift) {
  const std::vector<float> gt = BoxCorner(15, 0.05);
  geometry::Sim3 T;  // pred = 2.5 gt + (0, 0, -1)
  T.scale = 2.5;
  T.T.t = {0, 0, -1};
  const std::vector<float> pred = TransformPoints(T, gt);
  CloudMetricsOptions options;
  options.alignment = CloudAlignment::kMedian;
  const CloudMetrics m = ComputeCloudMetrics(pred, gt, options);
  EXPECT_NEAR(m.alignment.scale, 1 / 2.5, 1e-6);
  EXPECT_LT(m.accuracy, 1e-6);
  EXPECT_LT(m.completeness, 1e-6);
}

TEST(CloudMetrics, IcpRefinesASmallRigidOffset) {
  const std::vector<float> gt = BoxCorner(25, 0.04);
  geometry::Sim3 offset;
  offset.T.R = geometry::QuaternionToRotation({0.0, 0.0, std::sin(0.02), std::cos(0.02)});
  offset.T.t = {0.01, -0.005, 0.008};
  const std::vector<float> pred = TransformPoints(offset, gt);
  CloudMetricsOptions options;
  options.alignment = CloudAlignment::kNone;
  const CloudMetrics before = ComputeCloudMetrics(pred, gt, options);
  options.icp = true;
  options.icp_max_distance = 0.1;
  options.icp_iterations = 100;
  const CloudMetrics after = ComputeCloudMetrics(pred, gt, options);
  EXPECT_GT(before.accuracy, 1e-3);
  EXPECT_LT(after.accuracy, 1e-4);
  EXPECT_GT(after.icp_fitness, 0.99);
}

TEST(CloudMetrics, MaxPointsSubsamplesAndNonFinitePointsAreDropped) {
  std::vector<float> gt = BoxCorner(20, 0.05);
  std::vector<float> pred = gt;
  pred[0] = std::nanf("");  // drops pair 0
  CloudMetricsOptions options;
  options.max_points = 500;
  const CloudMetrics m = ComputeCloudMetrics(pred, gt, options);
  EXPECT_EQ(m.predicted_points, 500);
  EXPECT_EQ(m.gt_points, 500);
  options.max_points = 0;
  EXPECT_EQ(ComputeCloudMetrics(pred, gt, options).predicted_points, 1199);
}

#else

TEST(CloudMetrics, WithoutOpen3DThrowsAClearError) {
  EXPECT_FALSE(HaveCloudMetrics());
  const std::vector<float> cloud = BoxCorner(5, 0.1);
  try {
    ComputeCloudMetrics(cloud, cloud, {});
    FAIL() << "expected Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Open3D"), std::string::npos) << e.what();
  }
}

#endif

TEST(CloudMetrics, BadInputIsRejected) {
  const std::vector<float> cloud = BoxCorner(5, 0.1);
  const std::vector<float> fewer(cloud.begin(), cloud.end() - 3);
  EXPECT_THROW(ComputeCloudMetrics(fewer, cloud, {}), Error);  // Umeyama needs pairs
  EXPECT_THROW(ComputeCloudMetrics({1, 2}, {1, 2}, {}), Error);
  CloudMetricsOptions options;
  options.icp_max_distance = 0;
  EXPECT_THROW(ComputeCloudMetrics(cloud, cloud, options), OptionError);
  EXPECT_THROW(ParseCloudAlignment("icp"), OptionError);
}

// ---- trajectories ----------------------------------------------------------------------------

std::vector<Rigid3> Wiggle(int n) {
  std::vector<Rigid3> poses;
  for (int i = 0; i < n; ++i) {
    const double a = 0.3 * i;
    Rigid3 T;
    T.R = geometry::QuaternionToRotation(
        {0.1 * std::sin(a), 0.2 * std::cos(a), std::sin(0.5 * a), 1.0});
    T.t = {std::cos(a) * 2, std::sin(a), 0.1 * i};
    poses.push_back(T);
  }
  return poses;
}

TEST(TrajectoryMetrics, TrajectoryAgainstItselfUnderASimilarityIsZero) {
  const std::vector<Rigid3> gt = Wiggle(20);
  const geometry::Sim3 T = SomeSim3();
  std::vector<Rigid3> pred;
  for (const Rigid3& pose : gt) {  // world_from_cam in a scaled, rotated, moved world
    Rigid3 moved = geometry::Compose(T.T, pose);  // R' = R_T R, then t' = s R_T t + t_T
    moved.t = geometry::Apply(T.T, {pose.t[0] * T.scale, pose.t[1] * T.scale, pose.t[2] * T.scale});
    pred.push_back(moved);
  }
  const TrajectoryMetrics m = ComputeTrajectoryMetrics(pred, gt, {});
  EXPECT_NEAR(m.ate_rmse, 0, 1e-9);
  EXPECT_NEAR(m.ate_mean, 0, 1e-9);
  EXPECT_NEAR(m.rpe_translation_rmse, 0, 1e-9);
  EXPECT_NEAR(m.rpe_rotation_rmse_deg, 0, 1e-9);
  EXPECT_NEAR(m.alignment.scale, 1 / T.scale, 1e-9);
  EXPECT_EQ(m.poses, 20);
  EXPECT_EQ(m.pairs, 19);
}

TEST(TrajectoryMetrics, RotatingOneCameraGivesKnownRpe) {
  std::vector<Rigid3> gt(4);
  gt[1].t = {1, 0, 0};
  gt[2].t = {1, 1, 0};
  gt[3].t = {0, 1, 0.5};
  std::vector<Rigid3> pred = gt;
  const double angle = 10.0 * kPi / 180.0;
  pred[3].R = geometry::QuaternionToRotation({0, 0, std::sin(angle / 2), std::cos(angle / 2)});
  const TrajectoryMetrics m = ComputeTrajectoryMetrics(pred, gt, {});
  EXPECT_NEAR(m.ate_rmse, 0, 1e-9);  // the centres did not move
  EXPECT_NEAR(m.rpe_translation_rmse, 0, 1e-9);
  EXPECT_NEAR(m.rpe_rotation_rmse_deg, std::sqrt(100.0 / 3.0), 1e-9);
  EXPECT_NEAR(m.rpe_rotation_mean_deg, 10.0 / 3.0, 1e-9);
}

TEST(TrajectoryMetrics, WithoutAlignmentAConstantOffsetIsTheAte) {
  const std::vector<Rigid3> gt = Wiggle(10);
  std::vector<Rigid3> pred = gt;
  for (Rigid3& pose : pred) pose.t[0] += 0.1;
  TrajectoryMetricsOptions options;
  options.align = false;
  const TrajectoryMetrics m = ComputeTrajectoryMetrics(pred, gt, options);
  EXPECT_NEAR(m.ate_rmse, 0.1, 1e-12);
  EXPECT_NEAR(m.rpe_translation_rmse, 0, 1e-12);
  EXPECT_NEAR(ComputeTrajectoryMetrics(pred, gt, {}).ate_rmse, 0, 1e-9);  // aligned away
}

TEST(TrajectoryMetrics, BadInputIsRejected) {
  const std::vector<Rigid3> gt = Wiggle(5);
  EXPECT_THROW(ComputeTrajectoryMetrics(Wiggle(4), gt, {}), Error);
  EXPECT_THROW(ComputeTrajectoryMetrics(Wiggle(2), Wiggle(2), {}), Error);
  TrajectoryMetricsOptions options;
  options.rpe_delta = 0;
  EXPECT_THROW(ComputeTrajectoryMetrics(gt, gt, options), OptionError);
}

}  // namespace
}  // namespace streamrecon::metrics
