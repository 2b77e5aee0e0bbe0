// CUDA layer cache: storage on the device, kernels for append/attention/scores, torch ops on the
// device for top-k and compaction. Selection rules are the CPU reference's (core/kv_cache.h).
#include "kernels/cuda_kv_cache.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAFunctions.h>

#include <chrono>

#include <algorithm>
#include <numeric>

#include "core/errors.h"
#include "core/kv_quant.h"
#include "kernels/kv_ops.h"

namespace streamrecon::kernels {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

class CudaLayerCache final : public LayerKvCache {
 public:
  explicit CudaLayerCache(const KvCacheOptions& options) : options_(options) {
    if (options_.format == CacheFormat::kDense) options_.format = CacheFormat::kBf16;
  }

  at::Tensor Forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) override {
    const int64_t n = k.size(1);
    if (heads_ == 0) Init(k);
    ResolveValid();
    at::Tensor q_r = q.to(at::kFloat), k_r = k.to(at::kFloat), v_r = v;
    if (oscar()) {
      q_r = at::matmul(q_r, had_);
      k_r = at::matmul(k_r, had_);
      if (options_.v_hadamard) v_r = at::matmul(v.to(at::kFloat), had_);
    }
    const at::Tensor k_cur = k_r.to(at::kBFloat16).contiguous(), v_cur = v_r.to(at::kBFloat16).contiguous();
    // The kept length changes from frame to frame: the bucketed variant of the dequantize-once path.
    static const AttentionPath path = [] {
      const AttentionPath chosen = ResolveAttentionPath(AttentionPath::kAuto);
      return chosen == AttentionPath::kDequantSdpa ? AttentionPath::kDequantSdpaBucketed : chosen;
    }();
    at::Tensor out = AttentionCuda(q_r.to(at::kBFloat16).contiguous(), keys_, values_, length_, quantized() ? &store_ : nullptr,
                                   pages_, k_cur, v_cur, 0, path, &valid_);
    if (oscar() && options_.v_hadamard) out = at::matmul(out.to(at::kFloat), had_);
    if (options_.measure) c10::cuda::device_synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    if (frames_ > 0) Prune(q_r, n);
    if (quantized()) {
      AppendQuantized(k.to(at::kBFloat16).contiguous(), v.to(at::kBFloat16).contiguous());
    } else {
      AppendDense(k_cur, v_cur);
    }
    if (options_.measure) {
      c10::cuda::device_synchronize();
      maintenance_ms_ = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    }
    ++frames_;
    return out.to(q.scalar_type());
  }

  std::pair<at::Tensor, at::Tensor> Materialize() const override {
    if (frames_ == 0) return {};
    if (!quantized()) return {keys_.narrow(1, 0, length_).to(at::kFloat), values_.narrow(1, 0, length_).to(at::kFloat)};
    PagedKv host = Slice(pages_);
    host.layout = layout_;
    for (at::Tensor* t : {&host.k_codes, &host.k_params, &host.v_codes, &host.v_params, &host.norms, &host.meta}) *t = t->cpu();
    auto [k, v] = DequantizePages(host);
    return {k.to(keys_device_), v.to(keys_device_)};
  }

  void SetCapacity(const LayerCapacity& capacity) override { capacity_ = capacity; }
  double maintenance_ms() const override { return maintenance_ms_; }

  int64_t tokens() const override {
    if (!quantized()) return length_;
    ResolveValid();
    return std::accumulate(valid_.begin(), valid_.end(), int64_t{0});
  }

  int64_t bytes() const override { return quantized() ? pages_ * layout_.page_bytes() : length_ * token_bytes_; }

  void Clear() override { *this = CudaLayerCache(options_); }

 private:
  bool quantized() const { return IsQuantized(options_.format); }
  bool oscar() const { return IsOscar(options_.format); }

  void Init(const at::Tensor& k) {
    heads_ = k.size(0);
    if (k.size(2) != 64) throw Error("the CUDA KV cache supports head dimension 64, got " + std::to_string(k.size(2)));
    options_.Check(64);
    keys_device_ = k.device();
    token_bytes_ = 2 * heads_ * 64 * 2;
    if (oscar()) had_ = HadamardMatrix(64, k.options().dtype(at::kFloat));
    if (quantized()) {
      if (options_.first_frame_bf16) throw OptionError("--first-frame-bf16 is not supported by the CUDA cache yet");
      layout_ = PageLayout{static_cast<int>(heads_), 64, options_.k_group, FormatBits(options_.format), options_.v_group, oscar()};
    }
  }

