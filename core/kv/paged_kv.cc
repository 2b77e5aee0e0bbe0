// Page tensors and the CPU reference of page (de)quantization.
#include "core/kv/paged_kv.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/check.h"
#include "core/kv/budget.h"

namespace streamrecon {

namespace {

constexpr float kHalfMax = 65504.0f;

}  // namespace

QuantParams MakeQuantParams(float lo, float hi, int bits) {
  SR_CHECK(std::fabs(lo) <= kHalfMax && std::fabs(hi) <= kHalfMax, Error,
           "KV quantization: a group spans [" << lo << ", " << hi
                                              << "], outside the fp16 range of the stored scale/zero (non-finite or huge activations)");
  return kv::MakeQuantParams(lo, hi, bits);
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

PagedKv PagedKv::Slice(int64_t first, int64_t count) const {
  return Map([&](const at::Tensor& t) { return t.narrow(0, first, count); });
}

PagedKv PagedKv::Select(const at::Tensor& index) const {
  return Map([&](const at::Tensor& t) { return t.index_select(0, index); });
}

PagedKv PagedKv::To(c10::Device device) const {
  return Map([&](const at::Tensor& t) { return t.to(device); });
}

PagedKv AllocatePages(const PageLayout& L, int64_t pages, c10::Device device) {
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
  std::vector<at::Tensor> to;
  dst.Slice(dst_offset, count).ForEach([&](const at::Tensor& t) { to.push_back(t); });
  size_t i = 0;
  src.Head(count).ForEach([&](const at::Tensor& t) { to[i++].copy_(t); });
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

}  // namespace streamrecon
