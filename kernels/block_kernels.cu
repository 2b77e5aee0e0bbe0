// The transformer blocks' fused glue (block_kernels.h): LayerNorm with the residual update and the
// cast to bf16 for the next matrix product, and the split of the qkv projection into heads with
// qk-norm and RoPE. In the unfused path each of these is 3-12 ATen kernels and as many round trips
// of the activations through memory (docs/perf.md: about 6 ms of a 1B-model frame).
#include "kernels/block_kernels.h"
#include "kernels/kv_common.cuh"

namespace streamrecon::kernels {
namespace {

constexpr int kNormThreads = 128;
constexpr int kNormPerThread = kLayerNormMaxCols / kNormThreads;

// Sum over the block (kNormThreads threads); every thread gets the total.
__device__ __forceinline__ float BlockSum(float v, float* scratch) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // scratch may still be read from the previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float total = 0.0f;
#pragma unroll
  for (int w = 0; w < kNormThreads / 32; ++w) total += scratch[w];
  return total;
}

__global__ void __launch_bounds__(kNormThreads) LayerNormBf16Kernel(LayerNormParams p) {
  __shared__ float scratch[kNormThreads / 32];
  const int64_t base = static_cast<int64_t>(blockIdx.x) * p.cols;
  float v[kNormPerThread];
  float sum = 0.0f;
#pragma unroll
  for (int j = 0; j < kNormPerThread; ++j) {
    const int c = threadIdx.x + j * kNormThreads;
    v[j] = 0.0f;
    if (c < p.cols) {
      float y = p.x[base + c];
      if (p.branch) {
        y = fmaf(p.gamma[c], Bf16BitsToFloat(p.branch[base + c]), y);
        p.residual_out[base + c] = y;
      }
      v[j] = y;
      sum += y;
    }
  }
  const float mean = BlockSum(sum, scratch) / p.cols;
  float sq = 0.0f;
#pragma unroll
  for (int j = 0; j < kNormPerThread; ++j) {
    const int c = threadIdx.x + j * kNormThreads;
    if (c < p.cols) sq += (v[j] - mean) * (v[j] - mean);
  }
  const float rstd = rsqrtf(BlockSum(sq, scratch) / p.cols + p.eps);
#pragma unroll
  for (int j = 0; j < kNormPerThread; ++j) {
    const int c = threadIdx.x + j * kNormThreads;
    if (c < p.cols) p.out[base + c] = FloatToBf16Bits(fmaf((v[j] - mean) * rstd, p.weight[c], p.bias[c]));
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

__device__ __forceinline__ uint32_t PackBf16(float a, float b) {
  return static_cast<uint32_t>(FloatToBf16Bits(a)) | (static_cast<uint32_t>(FloatToBf16Bits(b)) << 16);
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
  const int64_t out = (((b * p.heads + h) * p.tokens + i) * kHeadDim) / 2 + lane;
  reinterpret_cast<uint32_t*>(p.v)[out] = wv;
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
  reinterpret_cast<uint32_t*>(p.q)[out] = PackBf16(qa, qb);
  reinterpret_cast<uint32_t*>(p.k)[out] = PackBf16(ka, kb);
}

}  // namespace

cudaError_t LaunchLayerNormBf16(const LayerNormParams& p, cudaStream_t stream) {
  if (p.cols < 1 || p.cols > kLayerNormMaxCols || p.rows < 0 || (p.branch && (!p.gamma || !p.residual_out))) return cudaErrorInvalidValue;
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
