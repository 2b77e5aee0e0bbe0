// Checks and names of the cache options. Messages name the option fields; the app says which
// flag sets each (app/common_options.cc).
#include "core/kv/options.h"

#include "core/check.h"

namespace streamrecon {

void KernelOptions::Check() const {
  SR_CHECK(attention_chunk_tokens == 0 || attention_chunk_tokens >= 1024, OptionError,
           "attention_chunk_tokens " << attention_chunk_tokens << ": expected 0 (the default, 131072) or at least 1024");
  SR_CHECK(append_variant >= 0 && append_variant <= 2, OptionError,
           "append_variant " << append_variant << ": expected 0 (the default), 1 or 2");
  SR_CHECK(append_heads_per_block == 0 || append_heads_per_block == 1 || append_heads_per_block == 2 || append_heads_per_block == 4,
           OptionError, "append_heads_per_block " << append_heads_per_block << ": expected 0 (automatic), 1, 2 or 4");
  SR_CHECK(fused_min_blocks == 1 || fused_min_blocks == 2, OptionError,
           "fused_min_blocks " << fused_min_blocks << ": expected 1 or 2");
  SR_CHECK(query_tail_splits >= 0 && query_tail_splits <= 1024, OptionError,
           "query_tail_splits " << query_tail_splits << ": expected 0 (automatic) to 1024");
}

AttentionPath ParseAttentionPath(const std::string& name) {
  if (name == "auto") return AttentionPath::kAuto;
  if (name == "fused") return AttentionPath::kFused;
  if (name == "dequant") return AttentionPath::kDequantSdpa;
  if (name == "dequant-bucketed") return AttentionPath::kDequantSdpaBucketed;
  if (name == "int8") return AttentionPath::kInt8;
  if (name == "dequant-ragged") return AttentionPath::kDequantRagged;
  throw OptionError("unknown attention path '" + name + "': expected auto, fused, dequant, dequant-bucketed, dequant-ragged or int8");
}

SdpaBackend ParseSdpaBackend(const std::string& name) {
  if (name == "auto") return SdpaBackend::kAuto;
  if (name == "flash") return SdpaBackend::kFlash;
  if (name == "cudnn") return SdpaBackend::kCudnn;
  if (name == "efficient") return SdpaBackend::kEfficient;
  throw OptionError("unknown attention backend '" + name + "': expected auto, flash, cudnn or efficient");
}

QueryTail ParseQueryTail(const std::string& name) {
  if (name == "flash") return QueryTail::kFlash;
  if (name == "flash-beside") return QueryTail::kFlashBeside;
  if (name == "flash-beside-rest") return QueryTail::kFlashBesideRest;
  if (name == "pages") return QueryTail::kPages;
  if (name == "pages-first") return QueryTail::kPagesFirst;
  throw OptionError("unknown query tail '" + name + "': expected flash, flash-beside, flash-beside-rest, pages or pages-first");
}

const char* ToString(QueryTail tail) {
  switch (tail) {
    case QueryTail::kFlash: return "flash";
    case QueryTail::kFlashBeside: return "flash-beside";
    case QueryTail::kFlashBesideRest: return "flash-beside-rest";
    case QueryTail::kPages: return "pages";
    case QueryTail::kPagesFirst: return "pages-first";
  }
  return "?";
}

const char* ToString(AttentionPath path) {
  switch (path) {
    case AttentionPath::kAuto: return "auto";
    case AttentionPath::kFused: return "fused";
    case AttentionPath::kDequantSdpa: return "dequant";
    case AttentionPath::kDequantSdpaBucketed: return "dequant-bucketed";
    case AttentionPath::kInt8: return "int8";
    case AttentionPath::kDequantRagged: return "dequant-ragged";
  }
  return "?";
}

const char* ToString(SdpaBackend backend) {
  switch (backend) {
    case SdpaBackend::kAuto: return "auto";
    case SdpaBackend::kFlash: return "flash";
    case SdpaBackend::kCudnn: return "cudnn";
    case SdpaBackend::kEfficient: return "efficient";
  }
  return "?";
}

void KvCacheOptions::Check(int head_dim) const {
  SR_CHECK_GE(OptionError, cache_tokens, 0, "cache_tokens");
  SR_CHECK(policy == PrunePolicy::kNone || bounded(), OptionError,
           "prune policy '" << ToString(policy) << "' needs a token capacity (cache_tokens) or a byte budget (budget_bytes)");
  SR_CHECK(policy != PrunePolicy::kNone || !bounded(), OptionError,
           "cache_tokens/budget_bytes need a prune policy (e.g. xstream); policy 'none' keeps every token");
  SR_CHECK_GE(OptionError, pool_size, 1, "pool_size");
  SR_CHECK_GE(OptionError, special_tokens, 0, "special_tokens");
  SR_CHECK_GE(OptionError, k_group, 1, "k_group (tokens per page)");
  SR_CHECK_GE(OptionError, v_group, 1, "v_group");
  if (head_dim > 0 && IsQuantized(format)) {
    SR_CHECK(head_dim % v_group == 0, OptionError, "v_group " << v_group << " does not divide the head dimension " << head_dim);
    SR_CHECK(head_dim * FormatBits(format) % 8 == 0, OptionError,
             "head dimension " << head_dim << " does not pack into whole bytes at " << FormatBits(format) << " bits");
    SR_CHECK(!IsOscar(format) || (head_dim & (head_dim - 1)) == 0, OptionError,
             "OScaR needs a power-of-two head dimension for the Hadamard rotation, got " << head_dim);
  }
  SR_CHECK(!v_hadamard || IsOscar(format), OptionError, "v_hadamard applies to the OScaR formats only");
  kernels.Check();
}

}  // namespace streamrecon