  // ---- dense bf16 ----
  void AppendDense(const at::Tensor& k, const at::Tensor& v) {
    const int64_t n = k.size(1);
    if (frames_ == 0) first_tokens_ = n;
    const int64_t have = keys_.defined() ? keys_.size(1) : 0;
    if (length_ + n > have) {
      int64_t grow = std::max<int64_t>(length_ + n, 2 * have);
      if (capacity_.tokens >= 0) grow = std::min(grow, std::max(length_ + n, capacity_.tokens));
      if (capacity_.bytes >= 0) grow = std::min(grow, std::max(length_ + n, capacity_.bytes / token_bytes_));
      at::Tensor nk = at::empty({heads_, grow, 64}, k.options()), nv = at::empty({heads_, grow, 64}, k.options());
      if (length_ > 0) {
        nk.narrow(1, 0, length_).copy_(keys_.narrow(1, 0, length_));
        nv.narrow(1, 0, length_).copy_(values_.narrow(1, 0, length_));
      }
      keys_ = nk;
      values_ = nv;
    }
    keys_.narrow(1, length_, n).copy_(k);
    values_.narrow(1, length_, n).copy_(v);
    length_ += n;
  }

  // ---- pages ----
  PagedKv Slice(int64_t count) const { return store_.Head(count); }

  void AppendQuantized(const at::Tensor& k, const at::Tensor& v) {
    const int64_t n = k.size(1), add = CeilDiv(n, layout_.slots);
    if (frames_ == 0) first_tokens_ = n;
    const int64_t have = store_.meta.defined() ? store_.meta.size(0) : 0;
    if (pages_ + add > have) {
      int64_t grow = std::max<int64_t>(pages_ + add, 2 * have);
      if (capacity_.bytes >= 0) grow = std::min(grow, std::max(pages_ + add, capacity_.bytes / layout_.page_bytes()));
      PagedKv next = AllocatePages(layout_, grow, k.device());
      if (pages_ > 0) CopyPages(next, store_, pages_);
      store_ = next;
    }
    AppendPagesCuda(k, v, oscar(), options_.v_hadamard, static_cast<int>(frames_), store_, pages_);
    for (int64_t i = 0; i < add; ++i) valid_.push_back(static_cast<int32_t>(std::min<int64_t>(layout_.slots, n - i * layout_.slots)));
    pages_ += add;
  }

  // Frees middle tokens/pages so that the current frame (n tokens) fits; the first frame stays.
  void Prune(const at::Tensor& q_r, int64_t n) {
    if (options_.policy == PrunePolicy::kNone) return;
    if (quantized()) PrunePages(q_r, n);
    else PruneDense(q_r, n);
  }

  // Scores of the policy for `count` units given device scores (XStreamVGGT) on the device.
  at::Tensor PolicyScores(const at::Tensor& xstream_scores) const {
    if (options_.policy == PrunePolicy::kWindow)
      return at::arange(xstream_scores.numel(), xstream_scores.options()).view(xstream_scores.sizes());
    if (options_.policy == PrunePolicy::kRandom) {
      at::Generator gen = at::detail::createCPUGenerator(options_.seed * 1000003ULL + static_cast<uint64_t>(frames_));
      const at::Tensor r = at::rand(xstream_scores.sizes(), gen, at::TensorOptions().dtype(at::kFloat)).to(xstream_scores.device());
      return at::where(at::isfinite(xstream_scores), r, xstream_scores);
    }
    return xstream_scores;
  }

  void PruneDense(const at::Tensor& q_r, int64_t n) {
    const int64_t first = first_tokens_, middle = length_ - first;
    int64_t left = capacity_.tokens < 0 ? -1 : capacity_.tokens - first - n;
    if (capacity_.bytes >= 0) {
      const int64_t by_bytes = capacity_.bytes / token_bytes_ - first - n;
      left = left < 0 ? by_bytes : std::min(left, by_bytes);
    }
    if (left < 0 || middle <= left) return;
    const at::Tensor q_bar = PooledQueries(q_r, options_.pool_size, options_.special_tokens);
    const at::Tensor all = PolicyScores(TokenScoresCuda(q_bar, keys_, length_, nullptr, 0, static_cast<int>(heads_)));
    const at::Tensor mid = all.narrow(0, first, middle);
    at::Tensor kept;
    if (options_.policy == PrunePolicy::kXStreamPage) {
      // Pages of k_group tokens within each frame of n tokens: selection on the host (small).
      const at::Tensor h = mid.to(at::kCPU, at::kDouble).contiguous();
      const std::vector<int64_t> index =
          SelectDensePages(std::vector<double>(h.data_ptr<double>(), h.data_ptr<double>() + middle), n, options_.k_group, left);
      kept = at::tensor(index, at::kLong).to(keys_.device());
    } else {
      kept = std::get<0>(at::sort(std::get<1>(at::topk(mid, left))));  // top-k on the device
    }
    const at::Tensor index = at::cat({at::arange(first, kept.options()), kept + first});
    const int64_t new_length = index.size(0);
    keys_.narrow(1, 0, new_length).copy_(at::index_select(keys_.narrow(1, 0, length_), 1, index));
    values_.narrow(1, 0, new_length).copy_(at::index_select(values_.narrow(1, 0, length_), 1, index));
    length_ = new_length;
  }

