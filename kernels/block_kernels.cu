// The transformer blocks' fused glue (block_kernels.h): LayerNorm with the residual update and the
// cast to bf16 for the next matrix product, and the split of the qkv projection into heads with
// qk-norm and RoPE. In the unfused path each of these is 3-12 ATen kernels and as many round trips
// of the activations through memory (docs/perf.md: about 6 ms of a 1B-model frame).
#include <cuda_fp8.h>

#include "kernels/block_kernels.h"
#include "kernels/kv_common.cuh"

namespace streamrecon::kernels {
namespace {

constexpr int kNormThreads = 128;
constexpr int kNormPerThread = kLayerNormMaxCols / kNormThreads;

// A reduction over the block (kNormThreads threads) with `op` (a sum or a maximum); every thread
// gets the result.
template <typename Op>
__device__ __forceinline__ float BlockReduce(float v, float* scratch, Op op) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // scratch may still be read from the previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float total = scratch[0];
#pragma unroll
  for (int w = 1; w < kNormThreads / 32; ++w) total = op(total, scratch[w]);
  return total;
}

__device__ __forceinline__ float BlockSum(float v, float* scratch) {
  return BlockReduce(v, scratch, [](float a, float b) { return a + b; });
}

// Four consecutive channels per step (16-byte loads of x, 8-byte loads of the bf16 branch).
__global__ void __launch_bounds__(kNormThreads) LayerNormBf16Kernel(LayerNormParams p) {
  __shared__ float scratch[kNormThreads / 32];
  const int64_t base = static_cast<int64_t>(blockIdx.x) * p.cols;
  constexpr int kSteps = kNormPerThread / 4;
  float4 v[kSteps];
  float sum = 0.0f;
#pragma unroll
  for (int j = 0; j < kSteps; ++j) {
    const int c = 4 * (threadIdx.x + j * kNormThreads);
    v[j] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (c < p.cols) {
      float4 y = *reinterpret_cast<const float4*>(p.x + base + c);
      if (p.branch) {
        const uint2 b = *reinterpret_cast<const uint2*>(p.branch + base + c);
        const float4 g = *reinterpret_cast<const float4*>(p.gamma + c);
        y.x = fmaf(g.x, Bf16BitsToFloat(b.x & 0xffff), y.x);
        y.y = fmaf(g.y, Bf16BitsToFloat(b.x >> 16), y.y);
        y.z = fmaf(g.z, Bf16BitsToFloat(b.y & 0xffff), y.z);
        y.w = fmaf(g.w, Bf16BitsToFloat(b.y >> 16), y.w);
        *reinterpret_cast<float4*>(p.residual_out + base + c) = y;
      }
      v[j] = y;
      sum += (y.x + y.y) + (y.z + y.w);
    }
  }
  const float mean = BlockSum(sum, scratch) / p.cols;
  float sq = 0.0f;
#pragma unroll
  for (int j = 0; j < kSteps; ++j) {
    const int c = 4 * (threadIdx.x + j * kNormThreads);
    if (c < p.cols) {
      const float a = v[j].x - mean, b = v[j].y - mean, d = v[j].z - mean, e = v[j].w - mean;
      sq += (a * a + b * b) + (d * d + e * e);
    }
  }
  const float rstd = rsqrtf(BlockSum(sq, scratch) / p.cols + p.eps);
#pragma unroll
  for (int j = 0; j < kSteps; ++j) {
    const int c = 4 * (threadIdx.x + j * kNormThreads);
    if (c < p.cols) {
      const float4 w = *reinterpret_cast<const float4*>(p.weight + c), b = *reinterpret_cast<const float4*>(p.bias + c);
      uint2 out;
      out.x = static_cast<uint32_t>(FloatToBf16Bits(fmaf((v[j].x - mean) * rstd, w.x, b.x))) |
              (static_cast<uint32_t>(FloatToBf16Bits(fmaf((v[j].y - mean) * rstd, w.y, b.y))) << 16);
      out.y = static_cast<uint32_t>(FloatToBf16Bits(fmaf((v[j].z - mean) * rstd, w.z, b.z))) |
              (static_cast<uint32_t>(FloatToBf16Bits(fmaf((v[j].w - mean) * rstd, w.w, b.w))) << 16);
      *reinterpret_cast<uint2*>(p.out + base + c) = out;
    }
  }
}

// Per-head LayerNorm of a lane's two channels (c, c + 1) over the warp's 64.
__device__ __forceinline__ void HeadNorm(float& a, float& b, const float* w, const float* bias, int c, float eps) {
  float s = a + b;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  const float mean = s / kHeadDim;
  float sq = (a - mean) * (a - mean) + (b - mean) * (b - mean);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) sq += __shfl_xor_sync(0xffffffffu, sq, o);
  const float rstd = rsqrtf(sq / kHeadDim + eps);
  a = fmaf((a - mean) * rstd, w[c], bias[c]);
  b = fmaf((b - mean) * rstd, w[c + 1], bias[c + 1]);
}

