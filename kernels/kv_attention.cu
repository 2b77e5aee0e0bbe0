// Attention of a frame's queries over a layer's cache (dense bf16 or packed pages) plus the
// current frame (bf16), FlashAttention-style: online softmax, bf16 tensor-core MMA (m16n8k16),
// split over the keys with a combine step.
//
// KV-stationary within a block: each 64-key tile is dequantized once into shared memory (bf16,
// OScaR norms folded in) and reused by all 8 warps = 128 queries; partially valid pages are masked.
#include "kernels/kv_common.cuh"
#include "kernels/kv_kernels.h"

#include <algorithm>
#include <cstdlib>

namespace streamrecon::kernels {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kBlockM = kWarps * 16;  // queries per block
constexpr int kBlockN = 64;           // keys per tile
constexpr int kStride = kHeadDim + 8; // smem row stride in bf16 (16 bytes of padding: no bank conflicts)

__device__ __forceinline__ uint32_t PackHalf2(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}

// Operand packing of the MMA's element type: bf16 for the dense cache, fp16 for packed pages
// (their dequantization then stays in half2 arithmetic, with no float conversions).
template <bool kHalf>
__device__ __forceinline__ uint32_t PackOperand(float lo, float hi) {
  return kHalf ? PackHalf2(lo, hi) : PackBf16x2(lo, hi);
}

// A pair of bf16 values as a pair of fp16 ones, held at fp16's largest finite value (bf16_inputs);
// a NaN stays NaN (fminf/fmaxf alone would turn it into -65504).
__device__ __forceinline__ float HoldToHalfRange(float x) {
  constexpr float kMax = 65504.0f;
  return isnan(x) ? x : fminf(fmaxf(x, -kMax), kMax);
}
__device__ __forceinline__ uint32_t Bf16PairToHalf(uint32_t x) {
  const float lo = HoldToHalfRange(Bf16BitsToFloat(static_cast<uint16_t>(x & 0xffffu)));
  const float hi = HoldToHalfRange(Bf16BitsToFloat(static_cast<uint16_t>(x >> 16)));
  return PackHalf2(lo, hi);
}
__device__ __forceinline__ uint4 Bf16EightToHalf(uint4 x) {
  return make_uint4(Bf16PairToHalf(x.x), Bf16PairToHalf(x.y), Bf16PairToHalf(x.z), Bf16PairToHalf(x.w));
}

struct TileSmem {
  uint16_t k[kBlockN * kStride];
  uint16_t v[kBlockN * kStride];
  float mask[kBlockN];  // 0 for a valid key, -inf for padding
};

// One thread's share of a 64-key tile, fetched from global memory into registers one tile ahead
// (so the loads of tile i + 1 are in flight while tile i is multiplied), then committed to shared
// memory. Each thread owns units u = tid and tid + 256: key row u / 8, channels 8 (u % 8) .. + 7.
template <int kBits>
struct Fetched {
  uint4 k[2], v[2];  // dense rows: 8 bf16 each
  uint32_t kc[2], vc[2], vp[2];
  uint4 kp[2][2];    // 8 per-channel K params
  float norm[2];
  bool valid[2];
};

template <int kBits>
__device__ __forceinline__ void FetchDenseRows(Fetched<kBits>& f, const uint16_t* k, const uint16_t* v, int row0, int limit) {
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int u = threadIdx.x + i * kThreads, r = u / 8, c = (u % 8) * 8;
    f.valid[i] = row0 + r < limit;
    f.k[i] = f.valid[i] ? *reinterpret_cast<const uint4*>(k + static_cast<int64_t>(row0 + r) * kHeadDim + c) : make_uint4(0, 0, 0, 0);
    f.v[i] = f.valid[i] ? *reinterpret_cast<const uint4*>(v + static_cast<int64_t>(row0 + r) * kHeadDim + c) : make_uint4(0, 0, 0, 0);
  }
}

template <int kBits>
__device__ __forceinline__ void FetchPaged(Fetched<kBits>& f, const PagesView& pv, int head, int heads, int tile) {
  const int pages_per_tile = kBlockN / pv.slots;
  const int groups = kHeadDim / pv.v_group;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int u = threadIdx.x + i * kThreads, r = u / 8, c = (u % 8) * 8;
    const int wanted = tile * pages_per_tile + r / pv.slots, slot = r % pv.slots;
    // No load depends on another: the page's valid count is checked at commit time, so all of a
    // tile's loads are in flight together (one memory round trip per tile, not two).
    const int page = min(wanted, pv.pages - 1);
    const int64_t row = (static_cast<int64_t>(page) * heads + head) * pv.slots + slot;
    LoadCodes<kBits>(pv.k_codes, pv.v_codes, row, c, f.kc[i], f.vc[i]);
    const uint4* kp = reinterpret_cast<const uint4*>(pv.k_params + (static_cast<int64_t>(page) * heads + head) * kHeadDim + c);
    f.kp[i][0] = kp[0];
    f.kp[i][1] = kp[1];
    f.vp[i] = pv.v_params[row * groups + c / pv.v_group];
    f.norm[i] = pv.norms ? pv.norms[static_cast<int64_t>(page) * pv.slots + slot] : 1.0f;
    f.k[i].x = static_cast<uint32_t>(pv.meta[2 * page]);  // valid count, checked at commit
    f.k[i].y = wanted < pv.pages ? static_cast<uint32_t>(slot) : 0xffffffffu;
  }
}

// dense: a tile of rows (the dense cache's or the current frame's); to_half: those rows are bf16
// for an fp16 multiplication (packed pages with bf16_inputs).
template <int kBits>
__device__ __forceinline__ void Commit(TileSmem& s, const Fetched<kBits>& f, bool dense, bool to_half) {
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int u = threadIdx.x + i * kThreads, r = u / 8, c = (u % 8) * 8;
    uint4 kw = make_uint4(0, 0, 0, 0), vw = make_uint4(0, 0, 0, 0);
    if (dense || kBits == 0) {
      kw = to_half ? Bf16EightToHalf(f.k[i]) : f.k[i];
      vw = to_half ? Bf16EightToHalf(f.v[i]) : f.v[i];
    } else if (f.k[i].y < f.k[i].x) {  // slot < valid count of its page
      constexpr int kB = kBits == 0 ? 4 : kBits;
      DequantizeEight<kB>(f.kc[i], f.kp[i], f.vc[i], f.vp[i], f.norm[i], kw, vw);
    }
    *reinterpret_cast<uint4*>(&s.k[r * kStride + c]) = kw;
    *reinterpret_cast<uint4*>(&s.v[r * kStride + c]) = vw;
    const bool valid = (dense || kBits == 0) ? f.valid[i] : f.k[i].y < f.k[i].x;
    if (c == 0) s.mask[r] = valid ? 0.0f : -INFINITY;
  }
}

