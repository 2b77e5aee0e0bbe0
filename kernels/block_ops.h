// LibTorch-facing entries of the blocks' fused glue kernels (block_kernels.h): check shapes,
// dtypes and devices with messages, launch on the current stream. Inference only (no autograd).
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>
#include <utility>

namespace streamrecon::kernels {

// LayerNorm over the last dimension of float x [..., C], rounded to bf16 (the next matrix
// product's input) in one kernel.
at::Tensor LayerNormBf16Cuda(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double eps);

// The residual update y = x + gamma * branch (x float [..., C], branch bf16 of the same shape,
// gamma [C]) and LayerNorm(y) in bf16, in one kernel: {y, LayerNorm(y)}.
std::pair<at::Tensor, at::Tensor> ResidualLayerNormBf16Cuda(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& branch,
                                                            const at::Tensor& weight, const at::Tensor& bias, double eps);

// q, k, v bf16 [..., H, N, 64] from the qkv projection bf16 [..., N, 3 * H * 64] in one kernel:
// per-head LayerNorm of q and k when q_norm_w is defined, RoPE when cos is defined (float
// [P, 64] tables, token i using row i % P; RopeTables in models/layers.h). tokens_major: laid out
// as [..., N, H, 64] in memory (transposed views), where attention's output comes back the same
// way and the heads merge without a copy. k_out, v_out (defined: qkv [N, 3C], not tokens_major):
// where k and v go, bf16 CUDA [H, N, 64] with rows of 64 contiguous channels and any head stride
// (a KV cache's rows for the frame); they are returned as k and v.
std::tuple<at::Tensor, at::Tensor, at::Tensor> QkvHeadsCuda(const at::Tensor& qkv, int heads, const at::Tensor& q_norm_w,
                                                            const at::Tensor& q_norm_b, const at::Tensor& k_norm_w,
                                                            const at::Tensor& k_norm_b, double eps, const at::Tensor& cos,
                                                            const at::Tensor& sin, bool tokens_major = false,
                                                            const at::Tensor& k_out = {}, const at::Tensor& v_out = {});

// upsample_bilinear2d(x, {oh, ow}, align_corners = true) of a channels-last bf16 CUDA image
// [N, C, H, W] (C a multiple of 8) in one kernel that reads 8 channels at a time, where ATen's
// channels-last kernel reads one; the same float arithmetic. Returns channels-last bf16.
at::Tensor BilinearBf16Cuda(const at::Tensor& x, int64_t oh, int64_t ow);

// In place on a convolution's channels-last bf16 CUDA output y [N, C, H, W] (C a multiple of 8):
// y + bias, then ReLU (relu), then + residual (a defined channels-last bf16 map of y's shape), with
// the roundings of ATen's separate ops, in one kernel. Returns y.
at::Tensor BiasActBf16Cuda(const at::Tensor& y, const at::Tensor& bias, bool relu, const at::Tensor& residual);

// The widest rows QuantizeFp8RowsCuda takes.
inline constexpr int kFp8RowsMaxCols = 4096;

// FP8 (e4m3) codes of the rows of a bf16 CUDA tensor x [..., C] (C a multiple of 8 up to 4096)
// with one float scale per row (the row's largest magnitude / 448), GELU applied first when
// `gelu`: {codes [rows, C], scales [rows, 1]}, the operand and row scales of at::_scaled_mm.
std::pair<at::Tensor, at::Tensor> QuantizeFp8RowsCuda(const at::Tensor& x, bool gelu = false);

}  // namespace streamrecon::kernels
