/*
Data movement on dense row-major buffers: permute, narrow and concat
(src/backend/cuda/layout.rs launches them). These copy bits and never
compute, so each comes in two widths: _b32 (f32 and u32) and _b16 (bf16 and
f16), and no dtype is converted.

1. permute_b32 / permute_b16(x, out, n, map): out[i] = x[a(i)] with
   map.dims the output dims and map.a the input strides of the permuted
   dims. block = 256, grid-stride over outputs.
2. block_copy_b32 / block_copy_b16(src, dst, outer, rows, inner, src_rows,
   src_start, dst_rows, dst_start): views both buffers as
   [outer, *_rows, inner] and copies rows [src_start, src_start + rows) of
   src to rows [dst_start, dst_start + rows) of dst:
   dst[o, dst_start + j, k] = src[o, src_start + j, k].
   narrow is one launch (dst_start = 0, dst_rows = rows); concat is one
   launch per part into the shared output. block = 256, grid-stride over
   outer * rows * inner elements.
Each destination element is written once with `=`; no arithmetic.
*/
#include "common.cuh"

#define DEFINE_LAYOUT_KERNELS(SUFFIX, T)                                                        \
    extern "C" __global__ void __launch_bounds__(256)                                           \
    permute_##SUFFIX(const T* __restrict__ x, T* __restrict__ out, int n, IndexMap map) {       \
        const int stride = gridDim.x * blockDim.x;                                              \
        for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {               \
            out[i] = x[map_offset_a(i, map)];                                                   \
        }                                                                                       \
    }                                                                                           \
    extern "C" __global__ void __launch_bounds__(256)                                           \
    block_copy_##SUFFIX(const T* __restrict__ src, T* __restrict__ dst, int outer, int rows,    \
                        int inner, int src_rows, int src_start, int dst_rows, int dst_start) {  \
        const long long n = (long long)outer * rows * inner;                                    \
        const long long stride = (long long)gridDim.x * blockDim.x;                             \
        for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;             \
             i += stride) {                                                                     \
            const long long k = i % inner;                                                      \
            const long long j = (i / inner) % rows;                                             \
            const long long o = i / ((long long)inner * rows);                                  \
            dst[(o * dst_rows + dst_start + j) * inner + k] =                                   \
                src[(o * src_rows + src_start + j) * inner + k];                                \
        }                                                                                       \
    }

DEFINE_LAYOUT_KERNELS(b32, unsigned int)
DEFINE_LAYOUT_KERNELS(b16, unsigned short)
