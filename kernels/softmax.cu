/*
Row softmax over `cols` contiguous f32 values and its backward
(src/backend/cuda/softmax.rs launches them), as src/backend/cpu/norm.rs:
max-subtracted exp, a row that is all -inf gives zeros.

One warp per row, 8 rows per block (256 threads), grid =
min(ceil(rows / 8), 65535), grid-stride over rows: the rows here are short
(the decoupling's 49 or 64 spatial positions), which a block of 256 threads
per row mostly left idle. Lane l reads the groups l, l + 32, ... of its
row: float4 groups when cols is a multiple of 4, else single elements.
1. softmax_forward(x, y, rows, cols): warp_max, warp_sum of the exps,
   then WRITES y = exp(x - max) / sum (the exps computed twice, so y is
   only written).
2. softmax_backward(y, grad, dx, rows, cols): dot = warp_sum(y * grad);
   WRITES dx = y * (grad - dot).
f32, fixed reduction order, no atomics.
*/
#include "common.cuh"

template <int W>
__device__ __forceinline__ void softmax_row(const float* __restrict__ xr, float* __restrict__ yr, int cols) {
    float m = neg_inf();
    for_lane_groups<W>(cols, [&](int j) {
        Group<float, W> x;
        x.load(xr + j);
#pragma unroll
        for (int k = 0; k < W; ++k) m = fmaxf(m, x.v[k]);
    });
    m = warp_max(m);
    if (m == neg_inf()) {
        for_lane_groups<W>(cols, [&](int j) {
            Group<float, W> zero;
#pragma unroll
            for (int k = 0; k < W; ++k) zero.v[k] = 0.0f;
            zero.store(yr + j);
        });
        return;
    }
    float s = 0.0f;
    for_lane_groups<W>(cols, [&](int j) {
        Group<float, W> x;
        x.load(xr + j);
#pragma unroll
        for (int k = 0; k < W; ++k) s += expf(x.v[k] - m);
    });
    const float inv = 1.0f / warp_sum(s);
    // exp again rather than rereading y: a kernel must not read back what it
    // wrote through the read-only (restrict) path.
    for_lane_groups<W>(cols, [&](int j) {
        Group<float, W> x;
        x.load(xr + j);
#pragma unroll
        for (int k = 0; k < W; ++k) x.v[k] = expf(x.v[k] - m) * inv;
        x.store(yr + j);
    });
}

template <int W>
__device__ __forceinline__ void softmax_backward_row(const float* __restrict__ yr, const float* __restrict__ gr,
                                                     float* __restrict__ dr, int cols) {
    using G = Group<float, W>;
    float d = 0.0f;
    for_lane_group_pairs<float, W>(yr, gr, cols, [&](int, const G& y, const G& g) {
#pragma unroll
        for (int k = 0; k < W; ++k) d += y.v[k] * g.v[k];
    });
    const float dot = warp_sum(d);
    for_lane_group_pairs<float, W>(yr, gr, cols, [&](int j, const G& y, const G& g) {
        G dx;
#pragma unroll
        for (int k = 0; k < W; ++k) dx.v[k] = y.v[k] * (g.v[k] - dot);
        dx.store(dr + j);
    });
}

extern "C" __global__ void __launch_bounds__(256)
softmax_forward(const float* __restrict__ x, float* __restrict__ y, int rows, int cols) {
    FOR_WARP_ROWS(row, rows) {
        const long long off = (long long)row * cols;
        if (cols % 4 == 0) {
            softmax_row<4>(x + off, y + off, cols);
        } else {
            softmax_row<1>(x + off, y + off, cols);
        }
    }
}

extern "C" __global__ void __launch_bounds__(256)
softmax_backward(const float* __restrict__ y, const float* __restrict__ grad, float* __restrict__ dx,
                 int rows, int cols) {
    FOR_WARP_ROWS(row, rows) {
        const long long off = (long long)row * cols;
        if (cols % 4 == 0) {
            softmax_backward_row<4>(y + off, grad + off, dx + off, cols);
        } else {
            softmax_backward_row<1>(y + off, grad + off, dx + off, cols);
        }
    }
}
