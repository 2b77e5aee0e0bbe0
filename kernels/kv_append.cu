// Fused append: one block per page of G tokens, one warp per head, lane l owning channels 2l and
// 2l+1 of every token of the page in registers (coalesced 128-byte rows). OScaR: Hadamard rotation
// across the warp (shuffles), token norms over all heads (shared memory), division by the norm.
// Then per-channel K scale/zero over the page's real tokens (each lane's own registers), per-token
// V scale/zero per channel group (warp-segment reductions), and LSB-first code packing.
#include <cooperative_groups.h>

#include <algorithm>
#include <atomic>
#include <mutex>

#include "kernels/kv_common.cuh"
#include "kernels/kv_kernels.h"

namespace streamrecon::kernels {
namespace {

// The stored pages' frame number: the device counter's when given (a CUDA graph's replays advance it).
__device__ __forceinline__ int32_t FrameNumber(const AppendParams& p) { return p.frame_counter ? *p.frame_counter : p.frame; }

constexpr int kMaxHeads = 16;  // one warp per head, at most 512 threads (128 registers each)

// The codes of channels (2l, 2l+1) packed LSB-first into the row of `kBits`-bit codes.
template <int kBits>
__device__ __forceinline__ void StoreCodes(uint8_t* row, uint32_t c0, uint32_t c1, int lane) {
  if (kBits == 4) {
    row[lane] = static_cast<uint8_t>(c0 | (c1 << 4));
  } else {
    const uint32_t nibble = c0 | (c1 << 2);
    const uint32_t other = __shfl_down_sync(0xffffffffu, nibble, 1);
    if ((lane & 1) == 0) row[lane / 2] = static_cast<uint8_t>(nibble | (other << 4));
  }
}

// One token's row of values: per-group scale/zero over v_group channels, codes packed LSB-first.
template <int kBits>
__device__ __forceinline__ void StoreTokenRow(const float (&v)[kHeadDim], int v_group, uint8_t* codes_out, uint32_t* params_out) {
  uint32_t words[kHeadDim * kBits / 32];
#pragma unroll
  for (int w = 0; w < kHeadDim * kBits / 32; ++w) words[w] = 0u;
  for (int g0 = 0; g0 < kHeadDim; g0 += v_group) {
    float lo = INFINITY, hi = -INFINITY;
#pragma unroll
    for (int d = 0; d < kHeadDim; ++d)
      if (d >= g0 && d < g0 + v_group) lo = fminf(lo, v[d]), hi = fmaxf(hi, v[d]);
    const uint32_t params = MakeQuantParams(lo, hi, kBits);
    params_out[g0 / v_group] = params;
#pragma unroll
    for (int d = 0; d < kHeadDim; ++d)
      if (d >= g0 && d < g0 + v_group) words[(d * kBits) / 32] |= QuantizeValue(v[d], params, kBits) << ((d * kBits) % 32);
  }
  uint4* dst = reinterpret_cast<uint4*>(codes_out);
#pragma unroll
  for (int q = 0; q < kHeadDim * kBits / 128; ++q) dst[q] = make_uint4(words[4 * q], words[4 * q + 1], words[4 * q + 2], words[4 * q + 3]);
}

template <int kBits, int kSlots>
__global__ void __launch_bounds__(32 * kMaxHeads) AppendPagesKernel(AppendParams p) {
  constexpr int D = kHeadDim;
  constexpr int kRowBytes = D * kBits / 8;
  __shared__ float partial[kMaxHeads][kSlots];
  __shared__ float token_norm[kSlots];
  const int h = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int H = p.heads, N = p.tokens;
  const int page = blockIdx.x, t0 = page * kSlots, tn = min(kSlots, N - t0);
  const int64_t out_page = p.first_page + page;

  // Keys of this head: channels (2 lane, 2 lane + 1) of every token of the page.
  float k0[kSlots], k1[kSlots];
  const uint32_t* kin = reinterpret_cast<const uint32_t*>(p.k + (static_cast<int64_t>(h) * N + t0) * D) + lane;
#pragma unroll
  for (int t = 0; t < kSlots; ++t) {
    const uint32_t w = t < tn ? kin[t * (D / 2)] : 0u;
    k0[t] = Bf16BitsToFloat(static_cast<uint16_t>(w & 0xffff));
    k1[t] = Bf16BitsToFloat(static_cast<uint16_t>(w >> 16));
  }
  if (p.oscar) {
#pragma unroll
    for (int t = 0; t < kSlots; ++t) {
      WarpHadamard64(k0[t], k1[t], lane);
      float s = __fmaf_rn(k0[t], k0[t], __fmul_rn(k1[t], k1[t]));  // pinned: both variants round alike
#pragma unroll
      for (int m = 16; m > 0; m >>= 1) s += __shfl_xor_sync(0xffffffffu, s, m);
      if (lane == 0) partial[h][t] = s;
    }
    __syncthreads();
    if (threadIdx.x < kSlots) {
      float s = 0.0f;
      for (int i = 0; i < H; ++i) s += partial[i][threadIdx.x];
      token_norm[threadIdx.x] = fmaxf(sqrtf(s), 1e-12f);
    }
    __syncthreads();
#pragma unroll
    for (int t = 0; t < kSlots; ++t) {
      k0[t] = __fdiv_rn(k0[t], token_norm[t]);
      k1[t] = __fdiv_rn(k1[t], token_norm[t]);
    }
  }
  // K: per channel over the real tokens (padding never widens the range).
  float lo0 = INFINITY, hi0 = -INFINITY, lo1 = INFINITY, hi1 = -INFINITY;
#pragma unroll
  for (int t = 0; t < kSlots; ++t) {
    if (t < tn) {
      lo0 = fminf(lo0, k0[t]), hi0 = fmaxf(hi0, k0[t]);
      lo1 = fminf(lo1, k1[t]), hi1 = fmaxf(hi1, k1[t]);
    }
  }
  const uint32_t kp0 = MakeQuantParams(lo0, hi0, kBits), kp1 = MakeQuantParams(lo1, hi1, kBits);
  *reinterpret_cast<uint2*>(p.k_params + (out_page * H + h) * D + 2 * lane) = make_uint2(kp0, kp1);
  uint8_t* k_rows = p.k_codes + (out_page * H + h) * kSlots * kRowBytes;
#pragma unroll
  for (int t = 0; t < kSlots; ++t) {
    const bool real = t < tn;
    StoreCodes<kBits>(k_rows + t * kRowBytes, real ? QuantizeValue(k0[t], kp0, kBits) : 0u, real ? QuantizeValue(k1[t], kp1, kBits) : 0u, lane);
  }
  // V: lane t owns token t's row (per-token parameters are computed once, not by every lane).
  if (lane < tn) {
    float v[D];
    const uint4* src = reinterpret_cast<const uint4*>(p.v + (static_cast<int64_t>(h) * N + t0 + lane) * D);
#pragma unroll
    for (int q = 0; q < D / 8; ++q) {
      const uint4 w = src[q];
      const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        v[q * 8 + 2 * j] = Bf16BitsToFloat(static_cast<uint16_t>(words[j] & 0xffff));
        v[q * 8 + 2 * j + 1] = Bf16BitsToFloat(static_cast<uint16_t>(words[j] >> 16));
      }
    }
    if (p.v_hadamard) Hadamard64(v);
    StoreTokenRow<kBits>(v, p.v_group, p.v_codes + ((out_page * H + h) * kSlots + lane) * kRowBytes,
                         p.v_params + ((out_page * H + h) * kSlots + lane) * (D / p.v_group));
  } else if (lane < kSlots) {
    uint32_t* row = reinterpret_cast<uint32_t*>(p.v_codes + ((out_page * H + h) * kSlots + lane) * kRowBytes);
    for (int w = 0; w < kRowBytes / 4; ++w) row[w] = 0u;
    for (int g = 0; g < D / p.v_group; ++g) p.v_params[((out_page * H + h) * kSlots + lane) * (D / p.v_group) + g] = 0u;
  }
  if (h == 0) {
    for (int t = lane; t < kSlots; t += 32) p.norms[out_page * kSlots + t] = (p.oscar && t < tn) ? token_norm[t] : 1.0f;
    if (lane == 0) {
      p.meta[2 * out_page] = tn;
      p.meta[2 * out_page + 1] = FrameNumber(p);
    }
  }
}

template <int kBits>
cudaError_t LaunchForBits(const AppendParams& p, int pages, cudaStream_t stream) {
  const dim3 block(32 * p.heads);
  switch (p.slots) {
    case 16: AppendPagesKernel<kBits, 16><<<pages, block, 0, stream>>>(p); break;
    case 32: AppendPagesKernel<kBits, 32><<<pages, block, 0, stream>>>(p); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}


// ---- variant 2 (STREAMRECON_APPEND=v2): a lane per token, rows staged by cp.async -------------
// Blocks of kHpb heads (64 threads per head: one warp for its keys, one for its values) loop over
// pages (grid-stride, as many blocks as fit on the device). Each warp copies its head's rows of the
// next page into shared memory with cp.async while it quantizes the current page, so loads are
// always in flight. Lane t owns token t's 64-channel row: the Hadamard runs in registers (no
// shuffles), the keys' per-channel ranges are read down the columns of the staged page. OScaR's
// token norms need every head: the blocks of a page's heads form a thread-block cluster and read
// each other's per-head sums of squares from distributed shared memory. The arithmetic, and the
// order of every rounding, is variant 1's: the codes and params are identical (GpuAppendVariants).

__device__ __forceinline__ void UnpackRow(const uint4 (&raw)[8], float (&x)[kHeadDim]) {
#pragma unroll
  for (int q = 0; q < 8; ++q) {
    const uint32_t w[4] = {raw[q].x, raw[q].y, raw[q].z, raw[q].w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      x[8 * q + 2 * j] = Bf16BitsToFloat(static_cast<uint16_t>(w[j] & 0xffff));
      x[8 * q + 2 * j + 1] = Bf16BitsToFloat(static_cast<uint16_t>(w[j] >> 16));
    }
  }
}

// Sum of squares of a rotated 64-row in variant 1's order: channel pairs (2l, 2l+1) as one fma,
// then the warp butterfly of variant 1 (pairs l and l^16 first, then ^8, ^4, ^2, ^1).
__device__ __forceinline__ float RowSquareSum(const float (&x)[kHeadDim]) {
  float s[16];  // the first stage at once (pairs l and l + 16): 16 partial sums live, not 32
#pragma unroll
  for (int l = 0; l < 16; ++l)
    s[l] = __fadd_rn(__fmaf_rn(x[2 * l], x[2 * l], __fmul_rn(x[2 * l + 1], x[2 * l + 1])),
                     __fmaf_rn(x[2 * l + 32], x[2 * l + 32], __fmul_rn(x[2 * l + 33], x[2 * l + 33])));
#pragma unroll
  for (int stage = 1; stage < 5; ++stage) {
    const int m = 16 >> stage;
#pragma unroll
    for (int l = 0; l < 16; ++l)
      if (l < m) s[l] = __fadd_rn(s[l], s[l + m]);
  }
  return s[0];
}

// QuantizeValue's code from the scaled value y = (x - zero) / scale: rintf and the clamp to
// [0, 2^b - 1] as one saturating round-to-nearest-even conversion and an integer min (negative and
// NaN give 0, +inf and large values 2^b - 1, exactly as the float clamp does).
template <int kBits>
__device__ __forceinline__ uint32_t Code(float y) { return min(__float2uint_rn(y), (1u << kBits) - 1u); }

// Codes of a 64-row packed LSB-first, quantized with per-channel zero and reciprocal scale taken
// from shared memory (inv = 0 encodes a zero scale, which QuantizeValue maps to code 0).
template <int kBits>
__device__ __forceinline__ void StoreRowCodes(const float (&x)[kHeadDim], const float* zero, const float* inv, uint8_t* out) {
  constexpr int kWords = kHeadDim * kBits / 32, kPerWord = 32 / kBits;
  uint32_t words[kWords];
#pragma unroll
  for (int w = 0; w < kWords; ++w) words[w] = 0u;
#pragma unroll
  for (int c4 = 0; c4 < kHeadDim; c4 += 4) {
    const float4 z = *reinterpret_cast<const float4*>(zero + c4), r = *reinterpret_cast<const float4*>(inv + c4);
    const float zz[4] = {z.x, z.y, z.z, z.w}, rr[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int d = c4 + j;
      words[d / kPerWord] |= Code<kBits>(__fmul_rn(__fsub_rn(x[d], zz[j]), rr[j])) << ((d % kPerWord) * kBits);
    }
  }
  uint4* dst = reinterpret_cast<uint4*>(out);
#pragma unroll
  for (int q = 0; q < kWords / 4; ++q) dst[q] = make_uint4(words[4 * q], words[4 * q + 1], words[4 * q + 2], words[4 * q + 3]);
}

__device__ __forceinline__ void ZeroAndInverse(uint32_t params, float& zero, float& inv) {
  const float scale = ParamScale(params);
  zero = ParamZero(params);
  inv = scale == 0.0f ? 0.0f : __frcp_rn(scale);
}

// Split cluster barrier (sm_90+): arrive releases this thread's shared-memory writes, wait acquires
// everyone's. Every thread of the cluster takes part in each phase.
__device__ __forceinline__ void ClusterArrive() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive;" ::: "memory");
#endif
}
__device__ __forceinline__ void ClusterWait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.wait;" ::: "memory");
#endif
}

