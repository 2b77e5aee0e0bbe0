// 8-bit attention (the 60 FPS issue's item 7): Q K^T on INT8 tensor cores, P V in bf16 with float
// accumulation, online softmax in float. Two kernels share the softmax, the query quantization and
// the output (LoadQueriesInt8, MaskKeys, ScoresToP, StoreRows):
// - Int8AttentionKernel (variants 0-4, any sm_80+ build): mma.sync, m16n8k32 INT8 (twice the bf16
//   rate) and m16n8k16 bf16, fragments by ldmatrix, cp.async in three stages;
// - Int8WgmmaKernel (variants 5-7, sm_90a builds on compute capability 9.0; the default there):
//   Hopper's warpgroup MMAs, m64n64k32 INT8 and m64n64k16 bf16 with the A operands (Q, P) from
//   registers and the key and value tiles read from shared memory through swizzled matrix
//   descriptors, cp.async in four stages (docs/perf.md, "Session 27": 0.50-0.54x of cuDNN's bf16
//   SDPA at 16k-64k keys, against 0.59-0.65x for the mma.sync kernel).
//
// Why not FP8 for P V: on the H200 an e4m3 mma.sync is not a native instruction; ptxas lowers each
// one to two fp16 MMAs plus conversions of both operands (the SASS of call 88 shows HMMA.16816 and
// F2FP where the FP8 MMAs were), so FP8 P V cost more than bf16 P V. The first form of this kernel
// (calls 84-88) did that; docs/perf.md. FP8 at full rate is wgmma's, whose 8-bit B operand must be
// K-major: V transposed in shared memory (keys contiguous per channel), which the bf16 wgmma of the
// warpgroup kernel does not need (it reads V N-major).
//
// Operands: K as INT8 with one scale per 64-token tile (QuantizeInt8Rows, one pass over a dense
// cache's bf16 rows, or ExpandPagesInt8, one pass over the packed pages), V as bf16 rows (the
// dense cache's own, or expanded by that pass), Q quantized by the kernels, one INT8 scale per
// query row with the softmax scale and log2(e) folded in. Query and key scales make one factor per
// row and tile, folded into the exponent's multiply-add. The rows' sums of P come from one more
// MMA against a tile of ones. A row's running maximum moves only when a score exceeds it by more
// than 8 in log2 units (P stays at most 2^8 = 256), so a steady tile needs no shuffles across a
// row's quad and no rescale (calls 153-156: 0.275 -> 0.237 ms at 16k keys). Keys split over
// blocks with a log-sum-exp combine, as kv_attention.cu, but with the splits' rows in bf16.
//
// Why K is read as INT8 tiles and not from the packed pages: at q = 1041 each key tile serves 17
// query blocks per head, and a page's per-channel scales would have to be folded into the queries
// (a requantization of Q per page and row: by count about 140 instructions per 16 x 32 scores,
// against the loop's ~330 per 16 x 64) or the codes dequantized per block (the bf16 kernel that
// does so over the pages takes about 3x this kernel's time, docs/perf.md). The pages are expanded
// once per layer and frame instead, straight into these tiles and bf16 value rows (ExpandPagesInt8).
#include <atomic>
#include <climits>

#include "kernels/kv_common.cuh"
#include "kernels/kv_kernels.h"

