// The asymmetric min-max quantiser of the KV cache, written once for the host and the device: the
// CPU reference (core/kv/paged_kv.cc) and the CUDA kernels (kernels/kv_common.cuh) include this
// header, so their codes and parameters cannot drift apart. Torch-free and CUDA-free: under nvcc
// the functions are __host__ __device__; in device code the fp16 conversions are the intrinsics,
// in host code the functions of quantizer.cc (IEEE binary16, round to nearest even, as the
// intrinsics). Every float operation is an explicitly rounded one on the device (no FMA
// contraction), which plain host arithmetic matches.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#define SR_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SR_HOST_DEVICE inline
#endif

namespace streamrecon::kv {

// Asymmetric min-max parameters of one quantization group, both IEEE fp16 (bits).
// value = code * scale + zero. The range [zero, zero + scale * (2^b - 1)] always contains the
// group's values: zero is rounded down and scale up when converted to fp16.
struct QuantParams {
  uint16_t scale;
  uint16_t zero;
};
static_assert(sizeof(QuantParams) == 4, "QuantParams must be two fp16 values");

// Host fp16 conversions (quantizer.cc); device code uses the intrinsics instead.
uint16_t HostFloatToHalfBits(float x);
float HostHalfBitsToFloat(uint16_t bits);

SR_HOST_DEVICE uint16_t FloatToHalfBits(float x) {
#if defined(__CUDA_ARCH__)
  return __half_as_ushort(__float2half_rn(x));
#else
  return HostFloatToHalfBits(x);
#endif
}

SR_HOST_DEVICE float HalfBitsToFloat(uint16_t bits) {
#if defined(__CUDA_ARCH__)
  return __half2float(__ushort_as_half(bits));
#else
  return HostHalfBitsToFloat(bits);
#endif
}

// Correctly rounded float arithmetic, never contracted into an FMA.
SR_HOST_DEVICE float AddRn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
SR_HOST_DEVICE float SubRn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
SR_HOST_DEVICE float MulRn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
SR_HOST_DEVICE float DivRn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
// Nearest integer, ties to even (the default rounding mode on both sides).
SR_HOST_DEVICE float RoundEven(float x) {
#if defined(__CUDA_ARCH__)
  return rintf(x);
#else
  return __builtin_rintf(x);
#endif
}

// The neighbouring fp16 values of a bit pattern, towards -inf and +inf.
SR_HOST_DEVICE uint16_t HalfNextDown(uint16_t b) {
  if (b == 0x0000) return 0x8001;  // +0 -> smallest negative subnormal
  return (b & 0x8000) ? static_cast<uint16_t>(b + 1) : static_cast<uint16_t>(b - 1);
}
SR_HOST_DEVICE uint16_t HalfNextUp(uint16_t b) {
  if (b == 0x8000) return 0x0001;  // -0 -> smallest positive subnormal
  return (b & 0x8000) ? static_cast<uint16_t>(b - 1) : static_cast<uint16_t>(b + 1);
}

// Parameters of a group spanning [lo, hi] for `bits`-bit codes: zero = lo rounded down to fp16,
// scale rounded up to fp16 so that zero + scale * (2^bits - 1) >= hi. Constant groups get scale 0.
// lo and hi must lie within the fp16 range (the host's checked wrapper says so otherwise).
SR_HOST_DEVICE QuantParams MakeQuantParams(float lo, float hi, int bits) {
  const float levels = static_cast<float>((1 << bits) - 1);
  uint16_t zero = FloatToHalfBits(lo);
  if (HalfBitsToFloat(zero) > lo) zero = HalfNextDown(zero);
  const float z = HalfBitsToFloat(zero);
  uint16_t scale = 0;
  if (hi > z) {
    scale = FloatToHalfBits(DivRn(SubRn(hi, z), levels));
    if (HalfBitsToFloat(scale) <= 0.0f) scale = 0x0001;
    while (AddRn(z, MulRn(HalfBitsToFloat(scale), levels)) < hi) scale = HalfNextUp(scale);
  }
  return QuantParams{scale, zero};
}

// Nearest code of x in the group, clamped to [0, 2^bits - 1]. Multiplication by the correctly
// rounded reciprocal: cheaper than a divide on the device, and the same on both sides.
SR_HOST_DEVICE uint8_t QuantizeValue(float x, QuantParams p, int bits) {
  const float scale = HalfBitsToFloat(p.scale);
  if (scale == 0.0f) return 0;
  const float c = RoundEven(MulRn(SubRn(x, HalfBitsToFloat(p.zero)), DivRn(1.0f, scale)));
  const float top = static_cast<float>((1 << bits) - 1);
  return static_cast<uint8_t>(c < 0.0f ? 0.0f : (c > top ? top : c));
}

// code * scale + zero, in float.
SR_HOST_DEVICE float DequantizeValue(uint32_t code, QuantParams p) {
  return AddRn(MulRn(static_cast<float>(code), HalfBitsToFloat(p.scale)), HalfBitsToFloat(p.zero));
}

// QuantParams as the kernels hold them: one 32-bit word, scale in the low half (memory order).
SR_HOST_DEVICE uint32_t ToWord(QuantParams p) { return static_cast<uint32_t>(p.scale) | (static_cast<uint32_t>(p.zero) << 16); }
SR_HOST_DEVICE QuantParams FromWord(uint32_t w) {
  return QuantParams{static_cast<uint16_t>(w & 0xffffu), static_cast<uint16_t>(w >> 16)};
}

}  // namespace streamrecon::kv
