/*
Shared device helpers for the kernels/<op>.cu files (included as "common.cuh"; the NVRTC
fallback pastes this file in place of the #include line).

* warp_sum / warp_max: xor-butterfly over the 32 lanes of a full warp; every
  lane gets the same bits. (Both are warp_reduce with SumOp / MaxOp, and
  the block versions block_reduce.)
* block_sum / block_max: blockDim.x a multiple of 32, <= 1024; every thread
  of the block must call them (they contain __syncthreads) and every thread
  gets the result. The order of additions is fixed by the launch shape:
  per-warp butterflies, then warp 0's partials in warp order, so a result is
  bit-identical from run to run. `scratch` is a __shared__ float[32]; it may
  be reused by the next call (the leading barrier protects it).
* IndexMap: up to 8 dims with two sets of element strides, passed by value
  (the Rust side mirrors it as #[repr(C)] struct IndexMap). map_offset_a
  and map_offsets turn a row-major linear index over `dims` into offsets
  with strides a (and b).
* Storage types of the templated kernels: float, and bf16_bits (a bf16
  stored as its 16-bit pattern, wrapped so templates tell it from other
  16-bit types; the Rust side passes u16 buffers). to_f32 widens exactly;
  from_f32<T> rounds to nearest even with the PTX cvt instruction (sm_80+;
  no cuda_bf16.h, so NVRTC compiles the files as they are). Pack16<T> views
  16 bytes as 4 floats or 8 bf16 for 16-byte loads and stores. A kernel
  with both instances is a template `<name>_impl`, and a macro per kernel
  defines the extern "C" entry points `<name>` (float) and `<name>_bf16`
  (extern "C" functions cannot be templates; the host picks one by name).
* FOR_WARP_ROWS / Group<T, W> / for_lane_groups<W>: the warp-per-row
  kernels' rows and row walk, in groups of W elements (16-byte accesses
  when W is Pack16<T>::lanes).
*/
#pragma once

#define MAX_RANK 8

struct bf16_bits {
    unsigned short bits;
};

__device__ __forceinline__ float to_f32(float x) {
    return x;
}

__device__ __forceinline__ float to_f32(bf16_bits x) {
    return __uint_as_float(((unsigned int)x.bits) << 16);
}

template <typename T>
__device__ __forceinline__ T from_f32(float x);

template <>
__device__ __forceinline__ float from_f32<float>(float x) {
    return x;
}

template <>
__device__ __forceinline__ bf16_bits from_f32<bf16_bits>(float x) {
    bf16_bits r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r.bits) : "f"(x));
    return r;
}

template <typename T>
union Pack16 {
    static constexpr int lanes = 16 / sizeof(T);
    uint4 raw;
    T v[16 / sizeof(T)];
};

struct IndexMap {
    int rank;
    int dims[MAX_RANK];
    int a[MAX_RANK];
    int b[MAX_RANK];
};

// The loops run over the compile-time MAX_RANK with a guard, so every dims[]
// and stride index is a constant and the IndexMap stays in the parameter
// bank (a dynamic index would copy it to local memory).
__device__ __forceinline__ long long map_offset_a(long long i, const IndexMap& m) {
    long long off = 0;
#pragma unroll
    for (int d = MAX_RANK - 1; d >= 0; --d) {
        if (d < m.rank) {
            const long long size = m.dims[d];
            off += (i % size) * m.a[d];
            i /= size;
        }
    }
    return off;
}

// Both offsets of one linear index, sharing the divisions.
__device__ __forceinline__ void map_offsets(long long i, const IndexMap& m, long long& off_a, long long& off_b) {
    off_a = 0;
    off_b = 0;
#pragma unroll
    for (int d = MAX_RANK - 1; d >= 0; --d) {
        if (d < m.rank) {
            const long long size = m.dims[d];
            const long long idx = i % size;
            off_a += idx * m.a[d];
            off_b += idx * m.b[d];
            i /= size;
        }
    }
}

__device__ __forceinline__ float neg_inf() {
    return -__int_as_float(0x7f800000);
}