// RoPE of a lane's two channels: the partners (c +- 16) live 8 lanes away.
__device__ __forceinline__ void Rope(float& a, float& b, const float* cos, const float* sin, int c) {
  const float pa = __shfl_xor_sync(0xffffffffu, a, 8), pb = __shfl_xor_sync(0xffffffffu, b, 8);
  a = fmaf(pa, sin[c], a * cos[c]);
  b = fmaf(pb, sin[c + 1], b * cos[c + 1]);
}

__global__ void __launch_bounds__(256) QkvHeadsKernel(QkvHeadsParams p) {
  const int64_t unit = static_cast<int64_t>(blockIdx.x) * 8 + threadIdx.x / 32;  // (token, head)
  const int64_t units = static_cast<int64_t>(p.batch) * p.tokens * p.heads;
  if (unit >= units) return;
  const int lane = threadIdx.x % 32, c = 2 * lane;
  const int h = static_cast<int>(unit % p.heads);
  const int64_t token = unit / p.heads;  // batch * tokens + i
  const int i = static_cast<int>(token % p.tokens);
  const int64_t b = token / p.tokens;
  const uint32_t* in = reinterpret_cast<const uint32_t*>(p.qkv) + (token * 3 * p.heads + h) * (kHeadDim / 2) + lane;
  const int64_t part = static_cast<int64_t>(p.heads) * (kHeadDim / 2);
  const uint32_t wq = in[0], wk = in[part], wv = in[2 * part];
  const int64_t row = p.tokens_major ? (b * p.tokens + i) * p.heads + h : (b * p.heads + h) * p.tokens + i;
  const int64_t out = (row * kHeadDim) / 2 + lane;
  const int64_t kv_row = p.kv_head_rows > 0 ? (b * p.heads + h) * p.kv_head_rows + i : row;
  const int64_t kv_out = (kv_row * kHeadDim) / 2 + lane;
  reinterpret_cast<uint32_t*>(p.v)[kv_out] = wv;
  float qa = Bf16BitsToFloat(wq & 0xffff), qb = Bf16BitsToFloat(wq >> 16);
  float ka = Bf16BitsToFloat(wk & 0xffff), kb = Bf16BitsToFloat(wk >> 16);
  if (p.q_norm_w) {
    HeadNorm(qa, qb, p.q_norm_w, p.q_norm_b, c, p.eps);
    HeadNorm(ka, kb, p.k_norm_w, p.k_norm_b, c, p.eps);
  }
  if (p.cos) {
    const int64_t row = static_cast<int64_t>(i % p.table_rows) * kHeadDim;
    Rope(qa, qb, p.cos + row, p.sin + row, c);
    Rope(ka, kb, p.cos + row, p.sin + row, c);
  }
  reinterpret_cast<uint32_t*>(p.q)[out] = PackBf16x2(qa, qb);
  reinterpret_cast<uint32_t*>(p.k)[kv_out] = PackBf16x2(ka, kb);
}

