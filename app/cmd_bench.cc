// `streamrecon bench fidelity`: the same frames through the full cache and through each cache
// configuration (policy x format x budget); per configuration the bytes held, tokens kept,
// effective bits, output error against the full cache, and quantization error per layer.
#include <ATen/ATen.h>
#include <ATen/record_function.h>
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <cstdio>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "app/commands.h"
#include "app/common_options.h"
#include "app/plot_stream_gp.h"
#include "app/profile_trace.h"
#include "core/atomic_file.h"
#include "core/byte_size.h"
#include "core/errors.h"
#include "models/streaming_model.h"

#ifdef STREAMRECON_HAVE_CUDA_KV
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace streamrecon::app {
namespace {

std::vector<std::string> SplitList(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

struct FidelityArgs {
  ModelArgs model;
  InputArgs input;
  std::string formats = "bf16,kivi4,kivi2,oscar4,oscar2";
  std::string policies = "xstream,xstream-page";
  std::vector<std::string> budgets;  // each a byte size
  CacheArgs cache;                   // everything but the swept policy, format and budget
  std::string json, markdown;
};

double RelL2(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor x = a.to(at::kDouble), y = b.to(at::kDouble);
  return ((x - y).norm() / y.norm().clamp_min(1e-30)).item<double>();
}

struct ErrorSeries {
  std::vector<double> values;
  double mean() const { return values.empty() ? 0 : std::accumulate(values.begin(), values.end(), 0.0) / values.size(); }
  double worst() const { return values.empty() ? 0 : *std::max_element(values.begin(), values.end()); }
  nlohmann::json ToJson() const { return {{"mean", mean()}, {"worst", worst()}, {"per_frame", values}}; }
};

int RunFidelity(const FidelityArgs& args) {
  // Every policy, format and budget is checked before the full-cache pass (which can take long).
  for (const auto& policy : SplitList(args.policies)) ParsePrunePolicy(policy);
  for (const auto& format : SplitList(args.formats)) ParseCacheFormat(format);
  for (const auto& budget : args.budgets) ParseByteSize(budget);
  models::LoadedModel loaded = LoadWeights(args.model);
  const LoadedFrames frames = LoadFrames(args.input, loaded.config.patch_size, loaded.config.img_size);
  spdlog::info("{} frames from {}", frames.tensors.size(), frames.description);

  auto run_stream = [&](const KvCacheOptions& cache, std::vector<models::StepOutput>* outputs, models::CacheReport* report) {
    models::ModelOptions options = args.model.ToOptions();
    options.cache = cache;
    models::StreamingModel model(loaded.config, loaded.weights, options);
    const auto t0 = std::chrono::steady_clock::now();
    for (const auto& t : frames.tensors) outputs->push_back(model.Step(t));
    *report = model.Cache();
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / frames.tensors.size();
  };

  std::vector<models::StepOutput> full;
  models::CacheReport full_report;
  const double full_ms = run_stream(KvCacheOptions{}, &full, &full_report);
  spdlog::info("full cache: {} held after {} frames, {:.0f} ms/frame", FormatBytes(full_report.max_bytes), full.size(), full_ms);

  nlohmann::json results = nlohmann::json::array();
  std::ostringstream table;
  table << "| policy | format | budget | max bytes held | tokens/layer (end) | bits/value | depth rel-L2 mean / worst | "
           "points rel-L2 mean / worst | pose rel-L2 mean / worst | K rel-MSE | V rel-MSE | ms/frame |\n"
        << "|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  table << "| none | fp32 | - | " << FormatBytes(full_report.max_bytes) << " | " << full_report.tokens_per_layer.front()
        << " | " << std::fixed << std::setprecision(1) << full_report.effective_bits << " | 0 | 0 | 0 | 0 | 0 | " << full_ms << " |\n";
  std::vector<std::string> budgets = args.budgets.empty() ? std::vector<std::string>{""} : args.budgets;
  for (const auto& budget : budgets)
    for (const auto& policy : SplitList(args.policies))
      for (const auto& format : SplitList(args.formats)) {
        KvCacheOptions cache = args.cache.ForConfiguration(policy, format, budget);
        cache.quant_stats = true;  // the K/V error columns
        cache.Check(loaded.config.head_dim());
        std::vector<models::StepOutput> outs;
        models::CacheReport report;
        double ms = 0;
        try {
          ms = run_stream(cache, &outs, &report);
        } catch (const BudgetError& e) {
          spdlog::warn("{} {} {}: {}", policy, format, budget, e.what());
          results.push_back({{"policy", policy}, {"format", format}, {"budget_bytes", cache.budget_bytes}, {"error", e.what()}});
          table << "| " << policy << " | " << format << " | " << FormatBytes(cache.budget_bytes)
                << " | does not fit the first + current frame | | | | | | | | |\n";
          continue;
        }
        ErrorSeries depth, points, pose;
        for (size_t i = 0; i < outs.size(); ++i) {
          depth.values.push_back(RelL2(outs[i].depth, full[i].depth));
          points.values.push_back(RelL2(outs[i].world_points, full[i].world_points));
          pose.values.push_back(RelL2(outs[i].pose_enc, full[i].pose_enc));
        }
        double k_num = 0, k_den = 0, v_num = 0, v_den = 0;
        nlohmann::json layers = nlohmann::json::array();
        for (const auto& s : report.layer_stats) {
          k_num += s.k_sse, k_den += s.k_energy, v_num += s.v_sse, v_den += s.v_energy;
          layers.push_back({{"k_rel_mse", s.k_energy > 0 ? s.k_sse / s.k_energy : 0.0},
                            {"v_rel_mse", s.v_energy > 0 ? s.v_sse / s.v_energy : 0.0},
                            {"k_mse", s.values ? s.k_sse / s.values : 0.0},
                            {"v_mse", s.values ? s.v_sse / s.values : 0.0}});
        }
        const double k_rel = k_den > 0 ? k_num / k_den : 0, v_rel = v_den > 0 ? v_num / v_den : 0;
        int64_t tokens = 0;
        for (auto t : report.tokens_per_layer) tokens += t;
        tokens /= static_cast<int64_t>(report.tokens_per_layer.size());
        results.push_back({{"policy", policy}, {"format", format}, {"budget_bytes", cache.budget_bytes},
                           {"max_bytes_held", report.max_bytes}, {"tokens_per_layer_end", report.tokens_per_layer},
                           {"planned_frames", report.plan.frames}, {"effective_bits", report.effective_bits},
                           {"depth_rel_l2", depth.ToJson()}, {"world_points_rel_l2", points.ToJson()}, {"pose_rel_l2", pose.ToJson()},
                           {"k_rel_mse", k_rel}, {"v_rel_mse", v_rel}, {"layers", layers}, {"ms_per_frame", ms}});
        char row[512];
        std::snprintf(row, sizeof(row), "| %s | %s | %s | %s | %lld | %.2f | %.2e / %.2e | %.2e / %.2e | %.2e / %.2e | %.2e | %.2e | %.0f |\n",
                      policy.c_str(), format.c_str(), budget.empty() ? "-" : FormatBytes(cache.budget_bytes).c_str(),
                      FormatBytes(report.max_bytes).c_str(), static_cast<long long>(tokens), report.effective_bits, depth.mean(),
                      depth.worst(), points.mean(), points.worst(), pose.mean(), pose.worst(), k_rel, v_rel, ms);
        table << row;
        spdlog::info("{} {} {}: depth {:.2e}, points {:.2e}, pose {:.2e}, {} held", policy, format,
                     budget.empty() ? "(no budget)" : budget, depth.mean(), points.mean(), pose.mean(), FormatBytes(report.max_bytes));
      }
  std::printf("\n%s", table.str().c_str());
  const nlohmann::json doc = {{"input", frames.description}, {"frames", frames.tensors.size()},
                              {"config", loaded.config.ToJson()}, {"full_cache_bytes", full_report.max_bytes},
                              {"full_ms_per_frame", full_ms}, {"configurations", results}};
  if (!args.json.empty()) WriteTextAtomically(args.json, doc.dump(2) + "\n");
  if (!args.markdown.empty()) WriteTextAtomically(args.markdown, table.str());
  return 0;
}


// ---- bench stream ---------------------------------------------------------------------------

struct StreamRun;

// ms/frame and memory against the frame index, one line per configuration (gnuplot, if installed).
void PlotStream(const std::filesystem::path& out, const std::vector<struct StreamRun>& runs);

struct StreamRun {
  std::string policy = "none", format = "fp32", budget;  // budget empty = none
  std::string Label() const { return policy + "_" + format + (budget.empty() ? "" : "_" + budget); }
};

struct StreamArgs {
  ModelArgs model;
  InputArgs input;
  int64_t frames = 500;            // frames streamed per configuration
  int distinct_frames = 32;        // distinct frames cycled through (synthetic or from --input)
  std::vector<std::string> runs;   // "policy,format[,budget]"
  std::string policy, format, budget;  // one configuration given as --policy/--format/--kv-budget
  CacheArgs cache;                     // everything but the configurations' policy, format and budget
  int warmup = 0;                  // frames before the stream (not recorded; the caches are reset after)
  bool stage_timing = true;
  // Without stage timing: frame i + 1 is queued before the benchmark waits for frame i's results,
  // so the host's work on a frame overlaps the device's on the one before (a frame's time is then
  // the interval between two frames' results: the stream's throughput).
  bool pipeline = true;
  std::string memory_limit;        // stop when device memory (or RSS) passes this
  std::string out = "bench_out";
  std::string profile;             // Chrome trace of the last profile_frames frames (per configuration)
  int profile_frames = 20;
};

// The trace file of one configuration: `profile` itself with one configuration, else
// <stem>_<configuration><extension>.
std::filesystem::path TracePath(const std::string& profile, const std::string& label, size_t configurations) {
  const std::filesystem::path p(profile);
  if (configurations == 1) return p;
  return p.parent_path() / (p.stem().string() + "_" + label + (p.has_extension() ? p.extension().string() : ".json"));
}

// Process resident memory in bytes (CPU runs).
int64_t ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t pages_total = 0, resident = 0;
  statm >> pages_total >> resident;
  return resident * static_cast<int64_t>(sysconf(_SC_PAGESIZE));
}

struct MemorySample {
  int64_t current = 0, peak = 0;
};

MemorySample DeviceMemory(const std::string& device) {
#ifdef STREAMRECON_HAVE_CUDA_KV
  if (device != "cpu") {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(c10::cuda::current_device());
    return {stats.allocated_bytes[0].current, stats.allocated_bytes[0].peak};
  }
#endif
  const int64_t rss = ResidentBytes();
  return {rss, rss};
}

// Starts the device's peak-memory statistic afresh (per configuration).
void ResetPeakMemory(const std::string& device) {
#ifdef STREAMRECON_HAVE_CUDA_KV
  if (device != "cpu") {
    c10::cuda::CUDACachingAllocator::emptyCache();
    c10::cuda::CUDACachingAllocator::resetPeakStats(c10::cuda::current_device());
  }
#endif
}

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * (v.size() - 1) + 0.5))];
}

