// Storage formats of the KV cache and the byte layout of a quantized page (shared by the CPU
// reference and the CUDA kernels). A page holds G token slots of one frame for one layer.
#pragma once

#include <cstdint>
#include <string>

namespace streamrecon {

enum class CacheFormat {
  kDense,   // the model's own dtype (fp32/fp64 on CPU), no quantization
  kBf16,    // bfloat16, the baseline of the benchmarks
  kKivi4,   // K per channel / V per token, 4-bit codes, no rotation
  kKivi2,   // the same with 2-bit codes
  kOscar4,  // Hadamard-rotated, norm-scaled unit keys per channel + V per token, 4-bit
  kOscar2,  // the same with 2-bit codes
};

CacheFormat ParseCacheFormat(const std::string& name);  // fp32|dense, bf16, kivi4, kivi2, oscar4, oscar2
std::string ToString(CacheFormat format);
inline bool IsQuantized(CacheFormat f) { return f != CacheFormat::kDense && f != CacheFormat::kBf16; }
inline bool IsOscar(CacheFormat f) { return f == CacheFormat::kOscar4 || f == CacheFormat::kOscar2; }
inline int FormatBits(CacheFormat f) { return (f == CacheFormat::kKivi2 || f == CacheFormat::kOscar2) ? 2 : 4; }

// Asymmetric min-max parameters of one quantization group, both IEEE fp16 (bits).
// value = code * scale + zero. The range [zero, zero + scale * (2^b - 1)] always contains the
// group's values: zero is rounded down and scale up when converted to fp16.
struct QuantParams {
  uint16_t scale;
  uint16_t zero;
};
static_assert(sizeof(QuantParams) == 4, "QuantParams must be two fp16 values");

// Bookkeeping of one page.
struct PageMeta {
  int32_t valid;  // tokens in use (<= G); a partial page (frame tail or pruned) has fewer
  int32_t frame;  // frame index the tokens came from
};
static_assert(sizeof(PageMeta) == 8, "PageMeta must be 8 bytes");

// Byte geometry of a page for a layer with `heads` heads of `head_dim` channels.
//   k_codes  [H, G, D*b/8]   K codes of each slot, packed along channels (LSB first)
//   k_params [H, D]          per-channel QuantParams over the page's valid tokens
//   v_codes  [H, G, D*b/8]   V codes, packed the same way
//   v_params [H, G, D/Gv]    per-token QuantParams for each group of Gv channels
//   k_norm   [G] float32     OScaR token norms (absent for KIVI)
//   meta     PageMeta
struct PageLayout {
  int heads = 0, head_dim = 0, slots = 0, bits = 4, v_group = 0;
  bool norms = false;

  int64_t row_bytes() const { return static_cast<int64_t>(head_dim) * bits / 8; }
  int64_t k_code_bytes() const { return static_cast<int64_t>(heads) * slots * row_bytes(); }
  int64_t k_param_bytes() const { return static_cast<int64_t>(heads) * head_dim * sizeof(QuantParams); }
  int64_t v_code_bytes() const { return k_code_bytes(); }
  int64_t v_param_bytes() const { return static_cast<int64_t>(heads) * slots * (head_dim / v_group) * sizeof(QuantParams); }
  int64_t norm_bytes() const { return norms ? static_cast<int64_t>(slots) * sizeof(float) : 0; }
  int64_t page_bytes() const {
    return k_code_bytes() + k_param_bytes() + v_code_bytes() + v_param_bytes() + norm_bytes() + sizeof(PageMeta);
  }
};

}  // namespace streamrecon
