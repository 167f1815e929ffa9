/*
Broadcast reductions and expansions: sum_to and broadcast_to
(src/backend/cuda/elementwise.rs launches them).

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