__global__ void __launch_bounds__(256) BilinearBf16Kernel(BilinearParams p, float scale_h, float scale_w) {
  const int groups = p.c / 8;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * 256 + threadIdx.x;
  if (i >= static_cast<int64_t>(p.n) * p.oh * p.ow * groups) return;
  const int g = static_cast<int>(i % groups);
  const int64_t pixel = i / groups;
  const int ox = static_cast<int>(pixel % p.ow), oy = static_cast<int>((pixel / p.ow) % p.oh);
  const int64_t image = pixel / (static_cast<int64_t>(p.ow) * p.oh);
  // As upsample_bilinear2d with align_corners: source = scale * destination, weights in float.
  const float hr = scale_h * oy, wr = scale_w * ox;
  const int h0 = static_cast<int>(hr), w0 = static_cast<int>(wr);
  const int hp = h0 < p.h - 1 ? 1 : 0, wp = w0 < p.w - 1 ? 1 : 0;
  const float h1l = hr - h0, h0l = 1.0f - h1l, w1l = wr - w0, w0l = 1.0f - w1l;
  auto at = [&](int y, int x) {
    return Unpack8(*reinterpret_cast<const uint4*>(p.in + ((image * p.h + y) * p.w + x) * p.c + g * 8));
  };
  const Bf16x8 a = at(h0, w0), b = at(h0, w0 + wp), c = at(h0 + hp, w0), d = at(h0 + hp, w0 + wp);
  Bf16x8 r;
#pragma unroll
  for (int j = 0; j < 8; ++j) r.v[j] = h0l * (w0l * a.v[j] + w1l * b.v[j]) + h1l * (w0l * c.v[j] + w1l * d.v[j]);
  *reinterpret_cast<uint4*>(p.out + pixel * p.c + g * 8) = Pack8(r);
}

__device__ __forceinline__ float Bf16Round(float x) { return Bf16BitsToFloat(FloatToBf16Bits(x)); }

__global__ void __launch_bounds__(256) BiasActBf16Kernel(BiasActParams p) {
  const int groups = p.c / 8;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * 256 + threadIdx.x;
  if (i >= p.pixels * groups) return;
  uint4* y = reinterpret_cast<uint4*>(p.y) + i;
  const Bf16x8 yv = Unpack8(*y), bv = Unpack8(reinterpret_cast<const uint4*>(p.bias)[i % groups]);
  const Bf16x8 rv = p.residual ? Unpack8(reinterpret_cast<const uint4*>(p.residual)[i]) : Bf16x8{};
  Bf16x8 out;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    float v = Bf16Round(yv.v[j] + bv.v[j]);
    if (p.relu) v = v < 0.0f ? 0.0f : v;  // (a NaN stays, as in at::relu)
    out.v[j] = p.residual ? v + rv.v[j] : v;
  }
  *y = Pack8(out);
}

// Eight channels per step: a row of up to kLayerNormMaxCols in registers, its largest magnitude
// over the block, then the codes (8 bytes per store).
__global__ void __launch_bounds__(kNormThreads) QuantizeFp8RowsKernel(Fp8RowsParams p) {
  __shared__ float scratch[kNormThreads / 32];
  const int64_t base = static_cast<int64_t>(blockIdx.x) * p.cols;
  constexpr int kSteps = kNormPerThread / 8;
  Bf16x8 v[kSteps];
  float amax = 0.0f;
#pragma unroll
  for (int j = 0; j < kSteps; ++j) {
    const int c = 8 * (threadIdx.x + j * kNormThreads);
    if (c >= p.cols) continue;
    v[j] = Unpack8(*reinterpret_cast<const uint4*>(p.x + base + c));
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      if (p.gelu) v[j].v[i] = 0.5f * v[j].v[i] * (1.0f + erff(v[j].v[i] * 0.70710678118654752f));
      amax = fmaxf(amax, fabsf(v[j].v[i]));
    }
  }
  amax = BlockReduce(amax, scratch, [](float a, float b) { return fmaxf(a, b); });
  const float inv = amax > 0.0f ? 448.0f / amax : 0.0f;
  if (threadIdx.x == 0) p.scale[blockIdx.x] = amax > 0.0f ? amax / 448.0f : 1.0f;
