// Dequantization of packed pages into contiguous bf16 K/V rows, once per frame and layer, for
// attention by a dense kernel (the "dequantize once" path: each cached token is expanded once and
// then read by every query tile, instead of once per query tile inside the fused kernel).
#include "kernels/kv_common.cuh"
#include "kernels/kv_kernels.h"

namespace streamrecon::kernels {
namespace {

// The valid slots of pages [first, first + count) summed by the whole block (256 threads).
__device__ int BlockValidSum(const PagesView& pv, int first, int count) {
  __shared__ int warp_sums[8];
  int sum = 0;
  for (int j = threadIdx.x; j < count; j += blockDim.x) sum += pv.meta[2 * (first + j)];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = sum;
  __syncthreads();
  int total = 0;
#pragma unroll
  for (int w = 0; w < 8; ++w) total += warp_sums[w];
  return total;
}

// Block (page, head): thread u handles slot u / 8, channels 8 (u % 8) .. + 7 of K and V. Blocks
// past the chunk's pages copy the current frame (bf16) into its rows (cur_row on), and past those
// (zero_to - zero_from rows' worth, 32 rows a block) zero the rows from the count up to zero_to,
// all of them whatever the count (a grid-stride loop when it lies below zero_from).
template <int kBits>
__global__ void __launch_bounds__(256) DequantizePagesKernel(DequantParams p) {
  const PagesView& pv = p.pages;
  const int head = blockIdx.y, c = (threadIdx.x % 8) * 8;
  const int cur_blocks = (p.cur_tokens + 31) / 32;
  if (static_cast<int>(blockIdx.x) >= p.page_count + cur_blocks) {
    // (uniform per launch: every thread of the block reaches BlockValidSum's barrier)
    const int valid_sum = p.valid_prefix ? p.valid_prefix[p.page_count - 1] : BlockValidSum(pv, p.first_page, p.page_count);
    const int count = p.page_row + valid_sum;
    const int zero_rows = (static_cast<int>(gridDim.x) - p.page_count - cur_blocks) * 32;
    for (int r = count + (blockIdx.x - p.page_count - cur_blocks) * 32 + threadIdx.x / 8; r < p.zero_to; r += zero_rows) {
      const int64_t dst = (static_cast<int64_t>(head) * p.head_stride + r) * kHeadDim + c;
      *reinterpret_cast<uint4*>(p.k_out + dst) = make_uint4(0, 0, 0, 0);
      *reinterpret_cast<uint4*>(p.v_out + dst) = make_uint4(0, 0, 0, 0);
    }
    return;
  }
  if (static_cast<int>(blockIdx.x) >= p.page_count) {
    const int t = (blockIdx.x - p.page_count) * 32 + threadIdx.x / 8;
    if (t >= p.cur_tokens) return;
    const int64_t src = (static_cast<int64_t>(head) * p.cur_tokens + t) * kHeadDim + c;
    const int64_t dst = (static_cast<int64_t>(head) * p.head_stride + p.cur_row + t) * kHeadDim + c;
    *reinterpret_cast<uint4*>(p.k_out + dst) = *reinterpret_cast<const uint4*>(p.k_cur + src);
    *reinterpret_cast<uint4*>(p.v_out + dst) = *reinterpret_cast<const uint4*>(p.v_cur + src);
    return;
  }
  const int local = blockIdx.x, page = p.first_page + local;
  const int slot = threadIdx.x / 8;
  const int valid = pv.meta[2 * page];
  // Rows of the chunk's earlier pages: from the prefix sums, or (short chunks, no prefix given)
  // summed here by the block from the page metadata, which saves an upload per call.
  const int before = p.valid_prefix ? p.valid_prefix[local] - valid : BlockValidSum(pv, p.first_page, local);
  if (p.lengths && local == p.page_count - 1 && head == 0 && threadIdx.x == 0) {
    const int count = p.page_row + before + valid;
    p.lengths[0] = 0;
    p.lengths[1] = p.queries;
    p.lengths[2] = 0;
    p.lengths[3] = max(0, count - p.lengths_base);
    p.lengths[4] = max(0, p.lengths_base - count);
  }
  if (slot >= pv.slots || slot >= valid) return;
  uint4 kw, vw;
  DequantizeSlotBf16<kBits>(pv, p.heads, page, head, slot, c, kw, vw);
  const int64_t out = (static_cast<int64_t>(head) * p.head_stride + p.page_row + before + slot) * kHeadDim + c;
  *reinterpret_cast<uint4*>(p.k_out + out) = kw;
  *reinterpret_cast<uint4*>(p.v_out + out) = vw;
}

}  // namespace

cudaError_t LaunchDequantizePages(const DequantParams& p, int bits, cudaStream_t stream) {
  if (p.pages.slots < 1 || p.pages.slots > 32 || p.pages.v_group < 8 || kHeadDim % p.pages.v_group != 0 || p.page_count < 0 ||
      (bits != 2 && bits != 4))
    return cudaErrorInvalidValue;
  if (p.cur_tokens > 0 && (!p.k_cur || !p.v_cur || p.cur_row < 0)) return cudaErrorInvalidValue;
  if (p.page_row < 0 || (p.lengths && p.page_count < 1)) return cudaErrorInvalidValue;
  if (p.zero_to > p.zero_from && (p.zero_from < 0 || p.zero_to > p.head_stride)) return cudaErrorInvalidValue;
  const int zero_blocks = p.zero_to > p.zero_from ? (p.zero_to - p.zero_from + 31) / 32 : 0;
  const int blocks = p.page_count + (p.cur_tokens + 31) / 32 + zero_blocks;
  if (blocks == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(p.heads));
  if (bits == 4) DequantizePagesKernel<4><<<grid, 256, 0, stream>>>(p);
  else DequantizePagesKernel<2><<<grid, 256, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace streamrecon::kernels
