// The reference backend: torch operations on the tensors' own device (CPU, or a GPU for the fp32
// cache of a float model), pages quantized and dequantized by the CPU reference (paged_kv.h).
#include <ATen/ATen.h>

#include <cmath>

#include "core/kv/backend.h"
#include "core/kv/policy.h"

namespace streamrecon {
namespace {

// Softmax attention of q over [cached ; current], merged from two partial attentions (exact), so
// the current frame is never copied next to the cache. All [H, *, D]; computed in q's dtype.
at::Tensor AttendCachedAndCurrent(const at::Tensor& q, const at::Tensor& cached_k, const at::Tensor& cached_v, const at::Tensor& k,
                                  const at::Tensor& v) {
  const auto dtype = q.scalar_type();
  if (!cached_k.defined() || cached_k.size(1) == 0)
    return at::scaled_dot_product_attention(q.unsqueeze(0), k.to(dtype).unsqueeze(0), v.to(dtype).unsqueeze(0)).squeeze(0);
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

}  // namespace

at::Tensor KvBackend::Rotate(const at::Tensor& x, const at::Tensor& hadamard) const { return at::matmul(x.to(hadamard.scalar_type()), hadamard); }

KvBackend::RotatedFrame KvBackend::RotateFrame(const at::Tensor& q, const at::Tensor& k, const at::Tensor& hadamard) const {
  const at::Tensor q_r = Rotate(q, hadamard), k_r = Rotate(k, hadamard);
  return {q_r, k_r, q_r, k_r};
}

at::Tensor KvBackend::Pooled(const at::Tensor& q_r, int pool_size, int special_tokens) const {
  return PooledQueries(q_r.to(WorkType(q_r.scalar_type())), pool_size, special_tokens);
}

namespace {

class ReferenceBackend final : public KvBackend {
 public:
  explicit ReferenceBackend(const KvCacheOptions& options) : options_(options) {}

  const char* name() const override { return "reference"; }
  void CheckLayer(int, int) const override {}
  at::ScalarType WorkType(at::ScalarType q) const override { return q; }
  at::ScalarType DenseType(CacheFormat format, at::ScalarType k) const override {
    return format == CacheFormat::kBf16 ? at::kBFloat16 : k;
  }

  at::Tensor Attend(const at::Tensor& q_r, const KvView& kept, const at::Tensor& k_r, const at::Tensor& v_r) override {
    const auto [keys, values] = Cached(kept, q_r.device());
    // Dequantized pages are kept for Scores (StorePages, later in the same frame, drops them);
    // dense rows are views, read again for free.
    cached_k_ = kept.page_count > 0 ? keys : at::Tensor();
    return AttendCachedAndCurrent(q_r, keys, values, k_r, v_r);
  }

  at::Tensor Scores(const at::Tensor& q_bar, const KvView& kept, int64_t first_token, int64_t first_page) override {
    // The keys Attend just read (pages dequantized once per frame).
    const at::Tensor keys = kept.page_count > 0 && cached_k_.defined() ? cached_k_ : Cached(kept, q_bar.device()).first;
    const at::Tensor scores = ScoresFromPooled(q_bar, keys.narrow(1, first_token, keys.size(1) - first_token));
    if (kept.page_count == 0) return scores;
    // Page slots: [pages - first_page, G], the scores of the valid slots first, -inf after them.
    const int64_t pages = kept.page_count - first_page, slots = kept.pages->layout.slots;
    std::vector<int64_t> where;
    for (int64_t p = 0; p < pages; ++p)
      for (int64_t s = 0; s < (*kept.valid)[first_page + p]; ++s) where.push_back(p * slots + s);
    at::Tensor out = at::full({pages * slots}, -INFINITY, scores.options());
    out.index_put_({at::tensor(where, at::kLong).to(scores.device())}, scores);
    return out.view({pages, slots});
  }

  // (never replayed by a graph: the frame number as the host counts it)
  void StorePages(const at::Tensor&, const at::Tensor&, const at::Tensor& k_r, const at::Tensor& v_r, int32_t frame, PagedKv& store,
                  int64_t at, const at::Tensor&) override {
    at::Tensor keys = k_r.to(at::kFloat), norms;
    if (store.layout.norms) {
      norms = keys.pow(2).sum(at::IntArrayRef{0, 2}).sqrt().clamp_min(1e-12);  // [N], over all heads and channels
      keys = keys / norms.view({1, -1, 1});
    }
    const PagedKv pages = QuantizeFrame(keys, v_r, norms, store.layout, frame);
    CopyPages(store, pages, pages.pages(), at);
    cached_k_ = at::Tensor();
  }

 private:
  // Every kept token as stored: dense rows as they are; with pages, float rows then the pages.
  static std::pair<at::Tensor, at::Tensor> Cached(const KvView& kept, c10::Device device) {
    if (kept.page_count == 0) {
      if (kept.dense_tokens == 0) return {};
      return {kept.dense_k.narrow(1, 0, kept.dense_tokens), kept.dense_v.narrow(1, 0, kept.dense_tokens)};
    }
    std::vector<at::Tensor> ks, vs;
    if (kept.dense_tokens > 0) {
      ks.push_back(kept.dense_k.narrow(1, 0, kept.dense_tokens).to(at::kCPU, at::kFloat));
      vs.push_back(kept.dense_v.narrow(1, 0, kept.dense_tokens).to(at::kCPU, at::kFloat));
    }
    auto [k, v] = DequantizePages(kept.pages->Head(kept.page_count).To(at::kCPU));
    ks.push_back(k);
    vs.push_back(v);
    return {at::cat(ks, 1).to(device), at::cat(vs, 1).to(device)};
  }

  KvCacheOptions options_;
  at::Tensor cached_k_;  // the dequantized keys the last Attend read
};

}  // namespace

std::unique_ptr<KvBackend> MakeReferenceBackend(const KvCacheOptions& options) { return std::make_unique<ReferenceBackend>(options); }

}  // namespace streamrecon
