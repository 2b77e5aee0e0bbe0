// Turns a byte budget into per-layer capacities: how many frames of tokens the global layers and
// the camera-head trunk can hold so that, at the peak (while the current frame is stored), the
// bytes of every cache together never exceed the budget.
#pragma once

#include <cstdint>
#include <string>

#include "core/kv_cache.h"

namespace streamrecon {

// The shapes that decide the bytes of the caches.
struct CacheGeometry {
  int global_layers = 0;          // aggregator global blocks
  int heads = 0;                  // global attention heads
  int head_dim = 0;               // global head dimension
  int trunk_layers = 0;           // camera-head trunk blocks
  int trunk_width = 0;            // channels of one trunk token (2 x embed dim)
  int trunk_tokens_per_frame = 0; // camera-head iterations (each appends one token)
  int dense_elem_bytes = 4;       // bytes per value of the model dtype
};

struct BudgetPlan {
  int64_t frames = 0;         // frames of tokens each global layer holds at the peak
  LayerCapacity global;       // per global layer
  LayerCapacity trunk;        // per trunk layer
  uint64_t peak_bytes = 0;    // all caches at the peak (<= budget)
  uint64_t minimum_bytes = 0; // the smallest budget that holds the first and the current frame
};

// Trunk caches store dense values: bf16 when the global format is not the model dtype.
CacheFormat TrunkFormat(CacheFormat global_format);

// options.budget_bytes > 0: the largest plan within it (BudgetError naming the minimum when even
// the first and the current frame do not fit). Otherwise the token capacity of options.cache_tokens
// (or unlimited). frame_tokens: tokens per frame (5 + patches).
BudgetPlan PlanBudget(const KvCacheOptions& options, const CacheGeometry& geometry, int64_t frame_tokens);

// Effective bits per stored K or V value: 8 * bytes / (2 * tokens * heads * head_dim).
double EffectiveBits(int64_t bytes, int64_t tokens, int heads, int head_dim);

}  // namespace streamrecon