int RunStream(const StreamArgs& args) {
  const uint64_t memory_limit = args.memory_limit.empty() ? 0 : ParseByteSize(args.memory_limit);
  models::LoadedModel loaded = LoadWeights(args.model);
  InputArgs input = args.input;
  if (input.input.empty() && input.synthetic_frames <= 0) input.synthetic_frames = args.distinct_frames;
  if (input.max_frames < 0) input.max_frames = args.distinct_frames;
  LoadedFrames frames = LoadFrames(input, loaded.config.patch_size, loaded.config.img_size);
  spdlog::info("{} distinct frames ({}x{}) from {}, cycled over {} frames", frames.tensors.size(), frames.images[0].width,
               frames.images[0].height, frames.description, args.frames);
  const auto device = at::Device(args.model.Device());
  for (auto& t : frames.tensors) t = t.to(device);

  std::vector<StreamRun> runs;
  std::vector<std::string> specs = args.runs;
  if (!args.policy.empty() || !args.format.empty() || !args.budget.empty())
    specs.push_back((args.policy.empty() ? "none" : args.policy) + "," + (args.format.empty() ? "fp32" : args.format) +
                    (args.budget.empty() ? "" : "," + args.budget));
  for (const auto& r : specs.empty() ? std::vector<std::string>{"none,fp32"} : specs) {
    const auto parts = SplitList(r);
    if (parts.size() < 2 || parts.size() > 3) throw OptionError("--run expects POLICY,FORMAT[,BUDGET], got '" + r + "'");
    runs.push_back({parts[0], parts[1], parts.size() == 3 ? parts[2] : ""});
  }
  std::filesystem::create_directories(args.out);
  if (!args.profile.empty() && args.stage_timing)
    spdlog::warn("--profile with stage timing: its synchronisations after each stage show in the trace (add --no-stage-timing "
                 "for the step's own)");
  std::ostringstream profile_md;
  std::ostringstream md;
  md << "| configuration | frames | first ms | mean ms | median | p95 | p99 | FPS | ms @1/10/100/1000 | stage ms (embed / blocks / kv attention / of which cache / camera / dpt) | cache max | tokens/layer | peak memory | stopped |\n"
     << "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  nlohmann::json summary = nlohmann::json::array();
  for (const auto& run : runs) {
    const KvCacheOptions cache = args.cache.ForConfiguration(run.policy, run.format, run.budget);
    models::ModelOptions options = args.model.ToOptions();
    options.cache = cache;
    options.stage_timing = args.stage_timing;
    models::StreamingModel model(loaded.config, loaded.weights, options);
    for (int i = 0; i < args.warmup; ++i) model.Step(frames.tensors[i % frames.tensors.size()]);
    model.Reset();
    ResetPeakMemory(args.model.Device());

    const std::string csv_path = (std::filesystem::path(args.out) / (run.Label() + ".csv")).string();
    std::ostringstream csv;
    csv << "frame,ms,patch_embed_ms,blocks_ms,kv_attention_ms,cache_maintenance_ms,camera_head_ms,dpt_heads_ms,cache_bytes,"
           "tokens_layer0,memory_bytes,memory_peak_bytes,step_graph\n";
    std::vector<double> ms;
    models::StageTimings stage_sum;
    std::string stopped;
    MemorySample mem_peak;
    // The profiled span: the last profile_frames frames (the steady state), at least one frame in.
    std::optional<StepProfiler> profiler;
    const int64_t profile_from =
        args.profile.empty() ? args.frames : std::max<int64_t>(std::min<int64_t>(1, args.frames - 1), args.frames - args.profile_frames);
    int64_t profiled = 0;
    double profiled_ms = 0;
    // Frames whose whole step was a CUDA graph (`step_graph` in the CSV: 1 replayed, 2 captured on
    // that frame, 0 otherwise), and of them the captures (the first steady frame, then recaptures).
    int64_t step_graph_frames = 0, step_graph_captures = 0;
    int step_graph = 0;
    const bool pipelined = args.pipeline && !args.stage_timing;
    // A frame on its way: its pose copied to the host (StartPoseCopy) and the end of its work on the
    // model's stream (the DPT heads).
    struct Queued {
      models::PoseCopy pose;
      std::shared_ptr<c10::Event> done;
      void Wait() const {
        if (done) done->synchronize();
        if (pose.ready) pose.ready->synchronize();
      }
    };
    std::optional<Queued> in_flight;  // pipelined: the frame queued before this one
    auto last_done = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < args.frames; ++i) {
      if (i == profile_from) {
        profiler.emplace(device.is_cuda());
        profiler->Start();
      }
      const auto t0 = std::chrono::steady_clock::now();
      try {
        // (pipelined: the camera head may run on beside the next frame's aggregator)
        const models::StepOutput out = model.Step(frames.tensors[i % frames.tensors.size()], /*defer_pose=*/pipelined);
        step_graph = out.step_graph_captured ? 2 : out.step_graph ? 1 : 0;
        Queued queued{models::StartPoseCopy(out), models::RecordOnCurrentStream(out.depth.device())};
        RECORD_USER_SCOPE(kHarnessWaitScope);
        // Waits for a frame's work on the device: this one, or (pipelined) the one queued before it,
        // and this one's only at the end of the stream.
        if (!pipelined || !in_flight) {
          queued.Wait();
        } else {
          in_flight->Wait();
          if (i + 1 == args.frames) queued.Wait();
        }
        if (pipelined) in_flight = std::move(queued);
      } catch (const c10::OutOfMemoryError& e) {
        const MemorySample m = DeviceMemory(args.model.Device());
        stopped = "out of device memory at frame " + std::to_string(i + 1) + " (" + FormatBytes(m.current) + " allocated, peak " +
                  FormatBytes(m.peak) + ")";
        spdlog::warn("{}: {}; keeping the {} frames measured", run.Label(), stopped, ms.size());
        break;
      }
      // Pipelined, from one frame's results to the next's (the first frame: from its start).
      const auto done = std::chrono::steady_clock::now();
      ms.push_back(std::chrono::duration<double, std::milli>(done - (pipelined && i > 0 ? last_done : t0)).count());
      last_done = done;
      step_graph_frames += step_graph > 0;  // (counted with the frame's time: a frame that threw is in neither)
      step_graph_captures += step_graph == 2;
      if (profiler) {
        ++profiled;
        profiled_ms += ms.back();
      }
      const models::StageTimings& st = model.LastTimings();
      stage_sum.patch_embed += st.patch_embed, stage_sum.blocks += st.blocks, stage_sum.kv_attention += st.kv_attention;
      stage_sum.cache_maintenance += st.cache_maintenance, stage_sum.camera_head += st.camera_head, stage_sum.dpt_heads += st.dpt_heads;
      const MemorySample m = DeviceMemory(args.model.Device());
      // (pipelined, the frame just waited for is the one before the last step, except at the first
      // and the last frame: its tokens have reached the host, the last step's may not have)
      const bool waited_for_last = !pipelined || i == 0 || i + 1 == args.frames;
      const int64_t layer0_tokens = waited_for_last ? model.CachedTokens(0) : model.CacheBeforeLastStep().tokens_per_layer.at(0);
      mem_peak.current = std::max(mem_peak.current, m.current);
      mem_peak.peak = std::max(mem_peak.peak, m.peak);
      csv << i + 1 << ',' << ms.back() << ',' << st.patch_embed << ',' << st.blocks << ',' << st.kv_attention << ','
          << st.cache_maintenance << ',' << st.camera_head << ',' << st.dpt_heads << ',' << model.CacheBytes() << ','
          << layer0_tokens << ',' << m.current << ',' << m.peak << ',' << step_graph << '\n';
      if ((i + 1) % 100 == 0 || i + 1 == args.frames)
        spdlog::info("{}: frame {}/{}, {:.1f} ms, cache {}, memory {}", run.Label(), i + 1, args.frames, ms.back(),
                     FormatBytes(model.CacheBytes()), FormatBytes(m.current));
      if (memory_limit > 0 && static_cast<uint64_t>(m.current) > memory_limit) {
        stopped = "memory limit " + FormatBytes(memory_limit) + " passed at frame " + std::to_string(i + 1) + " (" +
                  FormatBytes(m.current) + ")";
        spdlog::warn("{}: {}; keeping the {} frames measured", run.Label(), stopped, ms.size());
        break;
      }
    }
    WriteTextAtomically(csv_path, csv.str());
    nlohmann::json profile_json;
    if (profiler) {
      const std::filesystem::path trace = TracePath(args.profile, run.Label(), runs.size());
      if (profiled > 0) {
        const TraceSummary t = profiler->Stop(trace, profiled, profiled_ms);
        profile_json = t.ToJson();
        profile_json["trace"] = trace.string();
        char line[512];
        std::snprintf(line, sizeof(line), "| %s | %lld | %.1f | %.1f | %.1f | %.2f | %.2f | %.1f | %.2f | %.2f |\n", run.Label().c_str(),
                      static_cast<long long>(t.frames), t.kernels, t.copies, t.runtime_calls, t.syncs, t.harness_syncs, t.cpu_ops,
                      t.kernel_ms, t.wall_ms);
        profile_md << line;
        spdlog::info("{}: trace of the last {} frames in {}: {:.0f} kernels, {:.2f} syncs (+{:.2f} by the benchmark), {:.0f} operators per frame",
                     run.Label(), profiled, trace.string(), t.kernels, t.syncs, t.harness_syncs, t.cpu_ops);
      }
      profiler.reset();  // (a session that saw no frame is discarded)
    }
    if (ms.empty()) {
      md << "| " << run.Label() << " | 0 | | | | | | | | | | | | " << stopped << " |\n";
      continue;
    }
    const size_t n = ms.size();
    const std::vector<double> steady(ms.begin() + 1, ms.end());
    const double mean = steady.empty() ? ms[0] : std::accumulate(steady.begin(), steady.end(), 0.0) / steady.size();
    auto at_frame = [&](size_t f) { return f <= n ? ms[f - 1] : NAN; };
    const models::CacheReport report = model.Cache();
    const double d = static_cast<double>(n);
    auto ms_or_dash = [](double v) {
      char b[32];
      std::snprintf(b, sizeof(b), "%.1f", v);
      return std::isnan(v) ? std::string("-") : std::string(b);
    };
    std::string stages = "-";  // (not measured with --no-stage-timing)
    if (args.stage_timing) {
      stages.clear();
      for (double v : {stage_sum.patch_embed, stage_sum.blocks, stage_sum.kv_attention, stage_sum.cache_maintenance,
                       stage_sum.camera_head, stage_sum.dpt_heads})
        stages += (stages.empty() ? "" : " / ") + ms_or_dash(v / d);
    }
    char row[1024];
    std::snprintf(row, sizeof(row), "| %s | %zu | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %s / %s / %s / %s | %s | %s | %lld | %s | %s |\n",
                  run.Label().c_str(), n, ms[0], mean, Percentile(steady, 0.5), Percentile(steady, 0.95), Percentile(steady, 0.99),
                  1000.0 / mean, ms_or_dash(at_frame(1)).c_str(), ms_or_dash(at_frame(10)).c_str(), ms_or_dash(at_frame(100)).c_str(),
                  ms_or_dash(at_frame(1000)).c_str(), stages.c_str(), FormatBytes(report.max_bytes).c_str(),
                  static_cast<long long>(report.tokens_per_layer[0]), FormatBytes(mem_peak.peak).c_str(), stopped.empty() ? "-" : stopped.c_str());
    md << row;
    if (step_graph_frames > 0)
      spdlog::info("{}: the whole step ran as CUDA graphs on {} of {} frames, captured {} times", run.Label(), step_graph_frames, n,
                   step_graph_captures);
    summary.push_back({{"configuration", run.Label()}, {"frames", n}, {"pipelined", pipelined}, {"first_ms", ms[0]}, {"mean_ms", mean},
                       {"median_ms", Percentile(steady, 0.5)}, {"p95_ms", Percentile(steady, 0.95)}, {"p99_ms", Percentile(steady, 0.99)},
                       {"fps", 1000.0 / mean}, {"cache_max_bytes", report.max_bytes}, {"cache_budget_bytes", cache.budget_bytes},
                       {"tokens_layer0", report.tokens_per_layer[0]}, {"effective_bits", report.effective_bits},
                       {"memory_peak_bytes", mem_peak.peak}, {"stopped", stopped}, {"csv", csv_path},
                       {"step_graph_frames", step_graph_frames}, {"step_graph_captures", step_graph_captures},
                       {"stage_ms", {{"patch_embed", stage_sum.patch_embed / d}, {"blocks", stage_sum.blocks / d},
                                     {"kv_attention", stage_sum.kv_attention / d}, {"cache_maintenance", stage_sum.cache_maintenance / d},
                                     {"camera_head", stage_sum.camera_head / d}, {"dpt_heads", stage_sum.dpt_heads / d}}}});
    if (!profile_json.is_null()) summary.back()["profile"] = profile_json;
  }
  if (!args.profile.empty())
    md << "\nProfiled frames (LibTorch's profiler; per frame; syncs: host synchronisations of the step, and of the benchmark "
          "waiting for each frame's results):\n\n"
       << "| configuration | frames | kernels | copies | runtime calls | syncs (step) | syncs (benchmark) | operators | kernel ms | wall ms |\n"
       << "|---|---|---|---|---|---|---|---|---|---|\n"
       << profile_md.str();
  const std::filesystem::path out(args.out);
  WriteTextAtomically(out / "summary.md", md.str());
  WriteTextAtomically(out / "summary.json",
                      nlohmann::json{{"model", loaded.config.ToJson()}, {"device", args.model.Device()}, {"dtype", args.model.dtype},
                                     {"model_options", args.model.ToJson()}, {"kernel_options", args.cache.KernelJson()},
                                     {"frames", args.frames}, {"size", {frames.images[0].width, frames.images[0].height}},
                                     {"runs", summary}}.dump(2) + "\n");
  std::printf("\n%s", md.str().c_str());
  PlotStream(out, runs);
  return 0;
}