namespace streamrecon::kernels {
namespace {

constexpr int kTile = kInt8AttentionTile;
constexpr int kStages = 3;  // the mma.sync kernel's (the warpgroup kernel's: kWgStages)

// Four floats times `inv`, rounded to INT8 codes (|x inv| <= 127 by the caller's scale), packed in
// one word (the first in the low byte).
__device__ __forceinline__ uint32_t PackInt8x4(const float* x, float inv) {
  uint32_t w = 0;
#pragma unroll
  for (int j = 0; j < 4; ++j) w |= (static_cast<uint32_t>(__float2int_rn(x[j] * inv)) & 0xffu) << (8 * j);
  return w;
}

// ---- operand quantization -----------------------------------------------------------------------

// The INT8 codes of one 64-token tile and its scale, from a block of exactly 64 x 64 / kPer
// threads, every one of which calls this once (a barrier inside), thread t holding channels kPer
// (t % (64 / kPer)) .. + kPer - 1 of the tile's token t / (64 / kPer) in x (zeros past the
// sources): the scale from the tile's largest magnitude, written by thread 0.
template <int kPer>
__device__ __forceinline__ void StoreInt8Tile(const float (&x)[kPer], int8_t* k8, int head, int tile, int tiles, float* ks) {
  static_assert(kPer == 16 || kPer == 32, "16 or 32 channels a thread");
  constexpr int kPerRow = kHeadDim / kPer, kWarps = kTile * kPerRow / 32;
  __shared__ float warp_max[kWarps];
  const int t = threadIdx.x;
  float amax = 0.0f;
#pragma unroll
  for (int i = 0; i < kPer; ++i) amax = fmaxf(amax, fabsf(x[i]));
#pragma unroll
  for (int m = 1; m < 32; m <<= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, m));
  if (t % 32 == 0) warp_max[t / 32] = amax;
  __syncthreads();
  amax = warp_max[0];
#pragma unroll
  for (int w = 1; w < kWarps; ++w) amax = fmaxf(amax, warp_max[w]);
  const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
  const int token = tile * kTile + t / kPerRow;
  uint4* out = reinterpret_cast<uint4*>(k8 + (static_cast<int64_t>(head) * tiles * kTile + token) * kHeadDim + (t % kPerRow) * kPer);
#pragma unroll
  for (int i = 0; i < kPer / 16; ++i)
    out[i] = make_uint4(PackInt8x4(x + 16 * i, inv), PackInt8x4(x + 16 * i + 4, inv), PackInt8x4(x + 16 * i + 8, inv),
                        PackInt8x4(x + 16 * i + 12, inv));
  if (t == 0) ks[static_cast<int64_t>(head) * tiles + tile] = amax > 0.0f ? amax / 127.0f : 1.0f;  // codes 0: any scale
}

// Eight bf16 channels (a 16-byte piece) as floats into x.
__device__ __forceinline__ void Bf16PieceToFloats(const uint4& w, float* x) {
  const Bf16x8 b = Unpack8(w);
#pragma unroll
  for (int j = 0; j < 8; ++j) x[j] = b.v[j];
}

// A block per (64-token tile, head), 128 threads; thread t: token t / 2 of the tile, channels
// 32 (t % 2) .. + 31. Rows past the sources are zeros.
__global__ void __launch_bounds__(128) QuantizeRowsKernel(Int8RowsParams p) {
  const int tile = blockIdx.x, head = blockIdx.y, t = threadIdx.x;
  const int half = t & 1, r = t >> 1;
  const int token = tile * kTile + r;
  const uint16_t* k = nullptr;
  if (token < p.a_rows) k = p.k_a + head * p.a_head_stride + static_cast<int64_t>(token) * kHeadDim;
  else if (token < p.a_rows + p.b_rows) k = p.k_b + head * p.b_head_stride + static_cast<int64_t>(token - p.a_rows) * kHeadDim;
  float x[32];
#pragma unroll
  for (int i = 0; i < 4; ++i) Bf16PieceToFloats(k ? reinterpret_cast<const uint4*>(k + half * 32)[i] : make_uint4(0, 0, 0, 0), x + 8 * i);
  StoreInt8Tile<32>(x, p.k8, head, tile, p.tiles, p.ks);
}

// The same from packed pages in slot order (Int8PagesParams), the values written as bf16 rows on
// the way and the tile's mask of valid rows by the head-0 blocks, a block of 256 threads per (tile,
// head), thread t: row t / 4, channels 16 (t % 4) .. + 15. A row's page and slot follow from its
// index, its codes are dequantized as kv_dequant.cu's kernel does (fp16, rounded to bf16) while the
// page's valid count is read, and a slot past that count is zeroed. (Earlier forms took the valid
// slots only, packed: a binary search over the pages' prefix sums per row (call 161), then over a
// window of them from a host-uploaded page of each tile's first row: 38 us of GPU time at 16k keys
// and a host copy per call, call 169.)
template <int kBits>
__global__ void __launch_bounds__(256) ExpandPagesInt8Kernel(Int8PagesParams p) {
  const int tile = blockIdx.x, head = blockIdx.y, t = threadIdx.x;
  const int token = tile * kTile + (t >> 2);
  const int c0 = (t & 3) * 16;  // a quarter of the row
  const int page_rows = p.page_count * p.pages.slots;
  uint4* v_out = reinterpret_cast<uint4*>(p.v + head * p.v_head_stride + static_cast<int64_t>(token) * kHeadDim + c0);
  float x[16];
  bool valid = false;
  if (token < page_rows) {
    const PagesView& pv = p.pages;
    const int page = token / pv.slots, slot = token - page * pv.slots;
    // (the codes are loaded whether or not the slot is valid: no load waits for the count)
    uint4 kw[2], vw[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) DequantizeSlotBf16<kBits>(pv, p.heads, page, head, slot, c0 + 8 * i, kw[i], vw[i]);
    valid = slot < pv.meta[2 * page];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      if (!valid) kw[i] = vw[i] = make_uint4(0, 0, 0, 0);
      Bf16PieceToFloats(kw[i], x + 8 * i);
      v_out[i] = vw[i];
    }
  } else if (token < page_rows + p.cur_tokens) {
    const int64_t at = (static_cast<int64_t>(head) * p.cur_tokens + token - page_rows) * kHeadDim + c0;
    const uint4* k = reinterpret_cast<const uint4*>(p.k_cur + at);
    const uint4* v = reinterpret_cast<const uint4*>(p.v_cur + at);
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      Bf16PieceToFloats(k[i], x + 8 * i);
      v_out[i] = v[i];
    }
    valid = true;
  } else {
#pragma unroll
    for (int i = 0; i < 16; ++i) x[i] = 0.0f;
  }
  // The tile's valid rows: a warp holds 8 rows (4 threads each), its ballot's every fourth bit one.
  __shared__ __align__(8) uint8_t valid_rows[kTile / 8];
  const uint32_t ballot = __ballot_sync(0xffffffffu, valid);
  if (t % 32 == 0) {
    uint32_t byte = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) byte |= ((ballot >> (4 * i)) & 1u) << i;
    valid_rows[t / 32] = static_cast<uint8_t>(byte);
  }
  StoreInt8Tile<16>(x, p.k8, head, tile, p.tiles, p.ks);  // (a barrier inside: valid_rows is complete after it)
  if (t == 0) {
    const uint64_t mask = *reinterpret_cast<const uint64_t*>(valid_rows);
    if (head == 0) p.tile_mask[tile] = mask;
    float& scale = p.ks[static_cast<int64_t>(head) * p.tiles + tile];  // (this thread's own store above)
    if (mask != ~0ull) scale = -scale;
  }
}

// ---- attention ----------------------------------------------------------------------------------

// Integer scores as floats without a conversion: the mma.sync kernel's accumulators start at the
// bits of 1.5 2^23 (kScoreBits), the warpgroup kernel adds them once its scores arrive (an integer
// add each), so that they end as the bits of the float 1.5 2^23 + s for |s| < 2^22,
// exactly (Q K^T over 64 channels of INT8 codes is at most 64 127^2 < 2^20 in magnitude; I2F
// would run at the rate of the exponential, and the softmax bounds the kernel). These floats are
// positive, so their order is their bits' order as integers: the maxima are taken on the integers
// by the three-way max of sm_90 (one instruction, VIMNMX3), masked keys holding the bits of -inf
// (a negative integer). The offset is removed once per row and tile in the exponent's bias, whose
// rounding costs under one integer unit of score within a tile and about two between tiles of
// different scales (the operands' INT8 rounding moves scores by hundreds).
constexpr int kScoreBits = 0x4B400000;      // 1.5 2^23 as a float
constexpr float kScoreOffset = 12582912.0f;  // the same value
constexpr int kMaskedScore = static_cast<int>(0xFF800000u);  // -inf
static_assert(kHeadDim * 127 * 127 < (1 << 22), "integer scores stay exact under the offset");

constexpr int kVStride = kHeadDim + 8;  // bf16 per V row in shared memory (16 bytes of padding: no bank conflicts)

struct Stage {
  uint8_t k[kTile * kHeadDim];   // [key][channel], 16-byte chunks swizzled
  uint16_t v[kTile * kVStride];  // [key][channel] bf16
};

// Byte offset of 16-byte chunk `chunk` (0..3) of 64-byte row `row`: rows 2i and 2i + 1 share a
// bank line, so the chunk index is XORed with (row / 2) % 4 and the 8 rows an ldmatrix reads hit
// 8 different 16-byte bank groups.
__device__ __forceinline__ int Swizzle(int row, int chunk) { return row * 64 + ((chunk ^ ((row >> 1) & 3)) << 4); }

__device__ __forceinline__ void CpAsync16(void* smem, const void* global, bool valid = true) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  const int bytes = valid ? 16 : 0;  // 0: the 16 bytes are zero-filled (a row past the last)
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(addr), "l"(global), "r"(bytes));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

