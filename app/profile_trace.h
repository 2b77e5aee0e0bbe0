// Timelines of the step (`bench stream --profile`): LibTorch's profiler (Kineto) over a span of
// frames, saved as a Chrome trace (chrome://tracing, Perfetto), and what the trace shows per frame:
// kernels, copies, CUDA runtime calls, host synchronisations and operators. Nsight Systems does
// not run on the lent GPU machine; this does, on any build.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

namespace streamrecon::app {

// The name of the user scope that `bench stream` puts around its own wait for each frame's
// results: synchronisations inside it are the benchmark's, not the model's.
extern const char* const kHarnessWaitScope;

// Per frame, over the profiled frames.
struct TraceSummary {
  int64_t frames = 0;
  double kernels = 0;          // GPU kernels
  double copies = 0;           // GPU memory copies and sets
  double runtime_calls = 0;    // CUDA runtime and driver calls on the host (launches, copies, syncs, ...)
  double syncs = 0;            // host synchronisations of the step: cudaStreamSynchronize, cudaDeviceSynchronize,
                               // cudaEventSynchronize, cudaStreamQuery-free blocking copies (cudaMemcpy, cudaMemset)
  double harness_syncs = 0;    // the same inside kHarnessWaitScope (the benchmark waiting for the frame)
  double cpu_ops = 0;          // LibTorch operators (top level and nested)
  double kernel_ms = 0;        // GPU kernel time
  double wall_ms = 0;          // host wall time
  nlohmann::json ToJson() const;
};

// Counts the events of a Chrome trace as LibTorch's profiler writes it ({"traceEvents": [...]},
// categories "kernel", "gpu_memcpy", "gpu_memset", "cuda_runtime", "cuda_driver", "cpu_op",
// "user_annotation"), divided by `frames`. Throws Error when it is not such a trace.
TraceSummary SummariseTrace(const nlohmann::json& trace, int64_t frames, double wall_ms);

// One profiling session of the current thread's LibTorch work (CPU operators; CUDA activity too
// when `cuda`). Not reentrant: one at a time per process.
class StepProfiler {
 public:
  explicit StepProfiler(bool cuda);
  ~StepProfiler();  // a session still running is stopped and discarded
  StepProfiler(const StepProfiler&) = delete;
  StepProfiler& operator=(const StepProfiler&) = delete;

  void Start();
  // Stops, writes the Chrome trace to `trace` (atomically: a failure leaves no half file) and
  // summarises it over `frames` frames that took `wall_ms` in all.
  TraceSummary Stop(const std::filesystem::path& trace, int64_t frames, double wall_ms);

 private:
  bool cuda_ = false;
  bool running_ = false;
};

}  // namespace streamrecon::app
