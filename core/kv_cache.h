// The global-attention KV cache behind a small interface: one LayerKvCache per attention layer
// (aggregator global blocks and camera-head trunk blocks), created from KvCacheOptions.
// Keys are stored after k_norm and RoPE; positions repeat every frame, so they never need re-rotation.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include <ATen/core/Tensor.h>

namespace streamrecon {

// How a layer's cache chooses which tokens to keep once it exceeds its capacity.
enum class PrunePolicy {
  kNone,    // keep everything (the stream grows without bound)
  kXStream, // XStreamVGGT: keep first + current frame, rank the middle by pooled-query scores
  kWindow,  // keep first + the newest tokens
};

PrunePolicy ParsePrunePolicy(const std::string& name);  // throws OptionError naming the choices
std::string ToString(PrunePolicy policy);

struct KvCacheOptions {
  PrunePolicy policy = PrunePolicy::kNone;  // pruning policy
  int64_t cache_tokens = 0;                 // per-layer token capacity; 0 = unbounded (policy none)
  int pool_size = 16;                       // XStreamVGGT query pooling group (patch tokens)
  int special_tokens = 5;                   // leading tokens of each frame kept unpooled (camera + registers)

  void Check() const;  // throws OptionError
};

// One attention layer's cache.
class LayerKvCache {
 public:
  virtual ~LayerKvCache() = default;

  // q, k, v: [H, N, D] for the current frame's N tokens (q, k after norm and RoPE).
  // Appends k and v, then returns softmax(q K^T / sqrt(D)) V over every kept token, the
  // current frame included (cached tokens first, in their original order): [H, N, D].
  virtual at::Tensor AppendAndAttend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) = 0;

  // Called after the layer's attention for the frame: shrinks the cache to its capacity.
  // q: the current frame's queries [H, N, D]; frame_tokens: N (tokens protected at each end).
  virtual void Prune(const at::Tensor& q, int64_t frame_tokens) = 0;

  // The kept keys and values as the attention sees them (dequantized): [H, T, D] each.
  virtual std::pair<at::Tensor, at::Tensor> Materialize() const = 0;

  virtual int64_t tokens() const = 0;  // tokens held
  virtual int64_t bytes() const = 0;   // bytes held by kept tokens
  virtual void Clear() = 0;
};

// A cache storing K and V in the tensors' own dtype/device, appended in place (amortised growth).
std::unique_ptr<LayerKvCache> MakeLayerKvCache(const KvCacheOptions& options);

// XStreamVGGT token scores: pooled current queries against head-averaged middle keys.
// q: [H, N, D]; middle_keys: [H, M, D]. Returns [M] (mean over pooled query rows of q_bar . k_bar).
at::Tensor XStreamScores(const at::Tensor& q, const at::Tensor& middle_keys, int pool_size, int special_tokens);

}  // namespace streamrecon