struct SumOp {
    __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
    static __device__ __forceinline__ float identity() { return 0.0f; }
};

struct MaxOp {
    __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
    static __device__ __forceinline__ float identity() { return neg_inf(); }
};

template <typename Op>
__device__ __forceinline__ float warp_reduce(float v, Op op) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
    }
    return v;
}

template <typename Op>
__device__ __forceinline__ float block_reduce(float v, float* scratch, Op op) {
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int num_warps = blockDim.x >> 5;
    v = warp_reduce(v, op);
    __syncthreads();
    if (lane == 0) {
        scratch[warp] = v;
    }
    __syncthreads();
    v = lane < num_warps ? scratch[lane] : Op::identity();
    return warp_reduce(v, op);
}

__device__ __forceinline__ float warp_sum(float v) {
    return warp_reduce(v, SumOp());
}

__device__ __forceinline__ float warp_max(float v) {
    return warp_reduce(v, MaxOp());
}

__device__ __forceinline__ float block_sum(float v, float* scratch) {
    return block_reduce(v, scratch, SumOp());
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
    return block_reduce(v, scratch, MaxOp());
}

// W consecutive elements of a row, widened to f32: one 16-byte access when
// W is Pack16<T>::lanes (the caller guarantees 16-byte alignment), else W
// scalar accesses.
template <typename T, int W>
struct Group {
    float v[W];

    __device__ __forceinline__ void load(const T* __restrict__ p) {
        if constexpr (W == Pack16<T>::lanes) {
            Pack16<T> q;
            q.raw = *reinterpret_cast<const uint4*>(p);
#pragma unroll
            for (int k = 0; k < W; ++k) v[k] = to_f32(q.v[k]);
        } else {
#pragma unroll
            for (int k = 0; k < W; ++k) v[k] = to_f32(p[k]);
        }
    }

    __device__ __forceinline__ void store(T* __restrict__ p) const {
        if constexpr (W == Pack16<T>::lanes) {
            Pack16<T> q;
#pragma unroll
            for (int k = 0; k < W; ++k) q.v[k] = from_f32<T>(v[k]);
            *reinterpret_cast<uint4*>(p) = q.raw;
        } else {
#pragma unroll
            for (int k = 0; k < W; ++k) p[k] = from_f32<T>(v[k]);
        }
    }
};

// Calls f(j) for the groups [j, j + W) of a row of `cols` elements that
// this warp lane owns: lane l takes groups l, l + 32, ..., so a warp reads
// 32 consecutive groups at a time (coalesced). W divides cols.
template <int W, typename F>
__device__ __forceinline__ void for_lane_groups(int cols, F f) {
    for (int j = (threadIdx.x & 31) * W; j < cols; j += 32 * W) {
        f(j);
    }
}

// for_lane_groups over two rows at once: f(j, a's group, b's group).
template <typename T, int W, typename F>
__device__ __forceinline__ void for_lane_group_pairs(const T* __restrict__ a, const T* __restrict__ b, int cols, F f) {
    for_lane_groups<W>(cols, [&](int j) {
        Group<T, W> ga, gb;
        ga.load(a + j);
        gb.load(b + j);
        f(j, ga, gb);
    });
}

// ... and over three: f(j, a's group, b's group, c's group).
template <typename T, int W, typename F>
__device__ __forceinline__ void for_lane_group_triples(const T* __restrict__ a, const T* __restrict__ b,
                                                       const T* __restrict__ c, int cols, F f) {
    for_lane_groups<W>(cols, [&](int j) {
        Group<T, W> ga, gb, gc;
        ga.load(a + j);
        gb.load(b + j);
        gc.load(c + j);
        f(j, ga, gb, gc);
    });
}

// The rows a warp owns in a warp-per-row kernel: one row per warp of the
// block, grid-stride over the rest.
#define FOR_WARP_ROWS(row, rows) \
    for (int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); row < (rows); \
         row += gridDim.x * (blockDim.x >> 5))

__device__ __forceinline__ bool aligned16(const void* p) {
    return (reinterpret_cast<unsigned long long>(p) & 15ull) == 0ull;
}
