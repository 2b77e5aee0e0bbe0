// Fused append: one block per page of G tokens. OScaR: Hadamard-rotate the keys, divide by the
// token norm over all heads and channels; then per-channel K scale/zero over the page's real
// tokens, per-token V scale/zero per channel group, and LSB-first code packing.
#include "kernels/kv_common.cuh"
#include "kernels/kv_kernels.h"

namespace streamrecon::kernels {
namespace {

constexpr int kThreads = 256;

template <int kBits, int kGroups>
__global__ void __launch_bounds__(kThreads) AppendPagesKernel(AppendParams p) {
  constexpr int D = kHeadDim;
  constexpr int kGroupSize = D / kGroups;
  constexpr int kRowBytes = D * kBits / 8;
  constexpr int kWords = kRowBytes / 4;
  extern __shared__ float smem[];
  const int H = p.heads, G = p.slots, N = p.tokens;
  float* keys = smem;                          // [H, G, D]
  float* k_scale = keys + H * G * D;           // [H, D]
  float* k_zero = k_scale + H * D;             // [H, D]
  float* token_norm = k_zero + H * D;          // [G]
  const int page = blockIdx.x;
  const int t0 = page * G, tn = min(G, N - t0);
  const int out_page = p.first_page + page;

  for (int i = threadIdx.x; i < H * tn * D; i += blockDim.x) {
    const int h = i / (tn * D), r = i % (tn * D), t = r / D, d = r % D;
    keys[(h * G + t) * D + d] = Bf16BitsToFloat(p.k[(static_cast<int64_t>(h) * N + t0 + t) * D + d]);
  }
  __syncthreads();
  if (p.oscar) {
    for (int row = threadIdx.x; row < H * tn; row += blockDim.x) {
      float* x = keys + ((row / tn) * G + row % tn) * D;
      float v[D];
#pragma unroll
      for (int d = 0; d < D; ++d) v[d] = x[d];
      Hadamard64(v);
#pragma unroll
      for (int d = 0; d < D; ++d) x[d] = v[d];
    }
    __syncthreads();
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    for (int t = warp; t < tn; t += blockDim.x / 32) {
      float s = 0.0f;
      for (int i = lane; i < H * D; i += 32) {
        const float x = keys[((i / D) * G + t) * D + i % D];
        s += x * x;
      }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
      if (lane == 0) token_norm[t] = fmaxf(sqrtf(s), 1e-12f);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < H * tn * D; i += blockDim.x) {
      const int h = i / (tn * D), r = i % (tn * D), t = r / D, d = r % D;
      keys[(h * G + t) * D + d] = __fdiv_rn(keys[(h * G + t) * D + d], token_norm[t]);
    }
    __syncthreads();
  }
  // K: per channel over the page's real tokens.
  for (int c = threadIdx.x; c < H * D; c += blockDim.x) {
    const int h = c / D, d = c % D;
    float lo = INFINITY, hi = -INFINITY;
    for (int t = 0; t < tn; ++t) {
      const float x = keys[(h * G + t) * D + d];
      lo = fminf(lo, x);
      hi = fmaxf(hi, x);
    }
    const uint32_t params = MakeQuantParams(lo, hi, kBits);
    p.k_params[(static_cast<int64_t>(out_page) * H + h) * D + d] = params;
    k_scale[c] = __uint_as_float(params);  // keep the packed params bits
  }
  __syncthreads();
  for (int row = threadIdx.x; row < H * G; row += blockDim.x) {
    const int h = row / G, t = row % G;
    uint32_t words[kWords];
#pragma unroll
    for (int w = 0; w < kWords; ++w) words[w] = 0;
    if (t < tn) {
#pragma unroll
      for (int d = 0; d < D; ++d) {
        const uint32_t code = QuantizeValue(keys[(h * G + t) * D + d], __float_as_uint(k_scale[h * D + d]), kBits);
        words[(d * kBits) / 32] |= code << ((d * kBits) % 32);
      }
    }
    uint32_t* dst = reinterpret_cast<uint32_t*>(p.k_codes + ((static_cast<int64_t>(out_page) * H + h) * G + t) * kRowBytes);
#pragma unroll
    for (int w = 0; w < kWords; ++w) dst[w] = words[w];
  }
  // V: per token, groups of Gv channels (optionally Hadamard-rotated first).
  for (int row = threadIdx.x; row < H * G; row += blockDim.x) {
    const int h = row / G, t = row % G;
    uint32_t words[kWords];
#pragma unroll
    for (int w = 0; w < kWords; ++w) words[w] = 0;
    uint32_t* params_out = p.v_params + ((static_cast<int64_t>(out_page) * H + h) * G + t) * kGroups;
    if (t < tn) {
      float v[D];
      const uint16_t* src = p.v + (static_cast<int64_t>(h) * N + t0 + t) * D;
#pragma unroll
      for (int d = 0; d < D; ++d) v[d] = Bf16BitsToFloat(src[d]);
      if (p.v_hadamard) Hadamard64(v);
      uint32_t params[kGroups];
#pragma unroll
      for (int g = 0; g < kGroups; ++g) {
        float lo = INFINITY, hi = -INFINITY;
#pragma unroll
        for (int d = g * kGroupSize; d < (g + 1) * kGroupSize; ++d) {
          lo = fminf(lo, v[d]);
          hi = fmaxf(hi, v[d]);
        }
        params[g] = MakeQuantParams(lo, hi, kBits);
        params_out[g] = params[g];
      }
#pragma unroll
      for (int d = 0; d < D; ++d) {
        const uint32_t code = QuantizeValue(v[d], params[d / kGroupSize], kBits);
        words[(d * kBits) / 32] |= code << ((d * kBits) % 32);
      }
    } else {
#pragma unroll
      for (int g = 0; g < kGroups; ++g) params_out[g] = 0;
    }
    uint32_t* dst = reinterpret_cast<uint32_t*>(p.v_codes + ((static_cast<int64_t>(out_page) * H + h) * G + t) * kRowBytes);
#pragma unroll
    for (int w = 0; w < kWords; ++w) dst[w] = words[w];
  }
  for (int t = threadIdx.x; t < G; t += blockDim.x)
    p.norms[static_cast<int64_t>(out_page) * G + t] = (p.oscar && t < tn) ? token_norm[t] : 1.0f;
  if (threadIdx.x == 0) {
    p.meta[2 * out_page] = tn;
    p.meta[2 * out_page + 1] = p.frame;
  }
}

}  // namespace

cudaError_t LaunchAppendPages(const AppendParams& p, cudaStream_t stream) {
  if (p.head_dim != kHeadDim || (p.bits != 4 && p.bits != 2) || p.slots < 1 ||
      (p.v_group != 64 && p.v_group != 32 && p.v_group != 16))
    return cudaErrorInvalidValue;
  const int pages = (p.tokens + p.slots - 1) / p.slots;
  if (pages == 0) return cudaSuccess;
  const size_t smem = sizeof(float) * (static_cast<size_t>(p.heads) * p.slots * kHeadDim + 2 * p.heads * kHeadDim + p.slots);
  // Dispatch over bit width and V groups per row (V group 64, 32 or 16 channels).
  void (*kernel)(AppendParams) = nullptr;
  const int groups = kHeadDim / p.v_group;
  if (p.bits == 4) kernel = groups == 1 ? AppendPagesKernel<4, 1> : groups == 2 ? AppendPagesKernel<4, 2> : AppendPagesKernel<4, 4>;
  else kernel = groups == 1 ? AppendPagesKernel<2, 1> : groups == 2 ? AppendPagesKernel<2, 2> : AppendPagesKernel<2, 4>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  if (err != cudaSuccess) return err;
  kernel<<<pages, kThreads, smem, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace streamrecon::kernels
