// The one KV-cache core: a layer's kept tokens as dense rows (dense formats, or the bf16 first frame
// of a quantized one) and/or quantized pages, with the capacity, pruning, compaction and growth
// rules written once. What differs per device (attention, scores, quantizing a frame) is the
// backend's (backend.h). Page selection runs on the tensors' device where it is a top-k (no read
// back) and on the host where the rule is sequential (a token cap over pages, xstream-page on a
// dense cache); policy.h proves the two forms equal.
#include <ATen/ATen.h>
#include <c10/core/Event.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <map>
#include <numeric>
#include <optional>

#include <spdlog/spdlog.h>

#include "core/check.h"
#include "core/kv/backend.h"
#include "core/kv/budget.h"
#include "core/kv/policy.h"
#ifdef STREAMRECON_HAVE_CUDA_KV
#include "kernels/kv_ops.h"
#endif

namespace streamrecon {
void SynchronizeDevice(c10::Device device) {
  if (device.is_cpu()) return;
  // "cuda" without an index means the current device; the guard's synchronizeDevice wants a real one.
  const c10::impl::DeviceGuardImplInterface* impl = c10::impl::getDeviceGuardImpl(device.type());
  impl->synchronizeDevice(device.has_index() ? device.index() : impl->getDevice().index());
}

namespace {

// The whole pages to keep when only bytes are limited (policy.h's TopPagesByMeanSlot for
// xstream-page, TopPagesByBestSlot otherwise); on a GPU the page scores by one kernel.
at::Tensor TopPages(PrunePolicy policy, const at::Tensor& slot_scores, const at::Tensor& valid, int64_t pages_left) {
  const bool mean = policy == PrunePolicy::kXStreamPage;
#ifdef STREAMRECON_HAVE_CUDA_KV
  if (slot_scores.is_cuda()) return TopOnDevice(kernels::PageScoresCuda(slot_scores.contiguous(), valid, mean), pages_left);
#endif
  return mean ? TopPagesByMeanSlot(slot_scores, valid, pages_left, TopOnDevice) : TopPagesByBestSlot(slot_scores, valid, pages_left, TopOnDevice);
}

// dst's first pages: src's first `first`, then src's pages first + middle[i] (ascending); on a GPU
// by one kernel.
void GatherPages(const PagedKv& src, int64_t first, const at::Tensor& middle, PagedKv& dst) {
#ifdef STREAMRECON_HAVE_CUDA_KV
  if (src.meta.is_cuda()) return kernels::GatherPagesCuda(src, first, middle, dst);
#endif
  const at::Tensor index = at::cat({at::arange(first, middle.options()), middle + first});
  CopyPages(dst, src.Select(index), index.size(0));
}

// On a GPU, for the policies that rank pages by their keys alone: keeps the first pages and the
// middle pages listed in place (the kept pages past the kept count fill the evicted ones: a
// frame's worth of pages moves, not the store). The store leaves stream order; attention does not
// see it, but exact ties between page scores (which the top-k breaks toward the later position)
// may then keep another of the tied pages than the CPU cache, and Materialize lists the pages in
// store order. False where it does not apply (the window and random policies rank by position).
bool KeepPagesInPlace(PagedKv& store, int64_t first, const at::Tensor& middle, PrunePolicy policy) {
#ifdef STREAMRECON_HAVE_CUDA_KV
  if (store.meta.is_cuda() && (policy == PrunePolicy::kXStream || policy == PrunePolicy::kXStreamPage)) {
    kernels::KeepPagesInPlaceCuda(store, first, middle);
    return true;
  }
#endif
  (void)store, (void)first, (void)middle, (void)policy;
  return false;
}

// Rows from + i of dense k, v [H, capacity, D] into rows to[i] (each below `from`); on a GPU one
// kernel for both where the copies and index_copy_ took four.
void MoveRows(at::Tensor& k, at::Tensor& v, int64_t from, const at::Tensor& to) {
  const int64_t count = to.size(0);
#ifdef STREAMRECON_HAVE_CUDA_KV
  if (k.is_cuda() && k.scalar_type() == at::kBFloat16 && v.scalar_type() == at::kBFloat16 && k.size(2) == kernels::kKernelHeadDim)
    return kernels::MoveRowsCuda(k, v, from, to);
#endif
  // (copies first: index_copy_ refuses a source in the tensor it writes)
  k.index_copy_(1, to, k.narrow(1, from, count).clone());
  v.index_copy_(1, to, v.narrow(1, from, count).clone());
}

// Of the middle rows first .. first + middle - 1 in stream order `order` (undefined: row order),
// the rows of the kept stream positions `kept` (ascending) and the other middle rows, ascending;
// on a GPU one kernel where the gathers, the mask and its scan took a dozen.
std::pair<at::Tensor, at::Tensor> SplitRows(const at::Tensor& order, const at::Tensor& kept, int64_t first, int64_t middle) {
#ifdef STREAMRECON_HAVE_CUDA_KV
  if (kept.is_cuda()) {
    auto split = kernels::SplitRowsCuda(order, kept, first, middle);
    if (split.first.defined()) return split;
  }
#endif
  const at::Tensor kept_rows = order.defined() ? order.index_select(0, kept) : kept + first;
  const at::Tensor is_freed = at::ones({middle}, kept.options().dtype(at::kBool)).index_fill_(0, kept_rows - first, false);
  return {kept_rows, TrueIndices(is_freed, middle - kept.size(0)) + first};
}

class KvLayerCache final : public LayerKvCache {
 public:
  KvLayerCache(std::unique_ptr<KvBackend> backend, const KvCacheOptions& options) : backend_(std::move(backend)), options_(options) {}
  KvLayerCache(KvLayerCache&&) = default;
  KvLayerCache& operator=(KvLayerCache&&) = default;