// cp.async (sm_80+): 16 bytes global -> shared, zero-filled when !real; groups committed per page.
__device__ __forceinline__ void CopyAsync16(void* smem, const void* gmem, bool real) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(gmem), "r"(real ? 16 : 0) : "memory");
#else
  *reinterpret_cast<uint4*>(smem) = real ? *reinterpret_cast<const uint4*>(gmem) : make_uint4(0u, 0u, 0u, 0u);
#endif
}
__device__ __forceinline__ void CopyAsyncCommit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
__device__ __forceinline__ void CopyAsyncWaitAllButOne() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group 1;" ::: "memory");
#endif
}

// Shared memory of one head of a block. Staged rows keep 16-byte chunk q of row t at q ^ (t % 8)
// and the float rows chunk q (4 floats) at q ^ (t % 16): lanes reading their own rows, or a
// row's columns, hit distinct banks.
template <int kSlots, bool kOscar>
struct HeadStage {
  uint4 k_raw[2][kSlots][8];
  uint4 v_raw[2][kSlots][8];
  float rows[kOscar ? kSlots : 1][kHeadDim];  // OScaR: keys after rotation, then divided by norms
  float zero[kHeadDim], inv[kHeadDim];
  float square_sum[kSlots], norm[kSlots];
};

__device__ __forceinline__ int RawChunk(int t, int q) { return q ^ (t & 7); }
__device__ __forceinline__ int FloatIndex(int t, int c) { return ((((c >> 2) ^ (t & 15)) << 2) | (c & 3)); }

