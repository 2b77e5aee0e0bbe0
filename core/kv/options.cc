// Checks and names of the cache options. Messages name the option fields; the app says which
// flag sets each (app/common_options.cc).
#include "core/kv/options.h"

#include <array>
#include <string>
#include <utility>

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

namespace {

// Each option's names, written once for both directions, in the order the error message lists them.
template <class E, size_t N>
using NameTable = std::array<std::pair<E, const char*>, N>;

constexpr NameTable<AttentionPath, 6> kAttentionPaths{{{AttentionPath::kAuto, "auto"},
                                                       {AttentionPath::kFused, "fused"},
                                                       {AttentionPath::kDequantSdpa, "dequant"},
                                                       {AttentionPath::kDequantSdpaBucketed, "dequant-bucketed"},
                                                       {AttentionPath::kDequantRagged, "dequant-ragged"},
                                                       {AttentionPath::kInt8, "int8"}}};
constexpr NameTable<SdpaBackend, 4> kSdpaBackends{
    {{SdpaBackend::kAuto, "auto"}, {SdpaBackend::kFlash, "flash"}, {SdpaBackend::kCudnn, "cudnn"}, {SdpaBackend::kEfficient, "efficient"}}};
constexpr NameTable<QueryTail, 5> kQueryTails{{{QueryTail::kFlash, "flash"},
                                               {QueryTail::kFlashBeside, "flash-beside"},
                                               {QueryTail::kFlashBesideRest, "flash-beside-rest"},
                                               {QueryTail::kPages, "pages"},
                                               {QueryTail::kPagesFirst, "pages-first"}}};

// The value named `name`; else OptionError "unknown <what> '<name>': expected a, b or c".
template <class E, size_t N>
E Parse(const std::string& name, const NameTable<E, N>& table, const char* what) {
  std::string expected;
  for (size_t i = 0; i < N; ++i) {
    if (name == table[i].second) return table[i].first;
    expected += (i == 0 ? "" : i + 1 == N ? " or " : ", ") + std::string(table[i].second);
  }
  throw OptionError(std::string("unknown ") + what + " '" + name + "': expected " + expected);
}

template <class E, size_t N>
const char* NameOf(E value, const NameTable<E, N>& table) {
  for (const auto& [v, name] : table)
    if (v == value) return name;
  return "?";
}

}  // namespace

AttentionPath ParseAttentionPath(const std::string& name) { return Parse(name, kAttentionPaths, "attention path"); }
SdpaBackend ParseSdpaBackend(const std::string& name) { return Parse(name, kSdpaBackends, "attention backend"); }
QueryTail ParseQueryTail(const std::string& name) { return Parse(name, kQueryTails, "query tail"); }
const char* ToString(QueryTail tail) { return NameOf(tail, kQueryTails); }
const char* ToString(AttentionPath path) { return NameOf(path, kAttentionPaths); }
const char* ToString(SdpaBackend backend) { return NameOf(backend, kSdpaBackends); }

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