template <int kBits, int kMinBlocks>  // kBits 0: dense bf16 cache
__global__ void __launch_bounds__(kThreads, kMinBlocks) AttentionKernel(AttentionParams p, int cache_tiles, int total_tiles) {
  constexpr bool kHalf = kBits != 0;  // q, current frame and tiles in fp16 for packed pages
  __shared__ __align__(16) TileSmem s;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int group = lane / 4, tig = lane % 4;
  const int head = blockIdx.y;
  const int m0 = blockIdx.x * kBlockM + warp * 16;
  const int per_split = (total_tiles + p.splits - 1) / p.splits;
  const int tile_begin = blockIdx.z * per_split, tile_end = min(total_tiles, tile_begin + per_split);

  // Q fragments (A operand) for the warp's 16 rows, 4 k-steps of 16 channels.
  const uint16_t* q = p.q + static_cast<int64_t>(head) * (p.q_head_stride > 0 ? p.q_head_stride : static_cast<int64_t>(p.queries) * kHeadDim);
  const bool to_half = kHalf && p.bf16_inputs;
  // Warps with no query rows (the last block of a query count that is not a multiple of 128) still
  // fetch and commit their share of each tile, but skip the multiplications.
  const bool active = m0 < p.queries;
  uint32_t qa[4][4];
  const int r0 = m0 + group, r1 = r0 + 8;
  auto q_pair = [&](int r, int c) -> uint32_t {
    if (r >= p.queries) return 0u;
    const uint32_t x = *reinterpret_cast<const uint32_t*>(q + static_cast<int64_t>(r) * kHeadDim + c);
    return to_half ? Bf16PairToHalf(x) : x;
  };
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    const int c = kk * 16 + tig * 2;
    qa[kk][0] = q_pair(r0, c);
    qa[kk][1] = q_pair(r1, c);
    qa[kk][2] = q_pair(r0, c + 8);
    qa[kk][3] = q_pair(r1, c + 8);
  }
  float acc[8][4];
#pragma unroll
  for (int j = 0; j < 8; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.0f, 0.0f};
  const float scale_log2 = p.scale * 1.4426950408889634f;

  // Fetches tile t into registers (a cache tile, or a tile of the current frame).
  auto fetch = [&](Fetched<kBits>& f, int t) {
    if (t < cache_tiles) {
      if constexpr (kBits == 0) {
        const int64_t off = static_cast<int64_t>(head) * p.dense_head_stride;
        FetchDenseRows(f, p.k_dense + off, p.v_dense + off, t * kBlockN, p.dense_tokens);
      } else {
        FetchPaged<kBits>(f, p.pages, head, p.heads, t);
      }
    } else {
      const int64_t off = static_cast<int64_t>(head) * p.cur_tokens * kHeadDim;
      FetchDenseRows(f, p.k_cur + off, p.v_cur + off, (t - cache_tiles) * kBlockN, p.cur_tokens);
    }
  };
  Fetched<kBits> next;
  if (tile_begin < tile_end) fetch(next, tile_begin);
  for (int tile = tile_begin; tile < tile_end; ++tile) {
    __syncthreads();
    Commit<kBits>(s, next, tile >= cache_tiles, to_half);
    __syncthreads();
    if (tile + 1 < tile_end) fetch(next, tile + 1);  // in flight during the multiplications below
    if (!active) continue;

    // S = Q K^T for 64 keys: 8 n-tiles of 8 keys.
    float sc[8][4];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      sc[j][0] = sc[j][1] = sc[j][2] = sc[j][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < 4; kk += 2) {
        uint32_t b[4];
        const int m = lane / 8;
        LdMatrixX4(b, &s.k[(j * 8 + lane % 8) * kStride + kk * 16 + m * 8]);
        Mma16816<kHalf>(sc[j], qa[kk], b[0], b[1]);
        Mma16816<kHalf>(sc[j], qa[kk + 1], b[2], b[3]);
      }
    }
    // Online softmax (base 2) on rows r0 (c0, c1) and r1 (c2, c3).
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const float m_a = s.mask[j * 8 + tig * 2], m_b = s.mask[j * 8 + tig * 2 + 1];
      sc[j][0] = sc[j][0] * scale_log2 + m_a;
      sc[j][1] = sc[j][1] * scale_log2 + m_b;
      sc[j][2] = sc[j][2] * scale_log2 + m_a;
      sc[j][3] = sc[j][3] * scale_log2 + m_b;
      tile_max[0] = fmaxf(tile_max[0], fmaxf(sc[j][0], sc[j][1]));
      tile_max[1] = fmaxf(tile_max[1], fmaxf(sc[j][2], sc[j][3]));
    }
    float alpha[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      tile_max[r] = QuadMax(tile_max[r]);
      const float new_max = fmaxf(row_max[r], tile_max[r]);
      alpha[r] = new_max == -INFINITY ? 1.0f : FastExp2(row_max[r] - new_max);
      row_max[r] = new_max;
      row_sum[r] *= alpha[r];
    }
    const float base0 = row_max[0] == -INFINITY ? 0.0f : row_max[0];
    const float base1 = row_max[1] == -INFINITY ? 0.0f : row_max[1];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      sc[j][0] = FastExp2(sc[j][0] - base0);
      sc[j][1] = FastExp2(sc[j][1] - base0);
      sc[j][2] = FastExp2(sc[j][2] - base1);
      sc[j][3] = FastExp2(sc[j][3] - base1);
      row_sum[0] += sc[j][0] + sc[j][1];
      row_sum[1] += sc[j][2] + sc[j][3];
      acc[j][0] *= alpha[0];
      acc[j][1] *= alpha[0];
      acc[j][2] *= alpha[1];
      acc[j][3] *= alpha[1];
    }
    // O += P V: P from the S fragments (C layout == A layout), V via ldmatrix.trans.
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      uint32_t pa[4];
      pa[0] = PackOperand<kHalf>(sc[2 * kk][0], sc[2 * kk][1]);
      pa[1] = PackOperand<kHalf>(sc[2 * kk][2], sc[2 * kk][3]);
      pa[2] = PackOperand<kHalf>(sc[2 * kk + 1][0], sc[2 * kk + 1][1]);
      pa[3] = PackOperand<kHalf>(sc[2 * kk + 1][2], sc[2 * kk + 1][3]);
