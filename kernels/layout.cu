/*
Data movement on dense row-major buffers: permute, narrow and concat
(src/backend/cuda/layout.rs launches them). These copy bits and never
compute or convert, so they work on copy words, not elements: the host
views both buffers as words of 2, 4, 8 or 16 bytes (the widest that divides
the contiguous run each op moves, see layout.rs) and picks the instance
_b16 (unsigned short), _b32 (unsigned int), _b64 (uint2) or _b128 (uint4).
A permute that keeps the innermost dims of a 64-wide bf16 head, or a
concat of 512-wide rows, thus moves 16-byte words: one ld.global.v4 and
one st.global.v4 per thread, and one index computation per 16 bytes.

1. permute_<w>(x, out, n, map): out[i] = x[a(i)] over n words, map.dims the
   output dims in words (the kept innermost dims merged into one, counted
   in words) and map.a the input strides in words. block = 256,
   grid-stride over output words: consecutive threads write consecutive
   words, and read consecutive words within each contiguous run.
2. block_copy_<w>(src, dst, outer, rows, inner, src_rows, src_start,
   dst_rows, dst_start): views both buffers as [outer, *_rows, inner] words
   and copies rows [src_start, src_start + rows) of src to rows
   [dst_start, dst_start + rows) of dst:
   dst[o, dst_start + j, k] = src[o, src_start + j, k].
   narrow is one launch (dst_start = 0, dst_rows = rows); concat is one
   launch per part into the shared output. block = 256, grid-stride over
   outer * rows * inner words.
Each destination word is written once with `=`; no arithmetic. Buffers are
whole pool allocations (256-byte aligned), so every word is aligned.
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

DEFINE_LAYOUT_KERNELS(b16, unsigned short)
DEFINE_LAYOUT_KERNELS(b32, unsigned int)
DEFINE_LAYOUT_KERNELS(b64, uint2)
DEFINE_LAYOUT_KERNELS(b128, uint4)
