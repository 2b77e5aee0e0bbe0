// Tests of the point-cloud accumulator and the threaded pipeline (core only, no model): order,
// drop counting in real-time mode, pause/step, and clean shutdown on end of stream, on errors in
// each stage and on a stop request. Every wait has a timeout, so a hang fails instead of blocking.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <limits>
#include <mutex>
#include <random>
#include <thread>

#include "core/accumulator.h"
#include "core/errors.h"
#include "core/export.h"
#include "core/pipeline.h"

namespace streamrecon {
namespace {

using namespace std::chrono_literals;

// ---- fixtures ----------------------------------------------------------------------------------

// A small prediction with random points, NaNs and confidences around the default threshold.
FramePrediction RandomPrediction(int64_t index, int width, int height, std::mt19937& rng) {
  std::uniform_real_distribution<float> coord(-2.0f, 2.0f);
  std::uniform_real_distribution<float> conf(1.0f, 3.0f);
  std::uniform_real_distribution<float> depth(0.5f, 4.0f);
  std::uniform_int_distribution<int> byte(0, 255);
  FramePrediction p;
  p.index = index;
  p.width = width;
  p.height = height;
  p.pose_enc = {0.1 * index, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.2};
  const size_t n = static_cast<size_t>(width) * height;
  for (size_t i = 0; i < n; ++i) {
    for (int k = 0; k < 3; ++k) p.world_points.push_back(coord(rng));
    p.world_points_conf.push_back(conf(rng));
    p.depth.push_back(depth(rng));
    p.depth_conf.push_back(conf(rng));
  }
  p.world_points[3] = std::numeric_limits<float>::quiet_NaN();  // pixel 1 is never kept
  p.depth[2] = std::numeric_limits<float>::infinity();          // neither is pixel 2 with depth
  p.image.width = width;
  p.image.height = height;
  for (size_t i = 0; i < n * 3; ++i) p.image.data.push_back(static_cast<uint8_t>(byte(rng)));
  return p;
}

Frame MakeFrame(int64_t index) {
  Frame f;
  f.index = index;
  f.timestamp = static_cast<double>(index);
  f.name = "test:" + std::to_string(index);
  f.image.width = 4;
  f.image.height = 3;
  f.image.data.assign(4 * 3 * 3, static_cast<uint8_t>(index));
  return f;
}

// The model stand-in: a 4x3 prediction whose points sit at x = frame index.
FramePrediction FakeStep(const Frame& frame) {
  FramePrediction p;
  p.index = frame.index;
  p.width = frame.image.width;
  p.height = frame.image.height;
  p.pose_enc = {static_cast<double>(frame.index), 0, 0, 0, 0, 0, 1, 1.0, 1.2};
  const size_t n = static_cast<size_t>(p.width) * p.height;
  for (size_t i = 0; i < n; ++i) {
    p.world_points.insert(p.world_points.end(),
                          {static_cast<float>(frame.index), static_cast<float>(i), 1.0f});
    p.world_points_conf.push_back(2.0f);
    p.depth.push_back(1.0f);
    p.depth_conf.push_back(2.0f);
  }
  p.image = frame.image;
  p.model_ms = 0.5;
  return p;
}

// A source of `count` frames (count < 0: endless), each read taking `delay`.
std::function<std::optional<Frame>()> CountingSource(int64_t count,
                                                     std::chrono::microseconds delay = 0us) {
  auto next = std::make_shared<int64_t>(0);
  return [next, count, delay]() -> std::optional<Frame> {
    if (count >= 0 && *next >= count) return std::nullopt;
    if (delay.count() > 0) std::this_thread::sleep_for(delay);
    return MakeFrame((*next)++);
  };
}

// Runs fn on a thread and fails (then exits, since a hung thread cannot be joined) when it does
// not return within `limit`: a hang must fail the suite, not block it.
template <typename Fn>
void WithinOrDie(std::chrono::milliseconds limit, const char* what, Fn fn) {
  auto done = std::async(std::launch::async, fn);
  if (done.wait_for(limit) != std::future_status::ready) {
    std::fprintf(stderr, "HANG: %s did not return within %lld ms\n", what,
                 static_cast<long long>(limit.count()));
    std::fflush(stderr);
    std::_Exit(1);
  }
  done.get();
}

// ---- accumulator -------------------------------------------------------------------------------

struct CollectCase {
  bool use_depth;
  int stride;
  double frame_voxel;
};

class AccumulatorMatchesCollectPoints : public ::testing::TestWithParam<CollectCase> {};

TEST_P(AccumulatorMatchesCollectPoints, SamePointsInTheSameOrder) {
  const CollectCase c = GetParam();
  std::mt19937 rng(7);
  AccumulatorOptions options;
  options.frame.conf_threshold = 1.7f;
  options.frame.use_depth = c.use_depth;
  options.frame.stride = c.stride;
  options.frame.voxel_size = c.frame_voxel;
  PointCloudAccumulator accumulator(options);
  PointCloud expected;
  for (int64_t i = 0; i < 5; ++i) {
    const FramePrediction p = RandomPrediction(i, 13, 9, rng);
    accumulator.Add(p);
    const PointCloud part = CollectPoints({p}, options.frame);
    expected.xyz.insert(expected.xyz.end(), part.xyz.begin(), part.xyz.end());
    expected.rgb.insert(expected.rgb.end(), part.rgb.begin(), part.rgb.end());
  }
  const CloudSnapshot snapshot = accumulator.Snapshot();
  const PointCloud got = snapshot.Collect(-std::numeric_limits<float>::infinity());
  ASSERT_GT(expected.size(), 0u);
  EXPECT_EQ(snapshot.points, expected.size());
  EXPECT_EQ(got.xyz, expected.xyz);
  EXPECT_EQ(got.rgb, expected.rgb);
  // Every stored point passed the floor, so filtering at the floor keeps them all.
  EXPECT_EQ(snapshot.Count(options.frame.conf_threshold), expected.size());
}

INSTANTIATE_TEST_SUITE_P(Options, AccumulatorMatchesCollectPoints,
                         ::testing::Values(CollectCase{false, 1, 0.0}, CollectCase{false, 2, 0.0},
                                           CollectCase{true, 1, 0.0}, CollectCase{true, 3, 0.0},
                                           CollectCase{false, 1, 0.5}, CollectCase{true, 1, 0.7}),
                         [](const ::testing::TestParamInfo<CollectCase>& info) {
                           const CollectCase& c = info.param;
                           return std::string(c.use_depth ? "Depth" : "PointMap") + "Stride" +
                                  std::to_string(c.stride) + (c.frame_voxel > 0 ? "FrameVoxel" : "");
                         });

TEST(Accumulator, ConfidenceFilterIsAppliedOnTheSnapshot) {
  std::mt19937 rng(3);
  AccumulatorOptions options;
  options.frame.conf_threshold = 1.0f;
  PointCloudAccumulator accumulator(options);
  const FramePrediction p = RandomPrediction(0, 16, 12, rng);
  accumulator.Add(p);
  PointCloudOptions strict;
  strict.conf_threshold = 2.2f;
  const CloudSnapshot snapshot = accumulator.Snapshot();
  EXPECT_EQ(snapshot.Count(2.2f), CollectPoints({p}, strict).size());
  EXPECT_EQ(snapshot.Collect(2.2f).xyz, CollectPoints({p}, strict).xyz);
  EXPECT_LT(snapshot.Count(2.2f), snapshot.points);
}

// A run that writes no cloud (--no-points) keeps none: frames are added, no point is extracted.
TEST(Accumulator, DisabledKeepsNoPoints) {
  std::mt19937 rng(4);
  AccumulatorOptions options;
  options.enabled = false;
  PointCloudAccumulator accumulator(options);
  for (int i = 0; i < 3; ++i) accumulator.Add(RandomPrediction(i, 16, 12, rng));
  EXPECT_EQ(accumulator.Snapshot().points, 0u);
}

TEST(Accumulator, GlobalVoxelGridBoundsRepeatedViews) {
  std::mt19937 rng(11);
  const FramePrediction p = RandomPrediction(0, 20, 15, rng);
  AccumulatorOptions options;
  options.frame.conf_threshold = 0.0f;
  options.voxel_size = 0.25;
  PointCloudAccumulator accumulator(options);
  accumulator.Add(p);
  const size_t once = accumulator.size();
  for (int i = 0; i < 10; ++i) accumulator.Add(p);
  EXPECT_EQ(accumulator.size(), once);  // the same points land in the same voxels
  EXPECT_LT(once, 20u * 15u);
  // Every vertex lies inside the bounding box of the input.
  const CloudSnapshot s = accumulator.Snapshot();
  for (const auto& chunk : s.chunks) {
    for (const CloudVertex& v : chunk->vertices) {
      EXPECT_LE(std::abs(v.x), 2.0f);
      EXPECT_LE(std::abs(v.y), 2.0f);
      EXPECT_LE(std::abs(v.z), 2.0f);
    }
  }
}

TEST(Accumulator, MaxPointsCoarsensTheGrid) {
  std::mt19937 rng(5);
  AccumulatorOptions options;
  options.frame.conf_threshold = 0.0f;
  options.max_points = 3000;
  PointCloudAccumulator accumulator(options);
  for (int64_t i = 0; i < 40; ++i) accumulator.Add(RandomPrediction(i, 32, 24, rng));
  EXPECT_LE(accumulator.size(), 3000u);
  EXPECT_GT(accumulator.size(), 100u);
  EXPECT_GT(accumulator.voxel_size(), 0.0);
  EXPECT_EQ(accumulator.Snapshot().points, accumulator.size());
}

TEST(Accumulator, SnapshotsAreImmutableAndUntouchedChunksKeepTheirIds) {
  AccumulatorOptions options;
  options.frame.conf_threshold = 0.0f;
  options.voxel_size = 0.5;
  PointCloudAccumulator accumulator(options);
  // Frame a: enough distinct voxels to fill more than two chunks.
  const auto grid_frame = [](int64_t index, float offset, int width, int height) {
    FramePrediction p;
    p.index = index;
    p.width = width;
    p.height = height;
    for (int v = 0; v < height; ++v) {
      for (int u = 0; u < width; ++u) {
        p.world_points.insert(p.world_points.end(),
                              {u * 1.0f + offset, v * 1.0f + offset, 0.0f});
        p.world_points_conf.push_back(2.0f);
      }
    }
    p.image.width = width;
    p.image.height = height;
    p.image.data.assign(static_cast<size_t>(width) * height * 3, 100);
    return p;
  };
  accumulator.Add(grid_frame(0, 0.1f, 200, 200));  // 40000 voxels: chunks 0, 1, 2
  const CloudSnapshot before = accumulator.Snapshot();
  ASSERT_EQ(before.chunks.size(), 3u);
  const std::vector<CloudVertex> first_chunk = before.chunks[0]->vertices;
  // Frame b touches only the first row of voxels (chunk 0) and adds nothing new.
  accumulator.Add(grid_frame(1, 0.2f, 200, 1));
  const CloudSnapshot after = accumulator.Snapshot();
  ASSERT_EQ(after.points, before.points);
  EXPECT_NE(after.chunks[0]->id, before.chunks[0]->id);
  EXPECT_EQ(after.chunks[1]->id, before.chunks[1]->id);
  EXPECT_EQ(after.chunks[2]->id, before.chunks[2]->id);
  // The old snapshot still shows the old means; the new one the moved ones.
  EXPECT_EQ(before.chunks[0]->vertices[0].x, first_chunk[0].x);
  EXPECT_NEAR(after.chunks[0]->vertices[0].x, 0.15f, 1e-6);
  EXPECT_NEAR(before.chunks[0]->vertices[0].x, 0.1f, 1e-6);
}

TEST(Accumulator, SetVoxelSizeRebinsAndKeepsColours) {
  AccumulatorOptions options;
  options.frame.conf_threshold = 0.0f;
  PointCloudAccumulator accumulator(options);
  std::mt19937 rng(9);
  for (int64_t i = 0; i < 3; ++i) accumulator.Add(RandomPrediction(i, 16, 16, rng));
  const size_t raw = accumulator.size();
  accumulator.SetVoxelSize(1.0);
  EXPECT_LT(accumulator.size(), raw);
  EXPECT_LE(accumulator.size(), 4u * 4u * 4u);  // points lie in [-2, 2)^3
  EXPECT_EQ(accumulator.voxel_size(), 1.0);
  EXPECT_THROW(accumulator.SetVoxelSize(-1.0), OptionError);
}

TEST(Accumulator, BadOptionsAndInputsSayWhatWasExpected) {
  AccumulatorOptions bad;
  bad.voxel_size = -0.1;
  try {
    bad.Check();
    FAIL() << "expected an OptionError";
  } catch (const OptionError& e) {
    EXPECT_NE(std::string(e.what()).find("voxel_size"), std::string::npos);
  }
  bad = AccumulatorOptions{};
  bad.max_points = -5;
  EXPECT_THROW({ PointCloudAccumulator a(bad); }, OptionError);
  bad = AccumulatorOptions{};
  bad.frame.stride = 0;
  EXPECT_THROW(bad.Check(), OptionError);

  PointCloudAccumulator accumulator(AccumulatorOptions{});
  FramePrediction p = FakeStep(MakeFrame(0));
  p.world_points.pop_back();
  try {
    accumulator.Add(p);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("world_points"), std::string::npos) << e.what();
  }
}

// ---- pipeline ----------------------------------------------------------------------------------

PipelineOptions QuickOptions() {
  PipelineOptions options;
  options.cloud.frame.conf_threshold = 1.5f;
  return options;
}

TEST(Pipeline, PreservesOrderWithoutRealtime) {
  std::vector<int64_t> seen;
  std::mt19937 rng(1);
  PipelineStages stages;
  stages.next_frame = CountingSource(60, 200us);
  stages.step = [rng](const Frame& f) mutable {
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 2000));
    return FakeStep(f);
  };
  stages.on_frame = [&seen](const FramePrediction& p, const FrameReport& r) {
    seen.push_back(p.index);
    EXPECT_EQ(r.index, p.index);
    EXPECT_EQ(r.processed, p.index + 1);
    EXPECT_EQ(r.name, "test:" + std::to_string(p.index));
  };
  auto options = QuickOptions();
  options.total_frames = 60;
  Pipeline pipeline(stages, options);
  ASSERT_TRUE(pipeline.WaitUntilDone(20s));
  const PipelineStats stats = pipeline.Stats();
  EXPECT_EQ(stats.state, PipelineState::kFinished);
  EXPECT_EQ(stats.frames_read, 60);
  EXPECT_EQ(stats.frames_processed, 60);
  EXPECT_EQ(stats.frames_dropped, 0);
  EXPECT_EQ(stats.total_frames, 60);
  ASSERT_EQ(seen.size(), 60u);
  for (int64_t i = 0; i < 60; ++i) EXPECT_EQ(seen[i], i);
  const auto snapshot = pipeline.Latest();
  ASSERT_TRUE(snapshot);
  EXPECT_EQ(snapshot->stats.state, PipelineState::kFinished);
  ASSERT_EQ(snapshot->cameras.size(), 60u);
  for (int64_t i = 0; i < 60; ++i) EXPECT_EQ(snapshot->cameras[i].index, i);
  EXPECT_EQ(snapshot->cloud.points, 60u * 12u);
  ASSERT_TRUE(snapshot->latest);
  EXPECT_EQ(snapshot->latest->index, 59);
  EXPECT_EQ(snapshot->latest->depth.size(), 12u);
  EXPECT_GT(snapshot->model_fps, 0.0);
  EXPECT_NO_THROW(pipeline.RethrowIfFailed());
}

