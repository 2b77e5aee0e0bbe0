// Cache options, the shared pruning helpers, and the dense (model dtype / bf16) layer cache.
#include "core/kv_cache.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "core/errors.h"
#include "core/kv_quant.h"

namespace streamrecon {

void KvCacheOptions::Check(int head_dim) const {
  if (cache_tokens < 0) throw OptionError("cache tokens must be >= 0, got " + std::to_string(cache_tokens));
  if (policy != PrunePolicy::kNone && !bounded())
    throw OptionError("prune policy '" + ToString(policy) + "' needs a token capacity (--cache-tokens) or a budget (--kv-budget)");
  if (policy == PrunePolicy::kNone && bounded())
    throw OptionError("--cache-tokens/--kv-budget need a prune policy (e.g. --policy xstream); policy 'none' keeps every token");
  if (pool_size < 1) throw OptionError("pool size must be >= 1, got " + std::to_string(pool_size));
  if (special_tokens < 0) throw OptionError("special tokens must be >= 0");
  if (k_group < 1) throw OptionError("K group size (tokens per page) must be >= 1, got " + std::to_string(k_group));
  if (v_group < 1) throw OptionError("V group size must be >= 1, got " + std::to_string(v_group));
  if (head_dim > 0 && IsQuantized(format)) {
    if (head_dim % v_group != 0)
      throw OptionError("V group size " + std::to_string(v_group) + " does not divide the head dimension " + std::to_string(head_dim));
    if (head_dim * FormatBits(format) % 8 != 0)
      throw OptionError("head dimension " + std::to_string(head_dim) + " does not pack into whole bytes at " +
                        std::to_string(FormatBits(format)) + " bits");
    if (IsOscar(format) && (head_dim & (head_dim - 1)) != 0)
      throw OptionError("OScaR needs a power-of-two head dimension for the Hadamard rotation, got " + std::to_string(head_dim));
  }
  if (v_hadamard && !IsOscar(format)) throw OptionError("--v-hadamard applies to the OScaR formats only");
}

at::Tensor PooledQueries(const at::Tensor& q, int pool_size, int special_tokens) {
  const int64_t n = q.size(1);
  const int64_t special = std::min<int64_t>(special_tokens, n);
  const int64_t full = (n - special) / pool_size, tail = n - special - full * pool_size;
  std::vector<at::Tensor> rows;
  if (special > 0) rows.push_back(q.narrow(1, 0, special));
  // Whole pools in one reduction (a few kernels, not one per pool), then the partial last pool.
  if (full > 0) rows.push_back(q.narrow(1, special, full * pool_size).reshape({q.size(0), full, pool_size, q.size(2)}).mean(2));
  if (tail > 0) rows.push_back(q.narrow(1, n - tail, tail).mean(1, /*keepdim=*/true));
  return at::cat(rows, 1).mean(0);  // [M, D]
}

at::Tensor XStreamScores(const at::Tensor& q, const at::Tensor& middle_keys, int pool_size, int special_tokens) {
  const at::Tensor q_bar = PooledQueries(q, pool_size, special_tokens);       // [M, D]
  const at::Tensor k_bar = middle_keys.to(q.scalar_type()).mean(0);             // [T, D]
  return at::matmul(q_bar, k_bar.transpose(0, 1)).mean(0);                      // [T]
}

at::Tensor AttendCachedAndCurrent(const at::Tensor& q, const at::Tensor& cached_k, const at::Tensor& cached_v,
                                  const at::Tensor& k, const at::Tensor& v) {
  const auto dtype = q.scalar_type();
  if (!cached_k.defined() || cached_k.size(1) == 0)
    return at::scaled_dot_product_attention(q.unsqueeze(0), k.to(dtype).unsqueeze(0), v.to(dtype).unsqueeze(0)).squeeze(0);
  // Two partial softmaxes merged by their log-sum-exp: exact, and the current frame never has to
  // be copied next to the cache.
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  auto partial = [&](const at::Tensor& keys, const at::Tensor& values) {
    const at::Tensor logits = at::matmul(q, keys.to(dtype).transpose(1, 2)) * scale;  // [H, N, T]
    const at::Tensor lse = at::logsumexp(logits, -1, /*keepdim=*/true);
    return std::make_pair(at::matmul(at::exp(logits - lse), values.to(dtype)), lse);
  };
  const auto [o1, l1] = partial(cached_k, cached_v);
  const auto [o2, l2] = partial(k, v);
  const at::Tensor m = at::maximum(l1, l2);
  const at::Tensor w1 = at::exp(l1 - m), w2 = at::exp(l2 - m);
  return (o1 * w1 + o2 * w2) / (w1 + w2);
}

std::vector<int64_t> SelectByScore(const std::vector<double>& scores, const std::vector<int64_t>& unit_tokens,
                                   const std::vector<int64_t>& unit_bytes, int64_t tokens_left, int64_t bytes_left) {
  std::vector<int64_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  // Highest score first; ties keep the newer unit (larger index).
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return scores[a] > scores[b] || (scores[a] == scores[b] && a > b); });
  std::vector<int64_t> kept;
  for (int64_t u : order) {
    const bool fits_tokens = tokens_left < 0 || unit_tokens[u] <= tokens_left;
    const bool fits_bytes = bytes_left < 0 || unit_bytes[u] <= bytes_left;
    if (!fits_tokens || !fits_bytes) continue;
    kept.push_back(u);
    if (tokens_left >= 0) tokens_left -= unit_tokens[u];
    if (bytes_left >= 0) bytes_left -= unit_bytes[u];
  }
  std::sort(kept.begin(), kept.end());
  return kept;
}

