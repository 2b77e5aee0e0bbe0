// Fused append: one block per page of G tokens, one warp per head, lane l owning channels 2l and
// 2l+1 of every token of the page in registers (coalesced 128-byte rows). OScaR: Hadamard rotation
// across the warp (shuffles), token norms over all heads (shared memory), division by the norm.
// Then per-channel K scale/zero over the page's real tokens (each lane's own registers), per-token
// V scale/zero per channel group (warp-segment reductions), and LSB-first code packing.
#include "kernels/kv_common.cuh"
#include "kernels/kv_kernels.h"

namespace streamrecon::kernels {
namespace {

constexpr int kMaxHeads = 16;  // one warp per head, at most 512 threads (128 registers each)

// Normalised Hadamard transform of a 64-vector held as (x0, x1) = channels (2l, 2l+1) of lane l.
__device__ __forceinline__ void WarpHadamard64(float& x0, float& x1, int lane) {
  float a = x0 + x1, b = x0 - x1;  // stage len = 1 (within the lane)
  x0 = a;
  x1 = b;
#pragma unroll
  for (int m = 1; m < 32; m <<= 1) {  // stages len = 2m: partner lane l ^ m
    const float p0 = __shfl_xor_sync(0xffffffffu, x0, m), p1 = __shfl_xor_sync(0xffffffffu, x1, m);
    const bool upper = lane & m;
    x0 = upper ? p0 - x0 : x0 + p0;
    x1 = upper ? p1 - x1 : x1 + p1;
  }
  x0 *= 0.125f;
  x1 *= 0.125f;
}

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
      p.meta[2 * out_page + 1] = p.frame;
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


// ---- variant 2 (STREAMRECON_APPEND=v2): a warp per (page, head) for K and one for V ------------
// The same arithmetic as the kernel above (identical codes and params), with few registers per
// thread so that many more warps are resident: keys are read twice (range, then codes) instead of
// being held in registers, values are handled by 8 lanes per token. OScaR's token norms, which
// need every head, come from a first pass that writes per-head partial sums.

// Sum of squares of the rotated key of each token of the page, per head: partials[page, t, h].
template <int kSlots>
__global__ void __launch_bounds__(32) TokenNormPartialsKernel(AppendParams p) {
  const int page = blockIdx.x, h = blockIdx.y, lane = threadIdx.x;
  const int H = p.heads, N = p.tokens, t0 = page * kSlots, tn = min(kSlots, N - t0);
  const uint32_t* kin = reinterpret_cast<const uint32_t*>(p.k + (static_cast<int64_t>(h) * N + t0) * kHeadDim) + lane;
  for (int t = 0; t < tn; ++t) {
    const uint32_t w = kin[t * (kHeadDim / 2)];
    float k0 = Bf16BitsToFloat(static_cast<uint16_t>(w & 0xffff)), k1 = Bf16BitsToFloat(static_cast<uint16_t>(w >> 16));
    WarpHadamard64(k0, k1, lane);
    float s = __fmaf_rn(k0, k0, __fmul_rn(k1, k1));  // as in variant 1
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) s += __shfl_xor_sync(0xffffffffu, s, m);
    if (lane == 0) p.norm_partials[(static_cast<int64_t>(page) * kSlots + t) * H + h] = s;
  }
}

// Block (page, head), 64 threads: warp 0 quantizes the keys, warp 1 the values.
template <int kBits, int kSlots>
__global__ void __launch_bounds__(64) AppendPagesV2Kernel(AppendParams p) {
  constexpr int D = kHeadDim;
  constexpr int kRowBytes = D * kBits / 8;
  const int page = blockIdx.x, h = blockIdx.y, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int H = p.heads, N = p.tokens, t0 = page * kSlots, tn = min(kSlots, N - t0);
  const int64_t out_page = p.first_page + page;
  const int64_t head_rows = (out_page * H + h) * kSlots;  // first (page, head, slot) row
  if (warp == 0) {
    // Lane t < kSlots holds token t's norm (summed over heads in order, as above).
    float my_norm = 1.0f;
    if (p.oscar && lane < tn) {
      float s = 0.0f;
      for (int i = 0; i < H; ++i) s += p.norm_partials[(static_cast<int64_t>(page) * kSlots + lane) * H + i];
      my_norm = fmaxf(sqrtf(s), 1e-12f);
    }
    const uint32_t* kin = reinterpret_cast<const uint32_t*>(p.k + (static_cast<int64_t>(h) * N + t0) * D) + lane;
    auto key = [&](int t, float& k0, float& k1) {  // channels (2 lane, 2 lane + 1) of token t, as stored
      const uint32_t w = kin[t * (D / 2)];
      k0 = Bf16BitsToFloat(static_cast<uint16_t>(w & 0xffff));
      k1 = Bf16BitsToFloat(static_cast<uint16_t>(w >> 16));
      if (p.oscar) {
        WarpHadamard64(k0, k1, lane);
        const float norm = __shfl_sync(0xffffffffu, my_norm, t);
        k0 = __fdiv_rn(k0, norm);
        k1 = __fdiv_rn(k1, norm);
      }
    };
    float lo0 = INFINITY, hi0 = -INFINITY, lo1 = INFINITY, hi1 = -INFINITY;
    for (int t = 0; t < tn; ++t) {
      float k0, k1;
      key(t, k0, k1);
      lo0 = fminf(lo0, k0), hi0 = fmaxf(hi0, k0);
      lo1 = fminf(lo1, k1), hi1 = fmaxf(hi1, k1);
    }
    const uint32_t kp0 = MakeQuantParams(lo0, hi0, kBits), kp1 = MakeQuantParams(lo1, hi1, kBits);
    *reinterpret_cast<uint2*>(p.k_params + (out_page * H + h) * D + 2 * lane) = make_uint2(kp0, kp1);
    uint8_t* k_rows = p.k_codes + head_rows * kRowBytes;
    for (int t = 0; t < kSlots; ++t) {
      uint32_t c0 = 0u, c1 = 0u;
      if (t < tn) {
        float k0, k1;
        key(t, k0, k1);
        c0 = QuantizeValue(k0, kp0, kBits);
        c1 = QuantizeValue(k1, kp1, kBits);
      }
      StoreCodes<kBits>(k_rows + t * kRowBytes, c0, c1, lane);
    }
    if (h == 0 && lane < kSlots) {
      p.norms[out_page * kSlots + lane] = (p.oscar && lane < tn) ? my_norm : 1.0f;
      if (lane == 0) {
        p.meta[2 * out_page] = tn;
        p.meta[2 * out_page + 1] = p.frame;
      }
    }
    return;
  }
  // Values: lane = 8 j + i handles token tb + j, channels 8 i .. 8 i + 7.
  const int j = lane / 8, i = lane % 8;
  const unsigned token_lanes = 0xffu << (8 * j);  // shuffles stay among the 8 lanes of one token
  const int group_lanes = p.v_group / 8, groups = D / p.v_group;
  for (int tb = 0; tb < kSlots; tb += 4) {
    const int t = tb + j;
    uint8_t* row = p.v_codes + (head_rows + t) * kRowBytes;
    uint32_t* params = p.v_params + (head_rows + t) * groups;
    if (t >= tn) {  // padding slot: zero codes and params (tn is warp-uniform per token group)
      if (kBits == 4) reinterpret_cast<uint32_t*>(row)[i] = 0u;
      else reinterpret_cast<uint16_t*>(row)[i] = 0u;
      if (i % group_lanes == 0) params[i / group_lanes] = 0u;
      continue;
    }
    float v[8];
    const uint4 w = *reinterpret_cast<const uint4*>(p.v + (static_cast<int64_t>(h) * N + t0 + t) * D + 8 * i);
    const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      v[2 * q] = Bf16BitsToFloat(static_cast<uint16_t>(words[q] & 0xffff));
      v[2 * q + 1] = Bf16BitsToFloat(static_cast<uint16_t>(words[q] >> 16));
    }
    if (p.v_hadamard) {  // the butterflies of Hadamard64: in-lane (len 1, 2, 4), then across lanes (8, 16, 32)
#pragma unroll
      for (int len = 1; len < 8; len <<= 1)
#pragma unroll
        for (int r = 0; r < 8; ++r)
          if ((r & len) == 0) {
            const float a = v[r], b = v[r + len];
            v[r] = a + b;
            v[r + len] = a - b;
          }
#pragma unroll
      for (int m = 1; m < 8; m <<= 1) {
        const bool upper = i & m;
#pragma unroll
        for (int r = 0; r < 8; ++r) {
          const float other = __shfl_xor_sync(token_lanes, v[r], m);
          v[r] = upper ? other - v[r] : v[r] + other;
        }
      }
#pragma unroll
      for (int r = 0; r < 8; ++r) v[r] *= 0.125f;
    }
    float lo = INFINITY, hi = -INFINITY;  // as variant 1 (also for non-finite input)
#pragma unroll
    for (int r = 0; r < 8; ++r) lo = fminf(lo, v[r]), hi = fmaxf(hi, v[r]);
    for (int m = 1; m < group_lanes; m <<= 1) {
      lo = fminf(lo, __shfl_xor_sync(token_lanes, lo, m));
      hi = fmaxf(hi, __shfl_xor_sync(token_lanes, hi, m));
    }
    const uint32_t vp = MakeQuantParams(lo, hi, kBits);
    if (i % group_lanes == 0) params[i / group_lanes] = vp;
    uint32_t packed = 0u;
#pragma unroll
    for (int r = 0; r < 8; ++r) packed |= QuantizeValue(v[r], vp, kBits) << (r * kBits);
    if (kBits == 4) reinterpret_cast<uint32_t*>(row)[i] = packed;
    else reinterpret_cast<uint16_t*>(row)[i] = static_cast<uint16_t>(packed);
  }
}