TEST(Pipeline, SlowModelWithoutRealtimeDropsNothing) {
  PipelineStages stages;
  stages.next_frame = CountingSource(30);
  stages.step = [](const Frame& f) {
    std::this_thread::sleep_for(5ms);
    return FakeStep(f);
  };
  Pipeline pipeline(stages, QuickOptions());
  ASSERT_TRUE(pipeline.WaitUntilDone(20s));
  EXPECT_EQ(pipeline.Stats().frames_processed, 30);
  EXPECT_EQ(pipeline.Stats().frames_dropped, 0);
}

// The refine stage (the pose tracker's place) runs on every frame in stream order, before the
// frame joins the cloud; what it changes is what on_frame sees, and its time is reported apart.
TEST(Pipeline, RefineCorrectsEachFrameInOrderAndItsTimeIsReported) {
  std::vector<int64_t> refined;
  std::vector<double> first_pose, refine_ms;
  PipelineStages stages;
  stages.next_frame = CountingSource(12);
  stages.step = FakeStep;
  stages.refine = [&refined](FramePrediction& p) {
    refined.push_back(p.index);
    p.pose_enc[0] = 100.0 + static_cast<double>(p.index);
    std::this_thread::sleep_for(2ms);
  };
  stages.on_frame = [&](const FramePrediction& p, const FrameReport& r) {
    first_pose.push_back(p.pose_enc[0]);
    refine_ms.push_back(r.refine_ms);
  };
  Pipeline pipeline(stages, QuickOptions());
  ASSERT_TRUE(pipeline.WaitUntilDone(20s));
  ASSERT_EQ(refined.size(), 12u);
  ASSERT_EQ(first_pose.size(), 12u);
  for (int64_t i = 0; i < 12; ++i) {
    EXPECT_EQ(refined[i], i);
    EXPECT_EQ(first_pose[i], 100.0 + static_cast<double>(i)) << "frame " << i;
    EXPECT_GE(refine_ms[i], 2.0) << "frame " << i;  // sleep_for waits at least that long
  }
}

