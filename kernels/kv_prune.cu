// XStreamVGGT scores of cached tokens on the device. The score of a token is the mean over the
// pooled query rows of q_bar[m] . mean_h(k_h), i.e. the dot product of the rows' mean with the
// head-averaged key: each block first averages the rows (a few KB from L2), then
//  - dense bf16: a warp per token streams its 16 head rows with 16-byte loads;
//  - pages: a block per page, the page's per-channel key parameters in shared memory, a thread
//    per (slot, head pair) decoding its code rows.
// One score per slot (padding slots get -inf), so that top-k over tokens or means over pages follow.
#include "kernels/kv_common.cuh"
#include "kernels/kv_kernels.h"

namespace streamrecon::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kTokensPerWarp = 8;  // dense: tokens per warp (the block's 64 tokens)
constexpr int kMaxHeads = 32;

// The mean of the pooled query rows, into shared memory (every thread of the block takes part).
__device__ __forceinline__ void MeanQuery(const ScoreParams& p, float* q_mean) {
  if (threadIdx.x < kHeadDim) {
    float s = 0.0f;
    for (int m = 0; m < p.rows; ++m) s += p.q_bar[static_cast<int64_t>(m) * kHeadDim + threadIdx.x];
    q_mean[threadIdx.x] = s / p.rows;
  }
  __syncthreads();
}

__global__ void __launch_bounds__(kThreads) DenseScoresKernel(ScoreParams p) {
  __shared__ float q_mean[kHeadDim];
  MeanQuery(p, q_mean);
  // Lane: head h0 = lane / 8 (+4, +8, ...), channels 8 * (lane % 8) .. + 7, one 16-byte load each.
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int c0 = 8 * (lane % 8), h0 = lane / 8;
  float q8[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) q8[j] = q_mean[c0 + j];
  const int first = (blockIdx.x * kWarps + warp) * kTokensPerWarp;
#pragma unroll 2
  for (int i = 0; i < kTokensPerWarp; ++i) {
    const int t = first + i;
    if (t >= p.dense_tokens) break;
    float s = 0.0f;
    for (int h = h0; h < p.heads; h += 4) {
      const uint4 w = *reinterpret_cast<const uint4*>(p.k_dense + h * p.dense_head_stride + static_cast<int64_t>(t) * kHeadDim + c0);
      const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        s = fmaf(q8[2 * j], Bf16BitsToFloat(static_cast<uint16_t>(words[j] & 0xffff)), s);
        s = fmaf(q8[2 * j + 1], Bf16BitsToFloat(static_cast<uint16_t>(words[j] >> 16)), s);
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) p.scores[t] = s / p.heads;
  }
}

template <int kBits>
__global__ void __launch_bounds__(kThreads) PagedScoresKernel(ScoreParams p) {
  constexpr int kWords = kHeadDim * kBits / 32;  // 32-bit words of one slot's code row
  constexpr int kPerWord = 32 / kBits;           // channels per word
  constexpr uint32_t kMask = (1u << kBits) - 1;
  __shared__ float q_mean[kHeadDim];
  __shared__ uint32_t params[kMaxHeads][kHeadDim];  // (scale, zero) words of the page's channels
  __shared__ float partial[kWarps][32];
  const PagesView& pv = p.pages;
  const int page = blockIdx.x;
  for (int i = threadIdx.x; i < p.heads * kHeadDim; i += kThreads) {
    params[i / kHeadDim][i % kHeadDim] = pv.k_params[static_cast<int64_t>(page) * p.heads * kHeadDim + i];
  }
  MeanQuery(p, q_mean);  // (synchronises, so the parameters are in place too)
  const int slot = threadIdx.x % 32, warp = threadIdx.x / 32;
  float s = 0.0f;
  if (slot < pv.slots) {
    for (int h = warp; h < p.heads; h += kWarps) {
      const uint32_t* row = reinterpret_cast<const uint32_t*>(pv.k_codes) + ((static_cast<int64_t>(page) * p.heads + h) * pv.slots + slot) * kWords;
      uint32_t words[kWords];
#pragma unroll
      for (int w = 0; w < kWords; ++w) words[w] = row[w];
#pragma unroll
      for (int w = 0; w < kWords; ++w)
#pragma unroll
        for (int j = 0; j < kPerWord; ++j) {
          const int d = w * kPerWord + j;
          s = fmaf(q_mean[d], DequantizeValue((words[w] >> (j * kBits)) & kMask, params[h][d]), s);
        }
    }
  }
  partial[warp][slot] = s;
  __syncthreads();
  if (warp == 0 && slot < pv.slots) {
    float total = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) total += partial[w][slot];
    const int64_t t = static_cast<int64_t>(page) * pv.slots + slot;
    const float norm = pv.norms ? pv.norms[t] : 1.0f;
    p.scores[t] = slot < pv.meta[2 * page] ? total * norm / p.heads : -INFINITY;
  }
}

