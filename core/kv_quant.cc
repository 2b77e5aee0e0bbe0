// CPU reference of the packed KIVI / OScaR KV cache: quantization primitives, page (de)quantization
// and the quantized layer cache with page- and token-granular pruning.
#include "core/kv_quant.h"

#include <ATen/ATen.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <iterator>
#include <chrono>
#include <cmath>
#include <cstring>
#include <numeric>

#include "core/errors.h"

namespace streamrecon {

uint16_t FloatToHalfBits(float x) { return c10::Half(x).x; }

float HalfBitsToFloat(uint16_t bits) { return static_cast<float>(c10::Half(bits, c10::Half::from_bits())); }

namespace {

constexpr float kHalfMax = 65504.0f;

uint16_t HalfNextDown(uint16_t b) {
  if (b == 0x0000) return 0x8001;             // +0 -> smallest negative subnormal
  return (b & 0x8000) ? static_cast<uint16_t>(b + 1) : static_cast<uint16_t>(b - 1);
}

uint16_t HalfNextUp(uint16_t b) {
  if (b == 0x8000) return 0x0001;             // -0 -> smallest positive subnormal
  return (b & 0x8000) ? static_cast<uint16_t>(b - 1) : static_cast<uint16_t>(b + 1);
}

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

QuantParams MakeQuantParams(float lo, float hi, int bits) {
  if (!(std::fabs(lo) <= kHalfMax && std::fabs(hi) <= kHalfMax))
    throw Error("KV quantization: a group spans [" + std::to_string(lo) + ", " + std::to_string(hi) +
                "], outside the fp16 range of the stored scale/zero (non-finite or huge activations)");
  const int levels = (1 << bits) - 1;
  uint16_t zero = FloatToHalfBits(lo);
  if (HalfBitsToFloat(zero) > lo) zero = HalfNextDown(zero);
  const float z = HalfBitsToFloat(zero);
  uint16_t scale = 0;
  if (hi > z) {
    scale = FloatToHalfBits((hi - z) / levels);
    if (HalfBitsToFloat(scale) <= 0.0f) scale = 0x0001;
    while (z + HalfBitsToFloat(scale) * levels < hi) scale = HalfNextUp(scale);
  }
  return QuantParams{scale, zero};
}

uint8_t QuantizeValue(float x, const QuantParams& p, int bits) {
  const float scale = HalfBitsToFloat(p.scale);
  if (scale == 0.0f) return 0;
  // Multiplication by the correctly rounded reciprocal: identical on the GPU, where it is cheaper.
  const float inv = 1.0f / scale;
  const float c = std::nearbyint((x - HalfBitsToFloat(p.zero)) * inv);
  return static_cast<uint8_t>(std::clamp(c, 0.0f, static_cast<float>((1 << bits) - 1)));
}

float DequantizeValue(uint8_t code, const QuantParams& p) {
  return static_cast<float>(code) * HalfBitsToFloat(p.scale) + HalfBitsToFloat(p.zero);
}

void PackCodes(const uint8_t* codes, int64_t n, int bits, uint8_t* out) {
  std::memset(out, 0, static_cast<size_t>(n * bits / 8));
  for (int64_t i = 0; i < n; ++i) out[i * bits / 8] |= static_cast<uint8_t>(codes[i] << ((i * bits) % 8));
}

void UnpackCodes(const uint8_t* packed, int64_t n, int bits, uint8_t* codes) {
  const int mask = (1 << bits) - 1;
  for (int64_t i = 0; i < n; ++i) codes[i] = static_cast<uint8_t>((packed[i * bits / 8] >> ((i * bits) % 8)) & mask);
}

at::Tensor HadamardMatrix(int64_t d, const at::TensorOptions& options) {
  if (d < 1 || (d & (d - 1)) != 0) throw OptionError("Hadamard rotation needs a power-of-two size, got " + std::to_string(d));
  at::Tensor h = at::ones({1, 1}, at::kDouble);
  while (h.size(0) < d) h = at::cat({at::cat({h, h}, 1), at::cat({h, -h}, 1)}, 0);
  return (h / std::sqrt(static_cast<double>(d))).to(options);
}

PagedKv PagedKv::Head(int64_t count) const {
  PagedKv h;
  h.layout = layout;
  h.k_codes = k_codes.narrow(0, 0, count);
  h.k_params = k_params.narrow(0, 0, count);
  h.v_codes = v_codes.narrow(0, 0, count);
  h.v_params = v_params.narrow(0, 0, count);
  h.norms = norms.narrow(0, 0, count);
  h.meta = meta.narrow(0, 0, count);
  return h;
}

PagedKv AllocatePages(const PageLayout& L, int64_t pages, at::Device device) {
  const auto o = at::TensorOptions().device(device);
  PagedKv p;
  p.layout = L;
  p.k_codes = at::zeros({pages, L.heads, L.slots, L.row_bytes()}, o.dtype(at::kByte));
  p.k_params = at::zeros({pages, L.heads, L.head_dim, 2}, o.dtype(at::kShort));
  p.v_codes = at::zeros({pages, L.heads, L.slots, L.row_bytes()}, o.dtype(at::kByte));
  p.v_params = at::zeros({pages, L.heads, L.slots, L.head_dim / L.v_group, 2}, o.dtype(at::kShort));
  p.norms = at::ones({pages, L.slots}, o.dtype(at::kFloat));
  p.meta = at::zeros({pages, 2}, o.dtype(at::kInt));
  return p;
}

void CopyPages(PagedKv& dst, const PagedKv& src, int64_t count, int64_t dst_offset) {
  if (count == 0) return;
  dst.k_codes.narrow(0, dst_offset, count).copy_(src.k_codes.narrow(0, 0, count));
  dst.k_params.narrow(0, dst_offset, count).copy_(src.k_params.narrow(0, 0, count));
  dst.v_codes.narrow(0, dst_offset, count).copy_(src.v_codes.narrow(0, 0, count));
  dst.v_params.narrow(0, dst_offset, count).copy_(src.v_params.narrow(0, 0, count));
  dst.norms.narrow(0, dst_offset, count).copy_(src.norms.narrow(0, 0, count));
  dst.meta.narrow(0, dst_offset, count).copy_(src.meta.narrow(0, 0, count));
}

PagedKv QuantizeFrame(const at::Tensor& keys_in, const at::Tensor& values_in, const at::Tensor& norms_in,
                      const PageLayout& layout, int32_t frame) {
  const at::Tensor keys = keys_in.to(at::kCPU, at::kFloat).contiguous();
  const at::Tensor values = values_in.to(at::kCPU, at::kFloat).contiguous();
  const int64_t H = keys.size(0), N = keys.size(1), D = keys.size(2), G = layout.slots, bits = layout.bits;
  const int64_t RB = layout.row_bytes(), Gv = layout.v_group, NG = D / Gv;
  const int64_t P = CeilDiv(N, G);
  PagedKv out = AllocatePages(layout, P, at::kCPU);
  const float* k = keys.data_ptr<float>();
  const float* v = values.data_ptr<float>();
  auto* kc = out.k_codes.data_ptr<uint8_t>();
  auto* kp = reinterpret_cast<QuantParams*>(out.k_params.data_ptr<int16_t>());
  auto* vc = out.v_codes.data_ptr<uint8_t>();
  auto* vp = reinterpret_cast<QuantParams*>(out.v_params.data_ptr<int16_t>());
  const at::Tensor norms = norms_in.defined() ? norms_in.to(at::kCPU, at::kFloat).contiguous() : at::ones({N}, at::kFloat);
  const float* nr = norms.data_ptr<float>();
  float* norms_out = out.norms.data_ptr<float>();
  int32_t* meta = out.meta.data_ptr<int32_t>();
  std::vector<uint8_t> codes(D);
  for (int64_t p = 0; p < P; ++p) {
    const int64_t t0 = p * G, tn = std::min(G, N - t0);
    meta[2 * p] = static_cast<int32_t>(tn);
    meta[2 * p + 1] = frame;
    for (int64_t t = 0; t < tn; ++t) norms_out[p * G + t] = nr[t0 + t];
    for (int64_t h = 0; h < H; ++h) {
      // K: per channel over the page's real tokens (padding never widens the range).
      QuantParams* kparams = kp + (p * H + h) * D;
      for (int64_t d = 0; d < D; ++d) {
        float lo = INFINITY, hi = -INFINITY;
        for (int64_t t = 0; t < tn; ++t) {
          const float x = k[(h * N + t0 + t) * D + d];
          lo = std::min(lo, x);
          hi = std::max(hi, x);
        }
        kparams[d] = MakeQuantParams(lo, hi, static_cast<int>(bits));
      }
      for (int64_t t = 0; t < tn; ++t) {
        const float* row = k + (h * N + t0 + t) * D;
        for (int64_t d = 0; d < D; ++d) codes[d] = QuantizeValue(row[d], kparams[d], static_cast<int>(bits));
        PackCodes(codes.data(), D, static_cast<int>(bits), kc + ((p * H + h) * G + t) * RB);
      }
      // V: per token, groups of Gv channels.
      for (int64_t t = 0; t < tn; ++t) {
        const float* row = v + (h * N + t0 + t) * D;
        QuantParams* vparams = vp + ((p * H + h) * G + t) * NG;
        for (int64_t g = 0; g < NG; ++g) {
          const auto [lo, hi] = std::minmax_element(row + g * Gv, row + (g + 1) * Gv);
          vparams[g] = MakeQuantParams(*lo, *hi, static_cast<int>(bits));
          for (int64_t c = g * Gv; c < (g + 1) * Gv; ++c) codes[c] = QuantizeValue(row[c], vparams[g], static_cast<int>(bits));
        }
        PackCodes(codes.data(), D, static_cast<int>(bits), vc + ((p * H + h) * G + t) * RB);
      }
    }
  }
  return out;
}

std::pair<at::Tensor, at::Tensor> DequantizePages(const PagedKv& pages) {
  const PageLayout& L = pages.layout;
  const int64_t P = pages.pages(), H = L.heads, D = L.head_dim, G = L.slots, RB = L.row_bytes(), NG = D / L.v_group;
  const at::Tensor meta_t = pages.meta.contiguous();
  const int32_t* meta = meta_t.data_ptr<int32_t>();
  int64_t T = 0;
  for (int64_t p = 0; p < P; ++p) T += meta[2 * p];
  at::Tensor keys = at::empty({H, T, D}, at::kFloat), values = at::empty({H, T, D}, at::kFloat);
  const auto* kc = pages.k_codes.contiguous().data_ptr<uint8_t>();
  const auto* kp = reinterpret_cast<const QuantParams*>(pages.k_params.contiguous().data_ptr<int16_t>());
  const auto* vc = pages.v_codes.contiguous().data_ptr<uint8_t>();
  const auto* vp = reinterpret_cast<const QuantParams*>(pages.v_params.contiguous().data_ptr<int16_t>());
  const at::Tensor norms = pages.norms.contiguous();
  const float* nr = norms.data_ptr<float>();
  float* ko = keys.data_ptr<float>();
  float* vo = values.data_ptr<float>();
  std::vector<uint8_t> codes(D);
  int64_t base = 0;
  for (int64_t p = 0; p < P; ++p) {
    const int64_t valid = meta[2 * p];
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < valid; ++t) {
        const int64_t slot = (p * H + h) * G + t;
        const float norm = L.norms ? nr[p * G + t] : 1.0f;
        UnpackCodes(kc + slot * RB, D, L.bits, codes.data());
        float* krow = ko + (h * T + base + t) * D;
        for (int64_t d = 0; d < D; ++d) krow[d] = DequantizeValue(codes[d], kp[(p * H + h) * D + d]) * norm;
        UnpackCodes(vc + slot * RB, D, L.bits, codes.data());
        float* vrow = vo + (h * T + base + t) * D;
        for (int64_t d = 0; d < D; ++d) vrow[d] = DequantizeValue(codes[d], vp[slot * NG + d / L.v_group]);
      }
    base += valid;
  }
  return {keys, values};
}

int64_t FrameBytes(const KvCacheOptions& options, int heads, int head_dim, int64_t n, int dense_elem_bytes, bool first_frame) {
  if (options.format == CacheFormat::kDense) return n * 2 * heads * head_dim * dense_elem_bytes;
  if (options.format == CacheFormat::kBf16 || (first_frame && options.first_frame_bf16)) return n * 2 * heads * head_dim * 2;
  PageLayout layout{heads, head_dim, options.k_group, FormatBits(options.format), options.v_group, IsOscar(options.format)};
  return CeilDiv(n, options.k_group) * layout.page_bytes();
}

namespace {

class QuantizedLayerCache final : public LayerKvCache {
 public:
  explicit QuantizedLayerCache(const KvCacheOptions& options) : options_(options) {}

