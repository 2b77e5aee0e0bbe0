// The fixed-slot cache of layers that store one token per call (the camera-head trunk): the kept
// tokens live in slots that grow to the capacity and then stay; pruning evicts on the device (the policy's
// lowest-scoring middle tokens lose their slots) and the current token takes a free slot. No
// compaction, no host copies, no shape that changes from call to call once the cache is full, so
// a whole camera head can be captured in a CUDA graph and replayed (graph_ready / Replayed).
//
// It keeps exactly the tokens the reference cache (layer_cache.cc over the reference backend)
// keeps: the policies see the middle tokens in stream order (a device list of the held slots in
// that order, updated at each call), so scores, ties and the random policy's draws are the
// reference's. Attention does not depend on slot order; the current token is attended in the work
// type, as the reference does.
#include <ATen/ATen.h>

#include <cmath>
#include <vector>

#include "core/check.h"
#include "core/kv/backend.h"
#include "core/kv/budget.h"
#include "core/kv/cache.h"
#include "core/kv/policy.h"
#ifdef STREAMRECON_HAVE_CUDA_KV
#include "kernels/kv_ops.h"
#endif

namespace streamrecon {
namespace {

class SlotKvCache final : public LayerKvCache {
 public:
  explicit SlotKvCache(const KvCacheOptions& options) : options_(options) {}

  at::Tensor Forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) override {
    SR_CHECK(q.dim() == 3 && k.dim() == 3 && v.dim() == 3 && k.sizes() == v.sizes() && q.size(0) == k.size(0) && q.size(2) == k.size(2),
             Error, "slot KV cache: expected q, k, v as [H, N, D] with matching heads and channels, got " << q.sizes() << ", " << k.sizes()
                                                                                                           << ", " << v.sizes());
    SR_CHECK(k.size(1) == 1, Error, "slot KV cache: stores one token per call (the camera trunk), got " << k.size(1));
    if (!keys_.defined()) Init(q, k);
    SR_CHECK(k.size(0) == keys_.size(0) && k.size(2) == keys_.size(2), Error,
             "slot KV cache: this layer holds " << keys_.size(0) << " heads of " << keys_.size(2) << " channels, the call has " << k.sizes());
    const at::ScalarType work = q.scalar_type();
    const at::Tensor k_w = k.to(work), v_w = v.to(work);
    const at::Tensor out = Attend(q, k_w, v_w);
    const int64_t left = MiddleLeft();
    const bool evict = frames_ > 0 && middle_ > left;
    const at::Tensor kept = evict ? Evict(q, left) : at::Tensor();
    // Room for the current token: the slots grow (doubling) until they reach the capacity, so a
    // short stream holds no more than the reference cache; from then on nothing changes shape.
    const int64_t held = frames_ == 0 ? 0 : first_tokens_ + (evict ? left : middle_);
    if (held + 1 > keys_.size(1)) Grow(GrowTo(keys_.size(1), held + 1, slots_));
    Reorder(kept, Store(k_w, v));
    // The host side changes only once the device work is queued: a call that throws (a failed
    // graph capture) leaves it as it was.
    const int64_t before = middle_;
    if (evict) middle_ = left;
    if (frames_ > 0) ++middle_;
    ++frames_;
    steady_ = evict && middle_ == before;
    return out;
  }

  std::pair<at::Tensor, at::Tensor> Materialize() const override {
    if (frames_ == 0) return {};
    return {keys_.index_select(1, order_), values_.index_select(1, order_)};
  }

  void SetCapacity(const LayerCapacity& capacity) override {
    SR_CHECK(!keys_.defined() || (capacity.tokens == capacity_.tokens && capacity.bytes == capacity_.bytes), Error,
             "slot KV cache: its capacity is fixed once it holds tokens (Clear it first)");
    capacity_ = capacity;
  }

  int64_t tokens() const override { return frames_ == 0 ? 0 : first_tokens_ + middle_; }
  int64_t bytes() const override { return tokens() * row_bytes_; }
  QuantStats quant_stats() const override { return {}; }
  double maintenance_ms() const override { return 0.0; }
  const char* backend() const override { return "slots"; }

  void Clear() override {
    const LayerCapacity capacity = capacity_;
    *this = SlotKvCache(options_);
    capacity_ = capacity;
  }

  // Steady once a call evicted as many tokens as it stored: every later call does the same host
  // work, with no host data (the random policy draws on the host, so it never is).
  bool graph_ready() const override { return steady_ && options_.policy != PrunePolicy::kRandom; }
  void Replayed() override {
    SR_CHECK(graph_ready(), Error, "slot KV cache: a replayed call needs a steady cache");
    ++frames_;
  }

 private:
  void Init(const at::Tensor& q, const at::Tensor& k) {
    const int64_t heads = k.size(0), dim = k.size(2);
    // The reference's dense rows: bf16 for the bf16 format, else the work (query) dtype.
    const at::ScalarType stored = options_.format == CacheFormat::kBf16 ? at::kBFloat16 : q.scalar_type();
    row_bytes_ = 2 * heads * dim * static_cast<int64_t>(c10::elementSize(stored));
    first_tokens_ = k.size(1);
    // The slots hold what the layer may hold after storing a call: the first token, the middle
    // the budget leaves and the current one (never fewer than the two protected ones).
    const int64_t left = MiddleLeft();
    SR_CHECK(left >= 0, Error, "slot KV cache: needs a bounded capacity (tokens or bytes), got none");
    slots_ = first_tokens_ + left + 1;
    const auto on = k.options();
    keys_ = at::empty({heads, 0, dim}, on.dtype(stored));
    values_ = at::empty({heads, 0, dim}, on.dtype(stored));
    valid_ = at::empty({0}, on.dtype(at::kBool));
    order_ = at::empty({0}, on.dtype(at::kLong));
  }

