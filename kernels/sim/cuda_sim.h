/*
The simulated GPU's device-code header: what the kernel files need from CUDA,
for the host C++ compiler. The simulator (kernels/sim/runtime.cpp) runs every
CUDA thread as a fiber with its own stack, one block at a time, so the
kernels execute as written: barriers wait for the block's live threads,
warp intrinsics exchange values between lanes, __shared__ memory is fresh
and NaN-filled per block. See docs/gpu/simulator.md.

Two things of a .cu file are not C++ and are rewritten by the simulator's
build (tests/common/sim.rs) before this header sees them: __shared__
declarations (static ones become references into the block's shared memory,
`extern __shared__` arrays the launch's dynamic shared memory) and inline PTX
`asm` statements (each known instruction becomes a call of the sim::ptx
function of its name, outputs by pointer, then inputs; an unknown one is a
build error). Everything else is defined here.
*/
#pragma once

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <type_traits>

// ---------------------------------------------------------------------------
// Qualifiers and attributes without meaning on the host.

#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __grid_constant__
// Kernels are the extern "C" functions marked __global__: the build finds
// their names after preprocessing by this attribute.
#define __global__ __attribute__((used))

// ---------------------------------------------------------------------------
// Vector types, with CUDA's alignments.

struct uint3 {
    unsigned int x, y, z;
};
struct alignas(8) float2 {
    float x, y;
};
struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(8) uint2 {
    unsigned int x, y;
};
struct alignas(16) uint4 {
    unsigned int x, y, z, w;
};
struct alignas(16) int4 {
    int x, y, z, w;
};

inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }

static const int warpSize = 32;

// ---------------------------------------------------------------------------
// The simulator's interface (kernels/sim/runtime.cpp).

namespace sim {

struct ThreadView {
    uint3 thread_idx;
    uint3 block_idx;
    uint3 block_dim;
    uint3 grid_dim;
};

// The running thread's indices and its launch's shape.
const ThreadView& view();

// Block barriers: every live thread of the block must arrive at the same
// kind; the result is the reduction of the predicates (count, or, and).
enum BarrierKind { BARRIER_PLAIN = 0, BARRIER_COUNT = 1, BARRIER_OR = 2, BARRIER_AND = 3 };
int block_barrier(BarrierKind kind, int predicate);

// Warp operations: every lane of `mask` must arrive at the same operation
// with the same mask. `value` is this lane's contribution, `source` the lane
// whose value this lane receives (shuffles; -1: keep its own), and the
// result is that value (shuffles) or the mask's predicate bits (ballot).
enum WarpOp { WARP_SYNC = 0, WARP_SHFL = 1, WARP_BALLOT = 2, WARP_COLLECTIVE = 3 };
uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, int source);
// A warp-wide instruction (mma): once every lane of `mask` has arrived,
// `combine` runs once with each lane's `payload` (null outside the mask).
void warp_collective(unsigned mask, void* payload, void (*combine)(void* const* lanes));

// Static __shared__ variable `id` of `bytes` bytes in the running block:
// allocated, NaN-filled, on the block's first use; the same for every thread.
void* shared_static(int id, size_t bytes, size_t align);
// The launch's dynamic shared memory (NaN-filled per block).
void* shared_dynamic();

// Stops the launch with a message naming the fault (never returns).
[[noreturn]] void fatal(const char* what);

template <typename T>
T& shared_static_as(int id) {
    return *static_cast<T*>(shared_static(id, sizeof(T), alignof(T)));
}

// Inline PTX the kernels use, with the semantics of the PTX ISA.
namespace ptx {

inline uint32_t f32_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

inline float f32_from_bits(uint32_t u) {
    float x;
    memcpy(&x, &u, 4);
    return x;
}

// cvt.rn.bf16.f32: round to nearest, ties to even; NaN to the canonical
// bf16 NaN (0x7FFF).
inline unsigned short bf16_rne(float x) {
    const uint32_t u = f32_bits(x);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) {
        return 0x7FFF;
    }
    const uint32_t rounding = 0x7FFFu + ((u >> 16) & 1u);
    return (unsigned short)((u + rounding) >> 16);
}
inline void cvt_rn_bf16_f32(unsigned short* out, float x) { *out = bf16_rne(x); }