  at::Tensor Forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) override {
    const int64_t n = k.size(1);
    if (layout_.heads == 0) Init(k);
    at::Tensor q_r = q, k_r = k, v_r = v;
    if (oscar()) {
      const at::Tensor had = HadamardMatrix(k.size(2), q.options());
      q_r = at::matmul(q, had);
      k_r = at::matmul(k, had);
      if (options_.v_hadamard) v_r = at::matmul(v, had);
    }
    auto [cached_k, cached_v] = Materialize();
    at::Tensor out = AttendCachedAndCurrent(q_r, cached_k, cached_v, k_r, v_r);
    if (oscar() && options_.v_hadamard) out = at::matmul(out, HadamardMatrix(k.size(2), q.options()));
    const auto t0 = std::chrono::steady_clock::now();
    if (frames_ > 0) Prune(q_r, cached_k, n);
    Append(k_r, v_r);
    if (options_.measure) maintenance_ms_ = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    return out;
  }

  double maintenance_ms() const override { return maintenance_ms_; }

  std::pair<at::Tensor, at::Tensor> Materialize() const override {
    if (frames_ == 0) return {};
    std::vector<at::Tensor> ks, vs;
    if (first_k_.defined()) {
      ks.push_back(first_k_.to(at::kFloat));
      vs.push_back(first_v_.to(at::kFloat));
    }
    if (pages_ > 0) {
      auto [k, v] = DequantizePages(View());
      ks.push_back(k);
      vs.push_back(v);
    }
    return {at::cat(ks, 1), at::cat(vs, 1)};
  }