  // Reallocates to `size` slots, the tokens in the same slots, the new ones empty.
  void Grow(int64_t size) {
    const int64_t have = keys_.size(1);
    auto widen = [&](const at::Tensor& t, int64_t dim, const at::Scalar& fill) {
      std::vector<int64_t> shape = t.sizes().vec();
      shape[dim] = size;
      at::Tensor wider = at::full(shape, fill, t.options());
      wider.narrow(dim, 0, have).copy_(t);
      return wider;
    };
    keys_ = widen(keys_, 1, 0);
    values_ = widen(values_, 1, 0);
    valid_ = widen(valid_, 0, false);
  }

  // The middle tokens a call may keep besides the protected first token and the current one (the
  // reference's rule for dense rows); < 0 = unlimited.
  int64_t MiddleLeft() const { return LayerBudget(capacity_, first_tokens_ + 1, (first_tokens_ + 1) * row_bytes_).TokensLeft(row_bytes_); }

  // softmax(q [K_valid ; k]^T / sqrt(D)) [V_valid ; v] in q's dtype: one softmax over the slots
  // (empty ones masked) and the current token.
  at::Tensor Attend(const at::Tensor& q, const at::Tensor& k_w, const at::Tensor& v_w) const {
#ifdef STREAMRECON_HAVE_CUDA_KV
    // On a GPU one kernel (float arithmetic, one rounding) where the form below takes a dozen.
    if (q.is_cuda()) {
      const at::Tensor out = kernels::SlotAttendCuda(q, keys_, values_, valid_, k_w, v_w);
      if (out.defined()) return out;
    }
#endif
    const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(2)));
    const at::ScalarType work = q.scalar_type();
    const at::Tensor cached = (at::matmul(q, keys_.to(work).transpose(1, 2)) * scale).masked_fill(valid_.logical_not(), -INFINITY);
    const at::Tensor current = (q * k_w).sum(-1, /*keepdim=*/true) * scale;  // [H, 1, 1]
    const at::Tensor p = at::softmax(at::cat({cached, current}, -1), -1);
    const int64_t slots = keys_.size(1);
    return at::matmul(p.narrow(2, 0, slots), values_.to(work)) + p.narrow(2, slots, 1) * v_w;
  }

  // The reference's pruning: the middle keeps the policy's best `left` tokens (ranked in stream
  // order, so ties and random draws are the reference's); the others' slots become free. Returns
  // the kept slots in stream order. Device work only; Forward updates the host counts.
  at::Tensor Evict(const at::Tensor& q, int64_t left) {
    const at::Tensor middle = order_.narrow(0, first_tokens_, middle_);
    const at::Tensor scores = ScoresFromPooled(PooledQueries(q, options_.pool_size, options_.special_tokens), keys_).index_select(0, middle);
    const at::Tensor kept = middle.index_select(0, TopOnDevice(PolicyScores(options_.policy, scores, options_.seed, frames_), left));
    valid_.index_fill_(0, middle, false);
    valid_.index_fill_(0, kept, true);
    return kept;
  }

  // The current token into the first free slot (chosen on the device), which it returns.
  at::Tensor Store(const at::Tensor& k_w, const at::Tensor& v) {
    const at::Tensor slot = valid_.logical_not().to(at::kByte).argmax().view({1});
    keys_.index_copy_(1, slot, k_w.to(keys_.scalar_type()));
    values_.index_copy_(1, slot, v.to(values_.scalar_type()));
    valid_.index_fill_(0, slot, true);
    return slot;
  }

  // The held slots in stream order after a call: the first token's, the middle ones (`kept` when
  // the call evicted), the current one's. In place once the count repeats (a full cache), where a
  // graph of the call reads and writes the same buffer.
  void Reorder(const at::Tensor& kept, const at::Tensor& slot) {
    if (!kept.defined()) {
      order_ = at::cat({order_, slot});
    } else if (order_.size(0) == first_tokens_ + kept.size(0) + 1) {
      at::Tensor tail = order_.narrow(0, first_tokens_, kept.size(0) + 1);
      at::cat_out(tail, {kept, slot}, 0);
    } else {
      order_ = at::cat({order_.narrow(0, 0, first_tokens_), kept, slot});
    }
  }

  KvCacheOptions options_;
  LayerCapacity capacity_;
  int64_t slots_ = 0;  // the capacity in slots (allocated: keys_.size(1), growing to it)
  int64_t row_bytes_ = 0, first_tokens_ = 0;
  int64_t frames_ = 0;  // calls so far
  int64_t middle_ = 0;  // kept tokens after the first call's (host count: pruning is deterministic in number)
  bool steady_ = false;
  at::Tensor keys_, values_;      // [H, allocated slots, D] in the stored dtype
  at::Tensor valid_;              // [slots] bool
  at::Tensor order_;              // [tokens()] long: the held slots in stream order
};

}  // namespace

std::unique_ptr<LayerKvCache> MakeSlotKvCache(const KvCacheOptions& options) {
  options.Check();
  SR_CHECK(options.format == CacheFormat::kDense || options.format == CacheFormat::kBf16, OptionError,
           "slot KV cache: stores dense rows (format dense or bf16), got " << ToString(options.format));
  SR_CHECK(options.policy != PrunePolicy::kNone, OptionError, "slot KV cache: needs a pruning policy (its slots are fixed)");
  return std::make_unique<SlotKvCache>(options);
}

}  // namespace streamrecon