// The page's rows of one head (kSlots x 128 bytes, contiguous in the input) into a stage buffer:
// each copy instruction of the warp moves four whole rows (coalesced); padding rows are zero-filled.
template <int kSlots>
__device__ __forceinline__ void StagePage(const uint16_t* head_rows, int tokens, int page, uint4 (&buf)[kSlots][8], int lane) {
  const int t0 = page * kSlots, tn = min(kSlots, tokens - t0);
#pragma unroll
  for (int i = 0; i < kSlots / 4; ++i) {
    const int r = i * 4 + lane / 8, q = lane % 8;
    const bool real = r < tn;
    CopyAsync16(&buf[r][RawChunk(r, q)], head_rows + static_cast<int64_t>(t0 + (real ? r : 0)) * kHeadDim + 8 * q, real);
  }
  CopyAsyncCommit();
}

template <int kSlots>
__device__ __forceinline__ void ReadStagedRow(const uint4 (&buf)[kSlots][8], int t, float (&x)[kHeadDim]) {
  uint4 raw[8];
#pragma unroll
  for (int q = 0; q < 8; ++q) raw[q] = buf[t][RawChunk(t, q)];
  UnpackRow(raw, x);
}

// The values' warp on one page: lane t quantizes the row of slot t (per-token groups of v_group).
template <int kBits, int kSlots>
__device__ __forceinline__ void QuantizeValuePage(const AppendParams& p, const uint4 (&buf)[kSlots][8], int tn, int64_t head_rows, int t) {
  constexpr int D = kHeadDim;
  constexpr int kRowBytes = D * kBits / 8;
  if (t >= kSlots) return;
  uint32_t* params = p.v_params + (head_rows + t) * (D / p.v_group);
  uint8_t* row = p.v_codes + (head_rows + t) * kRowBytes;
  if (t >= tn) {  // padding slot: zero codes and params
    for (int g = 0; g < D / p.v_group; ++g) params[g] = 0u;
    uint4* dst = reinterpret_cast<uint4*>(row);
#pragma unroll
    for (int q = 0; q < kRowBytes / 16; ++q) dst[q] = make_uint4(0u, 0u, 0u, 0u);
    return;
  }
  float x[D];
  ReadStagedRow<kSlots>(buf, t, x);
  if (p.v_hadamard) Hadamard64(x);
  // Ranges of the 8 eight-channel groups, merged into groups of v_group channels (exact).
  float lo[8], hi[8];
#pragma unroll
  for (int g = 0; g < 8; ++g) {
    lo[g] = INFINITY, hi[g] = -INFINITY;
#pragma unroll
    for (int d = 8 * g; d < 8 * g + 8; ++d) lo[g] = fminf(lo[g], x[d]), hi[g] = fmaxf(hi[g], x[d]);
  }
  const int span = p.v_group / 8;  // 1, 2, 4 or 8 eight-channel groups per parameter group
#pragma unroll
  for (int bit = 1; bit < 8; bit <<= 1) {  // merge with the neighbour group (all indices static)
    if (span > bit) {
#pragma unroll
      for (int g = 0; g < 8; ++g) lo[g] = fminf(lo[g], lo[g ^ bit]), hi[g] = fmaxf(hi[g], hi[g ^ bit]);
    }
  }
  float zg[8], ig[8];
#pragma unroll
  for (int g = 0; g < 8; ++g) {
    if (g % span == 0) {
      const uint32_t vp = MakeQuantParams(lo[g], hi[g], kBits);
      params[g / span] = vp;
      ZeroAndInverse(vp, zg[g], ig[g]);
    }
  }
#pragma unroll
  for (int bit = 1; bit < 8; bit <<= 1) {  // the group's first entry to the others
    if (span > bit) {
#pragma unroll
      for (int g = 0; g < 8; ++g)
        if (g & bit) zg[g] = zg[g & ~bit], ig[g] = ig[g & ~bit];
    }
  }
  constexpr int kWords = D * kBits / 32, kPerWord = 32 / kBits;
  uint32_t words[kWords];
#pragma unroll
  for (int w = 0; w < kWords; ++w) words[w] = 0u;
#pragma unroll
  for (int d = 0; d < D; ++d) {
    words[d / kPerWord] |= Code<kBits>(__fmul_rn(__fsub_rn(x[d], zg[d / 8]), ig[d / 8])) << ((d % kPerWord) * kBits);
  }
  uint4* dst = reinterpret_cast<uint4*>(row);
#pragma unroll
  for (int q = 0; q < kWords / 4; ++q) dst[q] = make_uint4(words[4 * q], words[4 * q + 1], words[4 * q + 2], words[4 * q + 3]);
}