  void SetCapacity(const LayerCapacity& capacity) override { capacity_ = capacity; }

  int64_t tokens() const override {
    int64_t t = first_k_.defined() ? first_k_.size(1) : 0;
    if (pages_ > 0) t += store_.meta.narrow(0, 0, pages_).select(1, 0).sum().item<int64_t>();
    return t;
  }

  int64_t bytes() const override {
    const int64_t dense = first_k_.defined() ? 2 * first_k_.numel() * 2 : 0;
    return dense + pages_ * layout_.page_bytes();
  }

  QuantStats quant_stats() const override { return stats_; }

  void Clear() override {
    *this = QuantizedLayerCache(options_);
  }

 private:
  bool oscar() const { return IsOscar(options_.format); }

  void Init(const at::Tensor& k) {
    layout_ = PageLayout{static_cast<int>(k.size(0)), static_cast<int>(k.size(2)), options_.k_group, FormatBits(options_.format),
                         options_.v_group, oscar()};
    options_.Check(layout_.head_dim);
  }

  PagedKv View() const { return store_.Head(pages_); }

  // The first frame is protected: its pages come first (or it is held in bf16 apart).
  int64_t FirstPages() const { return first_k_.defined() ? 0 : CeilDiv(first_tokens_, layout_.slots); }

