// The model's building blocks, shared by the streaming step and whole-sequence training: block
// weights, 2D RoPE, the pre-norm transformer block (whole, or split around a cached attention),
// and the DPT heads' small pieces. Numerics follow the reference (spec/model.md).
#pragma once

#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "core/kv/cache.h"
#include "models/weights.h"

namespace streamrecon::models::layers {

using at::Tensor;


// A linear layer's weight [N, K] as FP8 e4m3 codes with one float scale per output channel
// (its largest magnitude / 448): w ~ codes * scales^T. Undefined: the layer runs in bf16.
struct Fp8Weight {
  Tensor codes;   // e4m3 [N, K]
  Tensor scales;  // float [1, N]
  bool defined() const { return codes.defined(); }
};

// The FP8 form of w (any float dtype; on w's device).
Fp8Weight QuantizeFp8Weight(const Tensor& w);

struct BlockWeights;
// Whether ModelOptions::fp8_gemms applies to block b: a fused block (bf16 weights, head dim 64)
// whose widths are multiples of 16 (the FP8 GEMMs') and fit the row quantizer.
bool Fp8Eligible(const BlockWeights& b);

// x @ w^T + bias from FP8 operands for a bf16 CUDA x [..., K]: x's rows quantized with a scale
// each (of GELU(x) with `gelu`), the product and its scales on the tensor cores
// (at::_scaled_mm), the result rounded once to bf16 [..., N]. CUDA builds only.
Tensor LinearFp8(const Tensor& x, const Fp8Weight& w, const Tensor& bias, bool gelu = false);

// Weights of one transformer block (pre-norm, LayerScale).
struct BlockWeights {
  Tensor norm1_w, norm1_b, qkv_w, qkv_b, q_norm_w, q_norm_b, k_norm_w, k_norm_b, proj_w, proj_b, ls1;
  Tensor norm2_w, norm2_b, fc1_w, fc1_b, fc2_w, fc2_b, ls2;
  int heads = 1;
  double eps = 1e-5;
  bool qk_norm = false;
  // bf16 matrix weights on CUDA: the glue around them (LayerNorm + cast, residual + LayerNorm,
  // qkv split + qk-norm + RoPE) runs as the fused kernels of kernels/block_ops.h (inference only).
  bool fused = false;
  // ModelOptions::gelu_epilogue (bf16 weights on CUDA, with or without the fused kernels): fc1's
  // bias and GELU (tanh form) in its cuBLASLt epilogue (Mlp).
  bool gelu_epilogue = false;
  // ModelOptions::fp8_gemms (fused blocks only): the four matrix products from FP8 operands, the
  // activations quantized per token on the fly (kernels::QuantizeFp8RowsCuda), bf16 results.
  Fp8Weight qkv8, proj8, fc1_8, fc2_8;
};

struct DptWeights {
  std::string prefix;
  Tensor norm_w, norm_b;
  std::vector<Tensor> project_w, project_b;
  Tensor resize0_w, resize0_b, resize1_w, resize1_b, resize3_w, resize3_b;
  std::vector<Tensor> layer_rn;  // 4, no bias
};

// The 2D RoPE of one frame layout as two [P, D] tables: the first half of each head's channels is
// rotated by the token's row (y), the second by its column (x); `sin` carries the signs of the
// rotate-half pairing, so that ApplyRope is x * cos + swap(x) * sin in three kernels.
struct RopeTables {
  Tensor cos, sin;
};

// The tables from per-axis cos/sin [P, D/2] (angles repeated over the two quarters of the axis).
RopeTables MakeRopeTables(const Tensor& cos_y, const Tensor& sin_y, const Tensor& cos_x, const Tensor& sin_x);

// x: [..., P, D]; each half of the channels rotated as the reference's rotate-half RoPE does.
// The result in `out` dtype when given (computed in x's dtype, rounded once; not differentiable).
Tensor ApplyRope(const Tensor& x, const RopeTables& rope, at::ScalarType out = at::ScalarType::Undefined);

// x @ w^T + b in w's dtype (bf16 weights: the autocast-like mixed mode), result in x's dtype.
Tensor Linear(const Tensor& x, const Tensor& w, const Tensor& b);

// Softmax attention of [H, N, D] (or batched [B, H, N, D]) tensors, in bf16 when the block's
// weights are bf16. mask: optional [N, M] bool, true where a query may attend to a key.
Tensor Attention(const Tensor& q, const Tensor& k, const Tensor& v, at::ScalarType compute, const std::optional<Tensor>& mask = {});

Tensor LayerNorm(const Tensor& x, const Tensor& w, const Tensor& b, double eps);

// The MLP; its result in the weights' dtype (promoted exactly by the caller's residual).
Tensor Mlp(const BlockWeights& b, const Tensor& x);

// q, k, v of x [..., N, C] as [..., H, N, D], with qk-norm and RoPE when the block has them; in
// `out` dtype when given (rounded once, where attention would cast them; not for autograd), else x's.
std::tuple<Tensor, Tensor, Tensor> Qkv(const BlockWeights& b, const Tensor& x, const RopeTables* rope,
                                       at::ScalarType out = at::ScalarType::Undefined);

// [..., H, N, D] -> [..., N, H*D]
Tensor MergeHeads(const Tensor& o);

// A block's output x + gamma * branch with its last residual update not yet added: the next
// block's LayerNorm adds it in the same kernel (the fused glue). branch undefined: x itself.
struct Pending {
  explicit Pending(Tensor x_in) : x(std::move(x_in)) {}
  Pending(Tensor x_in, Tensor gamma_in, Tensor branch_in) : x(std::move(x_in)), gamma(std::move(gamma_in)), branch(std::move(branch_in)) {}
  Tensor x, gamma, branch;
};
Tensor Resolve(const Pending& p);

// A block attending within x only. x: [N, C] or batched [B, N, C]; mask as Attention's.
Tensor SelfBlock(const BlockWeights& b, const Tensor& x, const RopeTables* rope, const std::optional<Tensor>& mask = {});
// The same from a pending input (resolved into *input when given), the output left pending.
Pending SelfBlock(const BlockWeights& b, const Pending& in, const RopeTables* rope, Tensor* input,
                  const std::optional<Tensor>& mask = {});

// The parts of a cached block before and after its attention: q, k, v of x, and the residual
// update from the attention output o [H, N, D] and the MLP.
std::tuple<Tensor, Tensor, Tensor> BlockPre(const BlockWeights& b, const Tensor& x, const RopeTables* rope);
// kv_into: where k and v may go ([H, N, D] bf16 views, e.g. LayerKvCache::FrameRows; written
// there by the fused kernels, else ignored: the caller checks where k and v are).
std::tuple<Tensor, Tensor, Tensor> BlockPre(const BlockWeights& b, const Pending& in, const RopeTables* rope, Tensor* input,
                                            const std::pair<Tensor, Tensor>& kv_into = {});

Tensor BlockPost(const BlockWeights& b, const Tensor& x, const Tensor& o);
Pending BlockPostPending(const BlockWeights& b, const Tensor& x, const Tensor& o);

// A block attending to its cache plus x; appends x's keys/values, then prunes. x: [N, C].
Tensor CachedBlock(const BlockWeights& b, const Tensor& x, const RopeTables* rope, LayerKvCache& cache);

// conv2d(x, w, b, stride, padding), then ReLU when `relu`, then + residual when defined. On the bf16
// heads' channels-last maps the bias, ReLU and residual take one kernel after the convolution
// instead of ATen's three (the same roundings).
Tensor ConvBias(const Tensor& x, const Tensor& w, const Tensor& b, int64_t stride = 1, int64_t padding = 0, bool relu = false,
                const Tensor& residual = {});

// Residual conv unit with the reference's in-place ReLU quirk: the skip adds relu(x).
Tensor Rcu(const StateDict& w, const std::string& p, const Tensor& x);

Tensor Bilinear(const Tensor& x, int64_t h, int64_t w);

}  // namespace streamrecon::models::layers
