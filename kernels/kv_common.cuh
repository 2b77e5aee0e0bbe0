// Device helpers shared by the KV-cache kernels: bf16/fp16 bit conversions, the asymmetric
// min-max quantizer (bit-identical to core/kv_quant.cc), code packing and the 64-point Hadamard.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace streamrecon::kernels {

constexpr int kHeadDim = 64;  // the kernels are specialised for the model family's head dimension

__device__ __forceinline__ float Bf16BitsToFloat(uint16_t b) { return __uint_as_float(static_cast<uint32_t>(b) << 16); }
__device__ __forceinline__ uint16_t FloatToBf16Bits(float x) { return __bfloat16_as_ushort(__float2bfloat16_rn(x)); }
__device__ __forceinline__ float HalfBitsToFloat(uint16_t b) { return __half2float(__ushort_as_half(b)); }
__device__ __forceinline__ uint16_t FloatToHalfBits(float x) { return __half_as_ushort(__float2half_rn(x)); }

__device__ __forceinline__ uint16_t HalfNextDown(uint16_t b) {
  if (b == 0x0000) return 0x8001;
  return (b & 0x8000) ? static_cast<uint16_t>(b + 1) : static_cast<uint16_t>(b - 1);
}
__device__ __forceinline__ uint16_t HalfNextUp(uint16_t b) {
  if (b == 0x8000) return 0x0001;
  return (b & 0x8000) ? static_cast<uint16_t>(b - 1) : static_cast<uint16_t>(b + 1);
}

// (scale, zero) as fp16 bits packed scale | zero << 16 (QuantParams' memory order). Explicit
// round-to-nearest intrinsics keep the arithmetic identical to the CPU reference (no FMA).
__device__ __forceinline__ uint32_t MakeQuantParams(float lo, float hi, int bits) {
  const float levels = static_cast<float>((1 << bits) - 1);
  uint16_t zero = FloatToHalfBits(lo);
  if (HalfBitsToFloat(zero) > lo) zero = HalfNextDown(zero);
  const float z = HalfBitsToFloat(zero);
  uint16_t scale = 0;
  if (hi > z) {
    scale = FloatToHalfBits(__fdiv_rn(__fsub_rn(hi, z), levels));
    if (HalfBitsToFloat(scale) <= 0.0f) scale = 0x0001;
    while (__fadd_rn(z, __fmul_rn(HalfBitsToFloat(scale), levels)) < hi) scale = HalfNextUp(scale);
  }
  return static_cast<uint32_t>(scale) | (static_cast<uint32_t>(zero) << 16);
}

__device__ __forceinline__ float ParamScale(uint32_t p) { return HalfBitsToFloat(static_cast<uint16_t>(p & 0xffff)); }
__device__ __forceinline__ float ParamZero(uint32_t p) { return HalfBitsToFloat(static_cast<uint16_t>(p >> 16)); }

__device__ __forceinline__ uint32_t QuantizeValue(float x, uint32_t params, int bits) {
  const float scale = ParamScale(params);
  if (scale == 0.0f) return 0;
  // Multiplication by the correctly rounded reciprocal (identical on the CPU, cheaper than a divide).
  const float c = rintf(__fmul_rn(__fsub_rn(x, ParamZero(params)), __frcp_rn(scale)));
  return static_cast<uint32_t>(fminf(fmaxf(c, 0.0f), static_cast<float>((1 << bits) - 1)));
}

__device__ __forceinline__ float DequantizeValue(uint32_t code, uint32_t params) {
  return __fadd_rn(__fmul_rn(static_cast<float>(code), ParamScale(params)), ParamZero(params));
}

// In-place Sylvester-ordered Walsh-Hadamard transform of 64 values, normalised (H symmetric, H H = I).
__device__ __forceinline__ void Hadamard64(float (&x)[kHeadDim]) {
#pragma unroll
  for (int len = 1; len < kHeadDim; len <<= 1) {
#pragma unroll
    for (int i = 0; i < kHeadDim; ++i) {
      if ((i & len) == 0) {
        const float a = x[i], b = x[i + len];
        x[i] = a + b;
        x[i + len] = a - b;
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kHeadDim; ++i) x[i] *= 0.125f;
}

// Two codes (bits [0, b) and [b, 2b) of `codes`) as half2 (code0, code1), exactly, without
// conversions: 1024 + code is an fp16 bit pattern 0x6400 | code; subtracting 1024 leaves the code.
template <int kB>
__device__ __forceinline__ __half2 CodesToHalf2(uint32_t codes) {
  constexpr uint32_t kMask = (1u << kB) - 1;
  const uint32_t bits = (codes & kMask) | (((codes >> kB) & kMask) << 16) | 0x64006400u;
  return __hsub2(*reinterpret_cast<const __half2*>(&bits), __float2half2_rn(1024.0f));
}

__device__ __forceinline__ __half2 Half2FromBits(uint32_t lo_bits, uint32_t hi_bits) {
  const uint32_t bits = (lo_bits & 0xffffu) | (hi_bits << 16);
  return *reinterpret_cast<const __half2*>(&bits);
}

// Eight channels of one cached token, dequantized in half2 arithmetic as fp16:
// K = (code * scale + zero) * norm with per-channel (scale, zero) pairs kp (8 of them);
// V = code * scale + zero with the token's (scale, zero) vp. kc, vc hold 8 codes of kB bits.
template <int kB>
__device__ __forceinline__ void DequantizeEight(uint32_t kc, const uint4 (&kp4)[2], uint32_t vc, uint32_t vp, float norm_f,
                                                uint4& k_out, uint4& v_out) {
  const uint32_t kp[8] = {kp4[0].x, kp4[0].y, kp4[0].z, kp4[0].w, kp4[1].x, kp4[1].y, kp4[1].z, kp4[1].w};
  const __half2 vs = Half2FromBits(vp, vp), vz = Half2FromBits(vp >> 16, vp >> 16);
  const __half2 norm = __float2half2_rn(norm_f);
  uint32_t kk[4], vv[4];
#pragma unroll
  for (int j = 0; j < 8; j += 2) {
    const __half2 ks = Half2FromBits(kp[j], kp[j + 1]), kz = Half2FromBits(kp[j] >> 16, kp[j + 1] >> 16);
    const __half2 kh = __hmul2(__hfma2(CodesToHalf2<kB>(kc >> (j * kB)), ks, kz), norm);
    const __half2 vh = __hfma2(CodesToHalf2<kB>(vc >> (j * kB)), vs, vz);
    kk[j / 2] = *reinterpret_cast<const uint32_t*>(&kh);
    vv[j / 2] = *reinterpret_cast<const uint32_t*>(&vh);
  }
  k_out = make_uint4(kk[0], kk[1], kk[2], kk[3]);
  v_out = make_uint4(vv[0], vv[1], vv[2], vv[3]);
}

}  // namespace streamrecon::kernels