// The keys' warp on one page. OScaR: lane t rotates its row, writes it and its sum of squares to
// shared memory, and after the cluster barrier sums the heads' sums (its token's norm). Then lane l
// walks channels (2l, 2l+1) down the page (dividing by the norms), the parameters go to shared
// memory, and lane t quantizes and packs its row.
template <int kBits, int kSlots, bool kOscar, int kHpb>
__device__ __forceinline__ void QuantizeKeyPage(const AppendParams& p, HeadStage<kSlots, kOscar>* stages, HeadStage<kSlots, kOscar>& sh,
                                                const uint4 (&buf)[kSlots][8], int h, int tn, int64_t out_page, int t) {
  constexpr int D = kHeadDim;
  constexpr int kRowBytes = D * kBits / 8;
  const int H = p.heads;
  const int64_t head_rows = (out_page * H + h) * kSlots;
  const bool slot = t < kSlots, real = t < tn;
  if constexpr (kOscar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (slot) {
      float x[D];
      ReadStagedRow<kSlots>(buf, t, x);
      Hadamard64(x);
      sh.square_sum[t] = RowSquareSum(x);
#pragma unroll
      for (int c = 0; c < D; c += 4)
        *reinterpret_cast<float4*>(&sh.rows[t][FloatIndex(t, c)]) = make_float4(x[c], x[c + 1], x[c + 2], x[c + 3]);
    }
    ClusterArrive();
    ClusterWait();  // every head's sums are written
    if (real) {
      cooperative_groups::cluster_group cluster = cooperative_groups::this_cluster();
      float s = 0.0f;  // over heads in order, as variant 1 (four remote loads in flight per step)
#pragma unroll 4
      for (int i = 0; i < H; ++i) s += *cluster.map_shared_rank(&stages[i % kHpb].square_sum[t], i / kHpb);
      sh.norm[t] = fmaxf(sqrtf(s), 1e-12f);
    }
    ClusterArrive();  // done reading the other blocks; waited for at the end of the page
#else
    __trap();  // launched only for sm_90 and newer (clusters), see LaunchV2
#endif
  }
  __syncwarp();
  // Lane l: channels (2l, 2l+1) down the page's real tokens (OScaR: divided by the token norms here).
  float lo0 = INFINITY, hi0 = -INFINITY, lo1 = INFINITY, hi1 = -INFINITY;
#pragma unroll 8
  for (int r = 0; r < kSlots; ++r) {
    if (r < tn) {
      float2 kk;
      if constexpr (kOscar) {
        float2* at = reinterpret_cast<float2*>(&sh.rows[r][FloatIndex(r, 2 * t)]);
        kk = *at;
        const float n = sh.norm[r];
        kk.x = __fdiv_rn(kk.x, n);
        kk.y = __fdiv_rn(kk.y, n);
        *at = kk;
      } else {
        const uint32_t w = reinterpret_cast<const uint32_t*>(&buf[r][RawChunk(r, t / 4)])[t % 4];
        kk = make_float2(Bf16BitsToFloat(static_cast<uint16_t>(w & 0xffff)), Bf16BitsToFloat(static_cast<uint16_t>(w >> 16)));
      }
      lo0 = fminf(lo0, kk.x), hi0 = fmaxf(hi0, kk.x);
      lo1 = fminf(lo1, kk.y), hi1 = fmaxf(hi1, kk.y);
    }
  }
  const uint32_t kp0 = MakeQuantParams(lo0, hi0, kBits), kp1 = MakeQuantParams(lo1, hi1, kBits);
  *reinterpret_cast<uint2*>(p.k_params + (out_page * H + h) * D + 2 * t) = make_uint2(kp0, kp1);
  ZeroAndInverse(kp0, sh.zero[2 * t], sh.inv[2 * t]);
  ZeroAndInverse(kp1, sh.zero[2 * t + 1], sh.inv[2 * t + 1]);
  __syncwarp();
  if (slot) {
    uint8_t* row = p.k_codes + (head_rows + t) * kRowBytes;
    if (real) {
      float x[D];
      if constexpr (kOscar) {
#pragma unroll
        for (int c = 0; c < D; c += 4) {
          const float4 f = *reinterpret_cast<const float4*>(&sh.rows[t][FloatIndex(t, c)]);
          x[c] = f.x, x[c + 1] = f.y, x[c + 2] = f.z, x[c + 3] = f.w;
        }
      } else {
        ReadStagedRow<kSlots>(buf, t, x);
      }
      StoreRowCodes<kBits>(x, sh.zero, sh.inv, row);
    } else {
      uint4* dst = reinterpret_cast<uint4*>(row);
#pragma unroll
      for (int q = 0; q < kRowBytes / 16; ++q) dst[q] = make_uint4(0u, 0u, 0u, 0u);
    }
    if (h == 0) {
      p.norms[out_page * kSlots + t] = (kOscar && real) ? sh.norm[t] : 1.0f;
      if (t == 0) {
        p.meta[2 * out_page] = tn;
        p.meta[2 * out_page + 1] = FrameNumber(p);
      }
    }
  }
  if constexpr (kOscar) ClusterWait();  // the other blocks have read this page's sums
}

