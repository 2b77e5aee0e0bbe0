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

}  // namespace streamrecon::kernels
