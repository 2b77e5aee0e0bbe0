// Packed INT4/INT2 KV-cache pages (KIVI and OScaR): the page tensors of one layer and the exact CPU
// reference of quantizing a frame into pages and back. The byte layout is PageLayout's
// (core/kv/format.h); the arithmetic is quantizer.h's, shared with the CUDA kernels.
#pragma once

#include <cstdint>
#include <utility>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "core/kv/format.h"
#include "core/kv/quantizer.h"

namespace streamrecon {

using kv::DequantizeValue;
using kv::FloatToHalfBits;
using kv::HalfBitsToFloat;
using kv::QuantizeValue;

// kv::MakeQuantParams with its precondition checked: Error when the group reaches outside the fp16
// range of the stored scale and zero (non-finite or huge activations).
QuantParams MakeQuantParams(float lo, float hi, int bits);

// Packs n codes of `bits` bits (LSB first within each byte) into n * bits / 8 bytes, and back.
void PackCodes(const uint8_t* codes, int64_t n, int bits, uint8_t* out);
void UnpackCodes(const uint8_t* packed, int64_t n, int bits, uint8_t* codes);

// The normalised Sylvester-Hadamard matrix [d, d] (d a power of two): orthogonal and symmetric.
at::Tensor HadamardMatrix(int64_t d, const at::TensorOptions& options);

// Quantized pages of one layer (PageLayout order), on any device.
struct PagedKv {
  PageLayout layout;
  at::Tensor k_codes;   // uint8 [P, H, G, D*b/8]
  at::Tensor k_params;  // int16 (fp16 bits) [P, H, D, 2]: scale, zero
  at::Tensor v_codes;   // uint8 [P, H, G, D*b/8]
  at::Tensor v_params;  // int16 (fp16 bits) [P, H, G, D/Gv, 2]
  at::Tensor norms;     // float [P, G] (OScaR; ones for KIVI, not counted)
  at::Tensor meta;      // int32 [P, 2]: valid, frame

  int64_t pages() const { return meta.defined() ? meta.size(0) : 0; }
  // Calls f(tensor) for each of the six tensors, in the order above.
  template <typename F>
  void ForEach(F&& f) {
    for (at::Tensor* t : {&k_codes, &k_params, &v_codes, &v_params, &norms, &meta}) f(*t);
  }
  template <typename F>
  void ForEach(F&& f) const {
    for (const at::Tensor* t : {&k_codes, &k_params, &v_codes, &v_params, &norms, &meta}) f(*t);
  }
  // A PagedKv of the same layout whose tensors are f(tensor), each.
  template <typename F>
  PagedKv Map(F&& f) const {
    PagedKv out;
    out.layout = layout;
    out.k_codes = f(k_codes), out.k_params = f(k_params), out.v_codes = f(v_codes);
    out.v_params = f(v_params), out.norms = f(norms), out.meta = f(meta);
    return out;
  }
  // Pages [first, first + count) (views).
  PagedKv Slice(int64_t first, int64_t count) const;
  PagedKv Head(int64_t count) const { return Slice(0, count); }
  // The pages listed by `index` (long, on the pages' device), copied.
  PagedKv Select(const at::Tensor& index) const;
  PagedKv To(c10::Device device) const;
};

// `pages` empty pages of `layout` (zero codes and params, unit norms) on `device`.
PagedKv AllocatePages(const PageLayout& layout, int64_t pages, c10::Device device);

// Copies src's first `count` pages into dst at page `dst_offset`.
void CopyPages(PagedKv& dst, const PagedKv& src, int64_t count, int64_t dst_offset = 0);

// Quantizes one frame into ceil(N / G) pages. keys, values: float [H, N, D], keys already
// rotated and divided by their norms for OScaR; norms: float [N] (or undefined for KIVI).
PagedKv QuantizeFrame(const at::Tensor& keys, const at::Tensor& values, const at::Tensor& norms,
                      const PageLayout& layout, int32_t frame);

// Dequantizes every valid token of every page (CPU pages), in page order: keys (times their
// norms), values, both float [H, T, D].
std::pair<at::Tensor, at::Tensor> DequantizePages(const PagedKv& pages);

}  // namespace streamrecon
