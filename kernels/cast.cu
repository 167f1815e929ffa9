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
Every kernel: (src, dst, n), block = 256, grid = ceil(n / 4 / 256) capped
at 65535, grid-stride over groups of 4 elements (16-byte f32/u32 accesses,
8-byte 16-bit ones), the last n % 4 elements singly; each dst element is
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

// Four consecutive elements: one 16-byte access for 4-byte types, one
// 8-byte access for 16-bit ones.
template <typename T>
struct alignas(4 * sizeof(T)) Quad {
    T v[4];
};

// dst[i] = convert(src[i]) for i < n, four elements per thread and
// iteration (both buffers are whole pool allocations, so quads are
// aligned), then the last n % 4 one each.
template <typename S, typename D, typename Convert>
__device__ __forceinline__ void cast_impl(const S* __restrict__ src, D* __restrict__ dst, int n, Convert convert) {
    const int tid = blockIdx.x * blockDim.x + threadIdx.x;
    const int stride = gridDim.x * blockDim.x;
    const int quads = n / 4;
    for (int q = tid; q < quads; q += stride) {
        const Quad<S> in = reinterpret_cast<const Quad<S>*>(src)[q];
        Quad<D> out;
#pragma unroll
        for (int k = 0; k < 4; ++k) out.v[k] = convert(in.v[k]);
        reinterpret_cast<Quad<D>*>(dst)[q] = out;
    }
    const long long i = (long long)quads * 4 + tid;  // may pass 2^31 near n = 2^31
    if (i < n) {
        dst[i] = convert(src[i]);
    }
}

#define CAST(NAME, S, D, EXPR) \
    extern "C" __global__ void __launch_bounds__(256) NAME(const S* __restrict__ src, D* __restrict__ dst, int n) { \
        cast_impl(src, dst, n, [](S x) -> D { return EXPR; }); \
    }

CAST(f32_to_bf16, float, unsigned short, from_f32<bf16_bits>(x).bits)
CAST(f32_to_f16, float, unsigned short, f32_to_f16_bits(x))
CAST(bf16_to_f32, unsigned short, float, to_f32(bf16_bits{x}))
CAST(f16_to_f32, unsigned short, float, f16_bits_to_f32(x))
CAST(u32_to_f32, unsigned int, float, __uint2float_rn(x))
CAST(f32_to_u32, float, unsigned int, __float2uint_rz(x))