  at::Tensor Forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) override {
    SR_CHECK(q.dim() == 3 && k.dim() == 3 && v.dim() == 3 && k.sizes() == v.sizes() && q.size(0) == k.size(0) && q.size(2) == k.size(2),
             Error, "KV cache: expected q, k, v as [H, N, D] with matching heads and channels, got " << q.sizes() << ", " << k.sizes() << ", "
                                                                                                      << v.sizes());
    const int64_t n = k.size(1);
    JoinMaintenance();  // (the rows and pages the last frame's maintenance writes)
    if (frames_ == 0 && heads_ == 0) Init(q, k);
    SR_CHECK(k.size(0) == heads_ && k.size(2) == head_dim_, Error,
             "KV cache: this layer holds " << heads_ << " heads of " << head_dim_ << " channels, the frame has " << k.sizes());
    // The host's page counts, where the backend reads them (else they may lag the device).
    if (quantized() && backend_->NeedsPageCounts(View(), n)) ResolveCounts(/*wait=*/true);
    if (!counts_stale_) {
      NoteTokens(frames_, TokensNow());
    } else if (!steady_ && known_tokens_.count(frames_) == 0 && !CopyQueuedFor(frames_)) {
      // a caller that does not call StepEnded: the counts this frame starts from, for
      // tokens_before_last_frame (a steady cache may be inside a graph's capture: not there, but
      // a model's step queued them)
      QueueCountsCopy(frames_);
    }
    const int64_t pages_before = pages_, store_before = store_.pages(), floor_before = floor_.base();
    const at::ScalarType work = backend_->WorkType(q.scalar_type());
    // Unrotated formats hand q and k of one dtype on as they came (the CUDA backend attends and
    // stores in bf16, so casting a bf16 model's tensors to the fp32 work type and back would only
    // add kernels); the rotation and the scores' pooled queries are computed in the work type.
    const bool as_is = q.scalar_type() == k.scalar_type();
    at::Tensor q_r, k_r, v_r = v, q_attend, k_attend;
    if (oscar()) {
      KvBackend::RotatedFrame r = backend_->RotateFrame(q, k, hadamard_);
      // (the measured quantization error is against the keys in the work type, as is a first
      // frame kept in bf16 rows)
      if (!r.k_r.defined() && (options_.quant_stats || options_.first_frame_bf16)) r.k_r = backend_->Rotate(k, hadamard_);
      q_r = r.q_r;
      k_r = r.k_r;
      q_attend = r.q_attend;
      k_attend = r.k_attend;
      if (options_.v_hadamard) v_r = backend_->Rotate(v, hadamard_);
    } else {
      q_r = q_attend = as_is ? q : q.to(work);
      k_r = k_attend = as_is ? k : k.to(work);
    }
    // Dense rows of the model's own dtype: the frame goes into the rows after the kept ones now, so
    // that a backend can attend to the cache and the frame as one block of rows (one call), and the
    // append only moves the tokens that take freed rows.
    tail_row_ = -1;
    if (!quantized() && k_r.scalar_type() == backend_->DenseType(options_.format, k_r.scalar_type()) &&
        v_r.scalar_type() == k_r.scalar_type()) {
      GrowRows(rows_ + n, k_r.options(), n);
      // (nothing to copy where the caller computed them there: FrameRows)
      for (const auto& [from, rows] : {std::pair{k_r, dense_k_}, std::pair{v_r, dense_v_}}) {
        const at::Tensor to = rows.narrow(1, rows_, n);
        if (from.data_ptr() != to.data_ptr() || from.strides() != to.strides()) to.copy_(from);
      }
      tail_row_ = rows_;
      tail_tokens_ = n;
    }
    const int64_t certain_before = certain_rows_;
    if (quantized()) ChooseCertainRows(n);
    at::Tensor out = backend_->Attend(q_attend, View(), k_attend, v_r);
    if (oscar() && options_.v_hadamard) out = backend_->Rotate(out, hadamard_);
    if (options_.measure) SynchronizeDevice(device_);
    const auto t0 = std::chrono::steady_clock::now();
    evicted_on_device_ = false;
    // (a Forward that threw between the prune and the append, e.g. in a failed graph capture,
    // left its eviction here; the cache itself is as before it)
    kept_order_ = freed_ = at::Tensor();
    const int64_t rows_before = rows_;
    const bool in_rows = tail_row_ == rows_;
    {
      // Nothing before this layer's next frame reads what pruning and storing write: on a second
      // stream they run beside the next layers' work.
      const std::optional<c10::StreamGuard> beside = ForkMaintenance({q, k, v, q_r, k_r, v_r});
      // (also when they throw: what they queued on it must be joined before the rows are read again)
      auto leave = [&] {
        if (!beside) return;
        maintenance_done_->record(beside->current_stream());
        maintenance_pending_ = true;
      };
      try {
        if (frames_ > 0 && options_.policy != PrunePolicy::kNone) {
          if (quantized()) PrunePages(q_r, n);
          else PruneRows(q_r, n);
        }
        Append(k, v, k_r, v_r);
        // A backend that reads the counts at the next frame gets them copied right after this
        // layer's maintenance, as the host runs ahead (not a steady cache's: never captured).
        if (counts_stale_ && backend_->NeedsPageCounts(View(), n)) QueueCountsCopy(frames_ + 1);
      } catch (...) {
        try {
          leave();
        } catch (...) {
        }
        throw;
      }
      leave();
    }
    ++frames_;
    // Steady: full and evicting on the device, nothing timed: dense rows evicting as many rows as a
    // frame adds (the rows, the order's buffer and the attention's length repeat), or pages keeping
    // as many whole pages as a frame adds, in the same store, attended without the host's counts
    // (the store, the shapes and the page count repeat).
    const bool dense_steady = !quantized() && in_rows && rows_ == rows_before;
    const bool paged_steady = quantized() && pages_ == pages_before && store_.pages() == store_before && !options_.quant_stats &&
                              certain_rows_ == certain_before && !backend_->NeedsPageCounts(View(), n);
    floor_delta_ = floor_.base() - floor_before;  // (what a replay of this Forward moves the floor by)
    last_tokens_ = n;
    steady_ = evicted_on_device_ && (dense_steady || paged_steady) && !options_.measure && backend_->replayable();
    if (options_.measure) {
      SynchronizeDevice(device_);
      maintenance_ms_ = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    }
    return out.to(q.scalar_type());
  }