TEST(Pipeline, RealtimeDropsAndCountsFramesWhenTheModelLags) {
  std::vector<int64_t> seen;
  PipelineStages stages;
  stages.next_frame = CountingSource(100, 1ms);
  stages.step = [](const Frame& f) {
    std::this_thread::sleep_for(15ms);  // a deliberately slow consumer
    return FakeStep(f);
  };
  stages.on_frame = [&seen](const FramePrediction& p, const FrameReport&) {
    seen.push_back(p.index);
  };
  auto options = QuickOptions();
  options.realtime = true;
  Pipeline pipeline(stages, options);
  ASSERT_TRUE(pipeline.WaitUntilDone(20s));
  const PipelineStats stats = pipeline.Stats();
  EXPECT_EQ(stats.state, PipelineState::kFinished);
  EXPECT_EQ(stats.frames_read, 100);
  EXPECT_GT(stats.frames_dropped, 30);
  EXPECT_EQ(stats.frames_processed + stats.frames_dropped, stats.frames_read);
  EXPECT_EQ(static_cast<int64_t>(seen.size()), stats.frames_processed);
  for (size_t i = 1; i < seen.size(); ++i) EXPECT_LT(seen[i - 1], seen[i]);
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back(), 99);  // the newest frame is never the one dropped
}