// cvt.rn.f16.f32: IEEE binary16, round to nearest even, overflow to inf,
// subnormals kept, NaN to the canonical f16 NaN (0x7FFF).
inline unsigned short f16_rne(float x) {
    const uint32_t u = f32_bits(x);
    const uint32_t sign = (u >> 16) & 0x8000u;
    const uint32_t abs = u & 0x7FFFFFFFu;
    if (abs > 0x7F800000u) {
        return 0x7FFF;
    }
    if (abs >= 0x477FF000u) {  // rounds to 65520 or more: infinity
        return (unsigned short)(sign | 0x7C00u);
    }
    if (abs < 0x38800000u) {  // below 2^-14: a subnormal half (or zero)
        if (abs < 0x33000000u) {  // below 2^-25: rounds to zero (ties to even)
            return (unsigned short)sign;
        }
        const uint32_t exp = abs >> 23;
        const uint32_t mant = (abs & 0x7FFFFFu) | 0x800000u;
        const uint32_t shift = 126u - exp;  // 14 - (exp - 127) + 13 - 1 + 1
        const uint32_t half_ulp = 1u << (shift - 1);
        uint32_t q = mant >> shift;
        const uint32_t rem = mant & ((1u << shift) - 1u);
        if (rem > half_ulp || (rem == half_ulp && (q & 1u))) {
            q += 1;
        }
        return (unsigned short)(sign | q);
    }
    // Normal: rebias the exponent (127 -> 15) and round the mantissa to 10 bits.
    uint32_t v = abs - 0x38000000u;
    const uint32_t rem = v & 0x1FFFu;
    v >>= 13;
    if (rem > 0x1000u || (rem == 0x1000u && (v & 1u))) {
        v += 1;
    }
    return (unsigned short)(sign | v);
}
inline void cvt_rn_f16_f32(unsigned short* out, float x) { *out = f16_rne(x); }

// cvt.f32.f16: exact widening.
inline float f16_widen(unsigned short h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1Fu;
    uint32_t mant = h & 0x3FFu;
    if (exp == 0x1Fu) {
        return f32_from_bits(sign | 0x7F800000u | (mant << 13));
    }
    if (exp == 0) {
        if (mant == 0) {
            return f32_from_bits(sign);
        }
        int e = -1;
        do {
            e++;
            mant <<= 1;
        } while ((mant & 0x400u) == 0);
        return f32_from_bits(sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3FFu) << 13));
    }
    return f32_from_bits(sign | ((exp + 112u) << 23) | (mant << 13));
}
inline void cvt_f32_f16(float* out, unsigned short h) { *out = f16_widen(h); }

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32: the warp computes
// D (16 x 8) = A (16 x 16) B (16 x 8) + C, each lane holding the fragments
// of the PTX ISA's layout (kernels/sim/runtime.cpp).
void mma_sync_aligned_m16n8k16_row_col_f32_bf16_bf16_f32(float* d0, float* d1, float* d2, float* d3, uint32_t a0,
                                                         uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                                         uint32_t b1, float c0, float c1, float c2, float c3);

}  // namespace ptx
}  // namespace sim

#define threadIdx (::sim::view().thread_idx)
#define blockIdx (::sim::view().block_idx)
#define blockDim (::sim::view().block_dim)
#define gridDim (::sim::view().grid_dim)

// ---------------------------------------------------------------------------
// Barriers and warp intrinsics.

inline void __syncthreads() { ::sim::block_barrier(::sim::BARRIER_PLAIN, 0); }
inline int __syncthreads_count(int p) { return ::sim::block_barrier(::sim::BARRIER_COUNT, p != 0); }
inline int __syncthreads_or(int p) { return ::sim::block_barrier(::sim::BARRIER_OR, p != 0); }
inline int __syncthreads_and(int p) { return ::sim::block_barrier(::sim::BARRIER_AND, p != 0); }
inline void __syncwarp(unsigned mask = 0xFFFFFFFFu) { ::sim::warp_op(::sim::WARP_SYNC, mask, 0, -1); }
// Blocks run one after another on one host thread, so every global write is
// visible to the blocks that run after it: the fence has nothing to order.
inline void __threadfence() {}

namespace sim {

inline int lane_id() { return (int)((view().thread_idx.x + view().thread_idx.y * view().block_dim.x +
                                     view().thread_idx.z * view().block_dim.x * view().block_dim.y) &
                                    31u); }

template <typename T>
T shuffle(unsigned mask, T v, int source) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffles move up to 8 bytes");
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof(T));
    const uint64_t got = warp_op(WARP_SHFL, mask, bits, source);
    T out;
    memcpy(&out, &got, sizeof(T));
    return out;
}

// The source lane of a shuffle in segments of `width` lanes; -1 (keep the
// own value) where CUDA's rules give the lane its own value back.
inline int segment_source(int lane, int target, int width, bool clamp_to_segment) {
    const int base = lane & ~(width - 1);
    if (clamp_to_segment && (target < base || target >= base + width)) {
        return -1;
    }
    return base + (target & (width - 1));
}

}  // namespace sim