#pragma unroll
      for (int j = 0; j < 8; j += 2) {
        uint32_t b[4];
        const int m = lane / 8;
        LdMatrixX4Trans(b, &s.v[(kk * 16 + (m & 1) * 8 + lane % 8) * kStride + (j + (m >> 1)) * 8]);
        Mma16816<kHalf>(acc[j], pa, b[0], b[1]);
        Mma16816<kHalf>(acc[j + 1], pa, b[2], b[3]);
      }
    }
  }

  // Finish: total row sums across the quad, normalise, write.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    row_sum[r] = QuadSum(row_sum[r]);
  }
  const float inv0 = row_sum[0] > 0.0f ? 1.0f / row_sum[0] : 0.0f;
  const float inv1 = row_sum[1] > 0.0f ? 1.0f / row_sum[1] : 0.0f;
  const int64_t row_base = static_cast<int64_t>(head) * p.queries;
  if (p.splits == 1) {
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int c = j * 8 + tig * 2;
      if (r0 < p.queries) *reinterpret_cast<uint32_t*>(p.out + (row_base + r0) * kHeadDim + c) = PackBf16x2(acc[j][0] * inv0, acc[j][1] * inv0);
      if (r1 < p.queries) *reinterpret_cast<uint32_t*>(p.out + (row_base + r1) * kHeadDim + c) = PackBf16x2(acc[j][2] * inv1, acc[j][3] * inv1);
    }
    if (p.out_lse && tig == 0) {  // (log base 2 of the sums of 2^(scaled score): times ln 2)
      constexpr float kLn2 = 0.6931471805599453f;
      if (r0 < p.queries) p.out_lse[row_base + r0] = row_sum[0] > 0.0f ? (row_max[0] + log2f(row_sum[0])) * kLn2 : -INFINITY;
      if (r1 < p.queries) p.out_lse[row_base + r1] = row_sum[1] > 0.0f ? (row_max[1] + log2f(row_sum[1])) * kLn2 : -INFINITY;
    }
  } else {
    const int64_t split_base = static_cast<int64_t>(blockIdx.z) * p.heads * p.queries;
    float* out = p.partial_out + (split_base + row_base) * kHeadDim;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int c = j * 8 + tig * 2;
      if (r0 < p.queries) *reinterpret_cast<float2*>(out + static_cast<int64_t>(r0) * kHeadDim + c) = make_float2(acc[j][0] * inv0, acc[j][1] * inv0);
      if (r1 < p.queries) *reinterpret_cast<float2*>(out + static_cast<int64_t>(r1) * kHeadDim + c) = make_float2(acc[j][2] * inv1, acc[j][3] * inv1);
    }
    if (tig == 0) {
      float* lse = p.partial_lse + split_base + row_base;
      if (r0 < p.queries) lse[r0] = row_sum[0] > 0.0f ? row_max[0] + log2f(row_sum[0]) : -INFINITY;
      if (r1 < p.queries) lse[r1] = row_sum[1] > 0.0f ? row_max[1] + log2f(row_sum[1]) : -INFINITY;
    }
  }
}

// out[h, q, :] = sum_s w_s o_s / sum_s w_s with w_s = 2^(lse_s - max lse).
__global__ void CombineKernel(AttentionParams p) {
  const int64_t row = blockIdx.x;  // over H * Nq
  const int d = threadIdx.x;
  const int64_t rows = static_cast<int64_t>(p.heads) * p.queries;
  float best = -INFINITY;
  for (int s = 0; s < p.splits; ++s) best = fmaxf(best, p.partial_lse[s * rows + row]);
  float num = 0.0f, den = 0.0f;
  for (int s = 0; s < p.splits; ++s) {
    const float lse = p.partial_lse[s * rows + row];
    if (lse == -INFINITY) continue;
    const float w = exp2f(lse - best);
    num += w * p.partial_out[(s * rows + row) * kHeadDim + d];
    den += w;
  }
  p.out[row * kHeadDim + d] = FloatToBf16Bits(den > 0.0f ? num / den : 0.0f);
  if (p.out_lse && d == 0) p.out_lse[row] = den > 0.0f ? (best + log2f(den)) * 0.6931471805599453f : -INFINITY;
}

int CacheTiles(const AttentionParams& p) {
  if (p.format == KvFormat::kBf16) return (p.dense_tokens + kBlockN - 1) / kBlockN;
  const int pages_per_tile = kBlockN / p.pages.slots;
  return (p.pages.pages + pages_per_tile - 1) / pages_per_tile;
}

}  // namespace

int AttentionKeyTiles(const AttentionParams& p) { return CacheTiles(p) + (p.cur_tokens + kBlockN - 1) / kBlockN; }

int ChooseAttentionSplits(const AttentionParams& p, int multiprocessors) {
  const int blocks = ((p.queries + kBlockM - 1) / kBlockM) * p.heads;
  const int tiles = AttentionKeyTiles(p);
  // Aim for about 4 blocks per multiprocessor (2 resident x 2 waves), at least 8 tiles per split.
  int splits = (4 * multiprocessors + blocks - 1) / blocks;
  splits = std::min(splits, std::max(1, tiles / 8));
  return std::max(1, splits);
}