std::vector<int64_t> SelectDensePages(const std::vector<double>& scores, int64_t frame_tokens, int k_group, int64_t tokens_left) {
  const int64_t middle = static_cast<int64_t>(scores.size());
  std::vector<double> page_scores;
  std::vector<int64_t> page_start, page_tokens;
  for (int64_t f = 0; f < middle; f += frame_tokens)
    for (int64_t p = f; p < std::min(f + frame_tokens, middle); p += k_group) {
      const int64_t len = std::min<int64_t>({k_group, f + frame_tokens - p, middle - p});
      page_scores.push_back(std::accumulate(scores.begin() + p, scores.begin() + p + len, 0.0) / len);
      page_start.push_back(p);
      page_tokens.push_back(len);
    }
  std::vector<int64_t> kept;
  for (int64_t page : SelectByScore(page_scores, page_tokens, page_tokens, tokens_left, -1))
    for (int64_t t = 0; t < page_tokens[page]; ++t) kept.push_back(page_start[page] + t);
  return kept;
}

std::vector<std::vector<int64_t>> SelectSlotsByScore(const std::vector<double>& scores, const std::vector<int64_t>& page_of,
                                                     const std::vector<int64_t>& slot_of, int64_t pages, int64_t page_bytes,
                                                     int64_t tokens_left, int64_t bytes_left) {
  std::vector<int64_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return scores[a] > scores[b] || (scores[a] == scores[b] && a > b); });
  std::vector<std::vector<int64_t>> kept(pages);
  for (int64_t i : order) {
    if (tokens_left == 0) break;
    const bool open = !kept[page_of[i]].empty();
    if (!open && bytes_left >= 0 && bytes_left < page_bytes) continue;
    kept[page_of[i]].push_back(slot_of[i]);
    if (tokens_left > 0) --tokens_left;
    if (!open && bytes_left >= 0) bytes_left -= page_bytes;
  }
  for (auto& slots : kept) std::sort(slots.begin(), slots.end());
  return kept;
}

std::vector<std::vector<int64_t>> SelectPageSlots(PrunePolicy policy, const std::vector<double>& scores,
                                                  const std::vector<int64_t>& page_of, const std::vector<int64_t>& slot_of,
                                                  int64_t pages, int64_t page_bytes, int64_t tokens_left, int64_t bytes_left) {
  if (policy != PrunePolicy::kXStreamPage)
    return SelectSlotsByScore(scores, page_of, slot_of, pages, page_bytes, tokens_left, bytes_left);
  std::vector<double> page_scores(pages, 0.0);
  std::vector<int64_t> page_tokens(pages, 0), cost(pages, page_bytes);
  for (size_t i = 0; i < scores.size(); ++i) page_scores[page_of[i]] += scores[i], ++page_tokens[page_of[i]];
  for (int64_t p = 0; p < pages; ++p) page_scores[p] /= std::max<int64_t>(1, page_tokens[p]);
  std::vector<std::vector<int64_t>> kept(pages);
  for (int64_t p : SelectByScore(page_scores, page_tokens, cost, tokens_left, bytes_left))
    for (int64_t s = 0; s < page_tokens[p]; ++s) kept[p].push_back(s);
  return kept;
}

