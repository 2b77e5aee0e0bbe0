// What a KV cache is asked to be: policy, format, capacity, groups, and the kernel choices of the
// CUDA backend (fields the app sets from its flags; nothing here reads the environment).
// Torch-free, so every command's option group can fill it without LibTorch.
#pragma once

#include <cstdint>
#include <string>

#include "core/kv/format.h"

namespace streamrecon {

// How the CUDA backend attends over the cache (kernels/kv_ops.h says how each works).
enum class AttentionPath {
  kAuto,                 // the cache's default: kDequantRagged where it serves the cache, else kDequantSdpaBucketed
  kFused,                // our single kernel, tiles dequantized inside the MMA loop
  kDequantSdpa,          // pages expanded once into bf16 rows, then torch's attention
  kDequantSdpaBucketed,  // the same with key lengths bucketed for cuDNN's per-length plans
  kInt8,                 // keys as INT8 (a scale per 64 rows), INT8 Q K^T and bf16 P V (lower precision)
  kDequantRagged,        // pages expanded into a fixed capacity of rows, attended over the rows only the device counts
};
// Which torch attention the dequantize-once paths call.
enum class SdpaBackend { kAuto, kFlash, kCudnn, kEfficient };
// The ragged path's query rows past cuDNN's last whole tile (where they would cost it a second
// wave) and where they run: flash attention over the expanded rows after cuDNN's call, beside it
// (the rows past the span then after it), or beside it after those rows; the fused kernel over the
// packed pages after cuDNN's call or before it (kernels/kv_ops.cc, RaggedPagesAttention).
enum class QueryTail { kFlash, kFlashBeside, kFlashBesideRest, kPages, kPagesFirst };

// Kernel choices of the CUDA backend, for experiments and benchmarks; the defaults are the tuned ones.
struct KernelOptions {
  AttentionPath attention = AttentionPath::kAuto;
  SdpaBackend sdpa = SdpaBackend::kAuto;
  int64_t attention_chunk_tokens = 0;  // dequantize-once chunk in tokens (>= 1024; 0 = 131072)
  int append_variant = 0;              // append kernel: 1, 2 (0 = 2, the cp.async one)
  int append_heads_per_block = 0;      // append v2: heads per block, 1, 2 or 4 (0 = automatic)
  int fused_min_blocks = 1;            // fused attention over pages: blocks per multiprocessor, 1 or 2
  QueryTail query_tail = QueryTail::kFlashBesideRest;  // (call 143: 0.1-0.2 ms a frame less than kFlash)
  int query_tail_splits = 0;           // the query tail over the pages: splits over the keys (0 = automatic)
  // Pruning and storing run on a second stream of the device, beside the next layers (a layer's
  // eviction is needed only at its next frame); false: in line after the attention.
  bool background_maintenance = true;

  // Throws OptionError naming the field.
  void Check() const;
};

AttentionPath ParseAttentionPath(const std::string& name);  // auto | fused | dequant | dequant-bucketed | int8
SdpaBackend ParseSdpaBackend(const std::string& name);      // auto | flash | cudnn | efficient
QueryTail ParseQueryTail(const std::string& name);          // flash | flash-beside | flash-beside-rest | pages | pages-first
const char* ToString(AttentionPath path);
const char* ToString(SdpaBackend backend);
const char* ToString(QueryTail tail);

struct KvCacheOptions {
  PrunePolicy policy = PrunePolicy::kNone;  // pruning policy
  CacheFormat format = CacheFormat::kDense; // storage format of the global layers
  int64_t cache_tokens = 0;   // per-layer token capacity including the current frame; 0 = none
  uint64_t budget_bytes = 0;  // total bytes of all caches (global + camera trunk); 0 = none
  int pool_size = 16;         // XStreamVGGT query pooling group (patch tokens)
  int special_tokens = 5;     // leading tokens of each frame kept unpooled (camera + registers)
  int k_group = 32;           // tokens per page = tokens sharing a per-channel K scale/zero
  int v_group = 64;           // channels sharing a per-token V scale/zero (must divide head dim)
  bool first_frame_bf16 = false;  // quantized formats: keep the first frame (attention sink) in bf16
  bool v_hadamard = false;    // OScaR: rotate V by the Hadamard matrix too (undone on the output)
  uint64_t seed = 0;          // seed of the random policy
  bool measure = false;       // time pruning + storing (synchronising the device), see maintenance_ms()
  bool quant_stats = false;   // quantized formats: accumulate the quantization error (QuantStats)
  KernelOptions kernels;      // CUDA backend only

  bool bounded() const { return cache_tokens > 0 || budget_bytes > 0; }
  // head_dim < 0 skips the checks that need it. Throws OptionError naming the field.
  void Check(int head_dim = -1) const;
};

// What a layer may hold after storing the current frame; < 0 = unlimited.
struct LayerCapacity {
  int64_t tokens = -1;
  int64_t bytes = -1;
};

// Squared quantization error of everything a layer stored (for the fidelity benchmark).
struct QuantStats {
  double k_sse = 0, v_sse = 0;      // sum of squared errors of dequantized vs stored-from values
  double k_energy = 0, v_energy = 0;// sum of squares of the original values
  int64_t values = 0;               // number of K (and of V) elements quantized
};

}  // namespace streamrecon
