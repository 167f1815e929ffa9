/*
Dtype conversions (src/backend/cuda/cast.rs launches them). bf16 and f16
are stored as their 16-bit patterns (unsigned short); conversions use the
PTX cvt instructions (bf16: common.cuh's to_f32 / from_f32), so no
cuda_bf16.h / cuda_fp16.h include is needed and NVRTC compiles this file as
is. cvt.rn.bf16.f32 needs sm_80 or newer.

  f32_to_bf16 / f32_to_f16: round to nearest even (NaN stays NaN),
  bf16_to_f32 / f16_to_f32: exact,
  u32_to_f32: round to nearest (exact below 2^24),
  f32_to_u32: round toward zero, saturating, NaN -> 0 (Rust's `as u32`).
Every kernel: (src, dst, n), block = 256, grid-stride; each dst element is
written once with `=`.
*/
#include "common.cuh"

__device__ __forceinline__ unsigned short f32_to_f16_bits(float x) {
    unsigned short r;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r) : "f"(x));
    return r;
}

__device__ __forceinline__ float f16_bits_to_f32(unsigned short h) {
    float r;
    asm("cvt.f32.f16 %0, %1;" : "=f"(r) : "h"(h));
    return r;
}

#define GRID_STRIDE(n) \
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += gridDim.x * blockDim.x)

extern "C" __global__ void __launch_bounds__(256)
f32_to_bf16(const float* __restrict__ src, unsigned short* __restrict__ dst, int n) {
    GRID_STRIDE(n) { dst[i] = from_f32<bf16_bits>(src[i]).bits; }
}

extern "C" __global__ void __launch_bounds__(256)
f32_to_f16(const float* __restrict__ src, unsigned short* __restrict__ dst, int n) {
    GRID_STRIDE(n) { dst[i] = f32_to_f16_bits(src[i]); }
}

extern "C" __global__ void __launch_bounds__(256)
bf16_to_f32(const unsigned short* __restrict__ src, float* __restrict__ dst, int n) {
    GRID_STRIDE(n) { dst[i] = to_f32(bf16_bits{src[i]}); }
}

extern "C" __global__ void __launch_bounds__(256)
f16_to_f32(const unsigned short* __restrict__ src, float* __restrict__ dst, int n) {
    GRID_STRIDE(n) { dst[i] = f16_bits_to_f32(src[i]); }
}

extern "C" __global__ void __launch_bounds__(256)
u32_to_f32(const unsigned int* __restrict__ src, float* __restrict__ dst, int n) {
    GRID_STRIDE(n) { dst[i] = __uint2float_rn(src[i]); }
}

extern "C" __global__ void __launch_bounds__(256)
f32_to_u32(const float* __restrict__ src, unsigned int* __restrict__ dst, int n) {
    GRID_STRIDE(n) { dst[i] = __float2uint_rz(src[i]); }
}
