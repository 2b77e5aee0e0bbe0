// `streamrecon bench fidelity`: the same frames through the full cache and through each cache
// configuration (policy x format x budget); per configuration the bytes held, tokens kept,
// effective bits, output error against the full cache, and quantization error per layer.
#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <sstream>

#include <nlohmann/json.hpp>

#include "app/commands.h"
#include "app/common_options.h"
#include "core/atomic_file.h"
#include "core/byte_size.h"
#include "core/errors.h"
#include "models/streaming_model.h"

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
  int64_t cache_tokens = 0;
  int pool = 16, k_group = 32, v_group = 64;
  bool first_frame_bf16 = false;
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
  models::LoadedModel loaded = models::LoadModelWeights(args.model.weights, args.model.config, args.model.random_seed);
  for (const auto& note : loaded.notes) spdlog::info("{}", note);
  const LoadedFrames frames = LoadFrames(args.input, loaded.config.patch_size);
  spdlog::info("{} frames from {}", frames.tensors.size(), frames.description);

  auto run_stream = [&](const KvCacheOptions& cache, std::vector<models::StepOutput>* outputs, models::CacheReport* report) {
    models::ModelOptions options;
    options.dtype = args.model.dtype;
    options.device = args.model.device;
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
        KvCacheOptions cache;
        cache.policy = ParsePrunePolicy(policy);
        cache.format = ParseCacheFormat(format);
        cache.budget_bytes = budget.empty() ? 0 : ParseByteSize(budget);
        cache.cache_tokens = args.cache_tokens;
        cache.pool_size = args.pool;
        cache.k_group = args.k_group;
        cache.v_group = args.v_group;
        cache.first_frame_bf16 = args.first_frame_bf16;
        if (cache.policy == PrunePolicy::kNone) cache.budget_bytes = 0, cache.cache_tokens = 0;
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

}  // namespace

Runner AddBenchCommand(CLI::App& parent) {
  CLI::App* bench = parent.add_subcommand("bench", "Benchmarks: fidelity of cache configurations, long-stream latency/memory");
  bench->require_subcommand(1);
  auto args = std::make_shared<FidelityArgs>();
  CLI::App* fid = bench->add_subcommand("fidelity", "Output error of cache configurations against the full cache, at equal bytes");
  args->model.Add(*fid);
  args->input.Add(*fid);
  fid->add_option("--formats", args->formats, "Comma-separated formats (fp32, bf16, kivi4, kivi2, oscar4, oscar2)")->capture_default_str();
  fid->add_option("--policies", args->policies, "Comma-separated policies (xstream, xstream-page, window, random)")->capture_default_str();
  fid->add_option("--kv-budget", args->budgets, "Byte budget(s) of all caches; repeat for several");
  fid->add_option("--cache-tokens", args->cache_tokens, "Token capacity per layer instead of (or with) a budget");
  fid->add_option("--pool", args->pool, "XStreamVGGT query pool size")->capture_default_str();
  fid->add_option("--k-group", args->k_group, "Tokens per page")->capture_default_str();
  fid->add_option("--v-group", args->v_group, "Channels per V group")->capture_default_str();
  fid->add_flag("--first-frame-bf16", args->first_frame_bf16, "Quantized formats: keep the first frame in bf16");
  fid->add_option("--json", args->json, "Write the results as JSON");
  fid->add_option("--md", args->markdown, "Write the table as Markdown");
  return [fid, args]() { return fid->parsed() ? RunFidelity(*args) : -1; };
}

}  // namespace streamrecon::app