  std::pair<at::Tensor, at::Tensor> Materialize() const override {
    JoinMaintenance();
    if (frames_ == 0) return {};
    if (!quantized()) {
      if (!order_.defined()) return {Rows(dense_k_).clone(), Rows(dense_v_).clone()};
      const at::Tensor index = StreamOrder();  // (index_select copies)
      return {at::index_select(Rows(dense_k_), 1, index), at::index_select(Rows(dense_v_), 1, index)};
    }
    std::vector<at::Tensor> ks, vs;
    if (rows_ > 0) {
      ks.push_back(Rows(dense_k_).to(at::kCPU, at::kFloat));
      vs.push_back(Rows(dense_v_).to(at::kCPU, at::kFloat));
    }
    if (pages_ > 0) {
      auto [k, v] = DequantizePages(store_.Head(pages_).To(at::kCPU));
      ks.push_back(k);
      vs.push_back(v);
    }
    return {at::cat(ks, 1).to(device_), at::cat(vs, 1).to(device_)};
  }

  void SetCapacity(const LayerCapacity& capacity) override {
    capacity_ = capacity;
    steady_ = false;
  }

  // (paged: while the rows the replayed attention takes as certain still are)
  bool graph_ready() const override {
    if (!steady_) return false;
    if (!quantized() || CertainRowsHold()) return true;
    spdlog::info("KV cache, frame {}: the attention took {} rows as certain, but only {} are known to be held ({} pages): "
                 "the CUDA graph of the step cannot be replayed",
                 frames_, certain_rows_, last_tokens_ + PagesFloor(), pages_);
    return false;
  }
  bool CanRecapture() const override { return steady_; }
  bool PrepareCapture() override {
    if (!steady_ || !quantized()) return steady_;
    // A capture anew costs the same whatever it changes: a cache whose count lies within half the
    // margin above its certain rows chooses them again too (usually a bucket lower), so that its
    // drift does not force another capture soon after (calls 120-124: 4-7 captures in 2000
    // frames, each 50-110 ms, as layers crossed their edges one by one; call 125: 2-3).
    // (From the counts that have landed; the next Forward's choice, from the same floor, keeps these.)
    ResolveCounts(/*wait=*/false);
    ChooseCertainRows(last_tokens_, kCertainMargin / 2);
    return CertainRowsHold();
  }
  int64_t certain_rows_for_testing() const override { return certain_rows_; }
  void SetCertainRowsForTesting(int64_t rows) override {
    if (quantized()) certain_rows_ = rows;
  }
  void Replayed() override {
    SR_CHECK(steady_, Error, "KV cache: a replayed Forward needs a steady cache");
    ++frames_;
    maintenance_ms_ = 0.0;
    if (quantized()) {  // (the replay kept pages on the device)
      counts_stale_ = true;
      ++counts_version_;
      floor_.Advance(floor_delta_);
    }
  }

  void StepEnded() override {
    if (!counts_stale_ || (!counts_copies_.empty() && counts_copies_.back().frame == frames_)) return;
    JoinMaintenance();
    QueueCountsCopy(frames_);
  }

  int64_t tokens() const override {
    ResolveCounts(/*wait=*/true);
    return TokensNow();
  }

  int64_t tokens_before_last_frame() const override {
    if (frames_ == 0) return 0;
    if (const auto known = KnownTokens(frames_ - 1)) return *known;
    // The counts of that frame were not copied (a caller other than a model's step, which calls
    // StepEnded): what is known now.
    return tokens();
  }

  int64_t bytes() const override { return rows_ * row_bytes_ + (pages_ > 0 ? pages_ * layout_.page_bytes() : 0); }
  QuantStats quant_stats() const override { return stats_; }
  double maintenance_ms() const override { return maintenance_ms_; }
  const char* backend() const override { return backend_->name(); }

  bool Join() override { return JoinMaintenance(); }
  void DiscardPending() override { maintenance_pending_ = false; }

  std::pair<at::Tensor, at::Tensor> FrameRows(int64_t n, const at::TensorOptions& options) override {
    const at::ScalarType dtype = options.dtype().toScalarType();
    if (frames_ == 0 || quantized() || oscar() || dtype != backend_->DenseType(options_.format, dtype)) return {};
    JoinMaintenance();  // (the last frame's maintenance reads these rows)
    GrowRows(rows_ + n, options, n);
    return {dense_k_.narrow(1, rows_, n), dense_v_.narrow(1, rows_, n)};
  }

  ~KvLayerCache() override { Settle(); }

  void Clear() override {
    Settle();
    KvLayerCache fresh(nullptr, options_);
    fresh.backend_ = std::move(backend_);
    fresh.capacity_ = capacity_;
    *this = std::move(fresh);
  }

 private:
  bool quantized() const { return IsQuantized(options_.format); }
  bool oscar() const { return IsOscar(options_.format); }
  at::Tensor Rows(const at::Tensor& t) const { return t.narrow(1, 0, rows_); }

  void Init(const at::Tensor& q, const at::Tensor& k) {
    heads_ = k.size(0);
    head_dim_ = k.size(2);
    device_ = k.device();
    if (quantized()) options_.Check(static_cast<int>(head_dim_));
    backend_->CheckLayer(static_cast<int>(heads_), static_cast<int>(head_dim_));
    if (oscar()) hadamard_ = HadamardMatrix(head_dim_, q.options().dtype(backend_->WorkType(q.scalar_type())));
    if (quantized())
      layout_ = PageLayoutFor(options_, static_cast<int>(heads_), static_cast<int>(head_dim_));
  }

  KvView View() const {
    KvView view;
    view.dense_k = dense_k_;
    view.dense_v = dense_v_;
    view.dense_tokens = rows_;
    view.pages = &store_;
    view.page_count = pages_;
    view.valid = counts_stale_ ? nullptr : &valid_;  // (stale: placeholders; a backend then reads the device's)
    view.current_rows = tail_row_ == rows_ ? tail_tokens_ : 0;
    view.certain_rows = quantized() && rows_ == 0 ? certain_rows_ : 0;
    return view;
  }