cudaError_t LaunchAttention(const AttentionParams& p, cudaStream_t stream) {
  if (p.format != KvFormat::kBf16 && (p.pages.slots < 1 || kBlockN % p.pages.slots != 0 || p.pages.v_group < 8 ||
                                      kHeadDim % p.pages.v_group != 0))
    return cudaErrorInvalidValue;
  if (p.splits > 1 && (!p.partial_out || !p.partial_lse)) return cudaErrorInvalidValue;
  const int cache_tiles = CacheTiles(p), total = AttentionKeyTiles(p);
  const dim3 grid((p.queries + kBlockM - 1) / kBlockM, p.heads, p.splits);
  // Packed pages: 1 block per multiprocessor (200 registers, no spills) measured 2-10% faster than
  // 2 (128 registers, spills) on the H200 (docs/perf.md); p.paged_min_blocks = 2 selects the other.
  const int paged_blocks = p.paged_min_blocks == 2 ? 2 : 1;
  switch (p.format) {
    case KvFormat::kBf16: AttentionKernel<0, 2><<<grid, kThreads, 0, stream>>>(p, cache_tiles, total); break;
    case KvFormat::kPaged4:
      if (paged_blocks == 1) AttentionKernel<4, 1><<<grid, kThreads, 0, stream>>>(p, cache_tiles, total);
      else AttentionKernel<4, 2><<<grid, kThreads, 0, stream>>>(p, cache_tiles, total);
      break;
    case KvFormat::kPaged2:
      if (paged_blocks == 1) AttentionKernel<2, 1><<<grid, kThreads, 0, stream>>>(p, cache_tiles, total);
      else AttentionKernel<2, 2><<<grid, kThreads, 0, stream>>>(p, cache_tiles, total);
      break;
  }
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess || p.splits == 1) return err;
  CombineKernel<<<static_cast<unsigned>(p.heads * p.queries), kHeadDim, 0, stream>>>(p);
  return cudaGetLastError();
}

namespace {

// ---- few queries over packed pages (the ragged path's query tail) ----------------------------
//
// The kernel above shares each 64-key tile among 8 warps of 16 query rows: with 17 queries two
// warps multiply and the tile's loads, one tile ahead, are not hidden (67-120 us for 17 queries
// over 19.7k keys where flash over the expanded bf16 rows takes 33; call 142). Here every warp
// walks its own tiles of 32 keys (block (head, split), warp w its tiles w, w + 4, ...), loading
// the next page's codes and parameters into registers while it multiplies the current one, for up
// to 32 query rows (two m16 tiles); the block's warps are folded at the end through shared memory
// and the splits by CombineKernel.
constexpr int kFewWarps = 4;
constexpr int kFewThreads = kFewWarps * 32;
constexpr int kFewKeys = 32;  // keys per warp tile: one page of 32 slots or two of 16

struct FewTile {  // a warp's tile, dequantized to fp16 (OScaR norms folded in)
  uint16_t k[kFewKeys * kStride];
  uint16_t v[kFewKeys * kStride];
  float mask[kFewKeys];
};
struct FewFold {  // the warps' running states at the end: unnormalised outputs, maxima (log2), sums
  float acc[kFewWarps][kMaxFewQueries][kHeadDim];
  float m[kFewWarps][kMaxFewQueries], l[kFewWarps][kMaxFewQueries];
};
union FewSmem {
  FewTile tile[kFewWarps];
  FewFold fold;
};

// One lane's share of a page tile: rows lane / 8 + 4 i (i < 8), channels 8 (lane % 8) .. + 7.
struct FewFetched {
  uint32_t kc[8], vc[8], vp[8];
  float norm[8];
  uint4 kp[2][2];  // K parameters of the lane's 8 channels, for the tile's first and second page
  int valid[2];    // valid slots of those pages (0 past the page count)
};

template <int kBits>
__device__ __forceinline__ void FewFetch(FewFetched& f, const PagesView& pv, int head, int heads, int tile, int lane) {
  const int per_tile = kFewKeys / pv.slots, c = (lane % 8) * 8, groups = kHeadDim / pv.v_group;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int wanted = tile * per_tile + h, page = min(wanted, pv.pages - 1);
    const bool real = h < per_tile && wanted < pv.pages;
    f.valid[h] = real ? pv.meta[2 * page] : 0;
    const uint4* kp = reinterpret_cast<const uint4*>(pv.k_params + (static_cast<int64_t>(page) * heads + head) * kHeadDim + c);
    f.kp[h][0] = kp[0];
    f.kp[h][1] = kp[1];
  }
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int r = lane / 8 + 4 * i, h = r / pv.slots, slot = r % pv.slots;
    const int page = min(tile * per_tile + h, pv.pages - 1);
    const int64_t row = (static_cast<int64_t>(page) * heads + head) * pv.slots + slot;
    LoadCodes<kBits>(pv.k_codes, pv.v_codes, row, c, f.kc[i], f.vc[i]);
    f.vp[i] = pv.v_params[row * groups + c / pv.v_group];
    f.norm[i] = pv.norms ? pv.norms[static_cast<int64_t>(page) * pv.slots + slot] : 1.0f;
  }
}

template <int kBits>
__device__ __forceinline__ void FewCommitPages(FewTile& t, const FewFetched& f, int slots, int lane) {
  const int c = (lane % 8) * 8;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int r = lane / 8 + 4 * i, h = r / slots;
    const bool valid = r % slots < (h == 0 ? f.valid[0] : f.valid[1]);
    uint4 kw = make_uint4(0, 0, 0, 0), vw = make_uint4(0, 0, 0, 0);
    // (selected element by element: an array chosen by a runtime index would go to local memory)
    const uint4 kp[2] = {h == 0 ? f.kp[0][0] : f.kp[1][0], h == 0 ? f.kp[0][1] : f.kp[1][1]};
    if (valid) DequantizeEight<kBits>(f.kc[i], kp, f.vc[i], f.vp[i], f.norm[i], kw, vw);
    *reinterpret_cast<uint4*>(&t.k[r * kStride + c]) = kw;
    *reinterpret_cast<uint4*>(&t.v[r * kStride + c]) = vw;
    if (c == 0) t.mask[r] = valid ? 0.0f : -INFINITY;
  }
}

