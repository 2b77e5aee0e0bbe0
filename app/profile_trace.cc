// LibTorch's profiler as a timeline tool (app/profile_trace.h). The only translation unit that
// includes torch/csrc's profiler headers.
#include "app/profile_trace.h"

#include <torch/csrc/autograd/profiler_kineto.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <utility>
#include <vector>

#include "core/atomic_file.h"
#include "core/errors.h"

namespace streamrecon::app {

const char* const kHarnessWaitScope = "streamrecon::bench_wait_for_frame";

nlohmann::json TraceSummary::ToJson() const {
  return {{"frames", frames},           {"kernels_per_frame", kernels},   {"copies_per_frame", copies},
          {"runtime_calls_per_frame", runtime_calls}, {"syncs_per_frame", syncs}, {"harness_syncs_per_frame", harness_syncs},
          {"cpu_ops_per_frame", cpu_ops}, {"kernel_ms_per_frame", kernel_ms}, {"wall_ms_per_frame", wall_ms}};
}

namespace {

bool IsSync(const std::string& name) {
  static const std::set<std::string> kSyncs = {
      "cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy", "cudaMemcpy2D",
      "cudaMemset", "cuStreamSynchronize", "cuCtxSynchronize", "cuEventSynchronize", "cuMemcpyDtoH_v2", "cuMemcpyHtoD_v2"};
  return kSyncs.count(name) > 0;
}

}  // namespace

TraceSummary SummariseTrace(const nlohmann::json& trace, int64_t frames, double wall_ms) {
  if (!trace.is_object() || !trace.contains("traceEvents") || !trace.at("traceEvents").is_array())
    throw Error("not a Chrome trace: expected an object with a \"traceEvents\" array");
  if (frames <= 0) throw Error("a trace summary needs at least one frame");
  const auto& events = trace.at("traceEvents");
  // The benchmark's own waits: [ts, ts + dur) of its user scope, in the trace's microseconds.
  std::vector<std::pair<double, double>> waits;
  for (const auto& e : events)
    if (e.value("cat", "") == "user_annotation" && e.value("name", "") == kHarnessWaitScope && e.contains("ts"))
      waits.emplace_back(e.at("ts").get<double>(), e.at("ts").get<double>() + e.value("dur", 0.0));
  auto in_wait = [&](double ts) {
    return std::any_of(waits.begin(), waits.end(), [&](const auto& w) { return ts >= w.first && ts < w.second; });
  };
  TraceSummary s;
  s.frames = frames;
  for (const auto& e : events) {
    if (!e.is_object()) continue;
    const std::string cat = e.value("cat", "");
    const std::string name = e.value("name", "");
    if (cat == "kernel") {
      s.kernels += 1;
      s.kernel_ms += e.value("dur", 0.0) / 1000.0;
    } else if (cat == "gpu_memcpy" || cat == "gpu_memset") {
      s.copies += 1;
    } else if (cat == "cuda_runtime" || cat == "cuda_driver") {
      s.runtime_calls += 1;
      if (IsSync(name)) (in_wait(e.value("ts", 0.0)) ? s.harness_syncs : s.syncs) += 1;
    } else if (cat == "cpu_op") {
      s.cpu_ops += 1;
    }
  }
  const double n = static_cast<double>(frames);
  for (double* v : {&s.kernels, &s.copies, &s.runtime_calls, &s.syncs, &s.harness_syncs, &s.cpu_ops, &s.kernel_ms}) *v /= n;
  s.wall_ms = wall_ms / n;
  return s;
}

namespace {
namespace prof = torch::profiler::impl;

std::set<prof::ActivityType> Activities(bool cuda) {
  std::set<prof::ActivityType> a{prof::ActivityType::CPU};
  if (cuda) a.insert(prof::ActivityType::CUDA);
  return a;
}

prof::ProfilerConfig Config() { return prof::ProfilerConfig(prof::ProfilerState::KINETO); }

}  // namespace

StepProfiler::StepProfiler(bool cuda) : cuda_(cuda) {}

StepProfiler::~StepProfiler() {
  if (running_) {
    try {
      torch::autograd::profiler::disableProfiler();
    } catch (...) {
    }
  }
}

void StepProfiler::Start() {
  if (running_) throw Error("the profiler is already running");
  torch::autograd::profiler::prepareProfiler(Config(), Activities(cuda_));
  torch::autograd::profiler::enableProfiler(Config(), Activities(cuda_));
  running_ = true;
}

TraceSummary StepProfiler::Stop(const std::filesystem::path& trace, int64_t frames, double wall_ms) {
  if (!running_) throw Error("the profiler is not running");
  running_ = false;
  std::unique_ptr<torch::autograd::profiler::ProfilerResult> result = torch::autograd::profiler::disableProfiler();
  // Kineto writes the file itself: into a temporary next to the target, renamed once it is complete.
  std::filesystem::path partial = trace;
  partial += ".partial";
  try {
    result->save(partial.string());
  } catch (const std::exception& e) {
    std::error_code ignored;
    std::filesystem::remove(partial, ignored);
    throw FileError("cannot write the trace " + trace.string() + ": " + e.what());
  }
  std::ifstream in(partial);
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    std::error_code ignored;
    std::filesystem::remove(partial, ignored);
    throw FileError("the profiler's trace " + partial.string() + " is not valid JSON: " + e.what());
  }
  const TraceSummary summary = SummariseTrace(json, frames, wall_ms);
  std::error_code error;
  std::filesystem::rename(partial, trace, error);
  if (error) throw FileError("cannot move " + partial.string() + " to " + trace.string() + ": " + error.message());
  return summary;
}

}  // namespace streamrecon::app