// kHpb heads per block: warps [0, kHpb) quantize their head's keys, warps [kHpb, 2 kHpb) the values.
template <int kBits, int kSlots, bool kOscar, int kHpb>
__global__ void __launch_bounds__(64 * kHpb, 8 / kHpb) AppendPagesV2Kernel(AppendParams p, int pages) {
  using Stage = HeadStage<kSlots, kOscar>;
  extern __shared__ __align__(16) unsigned char append_smem[];
  Stage* stages = reinterpret_cast<Stage*>(append_smem);
  const int warp = threadIdx.x / 32, t = threadIdx.x % 32;
  const int h = blockIdx.y * kHpb + warp % kHpb;
  const bool keys = warp < kHpb;
  Stage& sh = stages[warp % kHpb];
  const uint16_t* head_rows_in = (keys ? p.k : p.v) + static_cast<int64_t>(h) * p.tokens * kHeadDim;
  uint4(*raw)[kSlots][8] = keys ? sh.k_raw : sh.v_raw;
  int b = 0;
  StagePage<kSlots>(head_rows_in, p.tokens, blockIdx.x, raw[0], t);
  for (int page = blockIdx.x; page < pages; page += gridDim.x, b ^= 1) {
    const int next = page + gridDim.x;
    if (next < pages) StagePage<kSlots>(head_rows_in, p.tokens, next, raw[b ^ 1], t);
    else CopyAsyncCommit();  // an empty group keeps the count
    CopyAsyncWaitAllButOne();
    __syncwarp();
    const int tn = min(kSlots, p.tokens - page * kSlots);
    const int64_t out_page = p.first_page + page;
    if (keys) {
      QuantizeKeyPage<kBits, kSlots, kOscar, kHpb>(p, stages, sh, raw[b], h, tn, out_page, t);
    } else {
      if constexpr (kOscar) ClusterArrive();  // the cluster barriers count every thread
      QuantizeValuePage<kBits, kSlots>(p, raw[b], tn, (out_page * p.heads + h) * kSlots, t);
      if constexpr (kOscar) {
        ClusterWait();
        ClusterArrive();
        ClusterWait();
      }
    }
    __syncwarp();  // the next page's copy reuses this buffer
  }
}