  // ---- the maintenance stream ----

  // The current stream of the cache's device, a GPU's.
  c10::Stream CurrentStream() const { return c10::impl::getDeviceGuardImpl(device_.type())->getStream(device_); }

  // With background_maintenance on a GPU (and nothing timed): a second stream of the device,
  // forked from the current one, as the current stream. The tensors it reads that the caller
  // owns, and the cache's storage, are marked as used on it, so that the allocator reuses none of
  // them before its work is done.
  std::optional<c10::StreamGuard> ForkMaintenance(std::initializer_list<at::Tensor> inputs) {
    if (!device_.is_cuda() || !options_.kernels.background_maintenance || options_.measure || !backend_->maintenance_beside())
      return std::nullopt;
    const c10::Stream main = CurrentStream();
    if (!maintenance_stream_) maintenance_stream_ = c10::impl::getDeviceGuardImpl(device_.type())->getStreamFromGlobalPool(device_);
    if (*maintenance_stream_ == main) return std::nullopt;  // (the pool's turn came round to the caller's stream)
    if (!maintenance_done_) maintenance_forked_.emplace(device_.type()), maintenance_done_.emplace(device_.type());
    maintenance_forked_->record(main);
    maintenance_forked_->block(*maintenance_stream_);
    for (const at::Tensor& t : inputs) MarkUsed(t, *maintenance_stream_);
    MarkStorageUsed(*maintenance_stream_);
    return std::optional<c10::StreamGuard>(std::in_place, *maintenance_stream_);
  }

  bool JoinMaintenance() const {
    if (!maintenance_pending_) return false;
    const c10::Stream current = CurrentStream();
    maintenance_done_->block(current);
    maintenance_pending_ = false;
    // (storage allocated on the maintenance stream is read on this one from now on)
    MarkStorageUsed(current);
    return true;
  }

  // Waits for pending maintenance before the cache's tensors are dropped (the caller's stream
  // may not have joined it, e.g. after a step that threw). Never throws (a destructor's).
  void Settle() noexcept {
    if (!maintenance_pending_) return;
    maintenance_pending_ = false;
    try {
      maintenance_done_->synchronize();
    } catch (...) {
      // (nothing to wait for where the event cannot be waited on, e.g. a failed capture's)
    }
  }

  // (Marked at every fork and join: about 700 calls a paged frame of host time, which runs a frame
  // ahead of the device. Holding the marked storages to mark each once kept replaced row buffers
  // alive a frame longer and raised the bf16 peak from 4.68 to 6.15 GiB while the caches filled;
  // docs/perf.md, call 110.)
  static void MarkUsed(const at::Tensor& t, const c10::Stream& stream) {
    if (t.defined() && t.is_cuda()) t.record_stream(stream);
  }
  void MarkStorageUsed(const c10::Stream& stream) const {
    for (const at::Tensor* t : {&dense_k_, &dense_v_, &order_, &frame_counter_}) MarkUsed(*t, stream);
    for (const PagedKv* pages : {&store_, &spare_}) pages->ForEach([&](const at::Tensor& t) { MarkUsed(t, stream); });
  }

  // ---- storing ----

  void Append(const at::Tensor& k, const at::Tensor& v, const at::Tensor& k_r, const at::Tensor& v_r) {
    const int64_t n = k.size(1);
    if (frames_ == 0) first_tokens_ = n;
    if (!quantized()) {
      AppendRows(k_r.to(backend_->DenseType(options_.format, k_r.scalar_type())), v_r);
    } else if (frames_ == 0 && options_.first_frame_bf16) {
      AppendRows(k_r.to(at::kBFloat16), v_r);  // the attention sink, apart from the pages
    } else {
      AppendPages(k, v, k_r, v_r);
    }
  }

  // Room for `needed` rows: the buffer grows as GrowTo says, within the capacity plus `beyond`
  // rows (the current frame's, held in the rows while it is attended).
  void GrowRows(int64_t needed, const at::TensorOptions& options, int64_t beyond = 0) {
    if (!dense_k_.defined()) row_bytes_ = 2 * heads_ * head_dim_ * static_cast<int64_t>(c10::elementSize(options.dtype().toScalarType()));
    const int64_t have = dense_k_.defined() ? dense_k_.size(1) : 0;
    int64_t capacity_rows = capacity_.tokens;
    if (capacity_.bytes >= 0)
      capacity_rows = capacity_rows < 0 ? capacity_.bytes / row_bytes_ : std::min(capacity_rows, capacity_.bytes / row_bytes_);
    const int64_t size = GrowTo(have, needed, capacity_rows >= 0 ? capacity_rows + beyond : -1);
    if (size <= have) return;
    at::Tensor keys = at::empty({heads_, size, head_dim_}, options), values = at::empty({heads_, size, head_dim_}, options);
    if (rows_ > 0) {
      keys.narrow(1, 0, rows_).copy_(Rows(dense_k_));
      values.narrow(1, 0, rows_).copy_(Rows(dense_v_));
    }
    dense_k_ = keys;
    dense_v_ = values;
  }

