// Storage formats and pruning policies of the KV cache (one vocabulary table each) and the byte
// layout of a quantized page, shared by the CPU reference and the CUDA kernels. A page holds G
// token slots of one frame for one layer. Torch-free.
#pragma once

#include <cstdint>
#include <string>

#include "core/kv/quantizer.h"

namespace streamrecon {

enum class CacheFormat {
  kDense,   // the model's own dtype (fp32/fp64 on CPU), no quantization
  kBf16,    // bfloat16, the baseline of the benchmarks
  kKivi4,   // K per channel / V per token, 4-bit codes, no rotation
  kKivi2,   // the same with 2-bit codes
  kOscar4,  // Hadamard-rotated, norm-scaled unit keys per channel + V per token, 4-bit
  kOscar2,  // the same with 2-bit codes
};

// How a layer's cache chooses which tokens to keep once it exceeds its capacity.
enum class PrunePolicy {
  kNone,         // keep everything (the stream grows without bound)
  kXStream,      // XStreamVGGT, token-granular: rank middle tokens by pooled-query scores
  kXStreamPage,  // the same scores averaged per page of G tokens; keep or drop whole pages
  kWindow,       // keep the newest middle tokens
  kRandom,       // keep random middle tokens (seeded), an ablation
};

// The cache vocabulary, one table each: parsing, printing, the CLI's help, the viewer's combo
// boxes and its restart requests all derive from these (in this order).
struct CacheFormatInfo {
  CacheFormat format;
  const char* name;
  int bits;  // bits of a stored value: 0 = the model's own dtype
  const char* description;
};
inline constexpr CacheFormatInfo kCacheFormats[] = {
    {CacheFormat::kDense, "fp32", 0, "the model's own dtype, no quantization"},
    {CacheFormat::kBf16, "bf16", 16, "bfloat16"},
    {CacheFormat::kKivi4, "kivi4", 4, "KIVI: K per channel, V per token, 4-bit codes"},
    {CacheFormat::kKivi2, "kivi2", 2, "KIVI with 2-bit codes"},
    {CacheFormat::kOscar4, "oscar4", 4, "OScaR: Hadamard-rotated, norm-scaled keys per channel, V per token, 4-bit codes"},
    {CacheFormat::kOscar2, "oscar2", 2, "OScaR with 2-bit codes"},
};

struct PrunePolicyInfo {
  PrunePolicy policy;
  const char* name;
  const char* description;
};
inline constexpr PrunePolicyInfo kPrunePolicies[] = {
    {PrunePolicy::kNone, "none", "keep every token (the cache grows with the stream)"},
    {PrunePolicy::kXStream, "xstream", "XStreamVGGT: keep the middle tokens the current queries score highest"},
    {PrunePolicy::kXStreamPage, "xstream-page", "the same scores averaged per page; whole pages kept or dropped"},
    {PrunePolicy::kWindow, "window", "keep the newest middle tokens"},
    {PrunePolicy::kRandom, "random", "keep random middle tokens (seeded), an ablation"},
};

// Parse a name of the tables above ("dense" also names fp32); OptionError lists the choices.
CacheFormat ParseCacheFormat(const std::string& name);
PrunePolicy ParsePrunePolicy(const std::string& name);
std::string ToString(CacheFormat format);
std::string ToString(PrunePolicy policy);
// Every name of a table, joined: "fp32, bf16, kivi4, kivi2, oscar4, oscar2".
std::string CacheFormatNames(const std::string& separator = ", ");
std::string PrunePolicyNames(const std::string& separator = ", ");

constexpr const CacheFormatInfo& FormatInfo(CacheFormat f) {
  for (const CacheFormatInfo& info : kCacheFormats)
    if (info.format == f) return info;
  return kCacheFormats[0];
}
inline bool IsQuantized(CacheFormat f) { return f != CacheFormat::kDense && f != CacheFormat::kBf16; }
inline bool IsOscar(CacheFormat f) { return f == CacheFormat::kOscar4 || f == CacheFormat::kOscar2; }
// Bits of a quantized format's codes (2 or 4).
inline int FormatBits(CacheFormat f) { return FormatInfo(f).bits == 2 ? 2 : 4; }

using kv::QuantParams;

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
