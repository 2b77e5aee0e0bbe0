// The trace summary of `bench stream --profile` (app/profile_trace.h) on hand-made Chrome traces in
// the shape LibTorch's profiler writes, with the CUDA categories a CPU machine cannot produce.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "app/profile_trace.h"
#include "core/errors.h"

namespace streamrecon::app {
namespace {

using nlohmann::json;

json Event(const std::string& cat, const std::string& name, double ts, double dur) {
  return {{"ph", "X"}, {"cat", cat}, {"name", name}, {"ts", ts}, {"dur", dur}};
}

TEST(ProfileTrace, CountsPerFrameAndSeparatesTheBenchmarksOwnWaits) {
  json events = json::array();
  for (int frame = 0; frame < 2; ++frame) {
    const double t = frame * 1000.0;
    for (int k = 0; k < 5; ++k) events.push_back(Event("kernel", "gemm", t + k * 10, 4));  // 5 kernels, 20 us
    events.push_back(Event("gpu_memcpy", "Memcpy DtoH", t + 60, 2));
    for (int k = 0; k < 5; ++k) events.push_back(Event("cuda_runtime", "cudaLaunchKernel", t + k * 10, 1));
    events.push_back(Event("cuda_runtime", "cudaStreamSynchronize", t + 300, 5));  // in the step
    events.push_back(Event("user_annotation", kHarnessWaitScope, t + 500, 100));
    events.push_back(Event("cuda_runtime", "cudaMemcpyAsync", t + 510, 1));         // not a sync
    events.push_back(Event("cuda_runtime", "cudaStreamSynchronize", t + 520, 50));  // the benchmark's
    events.push_back(Event("cpu_op", "aten::mm", t, 30));
    events.push_back(Event("cpu_op", "aten::add", t + 40, 3));
  }
  const TraceSummary s = SummariseTrace({{"traceEvents", events}}, 2, 30.0);
  EXPECT_EQ(s.frames, 2);
  EXPECT_DOUBLE_EQ(s.kernels, 5);
  EXPECT_DOUBLE_EQ(s.copies, 1);
  EXPECT_DOUBLE_EQ(s.runtime_calls, 8);
  EXPECT_DOUBLE_EQ(s.syncs, 1);
  EXPECT_DOUBLE_EQ(s.harness_syncs, 1);
  EXPECT_DOUBLE_EQ(s.cpu_ops, 2);
  EXPECT_DOUBLE_EQ(s.kernel_ms, 0.02);
  EXPECT_DOUBLE_EQ(s.wall_ms, 15.0);
  EXPECT_DOUBLE_EQ(s.ToJson().at("syncs_per_frame").get<double>(), 1.0);
}

TEST(ProfileTrace, RefusesWhatIsNotATrace) {
  EXPECT_THROW(SummariseTrace(json::object(), 1, 1.0), Error);
  EXPECT_THROW(SummariseTrace({{"traceEvents", 3}}, 1, 1.0), Error);
  EXPECT_THROW(SummariseTrace({{"traceEvents", json::array()}}, 0, 1.0), Error);
}

}  // namespace
}  // namespace streamrecon::app