at::Tensor TopPagesByBestSlot(const at::Tensor& slot_scores, const at::Tensor& valid, int64_t pages_left) {
  const int64_t pages = slot_scores.size(0), slots = slot_scores.size(1);
  const int64_t k = std::max<int64_t>(0, std::min(pages, pages_left));
  const at::Tensor in_page = at::arange(slots, valid.options().dtype(at::kLong)).unsqueeze(0) < valid.to(at::kLong).unsqueeze(1);
  const at::Tensor best = at::where(in_page, slot_scores, at::full({}, -INFINITY, slot_scores.options())).amax(1);
  // Highest first; among equal scores the later page (a stable sort of the reversed pages).
  const at::Tensor order = std::get<1>(at::sort(best.flip(0), /*stable=*/true, /*dim=*/0, /*descending=*/true));
  return std::get<0>(at::sort(pages - 1 - order.narrow(0, 0, k)));
}

std::vector<double> MiddleScores(PrunePolicy policy, const at::Tensor& q, const at::Tensor& middle_keys,
                                 const KvCacheOptions& options, uint64_t salt) {
  const int64_t m = middle_keys.size(1);
  std::vector<double> scores(m);
  if (policy == PrunePolicy::kWindow) {
    std::iota(scores.begin(), scores.end(), 0.0);
  } else if (policy == PrunePolicy::kRandom) {
    at::Generator gen = at::detail::createCPUGenerator(options.seed * 1000003ULL + salt);
    const at::Tensor r = at::rand({m}, gen, at::TensorOptions().dtype(at::kDouble));
    std::copy(r.data_ptr<double>(), r.data_ptr<double>() + m, scores.begin());
  } else {
    const at::Tensor s = XStreamScores(q, middle_keys, options.pool_size, options.special_tokens).to(at::kCPU, at::kDouble).contiguous();
    std::copy(s.data_ptr<double>(), s.data_ptr<double>() + m, scores.begin());
  }
  return scores;
}

namespace {

// K and V stored as [H, capacity, D] tensors in the model dtype or bf16, appended in place.
class DenseLayerCache final : public LayerKvCache {
 public:
  explicit DenseLayerCache(const KvCacheOptions& options) : options_(options) {}

  at::Tensor Forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) override {
    const int64_t n = k.size(1);
    const at::Tensor out = AttendCachedAndCurrent(q, Kept(keys_), Kept(values_), k, v);
    const auto t0 = std::chrono::steady_clock::now();
    if (length_ > 0) Prune(q, n);
    Append(k, v);
    if (options_.measure) maintenance_ms_ = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    return out;
  }

  double maintenance_ms() const override { return maintenance_ms_; }

  std::pair<at::Tensor, at::Tensor> Materialize() const override {
    if (!keys_.defined()) return {};
    return {Kept(keys_).clone(), Kept(values_).clone()};
  }
  void SetCapacity(const LayerCapacity& capacity) override { capacity_ = capacity; }
  int64_t tokens() const override { return length_; }
  int64_t bytes() const override { return length_ * token_bytes_; }
  void Clear() override {
    keys_ = values_ = at::Tensor();
    length_ = first_frame_tokens_ = 0;
    frames_ = 0;
  }

 private:
  at::Tensor Kept(const at::Tensor& t) const { return t.defined() ? t.narrow(1, 0, length_) : t; }

