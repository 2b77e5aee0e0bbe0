// Device helpers shared by the KV-cache kernels: bf16 bit conversions, the asymmetric min-max
// quantiser (core/kv/quantizer.h, the same code as the CPU reference's), exp2, ldmatrix and the
// m16n8k16 MMA of the attention kernels, code unpacking and the 64-point Hadamard.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "core/kv/quantizer.h"
#include "kernels/kv_kernels.h"

namespace streamrecon::kernels {

constexpr int kHeadDim = 64;  // the kernels are specialised for the model family's head dimension

__device__ __forceinline__ float Bf16BitsToFloat(uint16_t b) { return __uint_as_float(static_cast<uint32_t>(b) << 16); }
__device__ __forceinline__ uint16_t FloatToBf16Bits(float x) { return __bfloat16_as_ushort(__float2bfloat16_rn(x)); }
using kv::FloatToHalfBits;
using kv::HalfBitsToFloat;

// The shared quantiser (core/kv/quantizer.h) on parameters held as one word: scale | zero << 16.
__device__ __forceinline__ uint32_t MakeQuantParams(float lo, float hi, int bits) { return kv::ToWord(kv::MakeQuantParams(lo, hi, bits)); }
__device__ __forceinline__ float ParamScale(uint32_t p) { return HalfBitsToFloat(static_cast<uint16_t>(p & 0xffff)); }
__device__ __forceinline__ float ParamZero(uint32_t p) { return HalfBitsToFloat(static_cast<uint16_t>(p >> 16)); }
__device__ __forceinline__ uint32_t QuantizeValue(float x, uint32_t params, int bits) {
  return kv::QuantizeValue(x, kv::FromWord(params), bits);
}
__device__ __forceinline__ float DequantizeValue(uint32_t code, uint32_t params) { return kv::DequantizeValue(code, kv::FromWord(params)); }

// 2^x with the hardware approximation (ex2.approx; 2^-inf = 0).
__device__ __forceinline__ float FastExp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Four 8x8 matrices of 16-bit elements from shared memory (lanes 8i..8i+7 address matrix i's rows).
__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], const void* smem_ptr) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem_ptr));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}

// Two floats as a bf16 pair (lo in the low half).
__device__ __forceinline__ uint32_t PackBf16x2(float lo, float hi) {
  return static_cast<uint32_t>(FloatToBf16Bits(lo)) | (static_cast<uint32_t>(FloatToBf16Bits(hi)) << 16);
}

// Eight bf16 channels of a 16-byte piece as floats (channel 2j in the low half of word j), and back.
struct Bf16x8 {
  float v[8];
};

__device__ __forceinline__ Bf16x8 Unpack8(const uint4& u) {
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
  Bf16x8 x;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    x.v[2 * j] = Bf16BitsToFloat(static_cast<uint16_t>(w[j] & 0xffffu));
    x.v[2 * j + 1] = Bf16BitsToFloat(static_cast<uint16_t>(w[j] >> 16));
  }
  return x;
}

__device__ __forceinline__ uint4 Pack8(const Bf16x8& x) {
  return make_uint4(PackBf16x2(x.v[0], x.v[1]), PackBf16x2(x.v[2], x.v[3]), PackBf16x2(x.v[4], x.v[5]), PackBf16x2(x.v[6], x.v[7]));
}

// D = A B + D on tensor cores, m16n8k16 with float accumulation: fp16 operands (kHalf) or bf16.
template <bool kHalf>
__device__ __forceinline__ void Mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if (kHalf) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// The same, each matrix transposed (the B operand of P V from row-major V).
__device__ __forceinline__ void LdMatrixX4Trans(uint32_t (&r)[4], const void* smem_ptr) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem_ptr));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}