__device__ __forceinline__ void MmaInt8(int (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// D = A B + c, every accumulator starting at c: a key tile's first k-step (its scores start at
// kScoreBits), so the accumulators need no copies of the constant.
__device__ __forceinline__ void MmaInt8From(int (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1, int c) {
  asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%10,%10,%10};\n"
               : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "r"(c));
}

// A thread's share of the stage loads (kThreads threads: K 256 chunks of 16 bytes, V 512), with
// the offsets that do not depend on the tile computed once. Thread t's chunks are t + i kThreads:
// rows a whole number of swizzle periods apart, so one base offset and constant steps serve all.
template <int kThreads>
struct TileLoader {
  static_assert(256 % kThreads == 0, "whole chunks per thread");
  static constexpr int kK = 256 / kThreads, kV = 512 / kThreads;
  static constexpr int kKRowStep = kThreads / 4, kVRowStep = kThreads / 8;  // rows between a thread's chunks
  static_assert(kKRowStep % 8 == 0, "the K swizzle repeats every 8 rows");
  const int8_t* k;     // the head's keys
  const uint16_t* v;   // the head's values
  int rows;
  int k_smem, k_global, v_smem, v_row;

  __device__ TileLoader(const Int8AttentionParams& p, int head) {
    k = p.k8 + head * static_cast<int64_t>(p.tiles) * kTile * kHeadDim;
    v = p.v + head * p.v_head_stride;
    rows = p.rows;
    const int t = threadIdx.x;
    k_smem = Swizzle(t >> 2, t & 3);
    k_global = (t >> 2) * kHeadDim + (t & 3) * 16;
    v_smem = ((t >> 3) * kVStride + (t & 7) * 8) * 2;
    v_row = (t >> 3) * kHeadDim + (t & 7) * 8;  // elements from the tile's first row
  }

  // V rows past `rows` are zero-filled (the last tile only).
  __device__ __forceinline__ void Load(Stage& s, int tile) const {
    const int8_t* kt = k + static_cast<int64_t>(tile) * kTile * kHeadDim + k_global;
    const uint16_t* vt = v + static_cast<int64_t>(tile) * kTile * kHeadDim + v_row;
    uint8_t* ks = s.k + k_smem;
    uint8_t* vs = reinterpret_cast<uint8_t*>(s.v) + v_smem;
#pragma unroll
    for (int i = 0; i < kK; ++i) CpAsync16(ks + i * kKRowStep * 64, kt + i * kKRowStep * kHeadDim);
    if ((tile + 1) * kTile <= rows) {
#pragma unroll
      for (int i = 0; i < kV; ++i) CpAsync16(vs + i * kVRowStep * kVStride * 2, vt + i * kVRowStep * kHeadDim);
    } else {
      const int valid = (rows - tile * kTile) * kHeadDim - v_row;  // elements of valid rows from this thread's first
#pragma unroll
      for (int i = 0; i < kV; ++i) {
        const bool ok = i * kVRowStep * kHeadDim < valid;
        CpAsync16(vs + i * kVRowStep * kVStride * 2, ok ? vt + i * kVRowStep * kHeadDim : v, ok);
      }
    }
  }
};

// Q of a warp's kRowTiles x 16 rows from row_base - g (rows row_base + 16 rt + 8 r): per row
// tile, rows g and g + 8, channels 4 tig .. + 3 (+16, +32, +48), the A operand of two k-steps
// (mma.sync m16n8k32 and wgmma m64nNk32 share it). One INT8 scale per row over its 64 channels (a
// quad holds the row), the softmax scale and log2(e) folded in (scores in log2 units).
template <int kRowTiles>
__device__ __forceinline__ void LoadQueriesInt8(const Int8AttentionParams& p, int head, int row_base, int tig, uint32_t (&qa)[kRowTiles][2][4],
                                                float (&q_scale)[kRowTiles][2]) {
  const float q_mul = p.scale * 1.4426950408889634f;
#pragma unroll
  for (int rt = 0; rt < kRowTiles; ++rt) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = row_base + rt * 16 + r * 8;
      const uint16_t* q = p.q + head * p.q_head_stride + static_cast<int64_t>(row) * p.q_row_stride;
      float qv[16];
#pragma unroll
      for (int c4 = 0; c4 < 4; ++c4) {
        const uint2 w = row < p.queries ? *reinterpret_cast<const uint2*>(q + c4 * 16 + tig * 4) : make_uint2(0, 0);
        qv[4 * c4 + 0] = Bf16BitsToFloat(static_cast<uint16_t>(w.x & 0xffff)) * q_mul;
        qv[4 * c4 + 1] = Bf16BitsToFloat(static_cast<uint16_t>(w.x >> 16)) * q_mul;
        qv[4 * c4 + 2] = Bf16BitsToFloat(static_cast<uint16_t>(w.y & 0xffff)) * q_mul;
        qv[4 * c4 + 3] = Bf16BitsToFloat(static_cast<uint16_t>(w.y >> 16)) * q_mul;
      }
      float amax = 0.0f;
#pragma unroll
      for (int i = 0; i < 16; ++i) amax = fmaxf(amax, fabsf(qv[i]));
      amax = QuadMax(amax);
      const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
      q_scale[rt][r] = amax > 0.0f ? amax / 127.0f : 1.0f;
      // k-step 0: channels 0-31 (c4 = 0, 1), k-step 1: 32-63 (c4 = 2, 3); registers 0/2 row g, 1/3 row g + 8.
      qa[rt][0][r] = PackInt8x4(qv, inv);
      qa[rt][0][r + 2] = PackInt8x4(qv + 4, inv);
      qa[rt][1][r] = PackInt8x4(qv + 8, inv);
      qa[rt][1][r + 2] = PackInt8x4(qv + 12, inv);
    }
  }
}

// A tile's keys outside the attended ones masked in a warp's scores (the layout of ScoresToP's sc),
// given the tile's key scale as loaded: a negative scale marks a tile with keys outside
// p.tile_mask (ExpandPagesInt8), whose mask is then read (only there: a tile of whole pages costs
// no load); a tile past p.rows has its keys from there on masked. Other tiles cost two compares
// (the bit mask's arithmetic on every tile made the warpgroup kernel 4% slower, call 175).
template <int kRowTiles>
__device__ __forceinline__ void MaskKeys(int (&sc)[kRowTiles][8][4], const Int8AttentionParams& p, int tile, float k_scale, int tig) {
  if (k_scale >= 0.0f && (tile + 1) * kTile <= p.rows) return;
  const int past = p.rows - tile * kTile;  // keys of the tile before p.rows
  const uint64_t keys = k_scale < 0.0f ? p.tile_mask[tile] : (1ull << past) - 1;  // (0 < past < 64: tiles = ceil(rows / 64))
  const uint64_t mine = keys >> (2 * tig);  // bits 8 j and 8 j + 1: this thread's keys of chunk j
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const uint32_t two = static_cast<uint32_t>(mine >> (8 * j));
#pragma unroll
    for (int rt = 0; rt < kRowTiles; ++rt) {
      if (!(two & 1u)) sc[rt][j][0] = sc[rt][j][2] = kMaskedScore;
      if (!(two & 2u)) sc[rt][j][1] = sc[rt][j][3] = kMaskedScore;
    }
  }
}

