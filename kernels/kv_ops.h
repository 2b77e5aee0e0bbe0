// LibTorch-facing entries of the KV-cache kernels: check shapes, dtypes, devices and contiguity
// with messages, fill the plain params structs of kv_kernels.h and launch on the current stream.
#pragma once

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/kv/options.h"
#include "core/kv/paged_kv.h"

namespace streamrecon::kernels {

// The head dimension the kernels are specialised for (the model family's).
inline constexpr int kKernelHeadDim = 64;

// Quantizes k, v (bf16 [H, N, D], CUDA) into pages [first_page, first_page + ceil(N/G)) of `store`
// (device PagedKv with room for them). OScaR (oscar=true) rotates and norm-scales the keys.
// options.append_variant / append_heads_per_block pick the kernel (see kv_append.cu).
// The pages' frame number: `frame`, or the value of frame_counter (int32 [1] CUDA) when given.
void AppendPagesCuda(const at::Tensor& k, const at::Tensor& v, bool oscar, bool v_hadamard, int frame, PagedKv& store,
                     int64_t first_page, const KernelOptions& options = {}, const at::Tensor& frame_counter = {});

// How often one cache has attended each bucketed key length (its backend keeps one). cuDNN builds
// an execution plan per attention shape (60-90 ms on the H200, docs/perf.md), and a cache that is
// filling up meets each bucketed length for a frame or two only: a length goes to cuDNN from its
// third call on, to flash attention (no plans) before. Without one, cuDNN from the first call.
class RecurringLengths {
 public:
  bool Recurring(int64_t length) { return ++seen_[length] >= 3; }  // (counts this call)
  // The same, and a length below the longest that recurred in these calls counts at once: a full
  // cache's length that fell a bucket as its count drifted (it keeps the new one for hundreds of
  // frames, and a CUDA graph captured over its first call would keep flash attention for them).
  bool RecurringOrFallen(int64_t length) {
    const bool recurs = Recurring(length);
    if (recurs) longest_ = std::max(longest_, length);
    return recurs || length < longest_;
  }

 private:
  std::map<int64_t, int> seen_;
  int64_t longest_ = 0;
};

// How attention over the cache is computed (AttentionPath, core/kv/options.h):
//  kFused: our single kernel (tiles dequantized in shared memory inside the MMA loop).
//  kDequantSdpa: pages are expanded once into bf16 rows (kv_dequant.cu) and attended by torch's
//    scaled_dot_product_attention (options.sdpa: torch's choice, cuDNN on the H200, or a forced
//    backend); a dense cache is attended in place. Caches longer than the chunk
//    (options.attention_chunk_tokens, default 131072: 512 MiB of bf16 rows at 16 heads) go in
//    chunks merged by their log-sum-exp, so the scratch stays bounded.
//  kDequantSdpaBucketed: the same for key lengths that change every call (a pruned stream): cuDNN
//    plans are built per length, so only a multiple of 2048 rows goes to cuDNN, the rest to flash.
//  kInt8: the 8-bit attention below over the cache and the current frame in one call, in one
//    chunk, its operands from the pages in one pass (ExpandPagesInt8Cuda; the pages' valid counts
//    read on the device, so the host's are not needed) or from a dense cache's rows
//    (QuantizeInt8RowsCuda).
//  kDequantRagged: pages only (no dense rows), the current frame first, then the pages' valid slots
//    in a block of rows sized by the page count; the first certain_rows (in whole cuDNN buckets)
//    and one bucket more by cuDNN (the rows of that span past the device's count zeroed, their
//    weight taken out by the merge), the rows past the span by one variable-length flash
//    attention call whose key length the dequantize kernel writes on the device, merged by
//    log-sum-exp: no host counts, and fixed shapes while the page count and certain_rows are (a
//    CUDA graph can replay it). Where cuDNN would pay a second wave for the query rows past its
//    last whole 128-row tile (16 heads and 1041 queries: 17 rows), those rows are attended apart
//    (options.query_tail: by default flash attention over the span on a second stream beside
//    cuDNN's call; or PagesAttentionCuda over the packed pages). Where RaggedAttends says no, as
//    kDequantSdpaBucketed.
//  kAuto: options.attention, and kDequantSdpa when that is kAuto too.
// Attention of q (bf16 [H, Nq, D]) over a cache plus the current frame (k_cur, v_cur bf16 [H, Nc, D]).
// Dense cache: dense_k/dense_v bf16 [H, T_cap, D] of which the first dense_tokens rows are used.
// Paged cache: `pages` (device PagedKv; its first `page_count` pages are used); `page_valid`, when
// given, holds their valid-token counts on the host (else they are read from the device, a sync;
// kInt8 and kDequantRagged read none: they take the counts on the device).
// Returns bf16 [H, Nq, D].
// certain_rows (kDequantRagged): how many of the rows [current frame; the pages' valid slots] the
// caller knows to exist (the current frame and a lower bound of the pages' valid tokens; 0: none).
at::Tensor AttentionCuda(const at::Tensor& q, const at::Tensor& dense_k, const at::Tensor& dense_v, int64_t dense_tokens,
                         const PagedKv* pages, int64_t page_count, const at::Tensor& k_cur, const at::Tensor& v_cur,
                         int splits = 0, AttentionPath path = AttentionPath::kAuto, const std::vector<int32_t>* page_valid = nullptr,
                         const KernelOptions& options = {}, RecurringLengths* lengths = nullptr, int64_t certain_rows = 0);

// Attention of a few query rows q (bf16 [H, N, 64], rows contiguous, any head stride) over every
// valid slot of pages [0, page_count) and the current frame (bf16 [H, Nc, 64]), reading the packed
// pages and multiplying in fp16 (q and the frame converted as they are loaded): up to 32 rows by a
// warp per 32-key tile (LaunchFewQueriesAttention), more by the fused kernel (min_blocks:
// KernelOptions::fused_min_blocks). out bf16 [H, N, 64] and its log-sum-exps float [H, N] (natural
// log). splits 0: automatic. The launch depends on page_count only.
std::pair<at::Tensor, at::Tensor> PagesAttentionCuda(const at::Tensor& q, const PagedKv& pages, int64_t page_count,
                                                     const at::Tensor& k_cur, const at::Tensor& v_cur, int splits = 0,
                                                     int min_blocks = 1);

// Whether AttentionCuda takes the kDequantRagged path (and so reads no host counts) for this path
// (kAuto: options.attention), cache and current frame: pages only, flash attention on the device
// (sm80 on), options.sdpa auto or flash, the rows within options.attention_chunk_tokens.
bool RaggedAttends(AttentionPath path, const PagedKv* pages, int64_t page_count, int64_t dense_tokens, int64_t current_tokens,
                   const KernelOptions& options);

// Attention of q (bf16 [H, Nq, D]) over rows [0, rows) of a dense cache that already holds the
// current frame (k, v bf16 [H, >= rows, D], rows contiguous). `same_length`: the length of the
// previous call (a full cache evicting as many rows as a frame adds), one attention call whose
// execution plan is reused; otherwise cuDNN on whole 2048-row buckets and flash on the rest, merged
// by log-sum-exp (as kDequantSdpaBucketed). Longer than options.attention_chunk_tokens: chunks.
at::Tensor AttentionRowsCuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t rows, bool same_length,
                             const KernelOptions& options = {}, RecurringLengths* lengths = nullptr);

