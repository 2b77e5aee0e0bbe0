// Launch interface of the transformer blocks' fused glue kernels (bf16 mode on CUDA): plain
// pointers, sizes and a stream (no LibTorch); block_ops.h is the LibTorch-facing side. Each one
// replaces a chain of ATen kernels with the same arithmetic in fp32, rounded once to bf16 on the
// store (reductions may be ordered differently: about one fp32 ulp before that rounding).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace streamrecon::kernels {

struct LayerNormParams {
  // Input rows: x (float [rows, cols]); with `branch` the row is first x + gamma * branch (the
  // residual update with LayerScale, as addcmul computes it), written to `residual_out`.
  const float* x = nullptr;
  const uint16_t* branch = nullptr;  // bf16 [rows, cols] or nullptr
  const float* gamma = nullptr;      // [cols], with branch
  float* residual_out = nullptr;     // float [rows, cols], with branch (may equal x)
  const float* weight = nullptr;     // [cols]
  const float* bias = nullptr;       // [cols]
  uint16_t* out = nullptr;           // bf16 [rows, cols]: LayerNorm of the row
  int rows = 0, cols = 0;
  float eps = 1e-5f;
};

// One block per row; cols a multiple of 4 up to kLayerNormMaxCols; 16-byte aligned rows.
inline constexpr int kLayerNormMaxCols = 4096;
cudaError_t LaunchLayerNormBf16(const LayerNormParams& p, cudaStream_t stream);

struct QkvHeadsParams {
  const uint16_t* qkv = nullptr;  // bf16 [batch, tokens, 3, heads, 64]: the qkv projection's output
  int batch = 0, tokens = 0, heads = 0;
  // Per-head LayerNorm of q and k over the 64 channels (all four or none).
  const float* q_norm_w = nullptr;
  const float* q_norm_b = nullptr;
  const float* k_norm_w = nullptr;
  const float* k_norm_b = nullptr;
  float eps = 1e-5f;
  // RoPE tables float [table_rows, 64] (RopeTables in models/layers.h: token i uses row
  // i % table_rows; sin carries the rotate-half signs): q' = q * cos + partner(q) * sin, with the
  // partner of channel j being j +- 16 within its half. nullptr: no RoPE.
  const float* cos = nullptr;
  const float* sin = nullptr;
  int table_rows = 0;
  // Outputs bf16 [batch, heads, tokens, 64], or laid out as [batch, tokens, heads, 64] with
  // tokens_major (the layout in which SDPA returns its output as well, so that merging the heads
  // after attention is a view, not a copy).
  bool tokens_major = false;
  // Rows between two heads of k and v (not tokens_major; 0: tokens): k and v may be row ranges of
  // larger [heads, rows, 64] buffers, e.g. a KV cache's rows for the current frame.
  int64_t kv_head_rows = 0;
  uint16_t* q = nullptr;
  uint16_t* k = nullptr;
  uint16_t* v = nullptr;
};

// A warp per (token, head), two channels per lane.
cudaError_t LaunchQkvHeads(const QkvHeadsParams& p, cudaStream_t stream);

struct BilinearParams {
  // Channels-last bf16 images in [n, h, w, c] resampled to out [n, oh, ow, c] with align_corners
  // (upsample_bilinear2d's rule and float arithmetic); c a multiple of 8, 16-byte aligned rows.
  const uint16_t* in = nullptr;
  uint16_t* out = nullptr;
  int n = 0, h = 0, w = 0, c = 0, oh = 0, ow = 0;
};

// A thread per output pixel and 8 channels (16-byte loads).
cudaError_t LaunchBilinearBf16(const BilinearParams& p, cudaStream_t stream);

struct BiasActParams {
  // In place on a channels-last bf16 map y [pixels, c] (a convolution's output): y + bias (bias
  // bf16 [c]), rounded to bf16; then ReLU when `relu`; then + residual [pixels, c] (bf16) when
  // given, rounded again: the roundings of ATen's bias add, relu and residual add, in one pass.
  uint16_t* y = nullptr;
  const uint16_t* bias = nullptr;
  const uint16_t* residual = nullptr;
  bool relu = false;
  int64_t pixels = 0;
  int c = 0;  // a multiple of 8
};

cudaError_t LaunchBiasActBf16(const BiasActParams& p, cudaStream_t stream);

struct Fp8RowsParams {
  // bf16 rows x [rows, cols] as FP8 e4m3 codes with one float scale per row, x ~ code * scale
  // (scale: the row's largest magnitude / 448, e4m3's largest finite value; 1 for a row of zeros).
  // With `gelu` the rows are GELU(x) first (the erf form in float, as ATen's exact GELU): the MLP's
  // hidden activation, quantized in the same pass.
  const uint16_t* x = nullptr;
  uint8_t* out = nullptr;  // e4m3 [rows, cols]
  float* scale = nullptr;  // [rows]
  int rows = 0, cols = 0;
  bool gelu = false;
};

// A block of 128 threads per row, 8 channels per load; cols a multiple of 8 up to
// kLayerNormMaxCols, 16-byte aligned rows.
cudaError_t LaunchQuantizeFp8Rows(const Fp8RowsParams& p, cudaStream_t stream);

}  // namespace streamrecon::kernels
