// Shared CLI options for the model and the KV cache.
#include "app/common_options.h"

namespace streamrecon::app {

void ModelArgs::Add(CLI::App& app) {
  app.add_option("--weights,-w", weights, "Weights file: .safetensors or .pth (flat or {\"model\": ...})");
  app.add_option("--config", config,
                 "Model config: streamvggt-1b, parity-tiny, demo-small or a JSON file (default: from the weights file)");
  app.add_flag_function(
      "--random-weights", [this](int64_t) { if (random_seed < 0) random_seed = 0; },
      "Use seeded random weights instead of a file (demos and benchmarks; not a real reconstruction)");
  app.add_option("--seed", random_seed, "Seed for --random-weights")->check(CLI::NonNegativeNumber);
  app.add_option("--dtype", dtype, "Compute precision")->check(CLI::IsMember({"float32", "float64"}));
  app.add_option("--device", device, "cpu or cuda[:N]");
}

void CacheArgs::Add(CLI::App& app) {
  app.add_option("--policy,--prune", policy, "KV-cache pruning policy: none, xstream, window")
      ->check(CLI::IsMember({"none", "xstream", "window"}));
  app.add_option("--cache-tokens", cache_tokens, "Token capacity of each global layer's cache")->check(CLI::NonNegativeNumber);
  app.add_option("--pool", pool, "XStreamVGGT query pool size")->check(CLI::PositiveNumber);
}

KvCacheOptions CacheArgs::ToOptions() const {
  KvCacheOptions o;
  o.policy = ParsePrunePolicy(policy);
  o.cache_tokens = cache_tokens;
  o.pool_size = pool;
  o.Check();
  return o;
}

}  // namespace streamrecon::app