// The valid slots of pages [first, first + count) as bf16 K (norms folded in) and V [H, rows, D],
// rows = their valid tokens plus `extra_rows` uninitialised rows at the end.
std::pair<at::Tensor, at::Tensor> DequantizePagesCuda(const PagedKv& pages, int64_t page_count, int64_t first, int64_t count,
                                                      int64_t tokens, int64_t extra_rows = 0);

// Scores of every cached slot (XStreamVGGT) against pooled queries q_bar (float [M, D]):
// dense: [dense_tokens]; paged: [pages, G] with -inf on padding slots.
at::Tensor TokenScoresCuda(const at::Tensor& q_bar, const at::Tensor& dense_k, int64_t dense_tokens, const PagedKv* pages,
                           int64_t page_count, int heads);

// TopByScore (core/kv/policy.h) of CUDA float scores [U] by one kernel (a radix select in one
// block: no sort, no read back). Other dtypes or shapes, and more than kSelectMaxUnits units (where
// one block would be slower than the sorts), go to TopByScore.
inline constexpr int64_t kSelectMaxUnits = 131072;
at::Tensor TopByScoreCuda(const at::Tensor& scores, int64_t k);

// The camera trunk's slot-cache attention (core/kv/slot_cache.cc) in one kernel: q, k, v [H, 1, D]
// float or bf16 (one dtype), keys, values [H, S, D] float or bf16, valid [S] bool, all on one CUDA
// device. Returns softmax(q [K_valid ; k]^T / sqrt(D)) [V_valid ; v] as [H, 1, D] in q's dtype, or an
// undefined tensor where the kernel does not serve the shapes (the caller's ATen form then does).
at::Tensor SlotAttendCuda(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values, const at::Tensor& valid,
                          const at::Tensor& k, const at::Tensor& v);

// A dense cache's eviction bookkeeping in one kernel: of the middle rows first .. first + middle - 1,
// in stream order `order` (long CUDA [middle]; undefined: row order), the kept stream positions
// `kept` (long CUDA, ascending) -> {their rows, the other middle rows ascending}: what
// order.index_select(0, kept) and TrueIndices (core/kv/policy.h) of the rest give. Undefined
// tensors when middle > kSplitRowsMaxRows (the caller's ATen form then does it).
std::pair<at::Tensor, at::Tensor> SplitRowsCuda(const at::Tensor& order, const at::Tensor& kept, int64_t first, int64_t middle);

// PooledQueries (core/kv/policy.h) of CUDA queries [H, N, 64] in bf16 or float, in one kernel:
// float [M, 64] (the same means, summed in another order).
at::Tensor PooledQueriesCuda(const at::Tensor& q, int pool_size, int special_tokens);