template <typename T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    const int lane = ::sim::lane_id();
    return ::sim::shuffle(mask, v, ::sim::segment_source(lane, src, width, false));
}

template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    const int lane = ::sim::lane_id();
    const int target = lane ^ lane_mask;
    return ::sim::shuffle(mask, v, ::sim::segment_source(lane, target, width, true));
}

template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    const int lane = ::sim::lane_id();
    return ::sim::shuffle(mask, v, ::sim::segment_source(lane, lane + (int)delta, width, true));
}

template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    const int lane = ::sim::lane_id();
    return ::sim::shuffle(mask, v, ::sim::segment_source(lane, lane - (int)delta, width, true));
}

inline unsigned __ballot_sync(unsigned mask, int p) {
    return (unsigned)::sim::warp_op(::sim::WARP_BALLOT, mask, p != 0, -1);
}
inline int __any_sync(unsigned mask, int p) { return __ballot_sync(mask, p) != 0; }
inline int __all_sync(unsigned mask, int p) { return __ballot_sync(mask, p) == mask; }

// ---------------------------------------------------------------------------
// Atomics. Threads are fibers of one host thread that switch only at
// barriers and warp operations, so a read-modify-write is never interleaved.

template <typename T>
T atomicAdd(T* p, T v) {
    const T old = *p;
    *p = old + v;
    return old;
}
template <typename T>
T atomicMax(T* p, T v) {
    const T old = *p;
    *p = old < v ? v : old;
    return old;
}
template <typename T>
T atomicMin(T* p, T v) {
    const T old = *p;
    *p = v < old ? v : old;
    return old;
}
template <typename T>
T atomicExch(T* p, T v) {
    const T old = *p;
    *p = v;
    return old;
}
template <typename T>
T atomicCAS(T* p, T compare, T v) {
    const T old = *p;
    if (old == compare) {
        *p = v;
    }
    return old;
}

// ---------------------------------------------------------------------------
// Conversions, bit casts, loads and stores, math.

inline float __int_as_float(int x) { float f; memcpy(&f, &x, 4); return f; }
inline int __float_as_int(float x) { int i; memcpy(&i, &x, 4); return i; }
inline float __uint_as_float(unsigned x) { float f; memcpy(&f, &x, 4); return f; }
inline unsigned __float_as_uint(float x) { unsigned u; memcpy(&u, &x, 4); return u; }

// Round toward zero, NaN to 0, out of range saturated (as the PTX cvt.rzi).
inline unsigned __float2uint_rz(float x) {
    if (!(x > 0.0f)) {
        return 0u;
    }
    if (x >= 4294967296.0f) {
        return 0xFFFFFFFFu;
    }
    return (unsigned)x;
}
inline int __float2int_rz(float x) {
    if (x != x) {
        return 0;
    }
    if (x >= 2147483648.0f) {
        return 0x7FFFFFFF;
    }
    if (x <= -2147483648.0f) {
        return (int)0x80000000u;
    }
    return (int)x;
}
// Round to nearest even (the host default rounding mode).
inline float __uint2float_rn(unsigned x) { return (float)x; }
inline float __int2float_rn(int x) { return (float)x; }

template <typename T>
inline void __stwb(T* p, T v) { *p = v; }
template <typename T>
inline T __ldg(const T* p) { return *p; }

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : (x == x ? x : 0.0f)); }

// Registers the module's kernels with the simulator; the build appends one
// SIM_KERNELS(...) line to each translation unit.
namespace sim {
using Body = void (*)(void* const* params, void* fn);
bool register_kernel(const char* module, const char* name, void* fn, Body body, int params);

template <typename... Args, size_t... I>
void invoke_impl(void (*f)(Args...), void* const* params, std::index_sequence<I...>) {
    f(*static_cast<std::remove_cv_t<std::remove_reference_t<Args>>*>(params[I])...);
}

template <typename... Args>
struct Kernel {
    static void body(void* const* params, void* fn) {
        invoke_impl(reinterpret_cast<void (*)(Args...)>(fn), params, std::index_sequence_for<Args...>{});
    }
};

template <typename... Args>
bool register_fn(const char* module, const char* name, void (*f)(Args...)) {
    return register_kernel(module, name, reinterpret_cast<void*>(f), &Kernel<Args...>::body, (int)sizeof...(Args));
}
}  // namespace sim

#define SIM_KERNEL(module, name) static const bool sim_registered_##name = ::sim::register_fn(module, #name, &name);