  // The frame's rows: where Forward put them (tail_row_ >= 0), else copied from k, v.
  void AppendRows(const at::Tensor& k, const at::Tensor& v) {
    const int64_t n = k.size(1);
    const bool in_rows = tail_row_ >= 0;
    if (!order_.defined() && !kept_order_.defined()) {  // rows in stream order: the frame goes after them
      if (!in_rows) {
        GrowRows(rows_ + n, k.options());
        dense_k_.narrow(1, rows_, n).copy_(k);
        dense_v_.narrow(1, rows_, n).copy_(v);
      } else if (tail_row_ != rows_) {  // a compaction moved the end of the kept rows down
        dense_k_.narrow(1, rows_, n).copy_(dense_k_.narrow(1, tail_row_, n).clone());
        dense_v_.narrow(1, rows_, n).copy_(dense_v_.narrow(1, tail_row_, n).clone());
      }
      rows_ += n;
      tail_row_ = -1;
      return;
    }
    // Rows are out of stream order since an eviction: the frame's first `extra` tokens take new rows
    // at the end (where Forward already put them), the rest the rows PruneRows freed (at most n);
    // the order lists them after the kept ones (this frame's kept_order_, else order_).
    SR_CHECK(!in_rows || tail_row_ == rows_, Error, "KV cache: the current frame's rows moved (" << tail_row_ << " vs " << rows_ << ")");
    const int64_t freed = freed_.defined() ? freed_.size(0) : 0, extra = n - freed;
    if (!in_rows) {
      GrowRows(rows_ + extra, k.options());
      dense_k_.narrow(1, rows_, extra).copy_(k.narrow(1, 0, extra));
      dense_v_.narrow(1, rows_, extra).copy_(v.narrow(1, 0, extra));
    }
    if (freed > 0 && in_rows) {
      MoveRows(dense_k_, dense_v_, rows_ + extra, freed_);
    } else if (freed > 0) {
      dense_k_.index_copy_(1, freed_, k.narrow(1, extra, freed));
      dense_v_.index_copy_(1, freed_, v.narrow(1, extra, freed).to(dense_v_.scalar_type()));
    }
    const at::Tensor kept = kept_order_.defined() ? kept_order_ : order_;
    const at::Tensor added = at::arange(rows_, rows_ + extra, kept.options());
    const std::vector<at::Tensor> parts = freed > 0 ? std::vector<at::Tensor>{kept, added, freed_} : std::vector<at::Tensor>{kept, added};
    // Into the same buffer while the length repeats (an eviction's kept rows are a fresh tensor,
    // never the buffer), so that a graph of a steady Forward reads the order where its last replay
    // wrote it.
    if (order_.defined() && !order_.is_same(kept) && order_.size(0) == kept.size(0) + extra + freed) {
      at::cat_out(order_, parts, 0);
    } else {
      order_ = at::cat(parts);
    }
    kept_order_ = freed_ = at::Tensor();
    rows_ += extra;
    tail_row_ = -1;
  }

  void AppendPages(const at::Tensor& k, const at::Tensor& v, const at::Tensor& k_r, const at::Tensor& v_r) {
    const int64_t n = k.size(1), slots = layout_.slots, add = CeilDiv(n, slots), page_bytes = layout_.page_bytes();
    const int64_t have = store_.pages();
    const int64_t size = GrowTo(have, pages_ + add, capacity_.bytes >= 0 ? capacity_.bytes / page_bytes : -1);
    if (size > have) {
      PagedKv next = AllocatePages(layout_, size, device_);
      CopyPages(next, store_, pages_);
      store_ = next;
      spare_ = PagedKv{};  // (reallocated at the new size by the next KeepWholePages)
    }
    // (on a GPU the frame number comes from a counter on the device, which a graph's replays advance)
    if (device_.is_cuda() && !frame_counter_.defined())
      frame_counter_ = at::full({1}, frames_, at::TensorOptions().dtype(at::kInt).device(device_));
    backend_->StorePages(k, v, k_r, v_r, static_cast<int32_t>(frames_), store_, pages_, frame_counter_);
    if (frame_counter_.defined()) frame_counter_.add_(1);
    for (int64_t i = 0; i < add; ++i) valid_.push_back(static_cast<int32_t>(std::min(slots, n - i * slots)));
    floor_.Append(n);
    ++counts_version_;
    if (options_.quant_stats) {
      // What the stored tokens read back as, against what they were stored from.
      auto [kd, vd] = DequantizePages(store_.Slice(pages_, add).To(at::kCPU));
      const at::Tensor k_ref = k_r.to(at::kCPU, at::kFloat), v_ref = v_r.to(at::kCPU, at::kFloat);
      stats_.k_sse += (kd - k_ref).pow(2).sum().item<double>();
      stats_.v_sse += (vd - v_ref).pow(2).sum().item<double>();
      stats_.k_energy += k_ref.pow(2).sum().item<double>();
      stats_.v_energy += v_ref.pow(2).sum().item<double>();
      stats_.values += k_ref.numel();
    }
    pages_ += add;
  }

  // ---- pruning ----

  // Dense rows: drops middle rows (never the first frame) so that the current frame's n fit. The
  // rows stay where they are (eviction): the dropped ones are freed for the current frame, so no
  // copy of the cache is made; order_ keeps the middle rows' stream order, which is what the
  // policies see (scores, ties and draws as the reference's, which keeps its rows in that order).
  void PruneRows(const at::Tensor& q_r, int64_t n) {
    const int64_t first = first_tokens_, middle = rows_ - first_tokens_;
    int64_t left = LayerBudget(capacity_, first + n, (first + n) * row_bytes_).TokensLeft(row_bytes_);
    // (a byte budget holds whole tiles of the next frame's attention rows, which are the kept ones,
    // this frame and that one; a token cap, the reference's, exactly its count)
    if (capacity_.tokens < 0 && n >= kAttentionRowTile) left = TileAlignedLeft(left, first + 2 * n);
    if (left < 0 || middle <= left) return;  // unlimited, or everything fits
    const at::Tensor row_scores = backend_->Scores(Pooled(q_r), View(), first, 0);  // the middle rows, in row order
    const at::Tensor in_order = order_.defined() ? row_scores.index_select(0, order_ - first) : row_scores;
    const at::Tensor scores = PolicyScores(options_.policy, in_order, options_.seed, frames_);
    at::Tensor kept;
    const int64_t page = std::min<int64_t>(options_.k_group, n);  // xstream-page: pages of k_group tokens within each frame
    // (the random policy draws on the host)
    bool on_device = options_.policy != PrunePolicy::kRandom;
    if (options_.policy != PrunePolicy::kXStreamPage) {
      kept = TopOnDevice(scores, left);
    } else if (n % page == 0 && middle % page == 0) {
      // Pages of equal size (the camera trunk's one-token entries, frames of whole pages): the
      // greedy rule takes the best left / page of them, a top-k on the device.
      const at::Tensor top = TopOnDevice(scores.view({middle / page, page}).mean(1), left / page);
      kept = (top.unsqueeze(1) * page + at::arange(page, top.options()).unsqueeze(0)).flatten();
    } else {  // a partial page ends each frame: the sequential rule on the host
      const at::Tensor h = scores.to(at::kCPU, at::kDouble).contiguous();
      const std::vector<int64_t> index =
          SelectDensePages(std::vector<double>(h.data_ptr<double>(), h.data_ptr<double>() + middle), n, options_.k_group, left);
      kept = at::tensor(index, at::kLong).to(device_);
      on_device = false;
    }
    // kept: positions in stream order (ascending); their rows, in stream order, and the freed
    // rows, ascending, for AppendRows to fill.
    const auto [kept_rows, freed_rows] = SplitRows(order_, kept, first, middle);
    if (freed_rows.size(0) <= n) {
      kept_order_ = kept_rows;
      freed_ = freed_rows;
      evicted_on_device_ = on_device;
      return;
    }
    // More rows freed than the frame takes (the capacity shrank): compaction into stream order.
    const at::Tensor index = at::cat({at::arange(first, kept.options()), kept_rows});
    const int64_t length = index.size(0);
    // index_select copies first, so writing the result back in place is safe.
    dense_k_.narrow(1, 0, length).copy_(at::index_select(Rows(dense_k_), 1, index));
    dense_v_.narrow(1, 0, length).copy_(at::index_select(Rows(dense_v_), 1, index));
    rows_ = length;
    order_ = at::Tensor();
    freed_ = at::Tensor();
  }