// Rows [row0, row0 + 32) of the current frame (bf16, converted to fp16), loaded as they are stored.
__device__ __forceinline__ void FewCommitRows(FewTile& t, const uint16_t* k, const uint16_t* v, int row0, int limit, int lane) {
  const int c = (lane % 8) * 8;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int r = lane / 8 + 4 * i;
    const bool valid = row0 + r < limit;
    uint4 kw = make_uint4(0, 0, 0, 0), vw = make_uint4(0, 0, 0, 0);
    if (valid) {
      kw = Bf16EightToHalf(*reinterpret_cast<const uint4*>(k + static_cast<int64_t>(row0 + r) * kHeadDim + c));
      vw = Bf16EightToHalf(*reinterpret_cast<const uint4*>(v + static_cast<int64_t>(row0 + r) * kHeadDim + c));
    }
    *reinterpret_cast<uint4*>(&t.k[r * kStride + c]) = kw;
    *reinterpret_cast<uint4*>(&t.v[r * kStride + c]) = vw;
    if (c == 0) t.mask[r] = valid ? 0.0f : -INFINITY;
  }
}

template <int kBits>
__global__ void __launch_bounds__(kFewThreads) FewQueriesKernel(AttentionParams p, int cache_tiles, int total_tiles) {
  __shared__ __align__(16) FewSmem s;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int group = lane / 4, tig = lane % 4;
  const int head = blockIdx.x;
  const int per_split = (total_tiles + p.splits - 1) / p.splits;
  const int tile_begin = blockIdx.y * per_split, tile_end = min(total_tiles, tile_begin + per_split);
  const int m_tiles = p.queries > 16 ? 2 : 1;
  FewTile& t = s.tile[warp];

  // Q fragments (A operand) of rows mt * 16 + group (+ 8), converted from bf16.
  const uint16_t* q = p.q + static_cast<int64_t>(head) * (p.q_head_stride > 0 ? p.q_head_stride : static_cast<int64_t>(p.queries) * kHeadDim);
  uint32_t qa[2][4][4];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = mt * 16 + group + (e % 2) * 8, c = kk * 16 + tig * 2 + (e / 2) * 8;
        qa[mt][kk][e] = r < p.queries ? Bf16PairToHalf(*reinterpret_cast<const uint32_t*>(q + static_cast<int64_t>(r) * kHeadDim + c)) : 0u;
      }
  float acc[2][8][4];
  float row_max[2][2], row_sum[2][2];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {
    row_max[mt][0] = row_max[mt][1] = -INFINITY;
    row_sum[mt][0] = row_sum[mt][1] = 0.0f;
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[mt][j][0] = acc[mt][j][1] = acc[mt][j][2] = acc[mt][j][3] = 0.0f;
  }
  const float scale_log2 = p.scale * 1.4426950408889634f;
  const int64_t cur_off = static_cast<int64_t>(head) * p.cur_tokens * kHeadDim;

  FewFetched next;
  int tile = tile_begin + warp;
  if (tile < tile_end && tile < cache_tiles) FewFetch<kBits>(next, p.pages, head, p.heads, tile, lane);
  for (; tile < tile_end; tile += kFewWarps) {
    __syncwarp();  // (the lanes are done reading the previous tile)
    if (tile < cache_tiles) {
      FewCommitPages<kBits>(t, next, p.pages.slots, lane);
      if (tile + kFewWarps < tile_end && tile + kFewWarps < cache_tiles) FewFetch<kBits>(next, p.pages, head, p.heads, tile + kFewWarps, lane);
    } else {
      FewCommitRows(t, p.k_cur + cur_off, p.v_cur + cur_off, (tile - cache_tiles) * kFewKeys, p.cur_tokens, lane);
    }
    __syncwarp();

    // S = Q K^T over the tile's 32 keys: 4 n-tiles of 8 keys, the K fragments shared by both m-tiles.
    float sc[2][4][4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) sc[mt][j][0] = sc[mt][j][1] = sc[mt][j][2] = sc[mt][j][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < 4; kk += 2) {
        uint32_t b[4];
        LdMatrixX4(b, &t.k[(j * 8 + lane % 8) * kStride + kk * 16 + (lane / 8) * 8]);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          if (mt >= m_tiles) continue;
          Mma16816<true>(sc[mt][j], qa[mt][kk], b[0], b[1]);
          Mma16816<true>(sc[mt][j], qa[mt][kk + 1], b[2], b[3]);
        }
      }
    }
    // Online softmax (base 2) per m-tile on rows group (c0, c1) and group + 8 (c2, c3).
    uint32_t pa[2][2][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
      if (mt >= m_tiles) continue;
      float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float m_a = t.mask[j * 8 + tig * 2], m_b = t.mask[j * 8 + tig * 2 + 1];
        sc[mt][j][0] = sc[mt][j][0] * scale_log2 + m_a;
        sc[mt][j][1] = sc[mt][j][1] * scale_log2 + m_b;
        sc[mt][j][2] = sc[mt][j][2] * scale_log2 + m_a;
        sc[mt][j][3] = sc[mt][j][3] * scale_log2 + m_b;
        tile_max[0] = fmaxf(tile_max[0], fmaxf(sc[mt][j][0], sc[mt][j][1]));
        tile_max[1] = fmaxf(tile_max[1], fmaxf(sc[mt][j][2], sc[mt][j][3]));
      }
      float alpha[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        tile_max[r] = QuadMax(tile_max[r]);
        const float new_max = fmaxf(row_max[mt][r], tile_max[r]);
        alpha[r] = new_max == -INFINITY ? 1.0f : FastExp2(row_max[mt][r] - new_max);
        row_max[mt][r] = new_max;
        row_sum[mt][r] *= alpha[r];
      }
      const float base0 = row_max[mt][0] == -INFINITY ? 0.0f : row_max[mt][0];
      const float base1 = row_max[mt][1] == -INFINITY ? 0.0f : row_max[mt][1];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        sc[mt][j][0] = FastExp2(sc[mt][j][0] - base0);
        sc[mt][j][1] = FastExp2(sc[mt][j][1] - base0);
        sc[mt][j][2] = FastExp2(sc[mt][j][2] - base1);
        sc[mt][j][3] = FastExp2(sc[mt][j][3] - base1);
        row_sum[mt][0] += sc[mt][j][0] + sc[mt][j][1];
        row_sum[mt][1] += sc[mt][j][2] + sc[mt][j][3];
      }
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        acc[mt][j][0] *= alpha[0];
        acc[mt][j][1] *= alpha[0];
        acc[mt][j][2] *= alpha[1];
        acc[mt][j][3] *= alpha[1];
      }
