// The global-attention KV cache behind a small interface: one LayerKvCache per attention layer
// (aggregator global blocks and camera-head trunk blocks), created from KvCacheOptions.
// Keys are stored after k_norm and RoPE; positions repeat every frame, so they never need re-rotation.
//
// Per frame a layer runs Forward(q, k, v): the current frame attends to every kept token plus
// itself; then the kept tokens are pruned to leave room for the current frame (the first frame
// and the current frame are protected); then the current frame is stored (quantized once, if the
// format says so). Stored bytes never exceed the layer's capacity, also while appending.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "core/kv_format.h"

namespace streamrecon {

struct KvCacheOptions {
  PrunePolicy policy = PrunePolicy::kNone;  // pruning policy
  CacheFormat format = CacheFormat::kDense; // storage format of the global layers
  int64_t cache_tokens = 0;   // per-layer token capacity including the current frame; 0 = none
  uint64_t budget_bytes = 0;  // total bytes of all caches (global + camera trunk); 0 = none
  int pool_size = 16;         // XStreamVGGT query pooling group (patch tokens)
  int special_tokens = 5;     // leading tokens of each frame kept unpooled (camera + registers)
  int k_group = 32;           // tokens per page = tokens sharing a per-channel K scale/zero
  int v_group = 64;           // channels sharing a per-token V scale/zero (must divide head dim)
  bool first_frame_bf16 = false;  // quantized formats: keep the first frame (attention sink) in bf16
  bool v_hadamard = false;    // OScaR: rotate V by the Hadamard matrix too (undone on the output)
  uint64_t seed = 0;          // seed of the random policy
  bool measure = false;       // time pruning + storing (synchronising the device), see maintenance_ms()

  bool bounded() const { return cache_tokens > 0 || budget_bytes > 0; }
  // head_dim < 0 skips the checks that need it. Throws OptionError.
  void Check(int head_dim = -1) const;
};

// What a layer may hold after storing the current frame; < 0 = unlimited.
struct LayerCapacity {
  int64_t tokens = -1;
  int64_t bytes = -1;
};

// Squared quantization error of everything a layer stored (for the fidelity benchmark).
struct QuantStats {
  double k_sse = 0, v_sse = 0;      // sum of squared errors of dequantized vs stored-from values
  double k_energy = 0, v_energy = 0;// sum of squares of the original values
  int64_t values = 0;               // number of K (and of V) elements quantized
};

// One attention layer's cache.
class LayerKvCache {
 public:
  virtual ~LayerKvCache() = default;

  // q, k, v: [H, N, D] for the current frame's N tokens (q, k after norm and RoPE).
  // Returns softmax(q K^T / sqrt(D)) V over every kept token plus the current frame (kept tokens
  // first, in stream order): [H, N, D] in q's dtype. Then prunes and stores the current frame.
  virtual at::Tensor Forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) = 0;

  // The kept keys and values as attention sees them (dequantized, norms folded in, rotated
  // space for OScaR): [H, T, D] each.
  virtual std::pair<at::Tensor, at::Tensor> Materialize() const = 0;

  virtual void SetCapacity(const LayerCapacity& capacity) = 0;
  virtual int64_t tokens() const = 0;  // tokens held
  virtual int64_t bytes() const = 0;   // bytes held (codes, params, norms, page table)
  virtual QuantStats quant_stats() const { return {}; }
  // With options.measure: milliseconds the last Forward spent pruning and storing (else 0).
  virtual double maintenance_ms() const { return 0.0; }
  virtual void Clear() = 0;
};

// Dense (model dtype / bf16) or quantized (KIVI / OScaR pages) cache, as the options say.
std::unique_ptr<LayerKvCache> MakeLayerKvCache(const KvCacheOptions& options);

// XStreamVGGT's pooled queries: the first special_tokens rows as they are, the rest averaged over
// consecutive groups of pool_size (a remainder forms one more group), then averaged over heads.
// q: [H, N, D] -> [M, D].
at::Tensor PooledQueries(const at::Tensor& q, int pool_size, int special_tokens);

// XStreamVGGT token scores: pooled current queries against head-averaged middle keys.
// q: [H, N, D]; middle_keys: [H, M, D]. Returns [M] (mean over pooled query rows of q_bar . k_bar).
at::Tensor XStreamScores(const at::Tensor& q, const at::Tensor& middle_keys, int pool_size, int special_tokens);

// Softmax attention of q over [cached ; current], merged from two partial attentions (exact).
// cached_k/v may be undefined or empty. All [H, *, D]; computed in q's dtype.
at::Tensor AttendCachedAndCurrent(const at::Tensor& q, const at::Tensor& cached_k, const at::Tensor& cached_v,
                                  const at::Tensor& k, const at::Tensor& v);

// Chooses middle units (tokens or pages) to keep: highest score first, each taken while it fits
// the remaining token and byte allowances (< 0 = unlimited). Returns kept unit indices, ascending.
std::vector<int64_t> SelectByScore(const std::vector<double>& scores, const std::vector<int64_t>& unit_tokens,
                                   const std::vector<int64_t>& unit_bytes, int64_t tokens_left, int64_t bytes_left);

// Page-granular pruning of a dense cache: the middle tokens (scores in stream order) grouped into
// pages of k_group consecutive tokens of one frame (frames are frame_tokens long); whole pages are
// kept, highest mean score first, within tokens_left. Returns kept token indices, ascending.
std::vector<int64_t> SelectDensePages(const std::vector<double>& scores, int64_t frame_tokens, int k_group, int64_t tokens_left);

// Token-granular choice over page slots: highest score first, a slot costs one token plus a whole
// page when its page is not kept yet. page_of/slot_of give each scored slot's page and slot.
// Returns, per page (0..pages-1), the kept slots in ascending order.
std::vector<std::vector<int64_t>> SelectSlotsByScore(const std::vector<double>& scores, const std::vector<int64_t>& page_of,
                                                     const std::vector<int64_t>& slot_of, int64_t pages, int64_t page_bytes,
                                                     int64_t tokens_left, int64_t bytes_left);

// The reference choice over the middle pages' slots: whole pages by mean slot score for
// xstream-page (SelectByScore), else SelectSlotsByScore. page_of indexes [0, pages).
std::vector<std::vector<int64_t>> SelectPageSlots(PrunePolicy policy, const std::vector<double>& scores,
                                                  const std::vector<int64_t>& page_of, const std::vector<int64_t>& slot_of,
                                                  int64_t pages, int64_t page_bytes, int64_t tokens_left, int64_t bytes_left);

// SelectSlotsByScore's choice when only bytes are limited, as tensor ops on any device (no read
// back): the first slot of a page opens it, and an open page keeps every later slot, so the kept
// pages are the `pages_left` pages with the highest best-slot score (ties: the later page first,
// as SelectSlotsByScore's order), each kept whole. slot_scores [P, G]; valid [P] (int) counts the
// valid slots of each page, the first ones. Returns the kept page indices ascending (long).
at::Tensor TopPagesByBestSlot(const at::Tensor& slot_scores, const at::Tensor& valid, int64_t pages_left);

}  // namespace streamrecon
