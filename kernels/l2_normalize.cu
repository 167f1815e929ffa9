/*
Row L2 normalisation y = x / max(||x||, eps) and its backward
(src/backend/cuda/l2_normalize.rs launches them), as src/backend/cpu/norm.rs.

One warp per row, 8 rows per block (256 threads), grid =
min(ceil(rows / 8), 65535), grid-stride over rows (rows are feature
vectors of a few hundred elements). Lane l reads the groups l, l + 32, ...
of its row: float4 groups when cols is a multiple of 4, else single
elements.
1. l2_normalize_forward(x, y, norm, rows, cols, eps): n =
   max(sqrt(warp_sum(x^2)), eps). WRITES y and norm[row].
2. l2_normalize_backward(y, norm, grad, dx, rows, cols): dot = sum(y * grad)
   when the row of y is a unit vector (sum y^2 > 0.5), else 0 (the norm was
   clamped to eps and the map was x / eps). WRITES dx = (grad - y * dot) / norm.
f32, fixed reduction order, no atomics.
*/
#include "common.cuh"

template <int W>
__device__ __forceinline__ float l2_normalize_row(const float* __restrict__ xr, float* __restrict__ yr, int cols,
                                                  float eps) {
    float s = 0.0f;
    for_lane_groups<W>(cols, [&](int j) {
        Group<float, W> x;
        x.load(xr + j);
#pragma unroll
        for (int k = 0; k < W; ++k) s += x.v[k] * x.v[k];
    });
    const float n = fmaxf(sqrtf(warp_sum(s)), eps);
    for_lane_groups<W>(cols, [&](int j) {
        Group<float, W> x;
        x.load(xr + j);
#pragma unroll
        for (int k = 0; k < W; ++k) x.v[k] /= n;
        x.store(yr + j);
    });
    return n;
}

template <int W>
__device__ __forceinline__ void l2_normalize_backward_row(const float* __restrict__ yr, float n,
                                                          const float* __restrict__ gr, float* __restrict__ dr,
                                                          int cols) {
    using G = Group<float, W>;
    float sq = 0.0f;
    float d = 0.0f;
    for_lane_group_pairs<float, W>(yr, gr, cols, [&](int, const G& y, const G& g) {
#pragma unroll
        for (int k = 0; k < W; ++k) {
            sq += y.v[k] * y.v[k];
            d += y.v[k] * g.v[k];
        }
    });
    const bool unit = warp_sum(sq) > 0.5f;
    const float dot = warp_sum(d);
    const float use_dot = unit ? dot : 0.0f;
    for_lane_group_pairs<float, W>(yr, gr, cols, [&](int j, const G& y, const G& g) {
        G dx;
#pragma unroll
        for (int k = 0; k < W; ++k) dx.v[k] = (g.v[k] - y.v[k] * use_dot) / n;
        dx.store(dr + j);
    });
}

extern "C" __global__ void __launch_bounds__(256)
l2_normalize_forward(const float* __restrict__ x, float* __restrict__ y, float* __restrict__ norm,
                     int rows, int cols, float eps) {
    FOR_WARP_ROWS(row, rows) {
        const long long off = (long long)row * cols;
        const float n = cols % 4 == 0 ? l2_normalize_row<4>(x + off, y + off, cols, eps)
                                      : l2_normalize_row<1>(x + off, y + off, cols, eps);
        if ((threadIdx.x & 31) == 0) {
            norm[row] = n;
        }
    }
}

extern "C" __global__ void __launch_bounds__(256)
l2_normalize_backward(const float* __restrict__ y, const float* __restrict__ norm,
                      const float* __restrict__ grad, float* __restrict__ dx, int rows, int cols) {
    FOR_WARP_ROWS(row, rows) {
        const long long off = (long long)row * cols;
        if (cols % 4 == 0) {
            l2_normalize_backward_row<4>(y + off, norm[row], grad + off, dx + off, cols);
        } else {
            l2_normalize_backward_row<1>(y + off, norm[row], grad + off, dx + off, cols);
        }
    }
}