#pragma unroll
      for (int kk = 0; kk < 2; ++kk) {
        pa[mt][kk][0] = PackHalf2(sc[mt][2 * kk][0], sc[mt][2 * kk][1]);
        pa[mt][kk][1] = PackHalf2(sc[mt][2 * kk][2], sc[mt][2 * kk][3]);
        pa[mt][kk][2] = PackHalf2(sc[mt][2 * kk + 1][0], sc[mt][2 * kk + 1][1]);
        pa[mt][kk][3] = PackHalf2(sc[mt][2 * kk + 1][2], sc[mt][2 * kk + 1][3]);
      }
    }
    // O += P V: 2 k-steps of 16 keys, 8 n-tiles of 8 channels, the V fragments shared by both m-tiles.
#pragma unroll
    for (int kk = 0; kk < 2; ++kk) {
#pragma unroll
      for (int j = 0; j < 8; j += 2) {
        uint32_t b[4];
        const int m = lane / 8;
        LdMatrixX4Trans(b, &t.v[(kk * 16 + (m & 1) * 8 + lane % 8) * kStride + (j + (m >> 1)) * 8]);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          if (mt >= m_tiles) continue;
          Mma16816<true>(acc[mt][j], pa[mt][kk], b[0], b[1]);
          Mma16816<true>(acc[mt][j + 1], pa[mt][kk], b[2], b[3]);
        }
      }
    }
  }

  // Fold the warps: each writes its rows' state, then the block's threads combine them per value.
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      row_sum[mt][r] = QuadSum(row_sum[mt][r]);
    }
  __syncthreads();  // (the tiles' memory becomes the fold's)
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {
    const int r0 = mt * 16 + group, r1 = r0 + 8;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int c = j * 8 + tig * 2;
      s.fold.acc[warp][r0][c] = acc[mt][j][0];
      s.fold.acc[warp][r0][c + 1] = acc[mt][j][1];
      s.fold.acc[warp][r1][c] = acc[mt][j][2];
      s.fold.acc[warp][r1][c + 1] = acc[mt][j][3];
    }
    if (tig == 0) {
      s.fold.m[warp][r0] = row_max[mt][0];
      s.fold.l[warp][r0] = row_sum[mt][0];
      s.fold.m[warp][r1] = row_max[mt][1];
      s.fold.l[warp][r1] = row_sum[mt][1];
    }
  }
  __syncthreads();
  const int64_t row_base = static_cast<int64_t>(head) * p.queries;
  for (int i = threadIdx.x; i < p.queries * kHeadDim; i += kFewThreads) {
    const int r = i / kHeadDim, c = i % kHeadDim;
    float best = -INFINITY;
#pragma unroll
    for (int w = 0; w < kFewWarps; ++w) best = fmaxf(best, s.fold.m[w][r]);
    float num = 0.0f, den = 0.0f;
    if (best != -INFINITY) {
#pragma unroll
      for (int w = 0; w < kFewWarps; ++w) {
        const float wt = s.fold.m[w][r] == -INFINITY ? 0.0f : exp2f(s.fold.m[w][r] - best);
        num += wt * s.fold.acc[w][r][c];
        den += wt * s.fold.l[w][r];
      }
    }
    const float o = den > 0.0f ? num / den : 0.0f;
    const float lse2 = den > 0.0f ? best + log2f(den) : -INFINITY;
    if (p.splits == 1) {
      p.out[(row_base + r) * kHeadDim + c] = FloatToBf16Bits(o);
      if (p.out_lse && c == 0) p.out_lse[row_base + r] = lse2 * 0.6931471805599453f;
    } else {
      const int64_t at = static_cast<int64_t>(blockIdx.y) * p.heads * p.queries + row_base + r;
      p.partial_out[at * kHeadDim + c] = o;
      if (c == 0) p.partial_lse[at] = lse2;
    }
  }
}

int FewCacheTiles(const AttentionParams& p) {
  const int pages_per_tile = kFewKeys / p.pages.slots;
  return (p.pages.pages + pages_per_tile - 1) / pages_per_tile;
}

}  // namespace

int FewQueriesKeyTiles(const AttentionParams& p) { return FewCacheTiles(p) + (p.cur_tokens + kFewKeys - 1) / kFewKeys; }

int ChooseFewQueriesSplits(const AttentionParams& p, int multiprocessors) {
  // One wave of 2 blocks per multiprocessor (255 registers a thread at 128 threads), each warp at
  // least 2 tiles.
  const int tiles = FewQueriesKeyTiles(p);
  const int splits = std::min(2 * multiprocessors / p.heads, tiles / (2 * kFewWarps));
  return std::max(1, splits);
}

cudaError_t LaunchFewQueriesAttention(const AttentionParams& p, cudaStream_t stream) {
  if (p.format == KvFormat::kBf16 || p.queries < 1 || p.queries > kMaxFewQueries || (p.pages.slots != 16 && p.pages.slots != 32) ||
      p.pages.v_group < 8 || kHeadDim % p.pages.v_group != 0 || p.pages.pages < 1 || (p.splits > 1 && (!p.partial_out || !p.partial_lse)))
    return cudaErrorInvalidValue;
  const int cache_tiles = FewCacheTiles(p), total = FewQueriesKeyTiles(p);
  const dim3 grid(p.heads, p.splits);
  if (p.format == KvFormat::kPaged4) FewQueriesKernel<4><<<grid, kFewThreads, 0, stream>>>(p, cache_tiles, total);
  else FewQueriesKernel<2><<<grid, kFewThreads, 0, stream>>>(p, cache_tiles, total);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess || p.splits == 1) return err;
  CombineKernel<<<static_cast<unsigned>(p.heads * p.queries), kHeadDim, 0, stream>>>(p);
  return cudaGetLastError();
}