  // The rows in stream order (with order_ defined): the first frame's, then the middle ones.
  at::Tensor StreamOrder() const { return at::cat({at::arange(first_tokens_, order_.options()), order_}); }

  // The first frame's pages (none when it is kept as bf16 rows).
  int64_t FirstPages() const { return rows_ > 0 ? 0 : CeilDiv(first_tokens_, layout_.slots); }

  // Pages: frees middle pages / slots so that the current frame (n tokens) fits the capacity.
  void PrunePages(const at::Tensor& q_r, int64_t n) {
    const int64_t page_bytes = layout_.page_bytes(), first_pages = FirstPages(), middle_pages = pages_ - first_pages;
    const int64_t first_bytes = rows_ > 0 ? rows_ * row_bytes_ : first_pages * page_bytes;
    const LayerBudget budget(capacity_, first_tokens_ + n, first_bytes + CeilDiv(n, layout_.slots) * page_bytes);
    // (a token cap needs the counts on the host; bytes alone do not)
    if (budget.tokens_left >= 0) ResolveCounts(/*wait=*/true);
    const int64_t middle_tokens = budget.tokens_left >= 0 ? ValidSum() - std::accumulate(valid_.begin(), valid_.begin() + first_pages, int64_t{0}) : 0;
    if (budget.Fits(middle_tokens, middle_pages * page_bytes)) return;
    const at::Tensor scores =
        PolicyScores(options_.policy, backend_->Scores(Pooled(q_r), View(), first_tokens_, first_pages), options_.seed, frames_);
    if (budget.tokens_left < 0) {  // only bytes limited: whole pages, chosen on the device
      const at::Tensor valid = store_.meta.narrow(0, first_pages, middle_pages).select(1, 0);
      const int64_t k = budget.bytes_left / page_bytes;
      KeepWholePages(first_pages, TopPages(options_.policy, scores, valid, k));
      evicted_on_device_ = options_.policy != PrunePolicy::kRandom;  // (whose draws are the host's)
      return;
    }
    // A token cap: the sequential rule on the host.
    const at::Tensor h = scores.to(at::kCPU, at::kDouble).contiguous();
    const double* sc = h.data_ptr<double>();
    std::vector<double> flat;
    std::vector<int64_t> page_of, slot_of;
    for (int64_t p = 0; p < middle_pages; ++p)
      for (int64_t s = 0; s < valid_[first_pages + p]; ++s) {
        flat.push_back(sc[p * layout_.slots + s]);
        page_of.push_back(p);
        slot_of.push_back(s);
      }
    Compact(first_pages, SelectPageSlots(options_.policy, flat, page_of, slot_of, middle_pages, page_bytes, budget.tokens_left,
                                         budget.bytes_left));
  }

  at::Tensor Pooled(const at::Tensor& q_r) const { return backend_->Pooled(q_r, options_.pool_size, options_.special_tokens); }

  // Keeps the first pages and the middle pages listed (ascending, on the device) whole, without a
  // read back, in the store's first pages, so that the store stays where a CUDA graph of a steady
  // Forward reads and writes it: in place where KeepPagesInPlace applies, else gathered into the
  // spare store and copied back. On a GPU the kept pages' valid counts stay there (the host's copy
  // lags: counts_stale_).
  void KeepWholePages(int64_t first_pages, const at::Tensor& middle) {
    const int64_t kept = middle.size(0), count = first_pages + kept;
    PagedKv head = store_.Head(pages_);
    if (!KeepPagesInPlace(head, first_pages, middle, options_.policy)) {
      if (spare_.pages() != store_.pages()) spare_ = AllocatePages(layout_, store_.pages(), device_);
      GatherPages(head, first_pages, middle, spare_);
      CopyPages(store_, spare_.Slice(first_pages, kept), kept, first_pages);  // (the first pages are where they were)
    }
    floor_.DropPages(pages_ - count, layout_.slots);
    ++counts_version_;
    pages_ = count;
    if (device_.is_cpu()) {
      ReadCounts();
    } else {
      valid_.assign(static_cast<size_t>(count), 0);  // (placeholders: the pages appended next go after them)
      counts_stale_ = true;
    }
  }

