// Capacities and bytes of the KV caches: what room a layer has left for its middle tokens
// (LayerBudget), how its storage grows (GrowTo), the bytes of a frame in each format, and the
// planner that turns a byte budget into per-layer capacities: how many frames of tokens the
// global layers and the camera-head trunk can hold so that, at the peak (while the current frame
// is stored), the bytes of every cache together never exceed the budget. Torch-free.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

#include "core/kv/options.h"

namespace streamrecon {

// The room a layer's middle (everything but the first and the current frame) may keep when the
// current frame is stored: capacity minus the protected frames, never below 0 (a capacity smaller
// than the protected frames leaves 0, never "unlimited"); -1 = unlimited.
struct LayerBudget {
  int64_t tokens_left = -1;
  int64_t bytes_left = -1;

  // protected_tokens/bytes: the first and the current frame together.
  LayerBudget(const LayerCapacity& capacity, int64_t protected_tokens, int64_t protected_bytes);
  // Whether a middle of `tokens` tokens in `bytes` bytes fits.
  bool Fits(int64_t tokens, int64_t bytes) const;
  // One token allowance for caches whose tokens all cost `token_bytes` (the dense caches).
  int64_t TokensLeft(int64_t token_bytes) const;
};

// A dense cache under a byte budget whose frames fill at least a tile (the aggregator's global
// layers): the middle's allowance `left`, rounded down so that the rows an attention takes (the
// middle and `protected_tokens`: the first frame, the frame kept now and the next frame, which
// attends them) are whole tiles of kAttentionRowTile rows. On the H200 cuDNN's attention over
// 1024 queries takes 10-15% longer over a key length that is not a multiple of 128
// (probe_cudnn_heads.py, call 133: 186 us a layer over 17,697 rows against 164 over 17,664); the
// few tokens given up cost as much memory less. A middle smaller than the rows over a tile stays as
// it is; xstream-page then keeps whole pages of it, which may undo the rounding.
inline constexpr int64_t kAttentionRowTile = 128;
int64_t TileAlignedLeft(int64_t left, int64_t protected_tokens);

// The storage size (in units: rows or pages) for `needed` units when `have` are allocated:
// geometric growth (doubling) clamped to the capacity in units (< 0 = none), never below needed,
// so appends copy only the new frame and never allocate past what the layer may hold.
int64_t GrowTo(int64_t have, int64_t needed, int64_t capacity_units);

// Bytes one frame of n tokens occupies in a layer in this format (whole pages for quantized
// formats; dense_elem_bytes per value for fp32 / model dtype).
int64_t FrameBytes(const KvCacheOptions& options, int heads, int head_dim, int64_t n, int dense_elem_bytes, bool first_frame);

// The page layout of a quantized format for a layer of `heads` heads of `head_dim` channels.
PageLayout PageLayoutFor(const KvCacheOptions& options, int heads, int head_dim);

inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

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

// A lower bound of a paged cache's valid tokens while the exact count lags on the device (a GPU
// keeps whole pages there, and the counts reach the host by copies that land later): each change
// bounded from below (an appended frame adds its tokens, a dropped page takes at most a page's
// slots), raised by what each landed copy showed of an earlier frame. value() never exceeds the
// tokens held (tests/test_kv_cache.cc, TokenFloor.*).
class TokenFloor {
 public:
  // Where the bound stood when a copy of the counts was queued.
  struct Mark {
    int64_t base = 0, epoch = 0;
  };
  int64_t value() const { return base_ + gain_; }
  // The exact count (copies queued before are measured against another chain of bounds: ignored).
  void SetExact(int64_t tokens) {
    base_ = tokens;
    gain_ = 0;
    ++epoch_;
  }
  void Append(int64_t tokens) { base_ += tokens; }
  void DropPages(int64_t pages, int64_t slots) { base_ -= pages * slots; }
  // A change measured before (a CUDA graph's replay of a Forward whose change was `delta`).
  void Advance(int64_t delta) { base_ += delta; }
  int64_t base() const { return base_; }
  Mark mark() const { return {base_, epoch_}; }
  // A copy queued at `mark` landed, showing `exact` tokens then.
  void Landed(const Mark& mark, int64_t exact) {
    if (mark.epoch == epoch_) gain_ = std::max(gain_, exact - mark.base);
  }

 private:
  int64_t base_ = 0, gain_ = 0, epoch_ = 0;
};

// The rows [current frame; the pages' valid slots] an attention over `current` tokens may take as
// certain, given a floor of the pages' tokens: `previous` while it is at most current + floor - 1
// - keep_slack (a row is left to the device's count) and within two buckets of that; else whole
// buckets at least `margin` below it (0 when none).
int64_t ChooseCertainRows(int64_t current, int64_t floor, int64_t previous, int64_t bucket, int64_t margin, int64_t keep_slack = 0);

}  // namespace streamrecon