#pragma unroll
  for (int j = 0; j < kSteps; ++j) {
    const int c = 8 * (threadIdx.x + j * kNormThreads);
    if (c >= p.cols) continue;
    uint32_t w[2] = {0, 0};
#pragma unroll
    for (int i = 0; i < 8; i += 2) {
      const __nv_fp8x2_storage_t pair =
          __nv_cvt_float2_to_fp8x2(make_float2(v[j].v[i] * inv, v[j].v[i + 1] * inv), __NV_SATFINITE, __NV_E4M3);
      w[i / 4] |= static_cast<uint32_t>(pair) << (16 * ((i / 2) % 2));
    }
    *reinterpret_cast<uint2*>(p.out + base + c) = make_uint2(w[0], w[1]);
  }
}

}  // namespace

cudaError_t LaunchQuantizeFp8Rows(const Fp8RowsParams& p, cudaStream_t stream) {
  if (p.cols < 8 || p.cols > kLayerNormMaxCols || p.cols % 8 != 0 || p.rows < 0 || !p.x || !p.out || !p.scale)
    return cudaErrorInvalidValue;
  if (reinterpret_cast<uintptr_t>(p.x) % 16 != 0 || reinterpret_cast<uintptr_t>(p.out) % 8 != 0) return cudaErrorMisalignedAddress;
  if (p.rows == 0) return cudaSuccess;
  QuantizeFp8RowsKernel<<<p.rows, kNormThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t LaunchBiasActBf16(const BiasActParams& p, cudaStream_t stream) {
  if (p.pixels < 0 || p.c < 8 || p.c % 8 != 0 || !p.y || !p.bias) return cudaErrorInvalidValue;
  if (reinterpret_cast<uintptr_t>(p.y) % 16 != 0 || reinterpret_cast<uintptr_t>(p.bias) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(p.residual) % 16 != 0)
    return cudaErrorMisalignedAddress;
  const int64_t threads = p.pixels * (p.c / 8);
  if (threads == 0) return cudaSuccess;
  BiasActBf16Kernel<<<static_cast<unsigned>((threads + 255) / 256), 256, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t LaunchBilinearBf16(const BilinearParams& p, cudaStream_t stream) {
  if (p.n < 0 || p.h < 1 || p.w < 1 || p.c < 8 || p.c % 8 != 0 || p.oh < 0 || p.ow < 0) return cudaErrorInvalidValue;
  const int64_t threads = static_cast<int64_t>(p.n) * p.oh * p.ow * (p.c / 8);
  if (threads == 0) return cudaSuccess;
  // (upsample_bilinear2d's area_pixel_compute_scale with align_corners, in float)
  const float scale_h = p.oh > 1 ? static_cast<float>(p.h - 1) / static_cast<float>(p.oh - 1) : 0.0f;
  const float scale_w = p.ow > 1 ? static_cast<float>(p.w - 1) / static_cast<float>(p.ow - 1) : 0.0f;
  BilinearBf16Kernel<<<static_cast<unsigned>((threads + 255) / 256), 256, 0, stream>>>(p, scale_h, scale_w);
  return cudaGetLastError();
}

cudaError_t LaunchLayerNormBf16(const LayerNormParams& p, cudaStream_t stream) {
  if (p.cols < 1 || p.cols > kLayerNormMaxCols || p.cols % 4 != 0 || p.rows < 0 || (p.branch && (!p.gamma || !p.residual_out)))
    return cudaErrorInvalidValue;
  if (p.rows == 0) return cudaSuccess;
  LayerNormBf16Kernel<<<p.rows, kNormThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t LaunchQkvHeads(const QkvHeadsParams& p, cudaStream_t stream) {
  if (p.heads < 1 || p.tokens < 0 || p.batch < 0 || (p.cos && p.table_rows < 1)) return cudaErrorInvalidValue;
  const int64_t units = static_cast<int64_t>(p.batch) * p.tokens * p.heads;
  if (units == 0) return cudaSuccess;
  QkvHeadsKernel<<<static_cast<unsigned>((units + 7) / 8), 256, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace streamrecon::kernels