// What a kernel instantiation needs once per device: its attributes set (dynamic shared memory
// over 48 KB; non-portable cluster sizes), whether clusters work (sm_90 code, not PTX of an older
// target compiled by the driver, on a device that launches them), and how many of its blocks are
// resident at once (the persistent KIVI launch).
struct DeviceSetup {
  cudaError_t error = cudaSuccess;
  bool clusters = false;
  int resident_blocks = 0;
};

template <typename Kernel>
DeviceSetup SetUp(Kernel kernel, int threads, size_t smem, bool oscar, int device) {
  DeviceSetup s;
  s.error = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  cudaFuncAttributes attributes;
  int supported = 0, per_sm = 0, sms = 0;
  s.clusters = cudaFuncGetAttributes(&attributes, kernel) == cudaSuccess && attributes.ptxVersion >= 90 &&
               cudaDeviceGetAttribute(&supported, cudaDevAttrClusterLaunch, device) == cudaSuccess && supported;
  // Cluster sizes over 8 (non-portable) are allowed where clusters work at all; failing that, the
  // launch below finds no room for such a cluster and OScaR falls back to variant 1.
  if (s.clusters && oscar) (void)cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem) == cudaSuccess &&
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) == cudaSuccess)
    s.resident_blocks = per_sm * sms;
  (void)cudaGetLastError();  // a failed query must not surface in a later launch check
  return s;
}