  void Append(const at::Tensor& k_r, const at::Tensor& v_r) {
    const int64_t n = k_r.size(1);
    if (frames_ == 0) first_tokens_ = n;
    if (frames_ == 0 && options_.first_frame_bf16) {
      first_k_ = k_r.to(at::kBFloat16).contiguous();
      first_v_ = v_r.to(at::kBFloat16).contiguous();
      ++frames_;
      return;
    }
    at::Tensor keys = k_r.to(at::kFloat), norms;
    if (oscar()) {
      norms = keys.pow(2).sum(at::IntArrayRef{0, 2}).sqrt().clamp_min(1e-12);  // [N], over all heads and channels
      keys = keys / norms.view({1, n, 1});
    }
    PagedKv frame = QuantizeFrame(keys, v_r, norms, layout_, static_cast<int32_t>(frames_));
    // Quality bookkeeping: what the stored tokens will read back as.
    auto [kd, vd] = DequantizePages(frame);
    const at::Tensor k_ref = k_r.to(at::kCPU, at::kFloat), v_ref = v_r.to(at::kCPU, at::kFloat);
    stats_.k_sse += (kd - k_ref).pow(2).sum().item<double>();
    stats_.v_sse += (vd - v_ref).pow(2).sum().item<double>();
    stats_.k_energy += k_ref.pow(2).sum().item<double>();
    stats_.v_energy += v_ref.pow(2).sum().item<double>();
    stats_.values += k_ref.numel();
    AppendPages(frame);
    ++frames_;
  }

  void AppendPages(const PagedKv& frame) {
    const int64_t add = frame.pages(), need = pages_ + add;
    if (!store_.meta.defined() || store_.meta.size(0) < need) {
      int64_t grow = std::max<int64_t>(need, 2 * (store_.meta.defined() ? store_.meta.size(0) : 0));
      if (capacity_.bytes >= 0) grow = std::min(grow, std::max(need, capacity_.bytes / layout_.page_bytes()));
      PagedKv next = AllocatePages(layout_, grow, at::kCPU);
      if (pages_ > 0) CopyPages(next, store_, pages_);
      store_ = next;
    }
    CopyPages(store_, frame, add, pages_);
    pages_ = need;
  }

