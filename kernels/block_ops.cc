// LibTorch-facing side of the blocks' fused glue kernels.
#include "kernels/block_ops.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>

#include <cstdint>
#include <string>

#include "core/errors.h"
#include "kernels/block_kernels.h"
#include "kernels/check_cuda.h"

namespace streamrecon::kernels {
namespace {

std::string Describe(const at::Tensor& t) {
  if (!t.defined()) return "undefined";
  return std::string(c10::toString(t.scalar_type())) + " " + c10::str(t.sizes()) + (t.is_cuda() ? " cuda" : " cpu") +
         (t.is_contiguous() ? "" : " non-contiguous");
}

void Expect(const at::Tensor& t, at::ScalarType dtype, int64_t numel, const char* what) {
  if (!t.defined() || !t.is_cuda() || t.scalar_type() != dtype || !t.is_contiguous() || (numel >= 0 && t.numel() != numel))
    throw Error(std::string(what) + ": expected a contiguous CUDA " + c10::toString(dtype) +
                (numel >= 0 ? " tensor of " + std::to_string(numel) + " elements" : " tensor") + ", got " + Describe(t));
}

// The kernels load 16 bytes at a time: a view that starts off that grid is copied first.
at::Tensor Aligned(const at::Tensor& t) {
  return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0 ? t : t.clone();
}

const float* F32(const at::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; }
uint16_t* Bf16(const at::Tensor& t) { return reinterpret_cast<uint16_t*>(t.data_ptr<at::BFloat16>()); }

at::Tensor LayerNormImpl(const at::Tensor& x_in, const at::Tensor* gamma_in, const at::Tensor* branch_in, at::Tensor* residual,
                         const at::Tensor& weight_in, const at::Tensor& bias_in, double eps) {
  Expect(x_in, at::kFloat, -1, "LayerNorm input");
  const at::Tensor x = Aligned(x_in), weight = Aligned(weight_in), bias = Aligned(bias_in);
  const at::Tensor gamma = gamma_in ? Aligned(*gamma_in) : at::Tensor(), branch_t = branch_in ? Aligned(*branch_in) : at::Tensor();
  const at::Tensor* branch = branch_in ? &branch_t : nullptr;
  const int64_t cols = x.size(-1);
  if (cols > kLayerNormMaxCols || cols % 4 != 0)
    throw Error("fused LayerNorm: expected a multiple of 4 channels up to " + std::to_string(kLayerNormMaxCols) + ", got " + std::to_string(cols));
  Expect(weight, at::kFloat, cols, "LayerNorm weight");
  Expect(bias, at::kFloat, cols, "LayerNorm bias");
  LayerNormParams p;
  p.x = x.data_ptr<float>();
  if (branch) {
    Expect(*branch, at::kBFloat16, x.numel(), "residual branch");
    Expect(gamma, at::kFloat, cols, "LayerScale");
    *residual = at::empty_like(x);
    p.branch = Bf16(*branch);
    p.gamma = gamma.data_ptr<float>();
    p.residual_out = residual->data_ptr<float>();
  }
  at::Tensor out = at::empty(x.sizes(), x.options().dtype(at::kBFloat16));
  p.weight = weight.data_ptr<float>();
  p.bias = bias.data_ptr<float>();
  p.out = Bf16(out);
  p.rows = static_cast<int>(x.numel() / cols);
  p.cols = static_cast<int>(cols);
  p.eps = static_cast<float>(eps);
  CheckCuda(LaunchLayerNormBf16(p, at::cuda::getCurrentCUDAStream()), "fused LayerNorm kernel");
  return out;
}

}  // namespace

at::Tensor LayerNormBf16Cuda(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double eps) {
  return LayerNormImpl(x, nullptr, nullptr, nullptr, weight, bias, eps);
}

std::pair<at::Tensor, at::Tensor> ResidualLayerNormBf16Cuda(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& branch,
                                                            const at::Tensor& weight, const at::Tensor& bias, double eps) {
  at::Tensor y;
  at::Tensor out = LayerNormImpl(x, &gamma, &branch, &y, weight, bias, eps);
  return {y, out};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> QkvHeadsCuda(const at::Tensor& qkv, int heads, const at::Tensor& q_norm_w,
                                                            const at::Tensor& q_norm_b, const at::Tensor& k_norm_w,
                                                            const at::Tensor& k_norm_b, double eps, const at::Tensor& cos,
                                                            const at::Tensor& sin, bool tokens_major, const at::Tensor& k_out,
                                                            const at::Tensor& v_out) {
  Expect(qkv, at::kBFloat16, -1, "qkv projection");
  if (qkv.dim() < 2 || heads < 1 || qkv.size(-1) != 3 * heads * 64)
    throw Error("fused qkv split: expected [..., N, 3 * " + std::to_string(heads) + " * 64], got " + Describe(qkv));
  const int64_t n = qkv.size(-2);
  QkvHeadsParams p;
  p.qkv = Bf16(qkv);
  p.batch = static_cast<int>(n == 0 ? 0 : qkv.numel() / (n * qkv.size(-1)));
  p.tokens = static_cast<int>(n);
  p.heads = heads;
  if (q_norm_w.defined()) {
    for (const at::Tensor* t : {&q_norm_w, &q_norm_b, &k_norm_w, &k_norm_b}) Expect(*t, at::kFloat, 64, "qk-norm parameters");
    p.q_norm_w = F32(q_norm_w);
    p.q_norm_b = F32(q_norm_b);
    p.k_norm_w = F32(k_norm_w);
    p.k_norm_b = F32(k_norm_b);
  }
  p.eps = static_cast<float>(eps);
  if (cos.defined()) {
    Expect(cos, at::kFloat, -1, "RoPE cos table");
    Expect(sin, at::kFloat, cos.numel(), "RoPE sin table");
    if (cos.dim() != 2 || cos.size(1) != 64) throw Error("RoPE tables: expected [P, 64], got " + Describe(cos));
    p.cos = F32(cos);
    p.sin = F32(sin);
    p.table_rows = static_cast<int>(cos.size(0));
  }
  std::vector<int64_t> shape(qkv.sizes().begin(), qkv.sizes().end() - 2);
  if (tokens_major) shape.insert(shape.end(), {n, heads, 64});
  else shape.insert(shape.end(), {heads, n, 64});
  const at::Tensor q = at::empty(shape, qkv.options());
  at::Tensor k = k_out, v = v_out;
  if (k_out.defined() || v_out.defined()) {
    auto rows_ok = [&](const at::Tensor& t) {
      return t.defined() && t.is_cuda() && t.scalar_type() == at::kBFloat16 && t.dim() == 3 && t.size(0) == heads && t.size(1) == n &&
             t.size(2) == 64 && t.stride(2) == 1 && t.stride(1) == 64 && t.stride(0) % 64 == 0 && t.strides() == k_out.strides();
    };
    if (qkv.dim() != 2 || tokens_major || !rows_ok(k_out) || !rows_ok(v_out))
      throw Error("fused qkv split into given rows: expected qkv [N, 3C] and bf16 CUDA k, v [" + std::to_string(heads) + ", " +
                  std::to_string(n) + ", 64] with rows of 64 contiguous channels, got qkv " + Describe(qkv) + ", k " +
                  Describe(k_out) + ", v " + Describe(v_out));
    p.kv_head_rows = k_out.stride(0) / 64;
  } else {
    k = at::empty(shape, qkv.options());
    v = at::empty(shape, qkv.options());
  }
  p.tokens_major = tokens_major;
  p.q = Bf16(q);
  p.k = Bf16(k);
  p.v = Bf16(v);
  CheckCuda(LaunchQkvHeads(p, at::cuda::getCurrentCUDAStream()), "fused qkv split kernel");
  if (tokens_major) return {q.transpose(-3, -2), k.transpose(-3, -2), v.transpose(-3, -2)};
  return {q, k, v};
}

at::Tensor BilinearBf16Cuda(const at::Tensor& x_in, int64_t oh, int64_t ow) {
  if (!x_in.is_cuda() || x_in.scalar_type() != at::kBFloat16 || x_in.dim() != 4 || x_in.size(1) % 8 != 0 || x_in.size(1) == 0 ||
      x_in.size(2) == 0 || x_in.size(3) == 0 || oh < 0 || ow < 0)
    throw Error("bilinear resampling: expected a CUDA bf16 [N, C, H, W] image with C a multiple of 8, got " + Describe(x_in));
  const at::Tensor x = Aligned(x_in.contiguous(at::MemoryFormat::ChannelsLast));
  at::Tensor out = at::empty({x.size(0), x.size(1), oh, ow}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  BilinearParams p;
  p.in = Bf16(x);
  p.out = Bf16(out);
  p.n = static_cast<int>(x.size(0));
  p.c = static_cast<int>(x.size(1));
  p.h = static_cast<int>(x.size(2));
  p.w = static_cast<int>(x.size(3));
  p.oh = static_cast<int>(oh);
  p.ow = static_cast<int>(ow);
  CheckCuda(LaunchBilinearBf16(p, at::cuda::getCurrentCUDAStream()), "bilinear resampling kernel");
  return out;
}

at::Tensor BiasActBf16Cuda(const at::Tensor& y, const at::Tensor& bias, bool relu, const at::Tensor& residual_in) {
  const auto channels_last = at::MemoryFormat::ChannelsLast;
  if (!y.is_cuda() || y.scalar_type() != at::kBFloat16 || y.dim() != 4 || y.size(1) % 8 != 0 || y.size(1) == 0 ||
      !y.is_contiguous(channels_last) || reinterpret_cast<uintptr_t>(y.data_ptr()) % 16 != 0)
    throw Error("bias and activation: expected an aligned channels-last bf16 CUDA map [N, C, H, W] with C a multiple of 8, got " +
                Describe(y));
  const at::Tensor b = Aligned(bias.to(at::kBFloat16).contiguous());
  Expect(b, at::kBFloat16, y.size(1), "convolution bias");
  at::Tensor residual;
  if (residual_in.defined()) {
    if (residual_in.sizes() != y.sizes() || residual_in.scalar_type() != at::kBFloat16 || !residual_in.is_cuda())
      throw Error("bias and activation: the residual must be a bf16 CUDA map of the output's shape, got " + Describe(residual_in));
    residual = Aligned(residual_in.contiguous(channels_last));
  }
  BiasActParams p;
  p.y = Bf16(y);
  p.bias = Bf16(b);
  p.residual = residual.defined() ? Bf16(residual) : nullptr;
  p.relu = relu;
  p.c = static_cast<int>(y.size(1));
  p.pixels = y.numel() / p.c;
  CheckCuda(LaunchBiasActBf16(p, at::cuda::getCurrentCUDAStream()), "bias and activation kernel");
  return y;
}

static_assert(kFp8RowsMaxCols == kLayerNormMaxCols, "the FP8 row kernel holds a row as the LayerNorm kernels do");

std::pair<at::Tensor, at::Tensor> QuantizeFp8RowsCuda(const at::Tensor& x_in, bool gelu) {
  if (!x_in.defined() || x_in.dim() < 1) throw Error("FP8 row quantization: expected a bf16 CUDA tensor [..., C], got " + Describe(x_in));
  const int64_t cols = x_in.size(-1);
  if (cols < 8 || cols > kLayerNormMaxCols || cols % 8 != 0)
    throw Error("FP8 row quantization: expected a multiple of 8 channels up to " + std::to_string(kLayerNormMaxCols) + ", got " +
                Describe(x_in));
  const at::Tensor x = Aligned(x_in.contiguous());
  Expect(x, at::kBFloat16, -1, "FP8 row quantization input");
  const int64_t rows = x.numel() / cols;
  at::Tensor codes = at::empty({rows, cols}, x.options().dtype(at::kFloat8_e4m3fn));
  at::Tensor scales = at::empty({rows, 1}, x.options().dtype(at::kFloat));
  Fp8RowsParams p;
  p.x = Bf16(x);
  p.out = reinterpret_cast<uint8_t*>(codes.data_ptr());
  p.scale = scales.data_ptr<float>();
  p.rows = static_cast<int>(rows);
  p.cols = static_cast<int>(cols);
  p.gelu = gelu;
  CheckCuda(LaunchQuantizeFp8Rows(p, at::cuda::getCurrentCUDAStream()), "FP8 row quantization kernel");
  return {codes, scales};
}

}  // namespace streamrecon::kernels