namespace {

// A thread per pair of channels of one query row: out' = o + w (out - o) with w = e^lse / (e^lse +
// e^l) = sigmoid(lse - l), lse' = log(e^lse + e^l); rows of 64 values, the running out in bf16 (the
// first part) or float, the result in float or, for the last part, bf16. With P rows of zero keys
// and values in the running part (p.pad), its sum of weights e^lse holds P e^0 = P too much and
// its out that much too little: with m = max(lse, l), out' = (out e^(lse-m) + o e^(l-m)) /
// (e^(lse-m) + e^(l-m) - P e^-m), lse' = m + log of that denominator. Exact in arithmetic; in fp32
// the subtraction leaves the real keys' share of the denominator about 1e-6 / share relative error
// (cuDNN's sum is rounded to about 5e-7 of itself), so the result is good to about 1e-3 while the
// real keys weigh at least 2^-10 of what cuDNN summed, i.e. unless every real key of the span
// scores below about -7 + log P for that query (a CPU simulation: 6e-3 at -12, 5-9% at -14 for
// P >= 513). Below that share the denominator is held at 2^-10 of the total: the output stays
// bounded (at most 1024 times cuDNN's) instead of growing without bound, but is not exact.
template <typename T>
__global__ void __launch_bounds__(256) MergeByLseKernel(MergeParams p) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * 256 + threadIdx.x;  // pair index
  if (i >= p.rows * 32) return;
  const int64_t row = i / 32;
  // the running part's row: in out, or (r >= tail_from, held apart) in out_tail
  const void* run = p.out;
  const float* run_lse = p.lse;
  int64_t at = row;
  bool final_row = false;  // a tail row attended over all the keys already (tail_final)
  if (p.out_tail) {
    const int64_t h = row / p.queries, r = row % p.queries;
    const bool tail = r >= p.tail_from;
    run = tail ? p.out_tail : p.out;
    run_lse = tail ? p.lse_tail : p.lse;
    at = tail ? h * (p.queries - p.tail_from) + r - p.tail_from : h * p.tail_from + r;
    final_row = tail && p.tail_final;
  }
  const bool part = !final_row && p.o && (!p.part_keys || *p.part_keys > 0);
  const float pad = !final_row && p.pad ? static_cast<float>(*p.pad) : 0.0f;
  const float a = run_lse[at], b = part ? p.l[row] : -INFINITY;
  float x0, x1;
  if constexpr (sizeof(T) == 2) {
    const uint32_t x = static_cast<const uint32_t*>(run)[at * 32 + i % 32];
    x0 = Bf16BitsToFloat(static_cast<uint16_t>(x & 0xffff));
    x1 = Bf16BitsToFloat(static_cast<uint16_t>(x >> 16));
  } else {
    const float2 x = static_cast<const float2*>(run)[at * 32 + i % 32];
    x0 = x.x;
    x1 = x.y;
  }
  float y0 = 0.0f, y1 = 0.0f;
  if (part) {
    const int64_t o_at = (row / p.queries) * p.o_head_stride + (row % p.queries) * p.o_row_stride + 2 * (i % 32);
    const uint32_t y = *reinterpret_cast<const uint32_t*>(p.o + o_at);
    y0 = Bf16BitsToFloat(static_cast<uint16_t>(y & 0xffff));
    y1 = Bf16BitsToFloat(static_cast<uint16_t>(y >> 16));
  }
  float m0, m1, merged_lse;
  if (pad == 0.0f) {
    const float w = 1.0f / (1.0f + expf(b - a));
    m0 = fmaf(w, x0 - y0, y0);
    m1 = fmaf(w, x1 - y1, y1);
    const float m = fmaxf(a, b);
    merged_lse = m == -INFINITY ? m : m + log1pf(expf(-fabsf(a - b)));
  } else {
    const float m = fmaxf(a, b);
    const float ea = expf(a - m), eb = expf(b - m);
    // (the real keys' share held at 2^-10 of the total at least: see above)
    const float den = fmaxf(ea + eb - pad * expf(-m), (ea + eb) * 0x1p-10f);
    m0 = (x0 * ea + y0 * eb) / den;
    m1 = (x1 * ea + y1 * eb) / den;
    merged_lse = m + logf(den);
  }
  if (p.merged_bf16) reinterpret_cast<uint32_t*>(p.merged_bf16)[i] = PackBf16x2(m0, m1);
  else reinterpret_cast<float2*>(p.merged)[i] = make_float2(m0, m1);
  if (p.merged_lse && i % 32 == 0) p.merged_lse[row] = merged_lse;
}

constexpr int kSlotThreads = 256;

template <typename T>
__device__ __forceinline__ float LoadAsFloat(const void* base, int64_t i) {
  if constexpr (sizeof(T) == 2) return Bf16BitsToFloat(static_cast<const uint16_t*>(base)[i]);
  else return static_cast<const float*>(base)[i];
}