  void PrunePages(const at::Tensor& q_r, int64_t n) {
    const int64_t page_bytes = layout_.page_bytes(), G = layout_.slots;
    const int64_t first_pages = CeilDiv(first_tokens_, G);
    const int64_t middle_pages = pages_ - first_pages;
    const int64_t tokens_left = capacity_.tokens < 0 ? -1 : capacity_.tokens - first_tokens_ - n;
    const int64_t bytes_left = capacity_.bytes < 0 ? -1 : capacity_.bytes - first_pages * page_bytes - CeilDiv(n, G) * page_bytes;
    const int32_t* counts = valid_.data() + first_pages;  // valid tokens of the middle pages (host mirror)
    const int64_t middle_tokens = std::accumulate(counts, counts + middle_pages, int64_t{0});
    const bool fits = (tokens_left < 0 || middle_tokens <= tokens_left) && (bytes_left < 0 || middle_pages * page_bytes <= bytes_left);
    if (fits) return;
    const at::Tensor q_bar = PooledQueries(q_r, options_.pool_size, options_.special_tokens);
    const PagedKv view = Slice(pages_);
    const at::Tensor slot_scores =
        PolicyScores(TokenScoresCuda(q_bar, {}, 0, &view, pages_, static_cast<int>(heads_))).narrow(0, first_pages, middle_pages);
    if (tokens_left < 0) {  // only bytes limited: whole pages, chosen on the device
      const int64_t k = std::max<int64_t>(0, std::min<int64_t>(middle_pages, bytes_left / page_bytes));
      at::Tensor top;
      if (options_.policy == PrunePolicy::kXStreamPage) {  // mean slot score per page
        const at::Tensor finite = at::isfinite(slot_scores);
        const at::Tensor mean = at::where(finite, slot_scores, at::zeros_like(slot_scores)).sum(1) / finite.sum(1).clamp_min(1);
        top = std::get<0>(at::sort(std::get<1>(at::topk(mean, k))));
      } else {  // token-granular: the greedy rule's choice in this case (see TopPagesByBestSlot)
        top = TopPagesByBestSlot(slot_scores, view.meta.narrow(0, first_pages, middle_pages).select(1, 0), k);
      }
      KeepWholePages(first_pages, top);
      return;
    }
    // A token cap (tokens and pages both limited): the CPU reference's greedy rule on the host.
    const at::Tensor h = slot_scores.to(at::kCPU, at::kDouble).contiguous();
    const double* sc = h.data_ptr<double>();
    std::vector<double> scores;
    std::vector<int64_t> page_of, slot_of;
    for (int64_t p = 0; p < middle_pages; ++p)
      for (int64_t s = 0; s < counts[p]; ++s) {
        scores.push_back(sc[p * G + s]);
        page_of.push_back(p);
        slot_of.push_back(s);
      }
    Compact(first_pages, SelectPageSlots(options_.policy, scores, page_of, slot_of, middle_pages, page_bytes, tokens_left, bytes_left));
  }

  // Keeps the first pages and the middle pages listed (ascending, on the device) whole, without a
  // read back: the kept pages' valid counts come to the host asynchronously and are needed only
  // at this layer's next frame (ResolveValid).
  void KeepWholePages(int64_t first_pages, const at::Tensor& middle) {
    const at::Tensor page_idx = at::cat({at::arange(first_pages, middle.options()), middle + first_pages});
    const int64_t P = first_pages + middle.size(0);
    const PagedKv all = Slice(pages_);
    PagedKv kept;
    kept.k_codes = all.k_codes.index_select(0, page_idx), kept.k_params = all.k_params.index_select(0, page_idx);
    kept.v_codes = all.v_codes.index_select(0, page_idx), kept.v_params = all.v_params.index_select(0, page_idx);
    kept.norms = all.norms.index_select(0, page_idx), kept.meta = all.meta.index_select(0, page_idx);
    CopyPages(store_, kept, P);
    pages_ = P;
    valid_host_ = at::empty({P}, at::TensorOptions().dtype(at::kInt).pinned_memory(true));
    valid_host_.copy_(kept.meta.select(1, 0), /*non_blocking=*/true);
    valid_ready_.record(at::cuda::getCurrentCUDAStream());
    valid_.assign(static_cast<size_t>(P), 0);  // filled in by ResolveValid
    valid_pending_ = true;
  }