template <int kBits, int kSlots, bool kOscar, int kHpb>
cudaError_t LaunchV2(const AppendParams& p, int pages, cudaStream_t stream) {
  auto kernel = AppendPagesV2Kernel<kBits, kSlots, kOscar, kHpb>;
  const size_t smem = kHpb * sizeof(HeadStage<kSlots, kOscar>);
  static DeviceSetup setups[16];  // per device, for this instantiation
  static std::atomic<bool> ready[16];
  static std::mutex mutex;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= 16) return cudaErrorInvalidDevice;
  if (!ready[device].load(std::memory_order_acquire)) {
    std::lock_guard<std::mutex> lock(mutex);
    if (!ready[device].load(std::memory_order_relaxed)) {
      setups[device] = SetUp(kernel, 64 * kHpb, smem, kOscar, device);
      ready[device].store(true, std::memory_order_release);
    }
  }
  const DeviceSetup& setup = setups[device];
  if (kOscar && !setup.clusters) return cudaErrorNotSupported;
  if (setup.error != cudaSuccess) return setup.error;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(1, p.heads / kHpb);
  config.blockDim = dim3(64 * kHpb);
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  if (kOscar) {  // the blocks of a page form one cluster
    attribute[0].id = cudaLaunchAttributeClusterDimension;
    attribute[0].val.clusterDim.x = 1;
    attribute[0].val.clusterDim.y = config.gridDim.y;
    attribute[0].val.clusterDim.z = 1;
    config.attrs = attribute;
    config.numAttrs = 1;
  }
  if (kOscar && config.gridDim.y > 8) {  // a non-portable cluster size: is there room for one?
    int clusters = 0;
    config.gridDim.x = 1;
    if (cudaOccupancyMaxActiveClusters(&clusters, kernel, &config) != cudaSuccess || clusters < 1) return cudaErrorNotSupported;
  }
  // KIVI: persistent blocks (a page staged ahead). OScaR: a block per page, since a cluster's
  // blocks wait for each other twice per page and march in lockstep when they loop (measured slower).
  const int columns = kOscar ? pages : std::max(1, setup.resident_blocks / static_cast<int>(config.gridDim.y));
  config.gridDim.x = static_cast<unsigned>(std::min(columns, pages));
  const cudaError_t launched = cudaLaunchKernelEx(&config, kernel, p, pages);
  // A cluster the device cannot place (a partitioned or shared GPU): variant 1 instead. An error
  // left by earlier work would surface again there.
  return kOscar && launched != cudaSuccess ? cudaErrorNotSupported : launched;
}

// Heads per block: as asked (1, 2 or 4, dividing the heads), else the most of those that divide
// the heads (4 measured fastest at 16 heads, docs/perf.md).
int HeadsPerBlock(const AppendParams& p) {
  if (p.heads_per_block > 0) return p.heads_per_block;
  return p.heads % 4 == 0 ? 4 : p.heads % 2 == 0 ? 2 : 1;
}

template <int kBits, int kSlots>
cudaError_t LaunchV2ForSlots(const AppendParams& p, int pages, cudaStream_t stream) {
  const int hpb = HeadsPerBlock(p);
  if (p.heads % hpb != 0) return cudaErrorInvalidValue;
  switch (hpb * 2 + (p.oscar ? 1 : 0)) {
    case 2: return LaunchV2<kBits, kSlots, false, 1>(p, pages, stream);
    case 3: return LaunchV2<kBits, kSlots, true, 1>(p, pages, stream);
    case 4: return LaunchV2<kBits, kSlots, false, 2>(p, pages, stream);
    case 5: return LaunchV2<kBits, kSlots, true, 2>(p, pages, stream);
    case 8: return LaunchV2<kBits, kSlots, false, 4>(p, pages, stream);
    case 9: return LaunchV2<kBits, kSlots, true, 4>(p, pages, stream);
    default: return cudaErrorInvalidValue;
  }
}