// Flash-decoding over the slots: block (head, split) takes slots [split * chunk, (split + 1) *
// chunk) (split 0 also the current token): their scores (a warp per slot, the lanes over the
// channels), the local maximum, the exponentials' sum and the weighted sum of the values (the
// threads over channels x slot groups), written to partial[head][split] = {o[dim], m, l}.
template <typename IO, typename KV>
__global__ void __launch_bounds__(kSlotThreads) SlotPartialKernel(SlotAttendParams p, int chunk) {
  extern __shared__ float shared[];
  float* q = shared;                  // [dim]
  float* w = q + p.dim;               // [chunk + 1]: scores, then weights; the current token last
  float* acc = w + chunk + 1;         // [kSlotThreads]: the slot groups' partial sums
  __shared__ float reduce[kSlotThreads / 32];
  const int h = blockIdx.x, split = blockIdx.y, lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = kSlotThreads / 32;
  const int first = split * chunk, count = max(0, min(chunk, p.slots - first));
  const bool current = split == 0;
  const int64_t row = static_cast<int64_t>(h) * p.dim;
  for (int d = threadIdx.x; d < p.dim; d += kSlotThreads) q[d] = LoadAsFloat<IO>(p.q, row + d);
  __syncthreads();
  for (int j = warp; j < count + (current ? 1 : 0); j += warps) {
    const bool is_current = j == count;
    const int s = first + j;
    if (!is_current && !p.valid[s]) {
      if (lane == 0) w[j] = -INFINITY;
      continue;
    }
    float dot = 0.0f;
    const int64_t base = is_current ? row : (static_cast<int64_t>(h) * p.slots + s) * p.dim;
    for (int d = lane; d < p.dim; d += 32)
      dot = fmaf(q[d], is_current ? LoadAsFloat<IO>(p.k, base + d) : LoadAsFloat<KV>(p.keys, base + d), dot);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
    if (lane == 0) w[j] = dot * p.scale;
  }
  const int n = count + (current ? 1 : 0);
  __syncthreads();
  float m = -INFINITY;
  for (int j = threadIdx.x; j < n; j += kSlotThreads) m = fmaxf(m, w[j]);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  if (lane == 0) reduce[warp] = m;
  __syncthreads();
  m = reduce[0];
  for (int i = 1; i < warps; ++i) m = fmaxf(m, reduce[i]);
  __syncthreads();
  float sum = 0.0f;
  for (int j = threadIdx.x; j < n; j += kSlotThreads) {
    const float e = m == -INFINITY ? 0.0f : expf(w[j] - m);  // (empty slots: 0)
    w[j] = e;
    sum += e;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  __syncthreads();
  if (lane == 0) reduce[warp] = sum;
  // Channel d = t % dim, slot group t / dim of groups = kSlotThreads / dim.
  const int groups = kSlotThreads / p.dim, d = threadIdx.x % p.dim, g = threadIdx.x / p.dim;
  float o = 0.0f;
  if (g < groups) {
    for (int j = g; j < count; j += groups)
      if (w[j] != 0.0f) o = fmaf(w[j], LoadAsFloat<KV>(p.values, (static_cast<int64_t>(h) * p.slots + first + j) * p.dim + d), o);
    if (current && g == 0) o = fmaf(w[count], LoadAsFloat<IO>(p.v, row + d), o);
  }
  acc[threadIdx.x] = o;
  __syncthreads();
  float* out = p.partial + (static_cast<int64_t>(h) * gridDim.y + split) * (p.dim + 2);
  if (threadIdx.x < p.dim) {
    float total = 0.0f;
    for (int i = 0; i < groups; ++i) total += acc[i * p.dim + threadIdx.x];
    out[threadIdx.x] = total;
  }
  if (threadIdx.x == 0) {
    float l = 0.0f;
    for (int i = 0; i < warps; ++i) l += reduce[i];
    out[p.dim] = m;
    out[p.dim + 1] = l;
  }
}

// Folds a head's splits: out = sum_b e^(m_b - M) o_b / sum_b e^(m_b - M) l_b (split 0 holds the
// current token, so M is finite), rounded once to the output's dtype.
template <typename IO>
__global__ void __launch_bounds__(kSlotAttendMaxDim) SlotCombineKernel(SlotAttendParams p, int splits) {
  const int h = blockIdx.x, d = threadIdx.x;
  if (d >= p.dim) return;
  const float* part = p.partial + static_cast<int64_t>(h) * splits * (p.dim + 2);
  float m = -INFINITY;
  for (int b = 0; b < splits; ++b) m = fmaxf(m, part[b * (p.dim + 2) + p.dim]);
  float num = 0.0f, den = 0.0f;
  for (int b = 0; b < splits; ++b) {
    const float* x = part + b * (p.dim + 2);
    const float scale = x[p.dim] == -INFINITY ? 0.0f : expf(x[p.dim] - m);
    num = fmaf(scale, x[d], num);
    den = fmaf(scale, x[p.dim + 1], den);
  }
  const float o = num / den;
  const int64_t i = static_cast<int64_t>(h) * p.dim + d;
  if constexpr (sizeof(IO) == 2) static_cast<uint16_t*>(p.out)[i] = FloatToBf16Bits(o);
  else static_cast<float*>(p.out)[i] = o;
}

}  // namespace

int SlotAttendSplits(int heads, int slots) {
  // About two blocks per multiprocessor's worth of (head, split) pairs, at least 32 slots a split.
  return std::max(1, std::min((slots + 31) / 32, (264 + std::max(heads, 1) - 1) / std::max(heads, 1)));
}

cudaError_t LaunchSlotAttend(const SlotAttendParams& p, cudaStream_t stream) {
  if (p.heads < 0 || p.slots < 0 || p.slots > kSlotAttendMaxSlots || p.dim < 32 || p.dim > kSlotAttendMaxDim || p.dim % 32 != 0 ||
      p.splits != SlotAttendSplits(p.heads, p.slots) || !p.partial)
    return cudaErrorInvalidValue;
  if (p.heads == 0) return cudaSuccess;
  const int chunk = (p.slots + p.splits - 1) / p.splits;
  const size_t smem = sizeof(float) * (p.dim + chunk + 1 + kSlotThreads);  // (under 48 KiB at the limits)
  const dim3 grid(p.heads, p.splits);
  auto launch = [&](auto partial, auto combine) {
    partial<<<grid, kSlotThreads, smem, stream>>>(p, chunk);
    combine<<<p.heads, kSlotAttendMaxDim, 0, stream>>>(p, p.splits);
    return cudaGetLastError();
  };
  if (p.io_bf16)
    return p.kv_bf16 ? launch(SlotPartialKernel<uint16_t, uint16_t>, SlotCombineKernel<uint16_t>)
                     : launch(SlotPartialKernel<uint16_t, float>, SlotCombineKernel<uint16_t>);
  return p.kv_bf16 ? launch(SlotPartialKernel<float, uint16_t>, SlotCombineKernel<float>)
                   : launch(SlotPartialKernel<float, float>, SlotCombineKernel<float>);
}

cudaError_t LaunchMergeByLse(const MergeParams& p, cudaStream_t stream) {
  if (p.rows < 0 || (p.rows > 0 && p.o && (p.queries < 1 || p.o_head_stride < 1 || p.o_row_stride < 1))) return cudaErrorInvalidValue;
  if (p.out_tail && (!p.lse_tail || p.queries < 1 || p.rows % p.queries != 0 || p.tail_from < 0 || p.tail_from >= p.queries))
    return cudaErrorInvalidValue;
  if (p.rows == 0) return cudaSuccess;
  const int64_t pairs = p.rows * 32;
  const unsigned blocks = static_cast<unsigned>((pairs + 255) / 256);
  if (p.out_bf16) MergeByLseKernel<uint16_t><<<blocks, 256, 0, stream>>>(p);
  else MergeByLseKernel<float><<<blocks, 256, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace streamrecon::kernels
