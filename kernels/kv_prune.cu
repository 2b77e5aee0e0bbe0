// XStreamVGGT scores of cached tokens on the device: each block dequantizes 64 slots of every
// head, averages them over heads and dots them with the pooled queries. One score per slot
// (padding slots get -inf), so that top-k over tokens or means over pages follow directly.
#include "kernels/kv_common.cuh"
#include "kernels/kv_kernels.h"

namespace streamrecon::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kSlotsPerBlock = 64;

template <int kBits>  // 0: dense bf16
__global__ void __launch_bounds__(kThreads) TokenScoresKernel(ScoreParams p) {
  __shared__ float k_bar[kSlotsPerBlock][kHeadDim + 1];
  __shared__ float valid[kSlotsPerBlock];
  const int slot0 = blockIdx.x * kSlotsPerBlock;
  for (int i = threadIdx.x; i < kSlotsPerBlock * kHeadDim; i += kThreads) k_bar[i / kHeadDim][i % kHeadDim] = 0.0f;
  __syncthreads();
  const PagesView& pv = p.pages;
  for (int u = threadIdx.x; u < kSlotsPerBlock * kHeadDim; u += kThreads) {
    const int r = u / kHeadDim, d = u % kHeadDim, t = slot0 + r;
    float sum = 0.0f;
    bool ok;
    if (kBits == 0) {
      ok = t < p.dense_tokens;
      // Unrolled so that the heads' loads are in flight together (the sum keeps its order): one
      // load at a time left this kernel latency-bound (docs/perf.md, call 59).
      if (ok) {
#pragma unroll 16
        for (int h = 0; h < p.heads; ++h) sum += Bf16BitsToFloat(p.k_dense[h * p.dense_head_stride + static_cast<int64_t>(t) * kHeadDim + d]);
      }
    } else {
      const int page = t / pv.slots, slot = t % pv.slots;
      ok = page < pv.pages && slot < pv.meta[2 * page];
      if (ok) {
        constexpr int kRowBytes = kHeadDim * (kBits == 0 ? 4 : kBits) / 8;
        constexpr uint32_t kMask = (1u << (kBits == 0 ? 4 : kBits)) - 1;
        const float norm = pv.norms ? pv.norms[static_cast<int64_t>(page) * pv.slots + slot] : 1.0f;
#pragma unroll 16
        for (int h = 0; h < p.heads; ++h) {
          const int64_t row = (static_cast<int64_t>(page) * p.heads + h) * pv.slots + slot;
          const uint32_t byte = pv.k_codes[row * kRowBytes + d * kBits / 8];
          const uint32_t code = (byte >> ((d * kBits) % 8)) & kMask;
          sum += __fmul_rn(DequantizeValue(code, pv.k_params[(static_cast<int64_t>(page) * p.heads + h) * kHeadDim + d]), norm);
        }
      }
    }
    k_bar[r][d] = sum / p.heads;
    if (d == 0) valid[r] = ok ? 1.0f : 0.0f;
  }
  __syncthreads();
  // 4 threads per slot, each over a quarter of the query rows.
  const int r = threadIdx.x / 4, part = threadIdx.x % 4;
  float s = 0.0f;
  for (int m = part; m < p.rows; m += 4) {
    const float* qrow = p.q_bar + static_cast<int64_t>(m) * kHeadDim;
    float dot = 0.0f;
#pragma unroll 8
    for (int d = 0; d < kHeadDim; ++d) dot += qrow[d] * k_bar[r][d];
    s += dot;
  }
  s += __shfl_xor_sync(0xffffffffu, s, 1);
  s += __shfl_xor_sync(0xffffffffu, s, 2);
  const int t = slot0 + r;
  const int limit = kBits == 0 ? p.dense_tokens : pv.pages * pv.slots;
  if (part == 0 && t < limit) p.scores[t] = valid[r] > 0.0f ? s / p.rows : -INFINITY;
}

}  // namespace

cudaError_t LaunchTokenScores(const ScoreParams& p, cudaStream_t stream) {
  if (p.head_dim != kHeadDim || p.rows < 1) return cudaErrorInvalidValue;
  const int slots = p.format == KvFormat::kBf16 ? p.dense_tokens : p.pages.pages * p.pages.slots;
  if (slots == 0) return cudaSuccess;
  const int blocks = (slots + kSlotsPerBlock - 1) / kSlotsPerBlock;
  switch (p.format) {
    case KvFormat::kBf16: TokenScoresKernel<0><<<blocks, kThreads, 0, stream>>>(p); break;
    case KvFormat::kPaged4: TokenScoresKernel<4><<<blocks, kThreads, 0, stream>>>(p); break;
    case KvFormat::kPaged2: TokenScoresKernel<2><<<blocks, kThreads, 0, stream>>>(p); break;
  }
  return cudaGetLastError();
}

}  // namespace streamrecon::kernels