TEST(Pipeline, PacesToTimestamps) {
  PipelineStages stages;
  stages.next_frame = [n = 0]() mutable -> std::optional<Frame> {
    if (n >= 6) return std::nullopt;
    Frame f = MakeFrame(n);
    f.timestamp = 10.0 + 0.05 * n++;  // 20 fps, not starting at 0
    return f;
  };
  stages.step = FakeStep;
  auto options = QuickOptions();
  options.pace_to_timestamps = true;
  const auto t0 = std::chrono::steady_clock::now();
  Pipeline pipeline(stages, options);
  ASSERT_TRUE(pipeline.WaitUntilDone(10s));
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GE(elapsed, 0.24);
  EXPECT_LT(elapsed, 5.0);
  EXPECT_EQ(pipeline.Stats().frames_processed, 6);
}

TEST(Pipeline, MaxFramesStopsTheSource) {
  PipelineStages stages;
  stages.next_frame = CountingSource(-1);
  stages.step = FakeStep;
  auto options = QuickOptions();
  options.max_frames = 7;
  options.total_frames = -1;
  Pipeline pipeline(stages, options);
  ASSERT_TRUE(pipeline.WaitUntilDone(10s));
  EXPECT_EQ(pipeline.Stats().state, PipelineState::kFinished);
  EXPECT_EQ(pipeline.Stats().frames_processed, 7);
}

