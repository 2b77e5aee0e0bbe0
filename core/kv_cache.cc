// Full-precision layer cache with token-granular pruning (none / XStreamVGGT / window).
#include "core/kv_cache.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "core/errors.h"

namespace streamrecon {

PrunePolicy ParsePrunePolicy(const std::string& name) {
  if (name == "none") return PrunePolicy::kNone;
  if (name == "xstream") return PrunePolicy::kXStream;
  if (name == "window") return PrunePolicy::kWindow;
  throw OptionError("unknown prune policy '" + name + "': expected none, xstream or window");
}

std::string ToString(PrunePolicy policy) {
  switch (policy) {
    case PrunePolicy::kNone: return "none";
    case PrunePolicy::kXStream: return "xstream";
    case PrunePolicy::kWindow: return "window";
  }
  return "?";
}

void KvCacheOptions::Check() const {
  if (cache_tokens < 0) throw OptionError("cache tokens must be >= 0, got " + std::to_string(cache_tokens));
  if (policy != PrunePolicy::kNone && cache_tokens == 0)
    throw OptionError("prune policy '" + ToString(policy) + "' needs a token capacity (--cache-tokens) or a budget (--kv-budget)");
  if (pool_size < 1) throw OptionError("pool size must be >= 1, got " + std::to_string(pool_size));
  if (special_tokens < 0) throw OptionError("special tokens must be >= 0");
}

at::Tensor XStreamScores(const at::Tensor& q, const at::Tensor& middle_keys, int pool_size, int special_tokens) {
  const int64_t n = q.size(1);
  const int64_t special = std::min<int64_t>(special_tokens, n);
  std::vector<at::Tensor> rows;
  if (special > 0) rows.push_back(q.narrow(1, 0, special));
  for (int64_t start = special; start < n; start += pool_size) {
    const int64_t len = std::min<int64_t>(pool_size, n - start);
    rows.push_back(q.narrow(1, start, len).mean(1, /*keepdim=*/true));
  }
  const at::Tensor q_bar = at::cat(rows, 1).mean(0);   // [M, D]
  const at::Tensor k_bar = middle_keys.mean(0);         // [T, D]
  return at::matmul(q_bar, k_bar.transpose(0, 1)).mean(0);  // [T]
}

namespace {

class DenseLayerCache final : public LayerKvCache {
 public:
  explicit DenseLayerCache(const KvCacheOptions& options) : options_(options) {}

  at::Tensor AppendAndAttend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) override {
    const int64_t n = k.size(1);
    Reserve(k, length_ + n);
    keys_.narrow(1, length_, n).copy_(k);
    values_.narrow(1, length_, n).copy_(v);
    length_ += n;
    const at::Tensor keys = keys_.narrow(1, 0, length_);
    const at::Tensor values = values_.narrow(1, 0, length_);
    return at::scaled_dot_product_attention(q.unsqueeze(0), keys.unsqueeze(0), values.unsqueeze(0)).squeeze(0);
  }

  void Prune(const at::Tensor& q, int64_t frame_tokens) override {
    const int64_t cap = options_.cache_tokens;
    if (options_.policy == PrunePolicy::kNone || length_ <= cap) return;
    const int64_t n = frame_tokens;
    const int64_t middle_len = length_ - 2 * n;
    const int64_t keep = std::max<int64_t>(0, cap - 2 * n);
    if (middle_len <= keep) return;
    at::Tensor kept_middle;  // indices into the middle range, ascending
    if (options_.policy == PrunePolicy::kWindow) {
      kept_middle = at::arange(middle_len - keep, middle_len, at::TensorOptions().dtype(at::kLong).device(keys_.device()));
    } else {
      const at::Tensor scores = XStreamScores(q, keys_.narrow(1, n, middle_len), options_.pool_size, options_.special_tokens);
      kept_middle = std::get<0>(at::sort(std::get<1>(at::topk(scores, keep))));
    }
    const auto long_opts = at::TensorOptions().dtype(at::kLong).device(keys_.device());
    const at::Tensor index = at::cat({at::arange(n, long_opts), kept_middle + n, at::arange(length_ - n, length_, long_opts)});
    const int64_t new_length = index.size(0);
    // index_select copies first, so writing the result back in place is safe.
    keys_.narrow(1, 0, new_length).copy_(at::index_select(keys_.narrow(1, 0, length_), 1, index));
    values_.narrow(1, 0, new_length).copy_(at::index_select(values_.narrow(1, 0, length_), 1, index));
    length_ = new_length;
  }

  std::pair<at::Tensor, at::Tensor> Materialize() const override {
    if (!keys_.defined()) return {};
    return {keys_.narrow(1, 0, length_).clone(), values_.narrow(1, 0, length_).clone()};
  }

  int64_t tokens() const override { return length_; }

  int64_t bytes() const override {
    if (!keys_.defined()) return 0;
    return 2 * keys_.size(0) * length_ * keys_.size(2) * static_cast<int64_t>(keys_.element_size());
  }

  void Clear() override {
    keys_ = at::Tensor();
    values_ = at::Tensor();
    length_ = 0;
  }

 private:
  // Grows the storage geometrically (or to the bounded capacity) so appends copy only the new frame.
  void Reserve(const at::Tensor& like, int64_t needed) {
    const int64_t capacity = keys_.defined() ? keys_.size(1) : 0;
    if (needed <= capacity) return;
    int64_t new_capacity = std::max<int64_t>(needed, capacity * 2);
    if (options_.policy != PrunePolicy::kNone) new_capacity = std::max<int64_t>(needed, std::min(new_capacity, options_.cache_tokens + like.size(1)));
    at::Tensor keys = at::empty({like.size(0), new_capacity, like.size(2)}, like.options());
    at::Tensor values = at::empty_like(keys);
    if (length_ > 0) {
      keys.narrow(1, 0, length_).copy_(keys_.narrow(1, 0, length_));
      values.narrow(1, 0, length_).copy_(values_.narrow(1, 0, length_));
    }
    keys_ = keys;
    values_ = values;
  }

  KvCacheOptions options_;
  at::Tensor keys_;    // [H, capacity, D]
  at::Tensor values_;  // [H, capacity, D]
  int64_t length_ = 0;
};

}  // namespace

std::unique_ptr<LayerKvCache> MakeLayerKvCache(const KvCacheOptions& options) {
  options.Check();
  return std::make_unique<DenseLayerCache>(options);
}

}  // namespace streamrecon