  // Keeps the first pages and, of the middle pages, the listed slots (moved to the page front).
  void Compact(int64_t first_pages, const std::vector<std::vector<int64_t>>& kept) {
    const int64_t slots = layout_.slots;
    std::vector<int64_t> pages, slot_index;  // slot_index [P', G]: the source slot of each slot
    std::vector<int32_t> valid;
    for (int64_t p = 0; p < pages_; ++p) {
      std::vector<int64_t> keep;
      if (p < first_pages) {
        keep.resize(valid_[p]);
        std::iota(keep.begin(), keep.end(), 0);
      } else {
        keep = kept[p - first_pages];
      }
      if (keep.empty()) continue;
      pages.push_back(p);
      valid.push_back(static_cast<int32_t>(keep.size()));
      for (int64_t s = 0; s < slots; ++s) slot_index.push_back(s < static_cast<int64_t>(keep.size()) ? keep[s] : s);
    }
    const int64_t count = static_cast<int64_t>(pages.size());
    const at::Tensor page_index = at::tensor(pages, at::kLong).to(device_);
    const at::Tensor slot_source = at::tensor(slot_index, at::kLong).view({count, slots}).to(device_);
    const PagedKv picked = store_.Head(pages_).Select(page_index);
    // Slots move within their page: codes, V params and norms follow them; K params are per page.
    auto gather_slots = [&](const at::Tensor& t, int64_t slot_dim) {
      std::vector<int64_t> shape(t.dim(), 1);
      shape[0] = count;
      shape[slot_dim] = slots;
      return at::gather(t, slot_dim, slot_source.view(shape).expand(t.sizes()));
    };
    PagedKv compacted = picked;
    compacted.k_codes = gather_slots(picked.k_codes, 2);
    compacted.v_codes = gather_slots(picked.v_codes, 2);
    compacted.v_params = gather_slots(picked.v_params, 2);
    compacted.norms = gather_slots(picked.norms, 1);
    compacted.meta.select(1, 0).copy_(at::tensor(valid, at::kInt).to(device_));
    CopyPages(store_, compacted, count);
    pages_ = count;
    valid_ = valid;
    counts_stale_ = false;
    ++counts_version_;
    SetFloorExact();
  }

  // ---- the host mirror of the pages' valid counts ----

  // A lower bound of the pages' valid tokens: exact from the host's counts, else the bound kept
  // through the frames since they were (TokenFloor, core/kv/budget.h).
  int64_t PagesFloor() const { return counts_stale_ ? floor_.value() : ValidSum(); }
  void SetFloorExact() const { floor_.SetExact(ValidSum()); }
  // The pages' valid tokens by the host's counts.
  int64_t ValidSum() const { return std::accumulate(valid_.begin(), valid_.end(), int64_t{0}); }
  bool CopyQueuedFor(int64_t frame) const {
    return std::any_of(counts_copies_.begin(), counts_copies_.end(), [&](const CountsCopy& c) { return c.frame == frame; });
  }
  // The counts read from the page metadata (on a GPU a synchronisation, after the maintenance):
  // the host's copy exact again.
  void ReadCounts() const {
    JoinMaintenance();  // (the maintenance stream may still be writing them)
    const at::Tensor m = store_.meta.narrow(0, 0, pages_).select(1, 0).to(at::kCPU).contiguous();
    valid_.assign(m.data_ptr<int32_t>(), m.data_ptr<int32_t>() + pages_);
    counts_stale_ = false;
    SetFloorExact();
  }

  // The rows [current frame; pages' valid slots] an attention over n current tokens may take as
  // certain (KvView::certain_rows): whole buckets of kCertainRowsBucket at least kCertainMargin
  // below the floor when chosen, then the same as last frame's while those still are and lie
  // within two buckets of it (a CUDA graph bakes them in, and cuDNN builds a plan per length). The
  // margin keeps a choice from sitting just under the count, which wobbles by a few dozen tokens
  // from frame to frame (call 114: a graph dropped and captured again every few frames) and drifts
  // down, by 15 tokens whenever the policy keeps one more of the frames' partial pages (0.5-1.5
  // tokens a frame over 2000 frames, calls 117-120: a layer crosses a bucket's edge every 1000-4000
  // frames whatever the margin, and its step is then captured again, about 50 ms). cuDNN takes the
  // rows up to B plus a bucket, those past the count zeroed; the rows past that go to flash
  // attention, about 16 us a layer more per 1000 rows than cuDNN (RaggedPagesAttention).
  // (No event query here: Forward may run inside a graph's capture. StepEnded and graph_ready
  // take in the landed copies.) keep_slack: the last choice is kept only while at least this many
  // rows lie between it and the count (PrepareCapture's half margin; a Forward's 0).
  void ChooseCertainRows(int64_t n, int64_t keep_slack = 0) {
    certain_rows_ = streamrecon::ChooseCertainRows(n, PagesFloor(), certain_rows_, kCertainRowsBucket, kCertainMargin, keep_slack);
  }
  // Whether the last attention's certain rows are still known to be held (at least one row is left
  // to the device's count, as ChooseCertainRows leaves it).
  bool CertainRowsHold() const {
    ResolveCounts(/*wait=*/false);
    return certain_rows_ <= last_tokens_ + PagesFloor() - 1;
  }
  static constexpr int64_t kCertainMargin = 1024;  // (tokens; 256 gave the same recaptures, calls 117-118)

  // Tokens held, from the host's counts (exact unless counts_stale_).
  int64_t TokensNow() const { return rows_ + ValidSum(); }

  // The tokens held after the Forward that made frames_ == frame, where known (a short history:
  // tokens_before_last_frame asks for the frame before the last).
  void NoteTokens(int64_t frame, int64_t tokens) const {
    known_tokens_[frame] = tokens;
    while (known_tokens_.size() > 4) known_tokens_.erase(known_tokens_.begin());
  }
  std::optional<int64_t> KnownTokens(int64_t frame) const {
    ResolveCounts(/*wait=*/false);
    if (known_tokens_.count(frame) == 0) {
      // a copy of that frame's counts on its way: wait for it (the frame before the last one)
      if (!CopyQueuedFor(frame)) return std::nullopt;
      ResolveCounts(/*wait=*/true, frame);
    }
    return known_tokens_.at(frame);
  }