// An error in any stage ends the pipeline with the stage's exception and message.
enum class FailingStage { kSource, kModel, kAccumulator };

class PipelineStageError : public ::testing::TestWithParam<FailingStage> {};

TEST_P(PipelineStageError, EndsWithTheMessageAndNoHang) {
  const FailingStage where = GetParam();
  PipelineStages stages;
  auto source = CountingSource(-1, 100us);  // endless: only the error can end it
  stages.next_frame = [source, where]() -> std::optional<Frame> {
    auto f = source();
    if (where == FailingStage::kSource && f->index == 4) throw FileError("cannot decode 'x.jpg'");
    return f;
  };
  stages.step = [where](const Frame& f) {
    if (where == FailingStage::kModel && f.index == 3) throw Error("model step failed");
    return FakeStep(f);
  };
  stages.on_frame = [where](const FramePrediction& p, const FrameReport&) {
    if (where == FailingStage::kAccumulator && p.index == 2) throw Error("disk full");
  };
  WithinOrDie(10000ms, "a failing pipeline", [&] {
    Pipeline pipeline(stages, QuickOptions());
    ASSERT_TRUE(pipeline.WaitUntilDone(8s));
    const PipelineStats stats = pipeline.Stats();
    EXPECT_EQ(stats.state, PipelineState::kFailed);
    const char* expected = where == FailingStage::kSource  ? "x.jpg"
                           : where == FailingStage::kModel ? "model step failed"
                                                           : "disk full";
    EXPECT_NE(stats.error.find(expected), std::string::npos) << stats.error;
    if (where == FailingStage::kSource) {
      EXPECT_THROW(pipeline.RethrowIfFailed(), FileError);  // the stage's own type
      EXPECT_EQ(stats.frames_processed, 4);  // the frames read before the failure went through
    } else {
      EXPECT_THROW(pipeline.RethrowIfFailed(), Error);
    }
    const auto snapshot = pipeline.Latest();
    ASSERT_TRUE(snapshot);
    EXPECT_EQ(snapshot->stats.state, PipelineState::kFailed);
  });  // the destructor joins every thread inside the time limit
}

