// XStreamVGGT scores of cached tokens on the device. The score of a token is the mean over the
// pooled query rows of q_bar[m] . mean_h(k_h), i.e. the dot product of the rows' mean with the
// head-averaged key: each block first averages the rows (a few KB from L2), then
//  - dense bf16: a warp per token streams its 16 head rows with 16-byte loads;
//  - pages: a block per page, the page's per-channel key parameters in shared memory, a thread
//    per (slot, head pair) decoding its code rows.
// One score per slot (padding slots get -inf), so that top-k over tokens or means over pages follow.
#include <cub/block/block_scan.cuh>

#include "kernels/kv_common.cuh"
#include "kernels/kv_kernels.h"

namespace streamrecon::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kTokensPerWarp = 8;  // dense: tokens per warp (the block's 64 tokens)
constexpr int kMaxHeads = 32;

// The mean of the pooled query rows, into shared memory (every thread of the block takes part):
// each quarter of the block sums every fourth row, four loads in flight per thread, so that the
// block does not wait on one load of L2 after another (a block per page waited ~70 in a row).
__device__ __forceinline__ void MeanQuery(const ScoreParams& p, float* q_mean) {
  static_assert(kThreads == 4 * kHeadDim, "a quarter of the block per row group");
  __shared__ float quarter[4][kHeadDim];
  const int c = threadIdx.x % kHeadDim, g = threadIdx.x / kHeadDim;
  float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  int m = g;
  for (; m + 12 < p.rows; m += 16) {
#pragma unroll
    for (int j = 0; j < 4; ++j) s[j] += p.q_bar[static_cast<int64_t>(m + 4 * j) * kHeadDim + c];
  }
  for (; m < p.rows; m += 4) s[0] += p.q_bar[static_cast<int64_t>(m) * kHeadDim + c];
  quarter[g][c] = (s[0] + s[1]) + (s[2] + s[3]);
  __syncthreads();
  if (threadIdx.x < kHeadDim) q_mean[c] = ((quarter[0][c] + quarter[1][c]) + (quarter[2][c] + quarter[3][c])) / p.rows;
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

constexpr int kSelectThreads = 1024;
constexpr int kSelectWarps = kSelectThreads / 32;
constexpr int kSelectStagedUnits = 40960;  // keys staged in shared memory up to this many units (160 KiB)

// Scores as unsigned keys in the same order: a larger score, a larger key. -0 counts as +0 and
// every NaN above +inf (where torch's descending sorts put NaN), so equal scores get equal keys.
__device__ __forceinline__ uint32_t OrderedKey(float s) {
  if (isnan(s)) return 0xffffffffu;
  const uint32_t u = __float_as_uint(s == 0.0f ? 0.0f : s);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// One block: the k-th highest key by a radix select over 8-bit digits (4 passes over the scores,
// a histogram per warp and pass), then, in chunks of consecutive units
// per thread, the units above that key and the latest `remaining` of the units equal to it,
// written ascending. 1 <= k < units.
// kStaged: the keys are computed once into dynamic shared memory (units * 4 bytes), so that the
// passes read shared memory instead of waiting on L2.
template <bool kStaged>
__global__ void __launch_bounds__(kSelectThreads) TopKSelectKernel(const float* __restrict__ scores, int units, int k, int64_t* kept) {
  extern __shared__ uint32_t staged[];
  if constexpr (kStaged) {
    for (int i = threadIdx.x; i < units; i += kSelectThreads) staged[i] = OrderedKey(scores[i]);
    __syncthreads();
  }
  const auto key_of = [&](int i) { return kStaged ? staged[i] : OrderedKey(scores[i]); };
  using Scan = cub::BlockScan<int, kSelectThreads>;
  __shared__ typename Scan::TempStorage scan;
  __shared__ unsigned hist[256];
  __shared__ unsigned warp_hist[kSelectWarps][256];
  __shared__ uint32_t chosen_prefix;
  __shared__ int chosen_remaining;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  uint32_t prefix = 0, mask = 0;
  int remaining = k;  // how many of the keys matching `prefix` are still to be taken, from the top
  for (int shift = 24; shift >= 0; shift -= 8) {
    // Per-warp histograms: lanes of a warp that hit one bin serialise on it, but warps never wait
    // on each other (scores cluster in a few bins of the high digits). The first version
    // aggregated lanes with __match_any_sync into one histogram: 39 us at 17.7k units (call 73).
    for (int j = tid; j < kSelectWarps * 256; j += kSelectThreads) warp_hist[j / 256][j % 256] = 0;
    __syncthreads();
    for (int i = tid; i < units; i += kSelectThreads) {
      const uint32_t key = key_of(i);
      if ((key & mask) == prefix) atomicAdd(&warp_hist[warp][(key >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (tid < 256) {
      unsigned total = 0;
#pragma unroll 8
      for (int w = 0; w < kSelectWarps; ++w) total += warp_hist[w][tid];
      hist[tid] = total;
    }
    __syncthreads();
    if (tid < 32) {
      // Lane l holds bins 255 - 8l down to 248 - 8l; counts summed from the highest bin down.
      unsigned c[8], sum = 0;
#pragma unroll
      for (int j = 0; j < 8; ++j) sum += c[j] = hist[255 - 8 * lane - j];
      unsigned incl = sum;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const unsigned t = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += t;
      }
      const unsigned want = static_cast<unsigned>(remaining);
      unsigned above = incl - sum;
      if (above < want && want <= incl) {
        for (int j = 0; j < 8; ++j) {
          if (above + c[j] >= want) {
            chosen_prefix = prefix | (static_cast<uint32_t>(255 - 8 * lane - j) << shift);
            chosen_remaining = static_cast<int>(want - above);
            break;
          }
          above += c[j];
        }
      }
    }
    __syncthreads();
    prefix = chosen_prefix;
    remaining = chosen_remaining;
    mask |= 255u << shift;
  }
  // `prefix` is the k-th highest key; `remaining` of the units holding it are kept, the latest first.
  const int chunk = (units + kSelectThreads - 1) / kSelectThreads;
  const int begin = min(units, tid * chunk), end = min(units, begin + chunk);
  int ties = 0;
  for (int i = begin; i < end; ++i) ties += key_of(i) == prefix;
  int ties_through, ties_total;
  Scan(scan).InclusiveSum(ties, ties_through, ties_total);
  const int later = ties_total - ties_through;  // ties in the chunks after this one
  int count = 0, seen = 0;
  for (int i = begin; i < end; ++i) {
    const uint32_t key = key_of(i);
    if (key == prefix) ++seen;
    count += key > prefix || (key == prefix && later + ties - seen < remaining);
  }
  __syncthreads();
  int offset;
  Scan(scan).ExclusiveSum(count, offset);
  seen = 0;
  for (int i = begin; i < end; ++i) {
    const uint32_t key = key_of(i);
    if (key == prefix) ++seen;
    if (key > prefix || (key == prefix && later + ties - seen < remaining)) kept[offset++] = i;
  }
}

// A warp per page: the page's score from its slots' scores, the valid slots only (slot < valid):
// their mean (an empty page: 0) or their maximum (an empty page: -inf).
__global__ void __launch_bounds__(kThreads) PageScoresKernel(PageScoreParams p) {
  const int lane = threadIdx.x % 32, page = blockIdx.x * kWarps + threadIdx.x / 32;
  if (page >= p.pages) return;
  const int valid = min(max(p.valid[static_cast<int64_t>(page) * p.valid_stride], 0), p.slots);
  const bool in = lane < valid;
  float s = in ? p.slot_scores[static_cast<int64_t>(page) * p.slots + lane] : (p.mean ? 0.0f : -INFINITY);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float t = __shfl_xor_sync(0xffffffffu, s, o);
    s = p.mean ? s + t : (isnan(t) || t > s ? t : s);  // (a NaN wins, as in amax)
  }
  if (lane == 0) p.out[page] = p.mean ? s / max(valid, 1) : s;
}

// The first of the n ascending values at a that is >= x (n when none is).
__device__ int LowerBound(const int64_t* a, int n, int64_t x) {
  int lo = 0;
  while (n > 0) {
    const int half = n / 2;
    if (a[lo + half] < x) {
      lo += half + 1;
      n -= half + 1;
    } else {
      n = half;
    }
  }
  return lo;
}

// A block per destination page: page j of dst is page j of src for j < first, else page
// first + middle[j - first]; in place, a block per kept middle position i < kept, which moves a
// page only where i was evicted. Each array moved in the widest pieces its page size allows.
__global__ void __launch_bounds__(kThreads) GatherPagesKernel(GatherPagesParams p) {
  int64_t from, j;
  if (p.in_place) {
    // block i: middle page i (< kept); an evicted one takes the kept page past `kept` of its rank
    const int kept = p.count - p.first, i = blockIdx.x;
    const int below = LowerBound(p.middle, kept, i);  // kept pages before i
    if (below < kept && p.middle[below] == i) return;  // kept, and where it stays
    from = p.first + p.middle[LowerBound(p.middle, kept, kept) + (i - below)];
    j = p.first + i;
  } else {
    j = blockIdx.x;
    from = j < p.first ? j : p.first + p.middle[j - p.first];
  }
  for (int a = 0; a < p.arrays; ++a) {
    const int64_t bytes = p.page_bytes[a];
    const uint8_t* src = p.src[a] + from * bytes;
    uint8_t* dst = p.dst[a] + j * bytes;
    if (bytes % 16 == 0) {
      for (int64_t i = threadIdx.x; i < bytes / 16; i += kThreads)
        reinterpret_cast<uint4*>(dst)[i] = reinterpret_cast<const uint4*>(src)[i];
    } else if (bytes % 4 == 0) {
      for (int64_t i = threadIdx.x; i < bytes / 4; i += kThreads)
        reinterpret_cast<uint32_t*>(dst)[i] = reinterpret_cast<const uint32_t*>(src)[i];
    } else {
      for (int64_t i = threadIdx.x; i < bytes; i += kThreads) dst[i] = src[i];
    }
  }
}

__global__ void __launch_bounds__(kSelectThreads) SplitRowsKernel(SplitRowsParams p) {
  extern __shared__ uint8_t is_kept[];  // [middle]
  using Scan = cub::BlockScan<int, kSelectThreads>;
  __shared__ typename Scan::TempStorage scan;
  for (int i = threadIdx.x; i < p.middle; i += kSelectThreads) is_kept[i] = 0;
  __syncthreads();
  for (int j = threadIdx.x; j < p.count; j += kSelectThreads) {
    const int64_t row = p.order ? p.order[p.kept[j]] : p.first + p.kept[j];
    p.kept_rows[j] = row;
    is_kept[row - p.first] = 1;
  }
  __syncthreads();
  // Consecutive rows per thread, so that the freed rows come out ascending.
  const int chunk = (p.middle + kSelectThreads - 1) / kSelectThreads;
  const int begin = min(p.middle, static_cast<int>(threadIdx.x) * chunk), end = min(p.middle, begin + chunk);
  int freed = 0;
  for (int i = begin; i < end; ++i) freed += !is_kept[i];
  int offset;
  Scan(scan).ExclusiveSum(freed, offset);
  for (int i = begin; i < end; ++i)
    if (!is_kept[i]) p.freed[offset++] = p.first + i;
}

// A block per output row: thread t takes channel t % 64 of the heads t / 64, t / 64 + 4, ... (the
// pool's tokens summed four at a time), the head groups folded in shared memory.
constexpr int kPoolThreads = 256, kPoolHeadGroups = kPoolThreads / kHeadDim;

template <typename T>
__global__ void __launch_bounds__(kPoolThreads) PooledQueriesKernel(PooledQueryParams p) {
  __shared__ float part[kPoolThreads];
  const int row = blockIdx.x, c = threadIdx.x % kHeadDim, group = threadIdx.x / kHeadDim;
  const int first = row < p.special ? row : p.special + (row - p.special) * p.pool;
  const int count = row < p.special ? 1 : min(p.pool, p.tokens - first);
  const T* q = static_cast<const T*>(p.q);
  auto load = [&](int64_t i) {
    if constexpr (sizeof(T) == 2) return Bf16BitsToFloat(q[i]);
    else return q[i];
  };
  float heads_sum = 0.0f;
  for (int h = group; h < p.heads; h += kPoolHeadGroups) {
    const int64_t base = (static_cast<int64_t>(h) * p.tokens + first) * kHeadDim + c;
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
    int t = 0;
    for (; t + 4 <= count; t += 4) {
      s0 += load(base + (t + 0) * kHeadDim);
      s1 += load(base + (t + 1) * kHeadDim);
      s2 += load(base + (t + 2) * kHeadDim);
      s3 += load(base + (t + 3) * kHeadDim);
    }
    for (; t < count; ++t) s0 += load(base + t * kHeadDim);
    heads_sum += ((s0 + s1) + (s2 + s3)) * (1.0f / count);  // (a mean as ATen's: the sum times 1/n)
  }
  part[threadIdx.x] = heads_sum;
  __syncthreads();
  if (group == 0) {
    float total = 0.0f;
    for (int g = 0; g < kPoolHeadGroups; ++g) total += part[g * kHeadDim + c];
    p.out[static_cast<int64_t>(row) * kHeadDim + c] = total * (1.0f / p.heads);
  }
}

__global__ void __launch_bounds__(kThreads) MoveRowsKernel(MoveRowsParams p) {
  constexpr int kPieces = kHeadDim * 2 / 16;  // 16-byte pieces of a row
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= 2LL * p.heads * p.count * kPieces) return;
  const int piece = static_cast<int>(i % kPieces);
  const int row = static_cast<int>((i / kPieces) % p.count);
  const int64_t head = (i / kPieces / p.count) % p.heads;
  uint16_t* base = (i / kPieces / p.count / p.heads == 0 ? p.k : p.v) + head * p.capacity * kHeadDim;
  reinterpret_cast<uint4*>(base + p.to[row] * kHeadDim)[piece] = reinterpret_cast<const uint4*>(base + (p.from + row) * kHeadDim)[piece];
}

}  // namespace

cudaError_t LaunchSplitRows(const SplitRowsParams& p, cudaStream_t stream) {
  if (p.middle < 0 || p.middle > kSplitRowsMaxRows || p.count < 0 || p.count > p.middle || p.first < 0) return cudaErrorInvalidValue;
  if (p.middle == 0) return cudaSuccess;
  SplitRowsKernel<<<1, kSelectThreads, p.middle, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t LaunchPooledQueries(const PooledQueryParams& p, cudaStream_t stream) {
  if (p.heads < 1 || p.tokens < 0 || p.special < 0 || p.pool < 1 || p.rows < 0) return cudaErrorInvalidValue;
  const int special = min(p.special, p.tokens), rest = p.tokens - special;
  if (p.rows != special + (rest + p.pool - 1) / p.pool) return cudaErrorInvalidValue;
  if (p.rows == 0) return cudaSuccess;
  if (p.bf16) PooledQueriesKernel<uint16_t><<<p.rows, kPoolThreads, 0, stream>>>(p);
  else PooledQueriesKernel<float><<<p.rows, kPoolThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t LaunchMoveRows(const MoveRowsParams& p, cudaStream_t stream) {
  if (p.heads < 0 || p.count < 0 || p.from < 0 || p.from + p.count > p.capacity) return cudaErrorInvalidValue;
  if (reinterpret_cast<uintptr_t>(p.k) % 16 != 0 || reinterpret_cast<uintptr_t>(p.v) % 16 != 0) return cudaErrorMisalignedAddress;
  const int64_t threads = 2LL * p.heads * p.count * (kHeadDim * 2 / 16);
  if (threads == 0) return cudaSuccess;
  MoveRowsKernel<<<static_cast<unsigned>((threads + kThreads - 1) / kThreads), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t LaunchTopKSelect(const float* scores, int units, int k, int64_t* kept, cudaStream_t stream) {
  if (units < 0 || k < 0 || k > units) return cudaErrorInvalidValue;
  if (k == 0) return cudaSuccess;
  if (k == units) return cudaErrorInvalidValue;  // (every unit: the caller's arange)
  if (units > kSelectStagedUnits) {
    TopKSelectKernel<false><<<1, kSelectThreads, 0, stream>>>(scores, units, k, kept);
    return cudaGetLastError();
  }
  // (per launch: the attribute belongs to the current device's context; the call is cheap)
  const cudaError_t configured =
      cudaFuncSetAttribute(TopKSelectKernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSelectStagedUnits * 4);
  if (configured != cudaSuccess) return configured;
  TopKSelectKernel<true><<<1, kSelectThreads, units * 4, stream>>>(scores, units, k, kept);
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

cudaError_t LaunchPageScores(const PageScoreParams& p, cudaStream_t stream) {
  if (p.pages < 0 || p.slots < 1 || p.slots > 32 || p.valid_stride < 1) return cudaErrorInvalidValue;
  if (p.pages == 0) return cudaSuccess;
  PageScoresKernel<<<(p.pages + kWarps - 1) / kWarps, kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t LaunchGatherPages(const GatherPagesParams& p, cudaStream_t stream) {
  if (p.arrays < 0 || p.arrays > kMaxPageArrays || p.first < 0 || p.count < p.first) return cudaErrorInvalidValue;
  for (int a = 0; a < p.arrays; ++a) {
    // Wide pieces need aligned bases; the page sizes keep every page aligned after that.
    const uintptr_t align = p.page_bytes[a] % 16 == 0 ? 16 : p.page_bytes[a] % 4 == 0 ? 4 : 1;
    if (reinterpret_cast<uintptr_t>(p.src[a]) % align != 0 || reinterpret_cast<uintptr_t>(p.dst[a]) % align != 0) return cudaErrorMisalignedAddress;
  }
  if (p.count == 0) return cudaSuccess;
  const int blocks = p.in_place ? p.count - p.first : p.count;
  if (blocks <= 0) return cudaSuccess;
  GatherPagesKernel<<<blocks, kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace streamrecon::kernels