  // Frees middle pages / token slots so that the current frame (n tokens) fits the capacity.
  void Prune(const at::Tensor& q_r, const at::Tensor& cached_k, int64_t n) {
    if (options_.policy == PrunePolicy::kNone) return;
    const int64_t page_bytes = layout_.page_bytes();
    const int64_t first_pages = FirstPages();
    const int64_t first_bytes = first_k_.defined() ? 2 * first_k_.numel() * 2 : first_pages * page_bytes;
    const int64_t current_bytes = FrameBytes(options_, layout_.heads, layout_.head_dim, n, 0, false);
    // (< 0 = no limit; a capacity below the first and current frames leaves 0, never "unlimited")
    const int64_t tokens_left = capacity_.tokens < 0 ? -1 : std::max<int64_t>(0, capacity_.tokens - first_tokens_ - n);
    const int64_t bytes_left = capacity_.bytes < 0 ? -1 : std::max<int64_t>(0, capacity_.bytes - first_bytes - current_bytes);
    const int64_t middle_pages = pages_ - first_pages;
    const int64_t middle_tokens = cached_k.size(1) - first_tokens_;
    const bool fits = (tokens_left < 0 || middle_tokens <= tokens_left) && (bytes_left < 0 || middle_pages * page_bytes <= bytes_left);
    if (fits) return;

    const std::vector<double> scores =
        MiddleScores(options_.policy, q_r, cached_k.narrow(1, first_tokens_, middle_tokens), options_, frames_);
    // Middle token -> (page relative to the first middle page, slot), in page order.
    std::vector<int64_t> page_of, slot_of;
    const int32_t* meta = store_.meta.data_ptr<int32_t>();
    for (int64_t p = first_pages; p < pages_; ++p)
      for (int32_t s = 0; s < meta[2 * p]; ++s) {
        page_of.push_back(p - first_pages);
        slot_of.push_back(s);
      }
    std::vector<std::vector<int64_t>> kept_slots(pages_);
    std::vector<std::vector<int64_t>> middle =
        SelectPageSlots(options_.policy, scores, page_of, slot_of, middle_pages, page_bytes, tokens_left, bytes_left);
    std::move(middle.begin(), middle.end(), kept_slots.begin() + first_pages);
    Compact(first_pages, kept_slots);
  }

  // Keeps the first frame's pages and, of the others, the listed slots (moved to the page front).
  void Compact(int64_t first_pages, std::vector<std::vector<int64_t>>& kept_slots) {
    std::vector<int64_t> pages;
    for (int64_t p = 0; p < pages_; ++p)
      if (p < first_pages || !kept_slots[p].empty()) pages.push_back(p);
    const at::Tensor index = at::tensor(pages, at::kLong);
    PagedKv next;
    next.k_codes = store_.k_codes.index_select(0, index);
    next.k_params = store_.k_params.index_select(0, index);
    next.v_codes = store_.v_codes.index_select(0, index);
    next.v_params = store_.v_params.index_select(0, index);
    next.norms = store_.norms.index_select(0, index);
    next.meta = store_.meta.index_select(0, index);
    for (size_t i = 0; i < pages.size(); ++i) {
      const int64_t p = pages[i];
      if (p < first_pages) continue;
      const std::vector<int64_t>& slots = kept_slots[p];
      if (static_cast<int32_t>(slots.size()) == next.meta.data_ptr<int32_t>()[2 * i]) continue;  // untouched
      const at::Tensor s = at::tensor(slots, at::kLong);
      const int64_t k = static_cast<int64_t>(slots.size());
      auto squeeze_slots = [&](at::Tensor t, int64_t dim) {  // t: one page's tensor, slots along dim
        const at::Tensor kept = t.index_select(dim, s);
        t.zero_();
        t.narrow(dim, 0, k).copy_(kept);
      };
      squeeze_slots(next.k_codes[i], 1);
      squeeze_slots(next.v_codes[i], 1);
      squeeze_slots(next.v_params[i], 1);
      squeeze_slots(next.norms[i], 0);
      next.meta[i][0] = static_cast<int32_t>(k);
    }
    // Re-store in place (capacity unchanged; the store never grows while pruning).
    pages_ = static_cast<int64_t>(pages.size());
    CopyPages(store_, next, pages_);
  }

  KvCacheOptions options_;
  LayerCapacity capacity_;
  PageLayout layout_;
  PagedKv store_;        // page tensors with spare capacity; the first pages_ are in use
  int64_t pages_ = 0;
  at::Tensor first_k_, first_v_;  // bf16 [H, N0, D] when the first frame is kept in bf16
  int64_t first_tokens_ = 0;
  int64_t frames_ = 0;
  QuantStats stats_;
  double maintenance_ms_ = 0.0;
};

}  // namespace

std::unique_ptr<LayerKvCache> MakeQuantizedLayerCache(const KvCacheOptions& options) {
  if (!IsQuantized(options.format)) throw OptionError("MakeQuantizedLayerCache needs a quantized format");
  return std::make_unique<QuantizedLayerCache>(options);
}

}  // namespace streamrecon