// A key tile's scores to P (the softmax numerators, as bf16 A operands of P V), for a warp's
// kRowTiles x 16 rows: sc holds kScoreBits + the integer scores in the m16n8 accumulator layout
// per 8-key chunk (mma.sync's and wgmma's alike), the keys outside the tile's mask masked
// (MaskKeys). The running maxima and sums move, and acc is rescaled when a maximum moves (on a
// block's first tile by 0, from a maximum of -inf: the warpgroup kernel's variant 7 leaves acc
// unset until then, its first P V MMA overwriting whatever this rescale made of it).
template <int kRowTiles>
__device__ __forceinline__ void ScoresToP(const int (&sc)[kRowTiles][8][4], float k_scale,
                                          const float (&q_scale)[kRowTiles][2], float (&row_max)[kRowTiles][2],
                                          float (&row_sum)[kRowTiles][2], float (&acc)[kRowTiles][8][4], uint32_t (&pa)[kRowTiles][4][4]) {
  constexpr uint32_t kOnes = 0x3f803f80u;  // two bf16 ones
  // The running maxima move lazily: a tile whose scores stay within kMaxSlack (log2 units) of a
  // row's maximum is taken against that maximum (its P at most 2^kMaxSlack, no loss in fp32
  // sums or bf16 P), so a steady tile needs no shuffles across the quad that holds a row. Only
  // when some score of the warp passes a maximum by more are the tile's maxima reduced over the
  // quads and the rows moved to them (a warp-uniform branch: every tile at first, then only while
  // the scores keep rising).
  constexpr float kMaxSlack = 8.0f;
  float scale[kRowTiles][2], offset[kRowTiles][2];  // integer score -> log2 units: sc scale - offset
  int tile_max_bits[kRowTiles][2];
  bool grow = false;
#pragma unroll
  for (int rt = 0; rt < kRowTiles; ++rt) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      scale[rt][r] = q_scale[rt][r] * k_scale;
      offset[rt][r] = kScoreOffset * scale[rt][r];  // sc holds kScoreOffset + score
      // This thread's 16 scores of the row as a tree of three-way maxima (depth 3, not a chain of 8).
      const auto score = [&](int i) { return sc[rt][i / 2][2 * r + i % 2]; };
      const int m0 = __vimax3_s32(score(0), score(1), score(2)), m1 = __vimax3_s32(score(3), score(4), score(5));
      const int m2 = __vimax3_s32(score(6), score(7), score(8)), m3 = __vimax3_s32(score(9), score(10), score(11));
      const int m4 = __vimax3_s32(score(12), score(13), score(14));
      tile_max_bits[rt][r] = max(__vimax3_s32(m0, m1, m2), __vimax3_s32(m3, m4, score(15)));
      grow |= fmaf(__int_as_float(tile_max_bits[rt][r]), scale[rt][r], -offset[rt][r]) > row_max[rt][r] + kMaxSlack;
    }
  }
  float alpha[kRowTiles][2];
#pragma unroll
  for (int rt = 0; rt < kRowTiles; ++rt) alpha[rt][0] = alpha[rt][1] = 1.0f;
  if (__any_sync(0xffffffffu, grow)) {
#pragma unroll
    for (int rt = 0; rt < kRowTiles; ++rt) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int bits = QuadReduce(tile_max_bits[rt][r], [](int a, int b) { return max(a, b); });
        const float new_max = fmaxf(row_max[rt][r], fmaf(__int_as_float(bits), scale[rt][r], -offset[rt][r]));
        alpha[rt][r] = new_max == -INFINITY ? 1.0f : FastExp2(row_max[rt][r] - new_max);
        row_max[rt][r] = new_max;
      }
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        acc[rt][j][0] *= alpha[rt][0];
        acc[rt][j][1] *= alpha[rt][0];
        acc[rt][j][2] *= alpha[rt][1];
        acc[rt][j][3] *= alpha[rt][1];
      }
    }
  }
#pragma unroll
  for (int rt = 0; rt < kRowTiles; ++rt) {
    float bias[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) bias[r] = row_max[rt][r] == -INFINITY ? 0.0f : -row_max[rt][r] - offset[rt][r];
    float e[8][4];  // 2^(score - max)
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      e[j][0] = FastExp2(fmaf(__int_as_float(sc[rt][j][0]), scale[rt][0], bias[0]));
      e[j][1] = FastExp2(fmaf(__int_as_float(sc[rt][j][1]), scale[rt][0], bias[0]));
      e[j][2] = FastExp2(fmaf(__int_as_float(sc[rt][j][2]), scale[rt][1], bias[1]));
      e[j][3] = FastExp2(fmaf(__int_as_float(sc[rt][j][3]), scale[rt][1], bias[1]));
    }
    // P in bf16 as the A operand of 4 k-steps of 16 keys (the accumulator layout of two key
    // tiles is the A layout); its row sums by one MMA per k-step against ones.
    float sums[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      pa[rt][kk][0] = PackBf16x2(e[2 * kk][0], e[2 * kk][1]);
      pa[rt][kk][1] = PackBf16x2(e[2 * kk][2], e[2 * kk][3]);
      pa[rt][kk][2] = PackBf16x2(e[2 * kk + 1][0], e[2 * kk + 1][1]);
      pa[rt][kk][3] = PackBf16x2(e[2 * kk + 1][2], e[2 * kk + 1][3]);
      Mma16816<false>(sums, pa[rt][kk], kOnes, kOnes);
    }
    row_sum[rt][0] = fmaf(row_sum[rt][0], alpha[rt][0], sums[0]);
    row_sum[rt][1] = fmaf(row_sum[rt][1], alpha[rt][1], sums[2]);
  }
}

// The normalised output rows of a warp (or its split's partial rows and log-sum-exps).
template <int kRowTiles>
__device__ __forceinline__ void StoreRows(const Int8AttentionParams& p, int head, int row_base, int tig, const float (&acc)[kRowTiles][8][4],
                                          const float (&row_max)[kRowTiles][2], const float (&row_sum)[kRowTiles][2]) {
#pragma unroll
  for (int rt = 0; rt < kRowTiles; ++rt) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float sum = row_sum[rt][r];  // already the whole row's (the ones MMA sums across the quad)
      const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
      const int row = row_base + rt * 16 + r * 8;
      if (row >= p.queries) continue;
      if (p.splits == 1) {
        uint16_t* out = p.out + head * p.out_head_stride + static_cast<int64_t>(row) * p.out_row_stride;
#pragma unroll
        for (int j = 0; j < 8; ++j)
          *reinterpret_cast<uint32_t*>(out + j * 8 + tig * 2) = PackBf16x2(acc[rt][j][2 * r] * inv, acc[rt][j][2 * r + 1] * inv);
      } else {
        const int64_t at = (static_cast<int64_t>(blockIdx.z) * p.heads + head) * p.queries + row;
        uint16_t* out = p.partial_out + at * kHeadDim;
#pragma unroll
        for (int j = 0; j < 8; ++j)
          *reinterpret_cast<uint32_t*>(out + j * 8 + tig * 2) = PackBf16x2(acc[rt][j][2 * r] * inv, acc[rt][j][2 * r + 1] * inv);
        // log2 of the row's sum of exponentials.
        if (tig == 0) p.partial_lse[at] = sum > 0.0f ? row_max[rt][r] + log2f(sum) : -INFINITY;
      }
    }
  }
}

