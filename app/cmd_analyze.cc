// `streamrecon analyze`: per global layer, how unequal the cached key and value token norms are
// (OScaR's Token Norm Imbalance) and how strong channel outliers are, before and after the
// Hadamard rotation; measured on the user's model and frames with the full cache.
#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <cstdio>

#include <nlohmann/json.hpp>

#include "app/commands.h"
#include "app/common_options.h"
#include "core/atomic_file.h"
#include "core/kv/paged_kv.h"
#include "models/streaming_model.h"

namespace streamrecon::app {
namespace {

struct AnalyzeArgs {
  ModelArgs model;
  InputArgs input;
  std::string json;
};

double Median(const at::Tensor& t) { return t.to(at::kDouble).median().item<double>(); }

// Token norms over all heads and channels: x [H, T, D] -> [T].
at::Tensor TokenNorms(const at::Tensor& x) { return x.to(at::kDouble).pow(2).sum(at::IntArrayRef{0, 2}).sqrt(); }

// Per channel (head, dim): max |x| over tokens; returns max over channels / median over channels.
double ChannelOutlierRatio(const at::Tensor& x) {
  const at::Tensor amax = x.to(at::kDouble).abs().amax(1).reshape({-1});
  return amax.max().item<double>() / std::max(1e-30, Median(amax));
}

nlohmann::json NormStats(const at::Tensor& norms, int64_t first_tokens) {
  const double med = Median(norms);
  const at::Tensor first = norms.narrow(0, 0, first_tokens);
  const at::Tensor rest = norms.narrow(0, first_tokens, norms.size(0) - first_tokens);
  return {{"min", norms.min().item<double>()},
          {"median", med},
          {"max", norms.max().item<double>()},
          {"max_over_median", norms.max().item<double>() / std::max(1e-30, med)},
          {"first_frame_median", Median(first)},
          {"rest_median", rest.numel() ? Median(rest) : 0.0}};
}

int RunAnalyze(const AnalyzeArgs& args) {
  const OpenedModel opened = OpenModel(args.model, nullptr);
  const models::LoadedModel& loaded = opened.loaded;
  models::StreamingModel& model = *opened.model;
  const LoadedFrames frames = LoadFrames(args.input, loaded.config.patch_size, loaded.config.img_size);
  for (size_t i = 0; i < frames.tensors.size(); ++i) {
    model.Step(frames.tensors[i]);
    spdlog::info("frame {}/{}", i + 1, frames.tensors.size());
  }
  const int64_t n = model.CachedTokens(0) / static_cast<int64_t>(frames.tensors.size());
  const at::Tensor had = HadamardMatrix(loaded.config.head_dim(), at::kDouble);
  nlohmann::json layers = nlohmann::json::array();
  std::printf("\n%-5s | %-34s | %-34s | %-26s | %-12s\n", "layer", "key token norm min/med/max (max/med)",
              "value token norm min/med/max (max/med)", "first-frame/rest median K, V", "K, K-rot, V channel max/med");
  for (int l = 0; l < loaded.config.depth; ++l) {
    auto [k, v] = model.CachedKv(l);
    const nlohmann::json ks = NormStats(TokenNorms(k), n), vs = NormStats(TokenNorms(v), n);
    const double k_ch = ChannelOutlierRatio(k), k_rot_ch = ChannelOutlierRatio(at::matmul(k.to(at::kDouble), had)),
                 v_ch = ChannelOutlierRatio(v);
    layers.push_back({{"layer", l}, {"key_norms", ks}, {"value_norms", vs}, {"key_channel_max_over_median", k_ch},
                      {"rotated_key_channel_max_over_median", k_rot_ch}, {"value_channel_max_over_median", v_ch}});
    auto g = [](const nlohmann::json& j, const char* key) { return j[key].get<double>(); };
    std::printf("%-5d | %7.3f %7.3f %7.3f (%6.2f)     | %7.3f %7.3f %7.3f (%6.2f)     | %6.2f, %6.2f              | %5.2f, %5.2f, %5.2f\n", l,
                g(ks, "min"), g(ks, "median"), g(ks, "max"), g(ks, "max_over_median"), g(vs, "min"), g(vs, "median"), g(vs, "max"),
                g(vs, "max_over_median"), g(ks, "first_frame_median") / std::max(1e-30, g(ks, "rest_median")),
                g(vs, "first_frame_median") / std::max(1e-30, g(vs, "rest_median")), k_ch, k_rot_ch, v_ch);
  }
  if (!args.json.empty())
    WriteTextAtomically(args.json, nlohmann::json{{"input", frames.description}, {"frames", frames.tensors.size()},
                                                  {"tokens_per_frame", n}, {"layers", layers}}.dump(2) + "\n");
  return 0;
}

}  // namespace

Runner AddAnalyzeCommand(CLI::App& parent) {
  auto args = std::make_shared<AnalyzeArgs>();
  CLI::App* cmd = parent.add_subcommand("analyze", "Per-layer key/value token-norm spread and channel outliers of the KV cache");
  args->model.Add(*cmd);
  args->input.Add(*cmd);
  cmd->add_option("--json", args->json, "Write the statistics as JSON");
  return [cmd, args]() { return cmd->parsed() ? RunAnalyze(*args) : -1; };
}

}  // namespace streamrecon::app