// v reduced by `op` over the four lanes of a quad (lanes 4i..4i+3: the threads that hold one row
// of an MMA tile's accumulators); every lane of the quad gets the result.
template <class T, class Op>
__device__ __forceinline__ T QuadReduce(T v, Op op) {
  v = op(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return op(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float QuadMax(float v) { return QuadReduce(v, [](float a, float b) { return fmaxf(a, b); }); }
__device__ __forceinline__ float QuadSum(float v) { return QuadReduce(v, [](float a, float b) { return a + b; }); }

// Normalised Hadamard transform of a 64-vector held as (x0, x1) = channels (2l, 2l+1) of lane l.
__device__ __forceinline__ void WarpHadamard64(float& x0, float& x1, int lane) {
  float a = x0 + x1, b = x0 - x1;  // stage len = 1 (within the lane)
  x0 = a;
  x1 = b;
#pragma unroll
  for (int m = 1; m < 32; m <<= 1) {  // stages len = 2m: partner lane l ^ m
    const float p0 = __shfl_xor_sync(0xffffffffu, x0, m), p1 = __shfl_xor_sync(0xffffffffu, x1, m);
    const bool upper = lane & m;
    x0 = upper ? p0 - x0 : x0 + p0;
    x1 = upper ? p1 - x1 : x1 + p1;
  }
  x0 *= 0.125f;
  x1 *= 0.125f;
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

// The K and V codes of channels c .. c + 7 of page row `row` ((page * H + head) * slots + slot) of
// packed pages of kBits bits (a row holds 64 codes).
template <int kBits>
__device__ __forceinline__ void LoadCodes(const uint8_t* k_codes, const uint8_t* v_codes, int64_t row, int c, uint32_t& kc, uint32_t& vc) {
  constexpr int kRowBytes = kHeadDim * kBits / 8;
  if (kBits == 4) {
    kc = *reinterpret_cast<const uint32_t*>(k_codes + row * kRowBytes + c / 2);
    vc = *reinterpret_cast<const uint32_t*>(v_codes + row * kRowBytes + c / 2);
  } else {
    kc = *reinterpret_cast<const uint16_t*>(k_codes + row * kRowBytes + c / 4);
    vc = *reinterpret_cast<const uint16_t*>(v_codes + row * kRowBytes + c / 4);
  }
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

// Eight fp16 values (as computed by DequantizeEight) rounded to bf16, the dtype of the expanded
// rows, the queries and the output: no conversions around the attention call.
__device__ __forceinline__ uint4 Half8ToBf16(uint4 h) {
  uint32_t w[4] = {h.x, h.y, h.z, h.w};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&w[j]));
    const __nv_bfloat162 b = __floats2bfloat162_rn(f.x, f.y);
    w[j] = *reinterpret_cast<const uint32_t*>(&b);
  }
  return make_uint4(w[0], w[1], w[2], w[3]);
}

// Channels c .. c + 7 of slot `slot` of page `page` (pages of `heads` heads), head `head`,
// dequantized by DequantizeEight and rounded to bf16: the K and V pieces of the expanded rows.
template <int kBits>
__device__ __forceinline__ void DequantizeSlotBf16(const PagesView& pv, int heads, int page, int head, int slot, int c, uint4& k_out,
                                                   uint4& v_out) {
  const int64_t row = (static_cast<int64_t>(page) * heads + head) * pv.slots + slot;
  uint32_t kc, vc;
  LoadCodes<kBits>(pv.k_codes, pv.v_codes, row, c, kc, vc);
  const uint4* kp = reinterpret_cast<const uint4*>(pv.k_params + (static_cast<int64_t>(page) * heads + head) * kHeadDim + c);
  const uint4 kpar[2] = {kp[0], kp[1]};
  // (v_group divides 64 and is at least 8: 8, 16, 32 or 64, so shifts instead of divisions)
  static_assert(kHeadDim == 64, "6 = log2 of the head dimension below");
  const int v_shift = __ffs(pv.v_group) - 1;
  const uint32_t vp = pv.v_params[(row << (6 - v_shift)) + (c >> v_shift)];
  const float norm = pv.norms ? pv.norms[static_cast<int64_t>(page) * pv.slots + slot] : 1.0f;
  DequantizeEight<kBits>(kc, kpar, vc, vp, norm, k_out, v_out);
  k_out = Half8ToBf16(k_out);
  v_out = Half8ToBf16(v_out);
}

}  // namespace streamrecon::kernels