// The key tiles [begin, end) of this block's split (blockIdx.z); empty for a split past the tiles.
__device__ __forceinline__ void SplitTiles(const Int8AttentionParams& p, int& begin, int& end) {
  const int per_split = (p.tiles + p.splits - 1) / p.splits;
  begin = blockIdx.z * per_split;
  end = min(p.tiles, begin + per_split);
}

// kWarps warps of kRowTiles x 16 query rows each (a warp's row tiles share its K and V fragments);
// kMinBlocks: resident blocks per multiprocessor the registers are budgeted for.
template <int kWarps, int kRowTiles, int kMinBlocks>
__global__ void __launch_bounds__(kWarps * 32, kMinBlocks) Int8AttentionKernel(Int8AttentionParams p) {
  constexpr int kThreads = kWarps * 32, kBlockM = kWarps * kRowTiles * 16;
  __shared__ __align__(128) Stage stages[kStages];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, tig = lane % 4;
  const int head = blockIdx.y;
  int tile_begin, tile_end;
  SplitTiles(p, tile_begin, tile_end);

  const int row_base = blockIdx.x * kBlockM + warp * kRowTiles * 16 + g;  // the warp's first row (its rows g, g + 8, ...)
  uint32_t qa[kRowTiles][2][4];  // [row tile][k-step][register]
  float q_scale[kRowTiles][2];
  LoadQueriesInt8(p, head, row_base, tig, qa, q_scale);

  float acc[kRowTiles][8][4];
  // Running maxima of the scores (log2 units) and sums of 2^(s - max), per row.
  float row_max[kRowTiles][2], row_sum[kRowTiles][2];
#pragma unroll
  for (int rt = 0; rt < kRowTiles; ++rt) {
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[rt][j][0] = acc[rt][j][1] = acc[rt][j][2] = acc[rt][j][3] = 0.0f;
    row_max[rt][0] = row_max[rt][1] = -INFINITY;
    row_sum[rt][0] = row_sum[rt][1] = 0.0f;
  }

  const TileLoader<kThreads> loader(p, head);
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) {
    if (tile_begin + i < tile_end) loader.Load(stages[i], tile_begin + i);
    CpAsyncCommit();
  }
  int read_stage = 0, load_stage = kStages - 1;
  const float* k_scales = p.ks + static_cast<int64_t>(head) * p.tiles;
  float next_k_scale = tile_begin < tile_end ? k_scales[tile_begin] : 1.0f;
  for (int tile = tile_begin; tile < tile_end; ++tile) {
    const float k_scale = next_k_scale;  // (negative: the tile has keys outside its mask, MaskKeys)
    if (tile + 1 < tile_end) next_k_scale = k_scales[tile + 1];
    CpAsyncWait<kStages - 2>();
    __syncthreads();  // the tile has arrived for every thread; the stage loaded next is free
    if (tile + kStages - 1 < tile_end) loader.Load(stages[load_stage], tile + kStages - 1);
    CpAsyncCommit();
    const Stage& s = stages[read_stage];
    read_stage = read_stage == kStages - 1 ? 0 : read_stage + 1;
    load_stage = load_stage == kStages - 1 ? 0 : load_stage + 1;

    // S = Q K^T: 8 key tiles of 8; one ldmatrix.x4 gives a key tile's 64 channels.
    int sc[kRowTiles][8][4];  // kScoreBits + integer scores
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      uint32_t b[4];
      LdMatrixX4(b, s.k + Swizzle(j * 8 + lane % 8, lane / 8));
#pragma unroll
      for (int rt = 0; rt < kRowTiles; ++rt) {
        MmaInt8From(sc[rt][j], qa[rt][0], b[0], b[1], kScoreBits);
        MmaInt8(sc[rt][j], qa[rt][1], b[2], b[3]);
      }
    }
    MaskKeys(sc, p, tile, k_scale, tig);
    uint32_t pa[kRowTiles][4][4];  // P as bf16: [row tile][k-step of 16 keys][register]
    ScoresToP(sc, fabsf(k_scale), q_scale, row_max, row_sum, acc, pa);
    // O += P V: V's fragments by ldmatrix.trans, two channel tiles per load.
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
#pragma unroll
      for (int j = 0; j < 8; j += 2) {
        uint32_t b[4];
        const int m = lane / 8;
        LdMatrixX4Trans(b, &s.v[(kk * 16 + (m & 1) * 8 + lane % 8) * kVStride + (j + (m >> 1)) * 8]);
#pragma unroll
        for (int rt = 0; rt < kRowTiles; ++rt) {
          Mma16816<false>(acc[rt][j], pa[rt][kk], b[0], b[1]);
          Mma16816<false>(acc[rt][j + 1], pa[rt][kk], b[2], b[3]);
        }
      }
    }
  }
  CpAsyncWait<0>();
  StoreRows(p, head, row_base, tig, acc, row_max, row_sum);
}

// ---- the warpgroup kernel (sm_90a) --------------------------------------------------------------
//
// The same computation on Hopper's warpgroup MMAs (wgmma): a block of one warpgroup (4 warps, 64
// query rows) issues S = Q K^T as two m64n64k32 INT8 MMAs (Q from registers, the key tile from
// shared memory) and O += P V as four m64n64k16 bf16 MMAs (P from registers, V from shared memory
// read N-major), where the mma.sync kernel above issues 16 + 32 MMAs per warp and the ldmatrix
// loads that feed them. The accumulators have the m16n8 layout per warp and 8-column chunk, so the
// softmax (ScoresToP), the query quantization and the output (StoreRows) are the ones above.
// Shared memory per stage: V 64 keys x 128 bytes in the 128-byte swizzle (16-byte chunk c of key
// k at chunk c ^ (k % 8)), then K 64 keys x 64 bytes in the 64-byte swizzle (Swizzle above): the
// canonical layouts the matrix descriptors name (an N-major and a K-major operand).
struct WgStage {
  uint16_t v[kTile * kHeadDim];
  uint8_t k[kTile * kHeadDim];
};
static_assert(sizeof(WgStage) % 1024 == 0, "stages keep the 1024-byte alignment of the 128-byte swizzle");

// (SwizzleV and kWgStages are unused where no sm_90a code is built.)
[[maybe_unused]] __device__ __forceinline__ int SwizzleV(int key, int chunk) { return key * 128 + ((chunk ^ (key & 7)) << 4); }

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define STREAMRECON_WGMMA_DEVICE 1
// A shared-memory matrix descriptor: start address, leading and stride byte offsets (16-byte
// units, 14 bits each) and the swizzle mode (1: 128 bytes, 2: 64 bytes).
__device__ __forceinline__ uint64_t MatrixDesc(const void* smem, int leading_bytes, int stride_bytes, uint64_t swizzle) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  return static_cast<uint64_t>((addr & 0x3ffff) >> 4) | (static_cast<uint64_t>((leading_bytes >> 4) & 0x3fff) << 16) |
         (static_cast<uint64_t>((stride_bytes >> 4) & 0x3fff) << 32) | (swizzle << 62);
}
__device__ __forceinline__ void WgmmaFence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void WgmmaCommit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void WgmmaWaitAll() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
// Generic-proxy writes to shared memory (cp.async's) made visible to the MMAs' async proxy.
__device__ __forceinline__ void FenceProxyAsync() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// Registers the asynchronous MMAs write kept in place across their issue and wait.
__device__ __forceinline__ void KeepRegisters(int (&d)[8][4]) {
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int r = 0; r < 4; ++r) asm volatile("" : "+r"(d[j][r])::"memory");
}
__device__ __forceinline__ void KeepRegisters(float (&d)[8][4]) {
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int r = 0; r < 4; ++r) asm volatile("" : "+f"(d[j][r])::"memory");
}