// Rows from + i of the dense bf16 CUDA caches k, v [H, capacity, 64] (contiguous) moved to rows
// to[i] (long CUDA [count], each below `from`) in one kernel, both caches and every head.
void MoveRowsCuda(const at::Tensor& k, const at::Tensor& v, int64_t from, const at::Tensor& to);

// OScaR's rotation x H (H the normalised 64-point Hadamard matrix) of bf16 or float CUDA x [..., 64]
// in one kernel, in float (the same as at::matmul(x.to(float), H) up to the order of the sums).
at::Tensor RotateCuda(const at::Tensor& x);

// A frame's bf16 CUDA q and k [..., 64] rotated in one kernel: q in float (the scores' pooled
// queries) and in bf16, k in bf16 (the attention's operands); the bf16 ones are the float rows
// rounded to nearest even, as RotateCuda(x).to(bf16) gives them.
struct RotatedQk {
  at::Tensor q_f32, q_bf16, k_bf16;
};
RotatedQk RotateQkCuda(const at::Tensor& q, const at::Tensor& k);

// A page's score from its slot scores (float [P, G], CUDA) over its valid slots (valid: int32 [P],
// any stride, e.g. a column of PagedKv::meta): the mean (mean = true; policy.h's
// TopPagesByMeanSlot) or the maximum (TopPagesByBestSlot), in one kernel. Returns float [P].
at::Tensor PageScoresCuda(const at::Tensor& slot_scores, const at::Tensor& valid, bool mean);

// Writes into dst's first first + middle.size(0) pages: src's first `first` pages, then src pages
// first + middle[i] (middle: long, CUDA), every array in one kernel. dst has the layout of src
// and room for them, and does not overlap it.
void GatherPagesCuda(const PagedKv& src, int64_t first, const at::Tensor& middle, PagedKv& dst);
// Keeps store's first `first` pages and the middle pages first + middle[i] (ascending) as its first
// first + middle.size(0) pages, in place: the kept pages past that count move into the evicted ones
// before it (one kernel; about a frame's pages move, not the store). The pages leave stream order.
void KeepPagesInPlaceCuda(PagedKv& store, int64_t first, const at::Tensor& middle);

// The 8-bit attention (kv_attention_int8.cu, the 60 FPS issue's item 7): INT8 Q K^T and bf16 P V
// on tensor cores. Its operands, from bf16 rows: rows [0, rows) of k, v (CUDA [H, >= rows, 64],
// rows contiguous), then every row of k_b, v_b when given (e.g. the current frame): K as INT8
// with a scale per 64-token tile (kv_kernels.h), V as the bf16 rows themselves (v, or with a
// second part a copy of both parts as one block of rows). K is a snapshot, V (without a second
// part) a view of the caller's rows: attend before those rows change. tile_mask (int64 [tiles],
// bit i of tile j for row 64 j + i) names the rows attended where some are not, a tile with rows
// left out having its scale in ks negated (undefined: all `rows`, every scale positive).
struct Int8Rows {
  at::Tensor k8, ks, v, tile_mask;
  int64_t rows = 0;
};
Int8Rows QuantizeInt8RowsCuda(const at::Tensor& k, const at::Tensor& v, int64_t rows, const at::Tensor& k_b = {},
                              const at::Tensor& v_b = {});
// The same operands straight from packed pages [0, page_count) and the current frame after them
// (bf16 [H, Nc, 64], or none), in one pass and in slot order: row page x G + slot, then the
// frame's rows (rows = page_count x G + Nc). A valid slot's row is the one DequantizePagesCuda
// expands, and its key what QuantizeInt8RowsCuda makes of it, bit for bit; the slots past a page's
// valid count (its metadata, read on the device) are zero rows left out by tile_mask (keep it with
// the operands: the scales of such tiles are negated, the kernels' cue to read it). Nothing is
// read back or uploaded: the call can be graphed while the page count stays. Pages without a
// valid slot and no current frame leave every row out: the attention over them is zeros.
Int8Rows ExpandPagesInt8Cuda(const PagedKv& pages, int64_t page_count, const at::Tensor& k_cur = {}, const at::Tensor& v_cur = {});
// Attention of q (bf16 CUDA [H, Nq, 64], channels contiguous, head and row strides multiples of 4
// elements, 8-byte aligned) over `rows` with scale 1/8; Q is quantized to INT8 per query row
// inside the kernel. splits: blocks over the keys (0: enough to fill the GPU); variant: the
// kernel's shape (Int8AttentionParams; kInt8DefaultVariant: DefaultInt8AttentionVariant()).
// Returns bf16 [H, Nq, 64].
inline constexpr int kInt8DefaultVariant = -1;
at::Tensor Int8AttentionCuda(const at::Tensor& q, const Int8Rows& rows, int splits = 0, int variant = kInt8DefaultVariant);
// What the warpgroup kernel needs and what this build and device have, for messages.
std::string Int8WgmmaRequirement();

}  // namespace streamrecon::kernels