INSTANTIATE_TEST_SUITE_P(Stages, PipelineStageError,
                         ::testing::Values(FailingStage::kSource, FailingStage::kModel,
                                           FailingStage::kAccumulator),
                         [](const ::testing::TestParamInfo<FailingStage>& info) {
                           return std::string(info.param == FailingStage::kSource  ? "Source"
                                              : info.param == FailingStage::kModel ? "Model"
                                                                                   : "Accumulator");
                         });

TEST(Pipeline, StopRequestEndsAnEndlessStream) {
  // As when the viewer's window is closed mid-stream: endless source, slow model.
  std::atomic<int> steps{0};
  PipelineStages stages;
  stages.next_frame = CountingSource(-1);
  stages.step = [&steps](const Frame& f) {
    ++steps;
    std::this_thread::sleep_for(10ms);
    return FakeStep(f);
  };
  WithinOrDie(10000ms, "stopping an endless pipeline", [&] {
    Pipeline pipeline(stages, QuickOptions());
    while (steps < 3) std::this_thread::sleep_for(1ms);
    pipeline.RequestStop();
    ASSERT_TRUE(pipeline.WaitUntilDone(5s));
    EXPECT_EQ(pipeline.Stats().state, PipelineState::kStopped);
    EXPECT_NO_THROW(pipeline.RethrowIfFailed());
  });
}

TEST(Pipeline, DestructorStopsARealtimeStreamWithABlockedAccumulator) {
  PipelineStages stages;
  stages.next_frame = CountingSource(-1, 100us);
  stages.step = FakeStep;
  stages.on_frame = [](const FramePrediction&, const FrameReport&) {
    std::this_thread::sleep_for(20ms);  // the slowest stage is the last
  };
  auto options = QuickOptions();
  options.realtime = true;
  WithinOrDie(10000ms, "destroying a running pipeline", [&] {
    Pipeline pipeline(stages, options);
    std::this_thread::sleep_for(100ms);
    EXPECT_GT(pipeline.Stats().frames_dropped, 0);
  });
}

TEST(Pipeline, PauseStepAndResume) {
  PipelineStages stages;
  stages.next_frame = CountingSource(5);
  stages.step = FakeStep;
  auto options = QuickOptions();
  options.start_paused = true;
  WithinOrDie(10000ms, "pause/step", [&] {
    Pipeline pipeline(stages, options);
    std::this_thread::sleep_for(100ms);
    EXPECT_EQ(pipeline.Stats().frames_processed, 0);
    EXPECT_TRUE(pipeline.Stats().paused);
    pipeline.Step();
    for (int i = 0; i < 500 && pipeline.Stats().frames_processed < 1; ++i) {
      std::this_thread::sleep_for(5ms);
    }
    std::this_thread::sleep_for(50ms);
    EXPECT_EQ(pipeline.Stats().frames_processed, 1);
    pipeline.SetPaused(false);
    ASSERT_TRUE(pipeline.WaitUntilDone(5s));
    EXPECT_EQ(pipeline.Stats().frames_processed, 5);
  });
}

TEST(Pipeline, StopWhilePaused) {
  PipelineStages stages;
  stages.next_frame = CountingSource(-1);
  stages.step = FakeStep;
  auto options = QuickOptions();
  options.start_paused = true;
  WithinOrDie(10000ms, "stop while paused", [&] {
    Pipeline pipeline(stages, options);
    std::this_thread::sleep_for(20ms);
    pipeline.RequestStop();
    ASSERT_TRUE(pipeline.WaitUntilDone(5s));
    EXPECT_EQ(pipeline.Stats().state, PipelineState::kStopped);
  });
}