  // The host mirror of the valid counts after KeepWholePages (waits for that copy only).
  void ResolveValid() const {
    if (!valid_pending_) return;
    valid_ready_.synchronize();
    std::copy_n(valid_host_.data_ptr<int32_t>(), valid_host_.numel(), valid_.begin());
    valid_pending_ = false;
  }

  // Keeps the first pages and the listed slots of the middle pages (moved to the page front), on the device.
  void Compact(int64_t first_pages, const std::vector<std::vector<int64_t>>& kept) {
    const int64_t G = layout_.slots;
    std::vector<int64_t> pages;
    std::vector<int64_t> slot_index;  // [P', G]: source slot of each destination slot
    std::vector<int32_t> valid;
    const int32_t* counts = valid_.data();
    for (int64_t p = 0; p < pages_; ++p) {
      const bool first = p < first_pages;
      if (!first && kept[p - first_pages].empty()) continue;
      pages.push_back(p);
      std::vector<int64_t> slots;
      if (first) {
        for (int64_t s = 0; s < counts[p]; ++s) slots.push_back(s);
      } else {
        slots = kept[p - first_pages];
      }
      valid.push_back(static_cast<int32_t>(slots.size()));
      for (int64_t s = 0; s < G; ++s) slot_index.push_back(s < static_cast<int64_t>(slots.size()) ? slots[s] : s);
    }
    const auto dev = store_.meta.device();
    const int64_t P = static_cast<int64_t>(pages.size());
    const at::Tensor page_idx = at::tensor(pages, at::kLong).to(dev);
    const at::Tensor slots = at::tensor(slot_index, at::kLong).view({P, G}).to(dev);
    const PagedKv all = Slice(pages_);
    auto gather_slots = [&](const at::Tensor& t, int64_t slot_dim) {
      at::Tensor picked = t.index_select(0, page_idx);
      std::vector<int64_t> shape(picked.dim(), 1);
      shape[0] = P;
      shape[slot_dim] = G;
      at::Tensor idx = slots.view(shape).expand(picked.sizes());
      return at::gather(picked, slot_dim, idx);
    };
    const at::Tensor k_codes = gather_slots(all.k_codes, 2), v_codes = gather_slots(all.v_codes, 2);
    const at::Tensor v_params = gather_slots(all.v_params, 2), norms = gather_slots(all.norms, 1);
    const at::Tensor k_params = all.k_params.index_select(0, page_idx);
    at::Tensor meta = all.meta.index_select(0, page_idx);
    meta.select(1, 0).copy_(at::tensor(valid, at::kInt).to(dev));
    PagedKv compacted;
    compacted.k_codes = k_codes, compacted.k_params = k_params, compacted.v_codes = v_codes;
    compacted.v_params = v_params, compacted.norms = norms, compacted.meta = meta;
    CopyPages(store_, compacted, P);
    pages_ = P;
    valid_ = valid;
  }

  KvCacheOptions options_;
  LayerCapacity capacity_;
  int64_t heads_ = 0;
  at::Device keys_device_ = at::kCPU;
  at::Tensor had_;
  int64_t frames_ = 0, first_tokens_ = 0, token_bytes_ = 0;
  // dense bf16
  at::Tensor keys_, values_;  // [H, capacity, 64]
  int64_t length_ = 0;
  // pages
  PageLayout layout_;
  PagedKv store_;
  int64_t pages_ = 0;
  // Valid tokens of each page, mirrored on the host (appends and compaction know them; after a
  // whole-page selection on the device they arrive by an asynchronous copy, see ResolveValid).
  mutable std::vector<int32_t> valid_;
  mutable bool valid_pending_ = false;
  at::Tensor valid_host_;  // pinned
  mutable at::cuda::CUDAEvent valid_ready_;
  double maintenance_ms_ = 0.0;
};

}  // namespace

bool CudaKvAvailable() { return at::hasCUDA() && at::cuda::is_available(); }

std::unique_ptr<LayerKvCache> MakeCudaLayerKvCache(const KvCacheOptions& options) {
  options.Check();
  return std::make_unique<CudaLayerCache>(options);
}

}  // namespace streamrecon::kernels