// d (64 x 64 int32) = A (64 x 32 INT8, registers) B (K-major INT8 in shared memory, descriptor),
// + d when kAccumulate (else d is only written: no move sets it up).
template <bool kAccumulate>
__device__ __forceinline__ void WgmmaInt8(int (&d)[8][4], const uint32_t (&a)[4], uint64_t b) {
  if (kAccumulate) {
    asm volatile("wgmma.mma_async.sync.aligned.m64n64k32.s32.s8.s8 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, {%32,%33,%34,%35}, %36, 1;\n"
                 : "+r"(d[0][0]), "+r"(d[0][1]), "+r"(d[0][2]), "+r"(d[0][3]), "+r"(d[1][0]), "+r"(d[1][1]), "+r"(d[1][2]), "+r"(d[1][3]), "+r"(d[2][0]), "+r"(d[2][1]), "+r"(d[2][2]), "+r"(d[2][3]), "+r"(d[3][0]), "+r"(d[3][1]), "+r"(d[3][2]), "+r"(d[3][3]), "+r"(d[4][0]), "+r"(d[4][1]), "+r"(d[4][2]), "+r"(d[4][3]), "+r"(d[5][0]), "+r"(d[5][1]), "+r"(d[5][2]), "+r"(d[5][3]), "+r"(d[6][0]), "+r"(d[6][1]), "+r"(d[6][2]), "+r"(d[6][3]), "+r"(d[7][0]), "+r"(d[7][1]), "+r"(d[7][2]), "+r"(d[7][3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
  } else {
    asm volatile("wgmma.mma_async.sync.aligned.m64n64k32.s32.s8.s8 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, {%32,%33,%34,%35}, %36, 0;\n"
                 : "=r"(d[0][0]), "=r"(d[0][1]), "=r"(d[0][2]), "=r"(d[0][3]), "=r"(d[1][0]), "=r"(d[1][1]), "=r"(d[1][2]), "=r"(d[1][3]), "=r"(d[2][0]), "=r"(d[2][1]), "=r"(d[2][2]), "=r"(d[2][3]), "=r"(d[3][0]), "=r"(d[3][1]), "=r"(d[3][2]), "=r"(d[3][3]), "=r"(d[4][0]), "=r"(d[4][1]), "=r"(d[4][2]), "=r"(d[4][3]), "=r"(d[5][0]), "=r"(d[5][1]), "=r"(d[5][2]), "=r"(d[5][3]), "=r"(d[6][0]), "=r"(d[6][1]), "=r"(d[6][2]), "=r"(d[6][3]), "=r"(d[7][0]), "=r"(d[7][1]), "=r"(d[7][2]), "=r"(d[7][3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
  }
}
// d (64 x 64 float) = A (64 x 16 bf16, registers) B (N-major bf16 in shared memory, descriptor),
// + d unless `overwrite`.
__device__ __forceinline__ void WgmmaBf16(float (&d)[8][4], const uint32_t (&a)[4], uint64_t b, bool overwrite = false) {
  asm volatile("{\n.reg .pred acc;\nsetp.eq.u32 acc, %37, 0;\nwgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, {%32,%33,%34,%35}, %36, acc, 1, 1, 1;\n}\n"
               : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(static_cast<uint32_t>(overwrite)));
}
#endif

// kDeferPv: a tile's P V is waited for only with the next tile's scores, so that it runs during
// the next barrier and loads; the loads then run kWgStages - 2 tiles ahead (not into the stage P V
// reads). Otherwise it is waited for at once and the loads run kWgStages - 1 tiles ahead.
[[maybe_unused]] constexpr int kWgStages = 4;  // 48 KiB a block
template <int kMinBlocks, bool kDeferPv>
__global__ void __launch_bounds__(128, kMinBlocks) Int8WgmmaKernel(Int8AttentionParams p) {
#if defined(STREAMRECON_WGMMA_DEVICE)
  constexpr int kAhead = kDeferPv ? kWgStages - 2 : kWgStages - 1;  // tiles loaded ahead of the one computed
  __shared__ __align__(1024) WgStage stages[kWgStages];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, tig = lane % 4, t = threadIdx.x;
  const int head = blockIdx.y;
  int tile_begin, tile_end;
  SplitTiles(p, tile_begin, tile_end);

  const int row_base = blockIdx.x * 64 + warp * 16 + g;
  uint32_t qa[1][2][4];
  float q_scale[1][2];
  LoadQueriesInt8(p, head, row_base, tig, qa, q_scale);
  // (Deferred P V: acc is first written by the first tile's MMA, which overwrites it; a move
  // setting it to zero before the loop would make ptxas serialize the MMAs.)
  float acc[1][8][4];
  float row_max[1][2] = {{-INFINITY, -INFINITY}}, row_sum[1][2] = {{0.0f, 0.0f}};
  if (tile_begin >= tile_end) {  // a split without tiles: zero rows of weight 0
    const float zero[1][8][4] = {};
    StoreRows(p, head, row_base, tig, zero, row_max, row_sum);
    return;
  }
  if (!kDeferPv) {
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[0][j][0] = acc[0][j][1] = acc[0][j][2] = acc[0][j][3] = 0.0f;
  }

  // Loads: thread t takes K chunks (row t / 4 + 32 i, chunk t % 4) and V chunks (key t / 8 + 16 i,
  // chunk t % 8) of a tile; V rows past p.rows are zero-filled. Tile i goes to stage i % kWgStages.
  const int8_t* k_head = p.k8 + head * static_cast<int64_t>(p.tiles) * kTile * kHeadDim;
  const uint16_t* v_head = p.v + head * p.v_head_stride;
  const int k_smem = Swizzle(t >> 2, t & 3), k_global = (t >> 2) * kHeadDim + (t & 3) * 16;
  const int v_smem = SwizzleV(t >> 3, t & 7), v_row = (t >> 3) * kHeadDim + (t & 7) * 8;
  const auto load = [&](int tile) {
    if (tile < tile_end) {
      WgStage& st = stages[tile % kWgStages];
      const int8_t* kt = k_head + static_cast<int64_t>(tile) * kTile * kHeadDim + k_global;
#pragma unroll
      for (int i = 0; i < 2; ++i) CpAsync16(st.k + k_smem + i * 32 * 64, kt + i * 32 * kHeadDim);
      const uint16_t* vt = v_head + static_cast<int64_t>(tile) * kTile * kHeadDim + v_row;
      uint8_t* vs = reinterpret_cast<uint8_t*>(st.v) + v_smem;
      const int valid = (p.rows - tile * kTile) * kHeadDim - v_row;  // elements of valid rows from this thread's first
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const bool ok = i * 16 * kHeadDim < valid;
        CpAsync16(vs + i * 16 * 128, ok ? vt + i * 16 * kHeadDim : v_head, ok);
      }
    }
    CpAsyncCommit();
  };
  // S = Q K^T of a tile (integer scores; kScoreBits is added once they arrive, so that no
  // accumulator of an MMA in flight is written meanwhile); committed, not waited for.
  const auto issue_scores = [&](int (&sc)[1][8][4], int tile) {
    const WgStage& st = stages[tile % kWgStages];
    WgmmaFence();
    WgmmaInt8<false>(sc[0], qa[0][0], MatrixDesc(st.k, 16, 8 * 64, 2));
    WgmmaInt8<true>(sc[0], qa[0][1], MatrixDesc(st.k + 32, 16, 8 * 64, 2));  // channels 32-63: 32 bytes into each row
    WgmmaCommit();
  };
  // O += P V over 4 k-steps of 16 keys (2048 bytes of V each); both byte offsets are the 1024
  // bytes between 8-key groups (the stride between 64-channel groups is never taken). Committed.
  const auto issue_pv = [&](const uint32_t (&pa)[1][4][4], int tile) {
    const WgStage& st = stages[tile % kWgStages];
    WgmmaFence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      WgmmaBf16(acc[0], pa[0][kk], MatrixDesc(st.v + kk * 16 * kHeadDim, 1024, 1024, 1), kDeferPv && kk == 0 && tile == tile_begin);
    WgmmaCommit();
  };
  const float* k_scales = p.ks + static_cast<int64_t>(head) * p.tiles;
  // The barrier before a stage is read: its loads arrived for every thread (and made visible to
  // the MMAs), and every thread has waited for the MMAs of the tile whose stage is loaded next.
  const auto arrived = [&]() {
    FenceProxyAsync();
    __syncthreads();
  };

#pragma unroll
  for (int i = 0; i < kAhead; ++i) load(tile_begin + i);
  for (int tile = tile_begin; tile < tile_end; ++tile) {
    const float k_scale = k_scales[tile];  // (negative: the tile has keys outside its mask, MaskKeys)
    CpAsyncWait<kAhead - 1>();
    arrived();
    load(tile + kAhead);
    int sc[1][8][4];
    issue_scores(sc, tile);
    WgmmaWaitAll();  // (and the previous tile's P V, when deferred)
    KeepRegisters(sc[0]);
    if (kDeferPv) KeepRegisters(acc[0]);
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) sc[0][j][r] += kScoreBits;  // integer scores as float bits (ScoresToP)
    MaskKeys(sc, p, tile, k_scale, tig);
    uint32_t pa[1][4][4];
    ScoresToP(sc, fabsf(k_scale), q_scale, row_max, row_sum, acc, pa);
    issue_pv(pa, tile);
    if (!kDeferPv) {
      WgmmaWaitAll();
      KeepRegisters(acc[0]);
    }
  }
  if (kDeferPv) {
    WgmmaWaitAll();
    KeepRegisters(acc[0]);
  }
  CpAsyncWait<0>();
  StoreRows(p, head, row_base, tig, acc, row_max, row_sum);
#elif defined(__CUDA_ARCH__)
  __trap();  // code without sm_90a's instructions (Int8AttentionVariantAvailable should not have let it run)
#endif
}

// out[h, q, :] = sum_s w_s o_s / sum_s w_s, w_s = 2^(lse_s - max lse); a warp per row, lane s
// reading split s's log-sum-exp (splits <= kInt8MaxSplits = 32), so that a row waits for one round
// of loads of them and then of the splits' partial rows (unrolled: several in flight), not for two
// loads per split in turn (12.6 us at 16k keys and 7 splits, call 169).
__global__ void __launch_bounds__(256) CombineSplitsKernel(Int8AttentionParams p) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * 8 + threadIdx.x / 32;  // over H * Nq
  const int lane = threadIdx.x % 32;
  const int64_t rows = static_cast<int64_t>(p.heads) * p.queries;
  if (row >= rows) return;
  const float lse = lane < p.splits ? p.partial_lse[lane * rows + row] : -INFINITY;
  float best = lse;
#pragma unroll
  for (int m = 1; m < 32; m <<= 1) best = fmaxf(best, __shfl_xor_sync(0xffffffffu, best, m));
  const float weight = lse == -INFINITY ? 0.0f : exp2f(lse - best);  // (a split without rows: weight 0, zero rows)
  float den = weight;
#pragma unroll
  for (int m = 1; m < 32; m <<= 1) den += __shfl_xor_sync(0xffffffffu, den, m);
  float num0 = 0.0f, num1 = 0.0f;
#pragma unroll 4
  for (int s = 0; s < p.splits; ++s) {
    const float w = __shfl_sync(0xffffffffu, weight, s);
    const uint32_t o = reinterpret_cast<const uint32_t*>(p.partial_out + (s * rows + row) * kHeadDim)[lane];
    num0 = fmaf(w, Bf16BitsToFloat(static_cast<uint16_t>(o & 0xffffu)), num0);
    num1 = fmaf(w, Bf16BitsToFloat(static_cast<uint16_t>(o >> 16)), num1);
  }
  const int head = static_cast<int>(row / p.queries), q = static_cast<int>(row % p.queries);
  const float inv = den > 0.0f ? 1.0f / den : 0.0f;
  *reinterpret_cast<uint32_t*>(p.out + head * p.out_head_stride + static_cast<int64_t>(q) * p.out_row_stride + 2 * lane) =
      static_cast<uint32_t>(FloatToBf16Bits(num0 * inv)) | (static_cast<uint32_t>(FloatToBf16Bits(num1 * inv)) << 16);
}

// The kernel variants (Int8AttentionParams::variant): warps, row tiles per warp, resident blocks,
// the warpgroup kernel (sm_90a builds on compute capability 9.0 only). Variant 7 is variant 5 with
// P V deferred (kVariantKernels' Int8WgmmaKernel<4, true>).
struct Variant {
  int warps, row_tiles, min_blocks;
  bool wgmma;
};
constexpr Variant kVariants[] = {{4, 1, 4, false}, {4, 1, 3, false}, {8, 1, 2, false}, {4, 2, 2, false},
                                 {4, 2, 3, false}, {4, 1, 4, true},  {4, 1, 3, true},  {4, 1, 4, true}};
// The default where the warpgroup kernel runs: variant 5 (calls 166-169: within 2-3% of 6 and 7 at
// 16k-64k keys, 7 faster at 16k only), else the mma.sync kernel's variant 0.
constexpr int kDefaultWgmmaVariant = 5, kDefaultMmaVariant = 0;
static_assert(kVariants[kDefaultWgmmaVariant].wgmma && !kVariants[kDefaultMmaVariant].wgmma, "the defaults' kernels");

using KernelFn = void (*)(Int8AttentionParams);
constexpr KernelFn kVariantKernels[] = {Int8AttentionKernel<4, 1, 4>, Int8AttentionKernel<4, 1, 3>, Int8AttentionKernel<8, 1, 2>,
                                        Int8AttentionKernel<4, 2, 2>, Int8AttentionKernel<4, 2, 3>, Int8WgmmaKernel<4, false>,
                                        Int8WgmmaKernel<3, false>, Int8WgmmaKernel<4, true>};
static_assert(sizeof(kVariantKernels) / sizeof(kVariantKernels[0]) == sizeof(kVariants) / sizeof(kVariants[0]));

}  // namespace

int Int8AttentionVariants() { return static_cast<int>(sizeof(kVariants) / sizeof(kVariants[0])); }

bool Int8WgmmaBuilt() {
#if defined(STREAMRECON_WGMMA_BUILD)
  return true;
#else
  return false;
#endif
}

int CurrentDeviceCapability() {
  int device = 0, major = 0, minor = 0;
  if (cudaGetDevice(&device) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  return 10 * major + minor;
}

bool Int8AttentionVariantAvailable(int variant) {
  if (variant < 0 || variant >= Int8AttentionVariants()) return false;
  if (!kVariants[variant].wgmma) return true;
  if (!Int8WgmmaBuilt()) return false;
  // The warpgroup kernel's code is built for sm_90a, which runs on compute capability 9.0 only:
  // asked once per device and process (0 unknown, 1 yes, 2 no).
  static std::atomic<int> known[64] = {};
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  if (device < 0 || device >= 64) return CurrentDeviceCapability() == 90;
  int state = known[device].load(std::memory_order_relaxed);
  if (state == 0) {
    state = CurrentDeviceCapability() == 90 ? 1 : 2;
    known[device].store(state, std::memory_order_relaxed);
  }
  return state == 1;
}

int DefaultInt8AttentionVariant() {
  return Int8AttentionVariantAvailable(kDefaultWgmmaVariant) ? kDefaultWgmmaVariant : kDefaultMmaVariant;
}


int Int8AttentionBlocks(int queries, int heads, int variant) {
  const Variant v = kVariants[variant];
  const int rows = v.warps * v.row_tiles * 16;
  return (queries + rows - 1) / rows * heads;
}

int ChooseInt8AttentionSplits(const Int8AttentionParams& p, int multiprocessors) {
  if (p.variant < 0 || p.variant >= Int8AttentionVariants()) return 1;
  // Resident blocks per multiprocessor, asked once per variant and process (the same on every
  // device of one kind; a failed query is not kept, and its error is cleared).
  static std::atomic<int> resident_per_sm[sizeof(kVariants) / sizeof(kVariants[0])] = {};
  int per_sm = resident_per_sm[p.variant].load(std::memory_order_relaxed);
  if (per_sm < 1) {
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kVariantKernels[p.variant], kVariants[p.variant].warps * 32, 0) ==
            cudaSuccess &&
        per_sm >= 1) {
      resident_per_sm[p.variant].store(per_sm, std::memory_order_relaxed);
    } else {
      cudaGetLastError();
      per_sm = 1;
    }
  }
  const int64_t resident = static_cast<int64_t>(per_sm) * multiprocessors;
  const int64_t blocks = Int8AttentionBlocks(p.queries, p.heads, p.variant);
  // Tiles on the longest path (whole waves of blocks x (tiles per split + a block's fixed cost)),
  // plus 1% per split for the combine step's partial outputs. The fixed cost, about two tiles'
  // time (loading and quantizing the queries, filling the pipeline, writing the partials), fits
  // the measured best splits: 5-9 at 16k keys, 9 at 32k-64k (docs/perf.md, calls 126, 148 and 155).
  constexpr int kBlockCostTiles = 2;
  int best = 1;
  double best_cost = 0;
  for (int s = 1; s <= std::min(kInt8MaxSplits, p.tiles); ++s) {
    const int64_t waves = (blocks * s + resident - 1) / resident, per_split = (p.tiles + s - 1) / s;
    const double cost = static_cast<double>(waves * (per_split + kBlockCostTiles)) * (1.0 + 0.01 * s);
    if (s == 1 || cost < best_cost) best = s, best_cost = cost;
  }
  return best;
}

cudaError_t LaunchQuantizeInt8Rows(const Int8RowsParams& p, cudaStream_t stream) {
  if (p.tiles < 1 || p.heads < 1 || p.a_rows + p.b_rows > p.tiles * kTile) return cudaErrorInvalidValue;
  QuantizeRowsKernel<<<dim3(p.tiles, p.heads), 128, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t LaunchExpandPagesInt8(const Int8PagesParams& p, int bits, cudaStream_t stream) {
  const int64_t rows = static_cast<int64_t>(p.page_count) * p.pages.slots + p.cur_tokens;
  if (p.tiles < 1 || rows > INT_MAX - kTile || p.heads < 1 || rows > static_cast<int64_t>(p.tiles) * kTile || p.pages.slots < 1 ||
      p.pages.v_group < 8 || kHeadDim % p.pages.v_group != 0 || p.page_count < 0 || p.page_count > p.pages.pages ||
      (p.page_count > 0 && !p.pages.meta) || (p.cur_tokens > 0 && (!p.k_cur || !p.v_cur)) || p.cur_tokens < 0 || !p.tile_mask ||
      p.v_head_stride < rows * kHeadDim || (bits != 2 && bits != 4))
    return cudaErrorInvalidValue;
  const dim3 grid(p.tiles, p.heads);
  if (bits == 4) ExpandPagesInt8Kernel<4><<<grid, 256, 0, stream>>>(p);
  else ExpandPagesInt8Kernel<2><<<grid, 256, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t LaunchInt8Attention(const Int8AttentionParams& p, cudaStream_t stream) {
  if (p.tiles < 1 || p.rows <= (p.tiles - 1) * kTile || p.rows > p.tiles * kTile || p.splits < 1 || p.splits > kInt8MaxSplits)
    return cudaErrorInvalidValue;
  if (p.splits > 1 && (!p.partial_out || !p.partial_lse)) return cudaErrorInvalidValue;
  if (p.variant < 0 || p.variant >= Int8AttentionVariants()) return cudaErrorInvalidValue;
  if (!Int8AttentionVariantAvailable(p.variant)) return cudaErrorInvalidDeviceFunction;
  const Variant v = kVariants[p.variant];
  const dim3 grid(Int8AttentionBlocks(p.queries, 1, p.variant), p.heads, p.splits);
  const int threads = v.warps * 32;
  kVariantKernels[p.variant]<<<grid, threads, 0, stream>>>(p);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess || p.splits == 1) return err;
  const int64_t rows = static_cast<int64_t>(p.heads) * p.queries;
  CombineSplitsKernel<<<static_cast<unsigned>((rows + 7) / 8), 256, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace streamrecon::kernels