void PlotStream(const std::filesystem::path& out, const std::vector<StreamRun>& runs) {
  std::string files;
  for (size_t i = 0; i < runs.size(); ++i) files += (i ? " " : "") + runs[i].Label();
  WriteTextAtomically(out / "stream.gp", kPlotStreamGp);
  const std::string replot = "gnuplot -e \"files='" + files + "'\" stream.gp";
  if (std::system("command -v gnuplot > /dev/null 2>&1") != 0) {
    spdlog::warn("gnuplot not found: no plot; the CSVs in {} hold the series (to plot them there: {})", out.string(), replot);
    return;
  }
  const std::string cmd = "cd '" + out.string() + "' && " + replot + " 2>&1";
  if (std::system(cmd.c_str()) == 0) spdlog::info("plot: {}", (out / "stream.png").string());
  else spdlog::warn("gnuplot failed; the CSVs in {} hold the series (to plot them there: {})", out.string(), replot);
}

}  // namespace

Runner AddBenchCommand(CLI::App& parent) {
  CLI::App* bench = parent.add_subcommand("bench", "Benchmarks: fidelity of cache configurations, long-stream latency/memory");
  bench->require_subcommand(1);
  auto sargs = std::make_shared<StreamArgs>();
  CLI::App* st = bench->add_subcommand("stream", "Latency and memory over a long stream, per cache configuration");
  sargs->model.Add(*st);
  sargs->input.Add(*st);
  st->add_option("--frames", sargs->frames, "Frames per configuration")->check(kPositive)->capture_default_str();
  st->add_option("--distinct-frames", sargs->distinct_frames, "Distinct frames cycled through (synthetic unless --input)")
      ->check(kPositive)->capture_default_str();
  st->add_option("--run", sargs->runs, "A configuration POLICY,FORMAT[,BUDGET], e.g. xstream,oscar2,2GiB (repeatable)");
  st->add_option("--policy", sargs->policy, "With --format/--kv-budget: one configuration instead of --run");
  st->add_option("--format", sargs->format, "Cache format of that configuration");
  st->add_option("--kv-budget", sargs->budget, "Byte budget of that configuration");
  sargs->cache.Add(*st, /*with_axes=*/false);  // --cache-tokens, --pool, --k-group, ... as every command
  st->add_option("--warmup", sargs->warmup, "Warm-up frames before each configuration (not recorded)")->capture_default_str();
  st->add_flag("!--no-stage-timing", sargs->stage_timing, "Skip the per-stage breakdown (it synchronises the device per stage)");
  st->add_flag("!--no-pipeline", sargs->pipeline,
               "With --no-stage-timing: wait for each frame's results before queueing the next (by default frame i + 1 is queued "
               "first, so host and device work overlap, and a frame's time is the interval between two frames' results)");
  st->add_option("--memory-limit", sargs->memory_limit, "Stop a configuration when device memory (CPU: RSS) passes this");
  st->add_option("--out,-o", sargs->out, "Output folder: <configuration>.csv, summary.md, summary.json, stream.png")->capture_default_str();
  st->add_option("--profile", sargs->profile,
                 "Write a Chrome trace (LibTorch's profiler: operators, and on CUDA kernels, copies, runtime calls and synchronisations) "
                 "of the last --profile-frames frames to this file (FILE_<configuration>.json with several configurations); "
                 "summary.md/json then also give kernels, copies, runtime calls, syncs and operators per frame");
  st->add_option("--profile-frames", sargs->profile_frames, "Frames in the trace (the last ones of the stream)")
      ->check(kPositive)->capture_default_str();
  auto stream_runner = [st, sargs]() { return st->parsed() ? RunStream(*sargs) : -1; };
  auto args = std::make_shared<FidelityArgs>();
  CLI::App* fid = bench->add_subcommand("fidelity", "Output error of cache configurations against the full cache, at equal bytes");
  args->model.Add(*fid);
  args->input.Add(*fid);
  fid->add_option("--formats,--format", args->formats, "Comma-separated formats (" + CacheFormatNames() + ")")->capture_default_str();
  fid->add_option("--policies,--policy", args->policies, "Comma-separated policies (" + PrunePolicyNames() + ")")->capture_default_str();
  fid->add_option("--kv-budget", args->budgets, "Byte budget(s) of all caches; repeat for several");
  args->cache.Add(*fid, /*with_axes=*/false);
  fid->add_option("--json", args->json, "Write the results as JSON");
  fid->add_option("--md", args->markdown, "Write the table as Markdown");
  return [fid, args, stream_runner]() {
    if (fid->parsed()) return RunFidelity(*args);
    return stream_runner();
  };
}

}  // namespace streamrecon::app
