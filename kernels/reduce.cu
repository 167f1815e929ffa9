/*
Broadcast reductions and expansions: sum_to and broadcast_to
(src/backend/cuda/reduce.rs launches them).

1. sum_to(x, out, out_len, reduced_len, kept, reduced)
   Sums x over the dims that the output does not keep.
   kept.dims / kept.a: the kept dims (output order) and their input strides;
   reduced.dims / reduced.a: the summed-over dims and their input strides.
   grid = min(out_len, 65535) blocks (grid-stride over outputs), block = 256.
   Thread t of a block sums the reduced elements t, t + 256, ... (row-major
   order over reduced.dims) in f32, then block_sum combines the 256 partial
   sums in its fixed order; thread 0 WRITES out[o] with `=`.
   Deterministic (fixed order for a given launch shape, no atomics); the
   CPU reference sums in f64, so results agree to f32 rounding, not bits.
2. broadcast_copy(x, out, n, map): out[i] = x[a(i)], map.dims the output
   dims, map.a the broadcast strides of x (0 on repeated dims).
   block = 256, grid-stride.
3. column_partials(x, partials, rows, cols, rows_per_chunk): x is [rows,
   cols]; grid = (ceil(cols / 256), chunks), block = 256: thread j of chunk
   c sums x[r, j] over rows [c * rows_per_chunk, ...) in row order and
   WRITES partials[c * cols + j]. Consecutive threads read consecutive
   columns, so every read is coalesced (sum_to's kernel 1 reads a column
   with a stride of cols when the kept dims are innermost: bias gradients).
4. column_sum(partials, out, chunks, cols), also column_sum_bf16 (bf16
   out): thread per column j sums partials[0..chunks][j] in chunk order;
   WRITES out[j]. After 3 it finishes sum_to's column sums; it also adds up
   layernorm.cu's dgamma/dbeta partials.
3 and 4 are deterministic: fixed order for a given shape, no atomics.
*/
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(256)
sum_to(const float* __restrict__ x, float* __restrict__ out, int out_len, int reduced_len,
       IndexMap kept, IndexMap reduced) {
    __shared__ float scratch[32];
    for (int o = blockIdx.x; o < out_len; o += gridDim.x) {
        const long long base = map_offset_a(o, kept);
        float acc = 0.0f;
        for (int r = threadIdx.x; r < reduced_len; r += blockDim.x) {
            acc += x[base + map_offset_a(r, reduced)];
        }
        acc = block_sum(acc, scratch);
        if (threadIdx.x == 0) {
            out[o] = acc;
        }
    }
}

extern "C" __global__ void __launch_bounds__(256)
broadcast_copy(const float* __restrict__ x, float* __restrict__ out, int n, IndexMap map) {
    const int stride = gridDim.x * blockDim.x;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        out[i] = x[map_offset_a(i, map)];
    }
}

extern "C" __global__ void __launch_bounds__(256)
column_partials(const float* __restrict__ x, float* __restrict__ partials, int rows, int cols, int rows_per_chunk) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= cols) {
        return;
    }
    const int chunk = blockIdx.y;
    // 64-bit: (chunk + 1) * rows_per_chunk may pass 2^31 in the last chunk.
    const int end = (int)min((long long)rows, (long long)(chunk + 1) * rows_per_chunk);
    float s = 0.0f;
    for (int r = chunk * rows_per_chunk; r < end; ++r) {
        s += x[(long long)r * cols + j];
    }
    partials[(long long)chunk * cols + j] = s;
}

template <typename T>
__device__ __forceinline__ void column_sum_impl(const float* __restrict__ partials, T* __restrict__ out, int chunks,
                                                int cols) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= cols) {
        return;
    }
    float s = 0.0f;
    for (int c = 0; c < chunks; ++c) {
        s += partials[(long long)c * cols + j];
    }
    out[j] = from_f32<T>(s);
}

#define COLUMN_SUM(T, NAME) \
    extern "C" __global__ void __launch_bounds__(256) \
    NAME( \
        const float* __restrict__ partials, T* __restrict__ out, int chunks, int cols \
    ) { \
        column_sum_impl(partials, out, chunks, cols); \
    }
COLUMN_SUM(float, column_sum)
COLUMN_SUM(bf16_bits, column_sum_bf16)
