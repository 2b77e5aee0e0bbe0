// Capacities, growth, frame bytes and the budget planner of the KV caches.
#include "core/kv/budget.h"

#include <algorithm>

#include "core/byte_size.h"
#include "core/errors.h"

namespace streamrecon {

LayerBudget::LayerBudget(const LayerCapacity& capacity, int64_t protected_tokens, int64_t protected_bytes) {
  if (capacity.tokens >= 0) tokens_left = std::max<int64_t>(0, capacity.tokens - protected_tokens);
  if (capacity.bytes >= 0) bytes_left = std::max<int64_t>(0, capacity.bytes - protected_bytes);
}

bool LayerBudget::Fits(int64_t tokens, int64_t bytes) const {
  return (tokens_left < 0 || tokens <= tokens_left) && (bytes_left < 0 || bytes <= bytes_left);
}

int64_t LayerBudget::TokensLeft(int64_t token_bytes) const {
  if (bytes_left < 0) return tokens_left;
  const int64_t by_bytes = bytes_left / token_bytes;
  return tokens_left < 0 ? by_bytes : std::min(tokens_left, by_bytes);
}

int64_t TileAlignedLeft(int64_t left, int64_t protected_tokens) {
  const int64_t over = left > 0 ? (protected_tokens + left) % kAttentionRowTile : 0;
  return over < left ? left - over : left;  // (never the whole middle for a tile)
}

int64_t GrowTo(int64_t have, int64_t needed, int64_t capacity_units) {
  if (needed <= have) return have;
  int64_t grow = std::max(needed, have * 2);
  if (capacity_units >= 0) grow = std::min(grow, std::max(needed, capacity_units));
  return grow;
}

int64_t FrameBytes(const KvCacheOptions& options, int heads, int head_dim, int64_t n, int dense_elem_bytes, bool first_frame) {
  if (options.format == CacheFormat::kDense) return n * 2 * heads * head_dim * dense_elem_bytes;
  if (options.format == CacheFormat::kBf16 || (first_frame && options.first_frame_bf16)) return n * 2 * heads * head_dim * 2;
  return CeilDiv(n, options.k_group) * PageLayoutFor(options, heads, head_dim).page_bytes();
}

PageLayout PageLayoutFor(const KvCacheOptions& options, int heads, int head_dim) {
  return PageLayout{heads, head_dim, options.k_group, FormatBits(options.format), options.v_group, IsOscar(options.format)};
}

CacheFormat TrunkFormat(CacheFormat global_format) {
  return global_format == CacheFormat::kDense ? CacheFormat::kDense : CacheFormat::kBf16;
}

BudgetPlan PlanBudget(const KvCacheOptions& options, const CacheGeometry& g, int64_t n) {
  BudgetPlan plan;
  const int trunk_elem = TrunkFormat(options.format) == CacheFormat::kDense ? g.dense_elem_bytes : 2;
  const int64_t trunk_token_bytes = 2LL * g.trunk_width * trunk_elem;
  const int64_t first = FrameBytes(options, g.heads, g.head_dim, n, g.dense_elem_bytes, true);
  const int64_t frame = FrameBytes(options, g.heads, g.head_dim, n, g.dense_elem_bytes, false);
  // Peak with F frames held: L * (first + (F - 1) * frame) + T * (tokens_per_frame * F) * trunk_token_bytes.
  const int64_t per_frame = g.global_layers * frame + static_cast<int64_t>(g.trunk_layers) * g.trunk_tokens_per_frame * trunk_token_bytes;
  const int64_t fixed = g.global_layers * (first - frame);
  auto peak = [&](int64_t frames) { return static_cast<uint64_t>(fixed + frames * per_frame); };
  plan.minimum_bytes = peak(2);
  if (options.cache_tokens > 0) {
    if (options.cache_tokens < 2 * n)
      throw BudgetError("cache_tokens " + std::to_string(options.cache_tokens) +
                        " cannot hold the first and the current frame: the minimum at this frame size (" + std::to_string(n) +
                        " tokens per frame) is " + std::to_string(2 * n) + " tokens");
    plan.global.tokens = options.cache_tokens;
    plan.trunk.tokens = options.cache_tokens;
  }
  if (options.budget_bytes == 0) {
    plan.frames = options.cache_tokens > 0 ? options.cache_tokens / n : -1;
    return plan;
  }
  if (options.budget_bytes < plan.minimum_bytes)
    throw BudgetError("budget_bytes " + FormatBytes(options.budget_bytes) + " cannot hold the first and the current frame: "
                      "the minimum for this model, frame size (" + std::to_string(n) + " tokens) and format (" +
                      ToString(options.format) + ") is " + FormatBytes(plan.minimum_bytes) + " (" +
                      std::to_string(plan.minimum_bytes) + " bytes)");
  plan.frames = static_cast<int64_t>((options.budget_bytes - fixed) / per_frame);
  plan.global.bytes = first + (plan.frames - 1) * frame;
  const int64_t trunk_tokens = g.trunk_tokens_per_frame * plan.frames;
  plan.trunk.tokens = plan.trunk.tokens < 0 ? trunk_tokens : std::min(plan.trunk.tokens, trunk_tokens);
  plan.peak_bytes = peak(plan.frames);
  return plan;
}

int64_t ChooseCertainRows(int64_t current, int64_t floor, int64_t previous, int64_t bucket, int64_t margin, int64_t keep_slack) {
  const int64_t certain = current + floor - 1;
  if (previous > 0 && previous <= certain - keep_slack && certain - previous < 2 * bucket) return previous;
  return std::max<int64_t>(0, (certain - margin) / bucket * bucket);
}

double EffectiveBits(int64_t bytes, int64_t tokens, int heads, int head_dim) {
  if (tokens <= 0) return 0.0;
  return 8.0 * static_cast<double>(bytes) / (2.0 * static_cast<double>(tokens) * heads * head_dim);
}

}  // namespace streamrecon