constexpr int kRankTile = 1024;
constexpr int kRankUnits = 4;  // units per thread: each tile value read from shared memory serves four

// Block (x, y) counts, for its kThreads * kRankUnits units, the units of tiles y, y + gridDim.y,
// ... that rank above them, and adds that to their (zeroed) ranks.
__global__ void __launch_bounds__(kThreads) ScoreRanksKernel(const float* scores, int units, unsigned long long* rank) {
  __shared__ float tile[kRankTile];
  float s[kRankUnits];
  int index[kRankUnits];
  unsigned above[kRankUnits];
#pragma unroll
  for (int u = 0; u < kRankUnits; ++u) {
    index[u] = (blockIdx.x * kRankUnits + u) * kThreads + threadIdx.x;
    s[u] = index[u] < units ? scores[index[u]] : 0.0f;
    above[u] = 0;
  }
  for (int base = blockIdx.y * kRankTile; base < units; base += gridDim.y * kRankTile) {
    const int n = min(kRankTile, units - base);
    __syncthreads();
    for (int j = threadIdx.x; j < kRankTile; j += kThreads) tile[j] = j < n ? scores[base + j] : -INFINITY;
    __syncthreads();
    // Padding (-inf at index >= units) never ranks above a unit: the index test needs j < n.
#pragma unroll 4
    for (int j = 0; j < n; ++j) {
      const float t = tile[j];
      const int jj = base + j;
#pragma unroll
      for (int u = 0; u < kRankUnits; ++u) above[u] += (t > s[u]) | ((t == s[u]) & (jj > index[u]));
    }
  }
#pragma unroll
  for (int u = 0; u < kRankUnits; ++u)
    if (index[u] < units && above[u] > 0) atomicAdd(rank + index[u], static_cast<unsigned long long>(above[u]));
}

}  // namespace

cudaError_t LaunchScoreRanks(const float* scores, int units, int64_t* rank, cudaStream_t stream) {
  if (units < 0) return cudaErrorInvalidValue;
  if (units == 0) return cudaSuccess;
  // Tiles spread over blockIdx.y so that long caches still fill the GPU.
  const int tiles = (units + kRankTile - 1) / kRankTile;
  const int per_block = kThreads * kRankUnits;
  const dim3 grid((units + per_block - 1) / per_block, min(tiles, 16));
  ScoreRanksKernel<<<grid, kThreads, 0, stream>>>(scores, units, reinterpret_cast<unsigned long long*>(rank));
  return cudaGetLastError();
}

cudaError_t LaunchTokenScores(const ScoreParams& p, cudaStream_t stream) {
  if (p.head_dim != kHeadDim || p.rows < 1 || p.heads < 1 || p.heads > kMaxHeads) return cudaErrorInvalidValue;
  if (p.format == KvFormat::kBf16) {
    if (p.dense_tokens == 0) return cudaSuccess;
    // 16-byte loads need 16-byte aligned rows.
    if (reinterpret_cast<uintptr_t>(p.k_dense) % 16 != 0 || p.dense_head_stride % 8 != 0) return cudaErrorMisalignedAddress;
    const int per_block = kWarps * kTokensPerWarp;
    DenseScoresKernel<<<(p.dense_tokens + per_block - 1) / per_block, kThreads, 0, stream>>>(p);
    return cudaGetLastError();
  }
  if (p.pages.pages == 0) return cudaSuccess;
  if (p.pages.slots < 1 || p.pages.slots > 32) return cudaErrorInvalidValue;
  if (p.format == KvFormat::kPaged4) PagedScoresKernel<4><<<p.pages.pages, kThreads, 0, stream>>>(p);
  else PagedScoresKernel<2><<<p.pages.pages, kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace streamrecon::kernels