  // Drops middle tokens (never the first frame) so that the current frame's n tokens fit.
  void Prune(const at::Tensor& q, int64_t n) {
    const int64_t first = first_frame_tokens_;
    const int64_t middle = length_ - first;
    // A capacity (< 0 = none) smaller than the first and current frames leaves no room for middle
    // tokens: 0 left, never "unlimited".
    int64_t tokens_left = capacity_.tokens < 0 ? -1 : std::max<int64_t>(0, capacity_.tokens - first - n);
    int64_t bytes_left = capacity_.bytes < 0 ? -1 : std::max<int64_t>(0, capacity_.bytes / token_bytes_ - first - n);
    if (tokens_left >= 0 && bytes_left >= 0) tokens_left = std::min(tokens_left, bytes_left);
    else if (bytes_left >= 0) tokens_left = bytes_left;
    if (tokens_left < 0 || middle <= tokens_left) return;  // unlimited, or everything fits
    if (options_.policy == PrunePolicy::kNone) return;
    const at::Tensor middle_keys = keys_.narrow(1, first, middle);
    const std::vector<double> scores = MiddleScores(options_.policy, q, middle_keys, options_, frames_);
    std::vector<int64_t> kept;
    if (options_.policy == PrunePolicy::kXStreamPage) {
      kept = SelectDensePages(scores, n, options_.k_group, tokens_left);
    } else {
      kept = SelectByScore(scores, std::vector<int64_t>(middle, 1), std::vector<int64_t>(middle, 1), tokens_left, -1);
    }
    const auto long_opts = at::TensorOptions().dtype(at::kLong).device(keys_.device());
    const at::Tensor index = at::cat({at::arange(first, long_opts), at::tensor(kept, at::kLong).to(keys_.device()) + first});
    const int64_t new_length = index.size(0);
    // index_select copies first, so writing the result back in place is safe.
    keys_.narrow(1, 0, new_length).copy_(at::index_select(Kept(keys_), 1, index));
    values_.narrow(1, 0, new_length).copy_(at::index_select(Kept(values_), 1, index));
    length_ = new_length;
  }

  void Append(const at::Tensor& k, const at::Tensor& v) {
    const int64_t n = k.size(1);
    if (!keys_.defined()) {
      const auto dtype = options_.format == CacheFormat::kBf16 ? at::kBFloat16 : k.scalar_type();
      token_bytes_ = 2 * k.size(0) * k.size(2) * static_cast<int64_t>(c10::elementSize(dtype));
      first_frame_tokens_ = n;
      Reserve(k.options().dtype(dtype), k.size(0), k.size(2), n);
    }
    Reserve(keys_.options(), k.size(0), k.size(2), length_ + n);
    keys_.narrow(1, length_, n).copy_(k);
    values_.narrow(1, length_, n).copy_(v);
    length_ += n;
    ++frames_;
  }

  // Grows the storage geometrically, never past the capacity, so appends copy only the new frame.
  void Reserve(const at::TensorOptions& opts, int64_t heads, int64_t dim, int64_t needed) {
    const int64_t have = keys_.defined() ? keys_.size(1) : 0;
    if (needed <= have) return;
    int64_t grow = std::max<int64_t>(needed, have * 2);
    if (capacity_.tokens >= 0) grow = std::min(grow, std::max(needed, capacity_.tokens));
    if (capacity_.bytes >= 0) grow = std::min(grow, std::max(needed, capacity_.bytes / token_bytes_));
    at::Tensor keys = at::empty({heads, grow, dim}, opts), values = at::empty({heads, grow, dim}, opts);
    if (length_ > 0) {
      keys.narrow(1, 0, length_).copy_(Kept(keys_));
      values.narrow(1, 0, length_).copy_(Kept(values_));
    }
    keys_ = keys;
    values_ = values;
  }

  KvCacheOptions options_;
  LayerCapacity capacity_;
  at::Tensor keys_;    // [H, capacity, D]
  at::Tensor values_;  // [H, capacity, D]
  int64_t length_ = 0;
  int64_t first_frame_tokens_ = 0;
  int64_t token_bytes_ = 0;
  int64_t frames_ = 0;
  double maintenance_ms_ = 0.0;
};

}  // namespace

std::unique_ptr<LayerKvCache> MakeLayerKvCache(const KvCacheOptions& options) {
  options.Check();
  if (IsQuantized(options.format)) return MakeQuantizedLayerCache(options);
  return std::make_unique<DenseLayerCache>(options);
}

}  // namespace streamrecon