TEST(Pipeline, VoxelSizeChangesApplyAfterTheEnd) {
  PipelineStages stages;
  stages.next_frame = CountingSource(10);
  stages.step = FakeStep;
  Pipeline pipeline(stages, QuickOptions());
  ASSERT_TRUE(pipeline.WaitUntilDone(10s));
  const auto before = pipeline.Latest();
  EXPECT_EQ(before->cloud.points, 120u);
  pipeline.SetVoxelSize(100.0);  // everything in one voxel
  std::shared_ptr<const PipelineSnapshot> after;
  for (int i = 0; i < 400; ++i) {
    after = pipeline.Latest();
    if (after->version != before->version) break;
    std::this_thread::sleep_for(5ms);
  }
  ASSERT_NE(after->version, before->version);
  EXPECT_EQ(after->cloud.voxel_size, 100.0);
  EXPECT_EQ(after->cloud.points, 1u);
  EXPECT_EQ(after->stats.state, PipelineState::kFinished);
  EXPECT_THROW(pipeline.SetVoxelSize(-2.0), OptionError);
}

TEST(Pipeline, ReportsCacheStatsAndTimings) {
  PipelineStages stages;
  stages.next_frame = CountingSource(3);
  stages.step = [](const Frame& f) {
    std::this_thread::sleep_for(2ms);
    return FakeStep(f);
  };
  stages.cache_stats = [n = int64_t{0}]() mutable {
    CacheStats s;
    s.bytes = ++n * 1048576;
    s.tokens_per_layer = {n, 2 * n};
    return s;
  };
  Pipeline pipeline(stages, QuickOptions());
  ASSERT_TRUE(pipeline.WaitUntilDone(10s));
  const auto snapshot = pipeline.Latest();
  ASSERT_TRUE(snapshot->latest_report);
  EXPECT_EQ(snapshot->latest_report->cache.bytes, 3 * 1048576);
  EXPECT_EQ(snapshot->latest_report->cache.tokens_per_layer, (std::vector<int64_t>{3, 6}));
  EXPECT_EQ(snapshot->latest_report->cache.budget_bytes, 0);
  EXPECT_GE(snapshot->latest_report->preprocess_ms, 1.0);  // step time beyond model_ms
  EXPECT_EQ(snapshot->latest_report->model_ms, 0.5);
  EXPECT_EQ(snapshot->history_cache_mib, (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(snapshot->history_ms.size(), 3u);
}

// The submit stage (run and view on a GPU): with frames waiting, frame t + 1 is submitted before
// frame t is completed; every frame still arrives once, in order, with the cache figures of its
// own step (the "before the last step" figures while a successor is queued, the current ones for
// the last frame).
TEST(Pipeline, SubmitQueuesTheNextFrameBeforeCompletingThisOne) {
  std::mutex log_mutex;
  std::vector<std::string> log;  // "s3" = frame 3 submitted, "f3" = frame 3 completed
  auto note = [&](const std::string& what) {
    std::lock_guard<std::mutex> lock(log_mutex);
    log.push_back(what);
  };
  std::atomic<int64_t> submitted{0};
  PipelineStages stages;
  stages.next_frame = CountingSource(20);
  stages.submit = [&](const Frame& f) {
    note("s" + std::to_string(f.index));
    submitted = f.index + 1;
    return std::function<FramePrediction()>([&, f] {
      note("f" + std::to_string(f.index));
      return FakeStep(f);
    });
  };
  // The figures of frame i: bytes i + 1 (as a cache that grows by one per frame would report).
  stages.cache_stats = [&] { CacheStats s; s.bytes = submitted; return s; };
  stages.cache_stats_before_last = [&] { CacheStats s; s.bytes = submitted - 1; return s; };
  std::vector<int64_t> seen, bytes;
  stages.on_frame = [&](const FramePrediction& p, const FrameReport& r) {
    seen.push_back(p.index);
    bytes.push_back(r.cache.bytes);
  };
  auto options = QuickOptions();
  options.frame_queue = 4;
  options.start_paused = true;  // let the source fill the queue first
  WithinOrDie(10000ms, "pipelined submit", [&] {
    Pipeline pipeline(stages, options);
    std::this_thread::sleep_for(100ms);
    pipeline.SetPaused(false);
    ASSERT_TRUE(pipeline.WaitUntilDone(5s));
    EXPECT_EQ(pipeline.Stats().state, PipelineState::kFinished);
  });
  ASSERT_EQ(seen.size(), 20u);
  for (int64_t i = 0; i < 20; ++i) {
    EXPECT_EQ(seen[i], i);
    EXPECT_EQ(bytes[i], i + 1) << "frame " << i;
  }
  // Frames 0 and 1 were waiting together: 1 is submitted before 0 is completed.
  const auto at = [&](const std::string& what) { return std::find(log.begin(), log.end(), what) - log.begin(); };
  EXPECT_LT(at("s1"), at("f0"));
  for (int64_t i = 0; i < 20; ++i) EXPECT_LT(at("s" + std::to_string(i)), at("f" + std::to_string(i)));
  EXPECT_EQ(log.size(), 40u);
}

// Paused with a frame in flight: it is completed before the wait, so a paused viewer shows the
// frame it stepped to; stepping lets exactly one more through.
TEST(Pipeline, SubmitWhilePausedCompletesTheFrameInFlight) {
  PipelineStages stages;
  stages.next_frame = CountingSource(5);
  stages.submit = [](const Frame& f) { return std::function<FramePrediction()>([f] { return FakeStep(f); }); };
  auto options = QuickOptions();
  options.start_paused = true;
  WithinOrDie(10000ms, "pause/step with submit", [&] {
    Pipeline pipeline(stages, options);
    std::this_thread::sleep_for(100ms);
    EXPECT_EQ(pipeline.Stats().frames_processed, 0);
    for (int64_t want = 1; want <= 2; ++want) {
      pipeline.Step();
      for (int i = 0; i < 500 && pipeline.Stats().frames_processed < want; ++i) std::this_thread::sleep_for(5ms);
      std::this_thread::sleep_for(50ms);
      EXPECT_EQ(pipeline.Stats().frames_processed, want);
      ASSERT_TRUE(pipeline.Latest());
      EXPECT_EQ(pipeline.Latest()->latest->index, want - 1);
    }
    pipeline.SetPaused(false);
    ASSERT_TRUE(pipeline.WaitUntilDone(5s));
    EXPECT_EQ(pipeline.Stats().frames_processed, 5);
  });
}

// A completion that throws (a non-finite output) fails the pipeline with its message.
TEST(Pipeline, SubmitCompletionErrorsEndTheStream) {
  PipelineStages stages;
  stages.next_frame = CountingSource(10);
  stages.submit = [](const Frame& f) {
    return std::function<FramePrediction()>([f] {
      if (f.index == 3) throw Error("frame 3: the model's depth output is not finite");
      return FakeStep(f);
    });
  };
  WithinOrDie(10000ms, "submit error", [&] {
    Pipeline pipeline(stages, QuickOptions());
    ASSERT_TRUE(pipeline.WaitUntilDone(5s));
    EXPECT_EQ(pipeline.Stats().state, PipelineState::kFailed);
    EXPECT_NE(pipeline.Stats().error.find("frame 3"), std::string::npos) << pipeline.Stats().error;
    EXPECT_LE(pipeline.Stats().frames_processed, 3);  // (a model error ends the stream at once, as with step)
    EXPECT_THROW(pipeline.RethrowIfFailed(), Error);
  });
}

TEST(Pipeline, BadOptionsThrowBeforeAnyThreadStarts) {
  PipelineStages stages;
  stages.next_frame = CountingSource(1);
  stages.step = FakeStep;
  auto options = QuickOptions();
  options.frame_queue = 0;
  EXPECT_THROW({ Pipeline p(stages, options); }, OptionError);
  stages.step = nullptr;
  EXPECT_THROW({ Pipeline p(stages, QuickOptions()); }, OptionError);
}

// The cameras of a long stream are kept once: snapshots share the full chunks (the same objects,
// not copies), a copy does not see later records, and the order is the push order.
TEST(CameraLog, SnapshotsShareFullChunksAndKeepTheirOwnLength) {
  CameraLog log;
  for (int64_t i = 0; i < 2500; ++i) {
    CameraRecord r;
    r.index = i;
    r.source_name = "frame_" + std::to_string(i) + ".png";
    log.push_back(r);
  }
  const CameraLog copy = log;
  ASSERT_EQ(copy.size(), 2500u);
  EXPECT_EQ(&copy[0], &log[0]);        // first chunk shared
  EXPECT_EQ(&copy[2047], &log[2047]);  // second chunk shared
  EXPECT_NE(&copy[2048], &log[2048]);  // the partial chunk is the copy's own
  CameraRecord extra;
  extra.index = 2500;
  log.push_back(extra);
  EXPECT_EQ(copy.size(), 2500u);
  EXPECT_EQ(log.back().index, 2500);
  const std::vector<CameraRecord> all = log.ToVector();
  ASSERT_EQ(all.size(), 2501u);
  for (int64_t i = 0; i < 2501; ++i) ASSERT_EQ(all[i].index, i);
  EXPECT_EQ(copy[1999].source_name, "frame_1999.png");
}

}  // namespace
}  // namespace streamrecon