  // On a GPU, after the step (StepEnded): the page metadata as it is once the step's work is done,
  // copied into pinned memory on the current stream, to land while the host queues the next frames.
  // `frame`: the frames_ the copied counts belong to (after the Forward that queues it).
  void QueueCountsCopy(int64_t frame) {
    ResolveCounts(/*wait=*/false);  // (frees the copies that landed)
    while (counts_copies_.size() >= 3) ResolveCounts(/*wait=*/true, counts_copies_.front().frame);  // (a host far ahead)
    // a free pinned buffer (held by no queued copy) large enough; smaller free ones are dropped
    at::Tensor host;
    for (auto it = counts_buffers_.begin(); it != counts_buffers_.end();) {
      const bool free = it->use_count() == 1;
      if (free && !host.defined() && it->size(0) >= pages_) host = *it;
      if (free && it->size(0) < pages_) it = counts_buffers_.erase(it);
      else ++it;
    }
    if (!host.defined()) {
      host = at::empty({std::max<int64_t>(pages_, store_.pages()), 2}, at::TensorOptions().dtype(at::kInt).pinned_memory(true));
      counts_buffers_.push_back(host);
    }
    CountsCopy copy{host, std::nullopt, frame, pages_, counts_version_, floor_.mark()};
    if (pages_ > 0) copy.host.narrow(0, 0, pages_).copy_(store_.meta.narrow(0, 0, pages_), /*non_blocking=*/true);
    copy.ready.emplace(device_.type());
    copy.ready->record(CurrentStream());
    counts_copies_.push_back(std::move(copy));
  }

  // Takes in the queued copies that have landed (wait: also those up to `frame`, default the
  // newest, waiting for them); the newest one of the current frame makes the host's counts exact
  // again. With wait and no copy of the current frame queued (a caller other than a model's step),
  // reads the counts from the device (a synchronisation).
  void ResolveCounts(bool wait, int64_t frame = -1) const {
    if (!counts_stale_ && counts_copies_.empty()) return;
    while (!counts_copies_.empty()) {
      CountsCopy& c = counts_copies_.front();
      const bool needed = wait && (frame < 0 || c.frame <= frame);
      if (!c.ready->query()) {
        if (!needed) break;
        c.ready->synchronize();
      }
      const int32_t* m = c.host.data_ptr<int32_t>();
      int64_t tokens = rows_;
      std::vector<int32_t> counts(static_cast<size_t>(c.pages));
      for (int64_t p = 0; p < c.pages; ++p) tokens += counts[p] = m[2 * p];
      NoteTokens(c.frame, tokens);
      if (c.version == counts_version_) {  // (nothing changed the pages since it was queued)
        valid_ = std::move(counts);
        counts_stale_ = false;
        SetFloorExact();
      } else {
        floor_.Landed(c.mark, tokens - rows_);
      }
      counts_copies_.pop_front();
    }
    if (wait && frame < 0 && counts_stale_) {
      ReadCounts();
      NoteTokens(frames_, TokensNow());
    }
  }

  std::unique_ptr<KvBackend> backend_;
  KvCacheOptions options_;
  LayerCapacity capacity_;
  int64_t heads_ = 0, head_dim_ = 0;
  c10::Device device_ = c10::kCPU;
  at::Tensor hadamard_;  // OScaR, in the work type
  int64_t frames_ = 0, first_tokens_ = 0;
  // dense rows [H, allocated, D], the first rows_ in use
  at::Tensor dense_k_, dense_v_;
  int64_t rows_ = 0, row_bytes_ = 0;
  // Since the first eviction (dense formats): the middle rows' indices in stream order (long, on
  // the device; undefined: the rows are in stream order). Between a prune and the append: the
  // kept middle rows in stream order and the freed rows the current frame takes.
  at::Tensor order_, kept_order_, freed_;
  bool steady_ = false;     // the last Forward was steady (graph_ready)
  bool evicted_on_device_ = false;  // during Forward: PruneRows evicted rows chosen on the device
  // During Forward: the row where the current frame's rows start (dense formats in the keys' own
  // dtype), else -1.
  int64_t tail_row_ = -1, tail_tokens_ = 0;
  // pages: the first pages_ of store_ in use, their valid counts mirrored on the host (valid_,
  // exact unless counts_stale_: on a GPU, pages kept on the device since the last copy landed)
  PageLayout layout_;
  PagedKv store_;
  int64_t pages_ = 0;
  mutable std::vector<int32_t> valid_;
  mutable bool counts_stale_ = false;
  PagedKv spare_;  // as many pages as store_: where KeepWholePages gathers the kept pages
  at::Tensor frame_counter_;  // (GPU pages) int32 [1]: the frame number the next stored pages get
  // Copies of the page metadata on their way to the host (QueueCountsCopy), oldest first, and the
  // pinned buffers they use (a buffer is free when only this list holds it).
  struct CountsCopy {
    at::Tensor host;
    std::optional<c10::Event> ready;
    int64_t frame = 0, pages = 0;
    int64_t version = 0;    // counts_version_ when queued
    TokenFloor::Mark mark;  // the floor's when queued
  };
  mutable std::deque<CountsCopy> counts_copies_;
  std::vector<at::Tensor> counts_buffers_;
  mutable std::map<int64_t, int64_t> known_tokens_;  // tokens held after frame f (the last few)
  // The lower bound of the pages' valid tokens (PagesFloor) and what a steady Forward moved it by;
  // the certain rows of the last attention (ChooseCertainRows) and its current tokens.
  mutable TokenFloor floor_;
  int64_t counts_version_ = 0;  // changes whenever the pages or their counts change on the device
  int64_t floor_delta_ = 0, certain_rows_ = 0, last_tokens_ = 0;
  QuantStats stats_;
  double maintenance_ms_ = 0.0;
  // GPU, background_maintenance: the stream pruning and storing run on, the events of its fork
  // from the caller's stream and of the last Forward's work on it, which the caller's stream has
  // not waited for while pending.
  std::optional<c10::Stream> maintenance_stream_;
  std::optional<c10::Event> maintenance_forked_, maintenance_done_;
  mutable bool maintenance_pending_ = false;
};

}  // namespace

std::unique_ptr<LayerKvCache> MakeCacheOver(std::unique_ptr<KvBackend> backend, const KvCacheOptions& options) {
  options.Check();
  return std::make_unique<KvLayerCache>(std::move(backend), options);
}

}  // namespace streamrecon
