// Options shared by several subcommands: the model (weights / random weights / config, dtype,
// device) and the KV cache (policy, token capacity, pool size, budget).
#pragma once

#include <cstdint>
#include <string>

#include <CLI/CLI.hpp>

#include "models/streaming_model.h"

namespace streamrecon::app {

struct ModelArgs {
  std::string weights;           // weights file (.safetensors or .pth)
  std::string config;            // built-in config name or JSON file; empty = from the weights file
  int64_t random_seed = -1;      // >= 0: seeded random weights instead of a file
  std::string dtype = "float32"; // float32 | float64
  std::string device = "cpu";    // cpu | cuda[:N]

  void Add(CLI::App& app);
};

struct CacheArgs {
  std::string policy = "none";  // none | xstream | window
  int64_t cache_tokens = 0;     // per-layer token capacity
  int pool = 16;                // XStreamVGGT query pool size

  void Add(CLI::App& app);
  KvCacheOptions ToOptions() const;
};

}  // namespace streamrecon::app
