// The model's building blocks (layers.h).
#include "models/layers.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <optional>
#include <vector>

#include "core/errors.h"
#include "kernels/block_ops.h"

namespace streamrecon::models::layers {
namespace {

// Builds with the CUDA kernels run the fused glue where BlockWeights::fused asks for it (outside
// autograd); elsewhere those branches are discarded at compile time (and need no definitions).
#ifdef STREAMRECON_HAVE_CUDA_KV
constexpr bool kFusedKernels = true;
#else
constexpr bool kFusedKernels = false;
#endif

bool Fused(const BlockWeights& b, const Tensor& x) {
  return b.fused && x.is_cuda() && x.scalar_type() == at::kFloat && b.qkv_w.scalar_type() == at::kBFloat16 &&
         b.qkv_w.size(0) == 3 * 64 * b.heads && !c10::GradMode::is_enabled();
}

// FP8 matrix products: a bf16 CUDA activation outside autograd, a block loaded with FP8 weights.
bool UseFp8(const Fp8Weight& w, const Tensor& x) {
  return kFusedKernels && w.defined() && x.is_cuda() && x.scalar_type() == at::kBFloat16 && !c10::GradMode::is_enabled();
}

}  // namespace

// Both scales are applied to the float accumulators in the product's epilogue, the bias added
// there (at::_scaled_mm with row-wise scales; use_fast_accum off: the tensor cores' FP8 partial
// sums are promoted to float every few k-steps).
Tensor LinearFp8(const Tensor& x, const Fp8Weight& w, const Tensor& bias, bool gelu) {
  std::vector<int64_t> sizes = x.sizes().vec();
  sizes.back() = w.codes.size(0);
  if constexpr (kFusedKernels) {
    const auto [codes, scales] = kernels::QuantizeFp8RowsCuda(x, gelu);
    const std::optional<Tensor> b = bias.defined() ? std::optional<Tensor>(bias) : std::nullopt;
    return at::_scaled_mm(codes, w.codes.t(), scales, w.scales, b, {}, at::kBFloat16, /*use_fast_accum=*/false).view(sizes);
  }
  throw Error("FP8 matrix products need a build with the CUDA kernels");
}

namespace {

// x (the pending update added) and LayerNorm1(x): in bf16 for the fused kernels, where one
// kernel adds the update and normalises; else in x's dtype.
std::pair<Tensor, Tensor> NormIn(const BlockWeights& b, const Pending& in) {
  if constexpr (kFusedKernels) {
    if (Fused(b, in.x)) {
      if (!in.branch.defined()) return {in.x, kernels::LayerNormBf16Cuda(in.x.contiguous(), b.norm1_w, b.norm1_b, b.eps)};
      return kernels::ResidualLayerNormBf16Cuda(in.x.contiguous(), in.gamma, in.branch, b.norm1_w, b.norm1_b, b.eps);
    }
  }
  const Tensor x = Resolve(in);
  return {x, LayerNorm(x, b.norm1_w, b.norm1_b, b.eps)};
}

// q, k, v bf16 [..., H, N, D] of LayerNorm1(x) in bf16 through the fused kernels; tokens_major as
// QkvHeadsCuda's (for attention within the frame: its output then merges its heads without a copy).
// kv_into (defined views): k and v are written there.
std::tuple<Tensor, Tensor, Tensor> FusedQkv(const BlockWeights& b, const Tensor& normed, const RopeTables* rope, bool tokens_major,
                                            const std::pair<Tensor, Tensor>& kv_into = {}) {
  const Tensor qkv = UseFp8(b.qkv8, normed) ? LinearFp8(normed, b.qkv8, b.qkv_b) : at::linear(normed, b.qkv_w, b.qkv_b);
  const Tensor none;
  return kernels::QkvHeadsCuda(qkv, b.heads, b.qk_norm ? b.q_norm_w : none, b.q_norm_b, b.k_norm_w, b.k_norm_b, b.eps,
                               rope ? rope->cos : none, rope ? rope->sin : none, tokens_major, kv_into.first, kv_into.second);
}

}  // namespace

bool Fp8Eligible(const BlockWeights& b) {
  const int64_t c = b.qkv_w.size(1), hidden = b.fc1_w.size(0);
  return b.fused && b.qkv_w.scalar_type() == at::kBFloat16 && b.qkv_w.size(0) == 3 * 64 * b.heads && c % 16 == 0 && hidden % 16 == 0 &&
         c <= kernels::kFp8RowsMaxCols && hidden <= kernels::kFp8RowsMaxCols;
}

Fp8Weight QuantizeFp8Weight(const Tensor& w) {
  const Tensor wf = w.to(at::kFloat);
  const Tensor amax = wf.abs().amax(1, /*keepdim=*/true);  // [N, 1]
  const Tensor scales = at::where(amax > 0, amax / 448.0, at::ones_like(amax));
  return {(wf / scales).to(at::kFloat8_e4m3fn).contiguous(), scales.t().contiguous()};
}

RopeTables MakeRopeTables(const Tensor& cos_y, const Tensor& sin_y, const Tensor& cos_x, const Tensor& sin_x) {
  // Rotate-half pairs channel j of an axis with j + D/4: the first quarter takes -sin, the second +sin.
  auto with_signs = [](const Tensor& sin) {
    const int64_t quarter = sin.size(-1) / 2;
    return at::cat({-sin.narrow(-1, 0, quarter), sin.narrow(-1, quarter, quarter)}, -1);
  };
  return {at::cat({cos_y, cos_x}, -1), at::cat({with_signs(sin_y), with_signs(sin_x)}, -1)};
}

Tensor ApplyRope(const Tensor& x, const RopeTables& rope, at::ScalarType out) {
  // The quarters of the channels swapped within each half, (1, 0, 3, 2): each channel's partner.
  const int64_t quarter = x.size(-1) / 4;
  const Tensor partner = x.unflatten(-1, {2, 2, quarter}).flip(-2).flatten(-3);
  if (out == at::ScalarType::Undefined || out == x.scalar_type()) return at::addcmul(x * rope.cos, partner, rope.sin);
  // Computed in x's dtype and rounded once on the store, as addcmul then a cast would (not for autograd).
  Tensor result = at::empty(x.sizes(), x.options().dtype(out));
  return at::addcmul_out(result, x * rope.cos, partner, rope.sin);
}

// x @ w^T + b in w's dtype (bf16 weights: the autocast-like mixed mode), the result left in w's
// dtype (for a consumer that reads it so or promotes it exactly: no cast kernel back and forth).
Tensor LinearInWeightType(const Tensor& x, const Tensor& w, const Tensor& b) {
  return at::linear(x.to(w.scalar_type()), w, b);
}

// The same, the result in x's dtype.
Tensor Linear(const Tensor& x, const Tensor& w, const Tensor& b) { return LinearInWeightType(x, w, b).to(x.scalar_type()); }

// Softmax attention of [H, N, D] (or batched [B, H, N, D]) tensors, in bf16 when the block's
// weights are bf16. mask: optional [N, M] bool, true where a query may attend to a key.
Tensor Attention(const Tensor& q, const Tensor& k, const Tensor& v, at::ScalarType compute, const std::optional<Tensor>& mask) {
  const bool batched = q.dim() == 4;
  auto prep = [&](const Tensor& t) {
    const Tensor c = compute == t.scalar_type() ? t : t.to(compute);
    return batched ? c : c.unsqueeze(0);
  };
  Tensor o = at::scaled_dot_product_attention(prep(q), prep(k), prep(v), mask);
  if (!batched) o = o.squeeze(0);
  return compute == q.scalar_type() ? o : o.to(q.scalar_type());
}

Tensor LayerNorm(const Tensor& x, const Tensor& w, const Tensor& b, double eps) {
  return at::layer_norm(x, {x.size(-1)}, w, b, eps);
}

// In the weights' dtype: GELU of a bf16 tensor computes in fp32 and rounds once, which is what the
// fc2 input cast of an fp32 GELU did; the result is promoted exactly by the residual's addcmul.
// With BlockWeights::gelu_epilogue (bf16 CUDA weights and bias, outside autograd) fc1's bias and
// GELU run in the product's cuBLASLt epilogue, in float before the one rounding to bf16: GELU's
// tanh form there, within 4.8e-4 (absolute) of the erf form everywhere, and no kernel reading and
// writing the [N, 4C] hidden rows again.
Tensor Mlp(const BlockWeights& b, const Tensor& x) {
  if (UseFp8(b.fc1_8, x)) return LinearFp8(LinearFp8(x, b.fc1_8, b.fc1_b), b.fc2_8, b.fc2_b, /*gelu=*/true);
  if (b.gelu_epilogue && x.is_cuda() && b.fc1_w.scalar_type() == at::kBFloat16 && b.fc1_b.defined() &&
      b.fc1_b.scalar_type() == at::kBFloat16 && !c10::GradMode::is_enabled()) {
    const Tensor rows = x.to(at::kBFloat16).reshape({-1, x.size(-1)});
    std::vector<int64_t> sizes = x.sizes().vec();
    sizes.back() = b.fc1_w.size(0);
    const Tensor hidden = at::_addmm_activation(b.fc1_b, rows, b.fc1_w.t(), 1, 1, /*use_gelu=*/true).view(sizes);
    return LinearInWeightType(hidden, b.fc2_w, b.fc2_b);
  }
  return LinearInWeightType(at::gelu(LinearInWeightType(x, b.fc1_w, b.fc1_b)), b.fc2_w, b.fc2_b);
}

// q, k, v of x [..., N, C] as [..., H, N, D], with qk-norm and RoPE when the block has them; in
// `out` dtype when given (rounded once, where attention would cast them), else x's.
std::tuple<Tensor, Tensor, Tensor> Qkv(const BlockWeights& b, const Tensor& x, const RopeTables* rope, at::ScalarType out) {
  const int64_t c = x.size(-1);
  // [..., N, 3C] -> [..., N, 3, H, D] -> [3, ..., H, N, D]
  const Tensor qkv = Linear(x, b.qkv_w, b.qkv_b).unflatten(-1, {3, b.heads, c / b.heads}).movedim(-3, 0).transpose(-3, -2);
  Tensor q = qkv[0], k = qkv[1], v = qkv[2];
  if (b.qk_norm) {
    q = LayerNorm(q, b.q_norm_w, b.q_norm_b, b.eps);
    k = LayerNorm(k, b.k_norm_w, b.k_norm_b, b.eps);
  }
  const bool cast = out != at::ScalarType::Undefined && out != x.scalar_type();
  if (rope) {
    // (only when casting: under training's autocast q may already differ from x's dtype, and the
    // out= form does not take part in autograd)
    q = ApplyRope(q, *rope, cast ? out : at::ScalarType::Undefined);
    k = ApplyRope(k, *rope, cast ? out : at::ScalarType::Undefined);
  } else if (cast) {
    q = q.to(out);
    k = k.to(out);
  }
  return {q, k, cast ? v.to(out) : v.contiguous()};
}

Tensor MergeHeads(const Tensor& o) {  // [..., H, N, D] -> [..., N, H*D]
  return o.transpose(-3, -2).flatten(-2);
}

// MergeHeads and a cast to `dtype` in one copy.
Tensor MergeHeadsAs(const Tensor& o, at::ScalarType dtype) {
  const Tensor moved = o.transpose(-3, -2);
  if (dtype == o.scalar_type()) return moved.flatten(-2);
  Tensor out = at::empty(moved.sizes(), o.options().dtype(dtype));
  out.copy_(moved);
  return out.flatten(-2);
}

Tensor Resolve(const Pending& p) { return p.branch.defined() ? at::addcmul(p.x, p.gamma, p.branch) : p.x; }

Pending SelfBlock(const BlockWeights& b, const Pending& in, const RopeTables* rope, Tensor* input, const std::optional<Tensor>& mask) {
  // q, k, v straight in the attention's dtype; its output stays in it for the projection.
  const at::ScalarType compute = b.qkv_w.scalar_type();
  const auto [x, normed] = NormIn(b, in);
  if (input) *input = x;
  if constexpr (kFusedKernels) {
    if (Fused(b, x)) {
      auto [q, k, v] = FusedQkv(b, normed, rope, /*tokens_major=*/true);
      return BlockPostPending(b, x, Attention(q, k, v, compute, mask));
    }
  }
  auto [q, k, v] = Qkv(b, normed, rope, compute);
  return BlockPostPending(b, x, Attention(q, k, v, compute, mask));
}

Tensor SelfBlock(const BlockWeights& b, const Tensor& x, const RopeTables* rope, const std::optional<Tensor>& mask) {
  return Resolve(SelfBlock(b, Pending{x}, rope, nullptr, mask));
}

std::tuple<Tensor, Tensor, Tensor> BlockPre(const BlockWeights& b, const Pending& in, const RopeTables* rope, Tensor* input,
                                            const std::pair<Tensor, Tensor>& kv_into) {
  const auto [x, normed] = NormIn(b, in);
  if (input) *input = x;
  if constexpr (kFusedKernels) {
    // (bf16: the cache rounds q, k, v to bf16 anyway; it reads them as [H, N, D] rows)
    if (Fused(b, x)) return FusedQkv(b, normed, rope, /*tokens_major=*/false, kv_into);
  }
  return Qkv(b, normed, rope);
}

std::tuple<Tensor, Tensor, Tensor> BlockPre(const BlockWeights& b, const Tensor& x, const RopeTables* rope) {
  return BlockPre(b, Pending{x}, rope, nullptr);
}

Pending BlockPostPending(const BlockWeights& b, const Tensor& x, const Tensor& o) {
  // Residual + LayerScale in one kernel each (addcmul: x + gamma * branch, the branch promoted
  // exactly to x's dtype inside it); the heads merged and cast to the projection's dtype in one copy.
  const Tensor merged = MergeHeadsAs(o, b.proj_w.scalar_type());
  const Tensor branch = UseFp8(b.proj8, merged) ? LinearFp8(merged, b.proj8, b.proj_b) : LinearInWeightType(merged, b.proj_w, b.proj_b);
  if constexpr (kFusedKernels) {
    if (Fused(b, x)) {
      const auto [y, normed] = kernels::ResidualLayerNormBf16Cuda(x.contiguous(), b.ls1, branch, b.norm2_w, b.norm2_b, b.eps);
      return {y, b.ls2, Mlp(b, normed)};
    }
  }
  const Tensor y = at::addcmul(x, b.ls1, branch);
  return {y, b.ls2, Mlp(b, LayerNorm(y, b.norm2_w, b.norm2_b, b.eps))};
}

Tensor BlockPost(const BlockWeights& b, const Tensor& x, const Tensor& o) { return Resolve(BlockPostPending(b, x, o)); }

// A block attending to its cache plus x; appends x's keys/values, then prunes. x: [N, C].
Tensor CachedBlock(const BlockWeights& b, const Tensor& x, const RopeTables* rope, LayerKvCache& cache) {
  auto [q, k, v] = BlockPre(b, x, rope);
  return BlockPost(b, x, cache.Forward(q, k, v));
}

Tensor ConvBias(const Tensor& x, const Tensor& w, const Tensor& b, int64_t stride, int64_t padding, bool relu, const Tensor& residual) {
  bool fused = false;
  if constexpr (kFusedKernels) {
    fused = x.is_cuda() && x.scalar_type() == at::kBFloat16 && x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast) &&
            b.defined() && w.size(0) % 8 == 0 && !c10::GradMode::is_enabled();
  }
  Tensor y = at::conv2d(x, w, fused ? Tensor() : b, stride, padding);
  if (fused) {
    const bool fits = !residual.defined() || (residual.sizes() == y.sizes() && residual.scalar_type() == at::kBFloat16);
    if (fits && y.is_contiguous(at::MemoryFormat::ChannelsLast) && reinterpret_cast<uintptr_t>(y.data_ptr()) % 16 == 0)
      return kernels::BiasActBf16Cuda(y, b, relu, residual);
    y.add_(b.view({1, -1, 1, 1}));  // (as the convolution adds its bias)
  }
  if (relu) y = at::relu(y);
  return residual.defined() ? y + residual : y;
}

// Residual conv unit with the reference's in-place ReLU quirk: the skip adds relu(x).
Tensor Rcu(const StateDict& w, const std::string& p, const Tensor& x) {
  const Tensor rx = at::relu(x);
  const Tensor h = ConvBias(rx, w.at(p + ".conv1.weight"), w.at(p + ".conv1.bias"), 1, 1, /*relu=*/true);
  return ConvBias(h, w.at(p + ".conv2.weight"), w.at(p + ".conv2.bias"), 1, 1, /*relu=*/false, rx);
}

Tensor Bilinear(const Tensor& x, int64_t h, int64_t w) {
  if constexpr (kFusedKernels) {
    // (the bf16 heads' channels-last maps: ATen's kernel reads one channel at a time there)
    if (x.is_cuda() && x.scalar_type() == at::kBFloat16 && x.dim() == 4 && x.size(1) % 8 == 0 &&
        x.is_contiguous(at::MemoryFormat::ChannelsLast) && !c10::GradMode::is_enabled())
      return kernels::BilinearBf16Cuda(x, h, w);
  }
  return at::upsample_bilinear2d(x, {h, w}, /*align_corners=*/true);
}

}  // namespace streamrecon::models::layers
