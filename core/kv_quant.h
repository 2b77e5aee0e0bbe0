// Packed INT4/INT2 KV-cache pages (KIVI and OScaR) and their exact CPU reference: quantize once
// at append, dequantize for attention, prune by whole pages or by tokens without re-quantizing.
// The byte layout is described by PageLayout (core/kv_format.h) and shared with the CUDA kernels.
#pragma once

#include <cstdint>
#include <memory>

#include <ATen/core/Tensor.h>

#include "core/kv_cache.h"
#include "core/kv_format.h"

namespace streamrecon {

// fp16 <-> float through c10::Half (IEEE binary16, round to nearest even).
uint16_t FloatToHalfBits(float x);
float HalfBitsToFloat(uint16_t bits);

// Parameters of a group spanning [lo, hi] for `bits`-bit codes: zero = lo rounded down to fp16,
// scale rounded up to fp16 so that zero + scale * (2^bits - 1) >= hi. Constant groups get scale 0.
QuantParams MakeQuantParams(float lo, float hi, int bits);
// Nearest code of x in the group (clamped to [0, 2^bits - 1]).
uint8_t QuantizeValue(float x, const QuantParams& p, int bits);
// code * scale + zero, in float.
float DequantizeValue(uint8_t code, const QuantParams& p);

// Packs n codes of `bits` bits (LSB first within each byte) into n * bits / 8 bytes, and back.
void PackCodes(const uint8_t* codes, int64_t n, int bits, uint8_t* out);
void UnpackCodes(const uint8_t* packed, int64_t n, int bits, uint8_t* codes);

// The normalised Sylvester-Hadamard matrix [d, d] (d a power of two): orthogonal and symmetric.
at::Tensor HadamardMatrix(int64_t d, const at::TensorOptions& options);

// Quantized pages of one layer (CPU tensors, PageLayout order). Exposed for tests and kernels.
struct PagedKv {
  PageLayout layout;
  at::Tensor k_codes;   // uint8 [P, H, G, D*b/8]
  at::Tensor k_params;  // int16 (fp16 bits) [P, H, D, 2]: scale, zero
  at::Tensor v_codes;   // uint8 [P, H, G, D*b/8]
  at::Tensor v_params;  // int16 (fp16 bits) [P, H, G, D/Gv, 2]
  at::Tensor norms;     // float [P, G] (OScaR; ones for KIVI, not counted)
  at::Tensor meta;      // int32 [P, 2]: valid, frame

  int64_t pages() const { return meta.defined() ? meta.size(0) : 0; }
  // The first `count` pages (views).
  PagedKv Head(int64_t count) const;
};

// `pages` empty pages of `layout` (zero codes and params, unit norms) on `device`.
PagedKv AllocatePages(const PageLayout& layout, int64_t pages, at::Device device);

// Copies src's first `count` pages into dst at page `dst_offset`.
void CopyPages(PagedKv& dst, const PagedKv& src, int64_t count, int64_t dst_offset = 0);

// Quantizes one frame into ceil(N / G) pages. keys, values: float [H, N, D], keys already
// rotated and divided by their norms for OScaR; norms: float [N] (or undefined for KIVI).
PagedKv QuantizeFrame(const at::Tensor& keys, const at::Tensor& values, const at::Tensor& norms,
                      const PageLayout& layout, int32_t frame);

// Dequantizes every valid token of every page, in page order: keys (times their norms), values,
// both float [H, T, D].
std::pair<at::Tensor, at::Tensor> DequantizePages(const PagedKv& pages);

// A LayerKvCache storing KIVI / OScaR pages (options.format must be quantized).
std::unique_ptr<LayerKvCache> MakeQuantizedLayerCache(const KvCacheOptions& options);

// Bytes one frame of n tokens occupies in a layer in this format (whole pages for quantized
// formats; dense_elem_bytes per value for fp32 / model dtype).
int64_t FrameBytes(const KvCacheOptions& options, int heads, int head_dim, int64_t n, int dense_elem_bytes,
                   bool first_frame);

// Scores used for pruning the middle of a layer: XStreamVGGT scores, newest-first, or random.
std::vector<double> MiddleScores(PrunePolicy policy, const at::Tensor& q, const at::Tensor& middle_keys,
                                 const KvCacheOptions& options, uint64_t salt);

}  // namespace streamrecon