template <int kBits>
cudaError_t LaunchV2ForBits(const AppendParams& p, int pages, cudaStream_t stream) {
  const dim3 grid(pages, p.heads);
  switch (p.slots) {
    case 16:
      if (p.oscar) TokenNormPartialsKernel<16><<<grid, 32, 0, stream>>>(p);
      AppendPagesV2Kernel<kBits, 16><<<grid, 64, 0, stream>>>(p);
      break;
    case 32:
      if (p.oscar) TokenNormPartialsKernel<32><<<grid, 32, 0, stream>>>(p);
      AppendPagesV2Kernel<kBits, 32><<<grid, 64, 0, stream>>>(p);
      break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t LaunchAppendPages(const AppendParams& p, cudaStream_t stream) {
  if (p.head_dim != kHeadDim || (p.bits != 4 && p.bits != 2) || p.heads < 1 || p.heads > kMaxHeads ||
      (p.slots != 16 && p.slots != 32) || (p.v_group != 64 && p.v_group != 32 && p.v_group != 16 && p.v_group != 8))
    return cudaErrorInvalidValue;
  const int pages = (p.tokens + p.slots - 1) / p.slots;
  if (pages == 0) return cudaSuccess;
  if (p.variant == 2) {
    if (p.oscar && !p.norm_partials) return cudaErrorInvalidValue;
    return p.bits == 4 ? LaunchV2ForBits<4>(p, pages, stream) : LaunchV2ForBits<2>(p, pages, stream);
  }
  return p.bits == 4 ? LaunchForBits<4>(p, pages, stream) : LaunchForBits<2>(p, pages, stream);
}

}  // namespace streamrecon::kernels