template <int kBits>
cudaError_t LaunchV2ForBits(const AppendParams& p, int pages, cudaStream_t stream) {
  switch (p.slots) {
    case 16: return LaunchV2ForSlots<kBits, 16>(p, pages, stream);
    case 32: return LaunchV2ForSlots<kBits, 32>(p, pages, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace

cudaError_t LaunchAppendPages(const AppendParams& p, cudaStream_t stream) {
  if (p.head_dim != kHeadDim || (p.bits != 4 && p.bits != 2) || p.heads < 1 || p.heads > kMaxHeads ||
      (p.slots != 16 && p.slots != 32) || (p.v_group != 64 && p.v_group != 32 && p.v_group != 16 && p.v_group != 8))
    return cudaErrorInvalidValue;
  const int pages = (p.tokens + p.slots - 1) / p.slots;
  if (pages == 0) return cudaSuccess;
  if (p.variant == 2) {
    const cudaError_t e = p.bits == 4 ? LaunchV2ForBits<4>(p, pages, stream) : LaunchV2ForBits<2>(p, pages, stream);
    if (e != cudaErrorNotSupported) return e;
    (void)cudaGetLastError();  // OScaR without thread-block clusters (see LaunchV2): variant 1 writes the same bytes
  }
  return p.bits == 4 ? LaunchForBits<4>(p, pages, stream) : LaunchForBits<2>(p, pages, stream);
}

namespace {

// A warp per 64-channel row: lane l holds channels (2l, 2l+1), rotated in registers. Rows
// [0, a.rows) are job a's, the next b.rows job b's; each is written in float, in bf16 (rounded to
// nearest even, as a cast of the float rows would), or both.
template <typename T>
__global__ void __launch_bounds__(256) RotateRowsKernel(RotateJob a, RotateJob b) {
  const int lane = threadIdx.x % 32;
  int64_t row = static_cast<int64_t>(blockIdx.x) * 8 + threadIdx.x / 32;
  if (row >= a.rows + b.rows) return;
  // (the fields chosen one by one: a reference to either parameter struct would copy both to
  // local memory, a 64-byte stack frame that made the kernel four times as slow, call 135)
  const bool second = row >= a.rows;
  const void* const x = second ? b.x : a.x;
  float* const out_f32 = second ? b.out_f32 : a.out_f32;
  void* const out_bf16 = second ? b.out_bf16 : a.out_bf16;
  if (second) row -= a.rows;
  float x0, x1;
  if constexpr (sizeof(T) == 2) {
    const uint32_t w = static_cast<const uint32_t*>(x)[row * 32 + lane];
    x0 = Bf16BitsToFloat(static_cast<uint16_t>(w & 0xffff));
    x1 = Bf16BitsToFloat(static_cast<uint16_t>(w >> 16));
  } else {
    const float2 f = static_cast<const float2*>(x)[row * 32 + lane];
    x0 = f.x;
    x1 = f.y;
  }
  WarpHadamard64(x0, x1, lane);
  if (out_f32) reinterpret_cast<float2*>(out_f32)[row * 32 + lane] = make_float2(x0, x1);
  if (out_bf16) reinterpret_cast<__nv_bfloat162*>(out_bf16)[row * 32 + lane] = __floats2bfloat162_rn(x0, x1);
}

}  // namespace

cudaError_t LaunchRotateRows(const RotateJob& a, const RotateJob& b, bool bf16, cudaStream_t stream) {
  for (const RotateJob* j : {&a, &b}) {
    if (j->rows < 0 || (j->rows > 0 && (!j->x || (!j->out_f32 && !j->out_bf16)))) return cudaErrorInvalidValue;
    if (reinterpret_cast<uintptr_t>(j->x) % 8 != 0 || reinterpret_cast<uintptr_t>(j->out_f32) % 8 != 0 ||
        reinterpret_cast<uintptr_t>(j->out_bf16) % 4 != 0)
      return cudaErrorMisalignedAddress;
  }
  const int64_t rows = a.rows + b.rows;
  if (rows == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>((rows + 7) / 8);
  if (bf16) RotateRowsKernel<uint16_t><<<blocks, 256, 0, stream>>>(a, b);
  else RotateRowsKernel<float><<<blocks, 256, 0, stream>>>(a, b);
  return cudaGetLastError();
}

}  // namespace streamrecon::kernels
