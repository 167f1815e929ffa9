/*
Row softmax over `cols` contiguous f32 values and its backward
(src/backend/cuda/norm.rs launches them), as src/backend/cpu/norm.rs:
max-subtracted exp, a row that is all -inf gives zeros.

1. softmax_forward(x, y, rows, cols): one block (256 threads) per row,
   grid = min(rows, 65535), grid-stride. block_max, then exp written to y
   and block_sum, then y scaled by 1 / sum. WRITES y.
2. softmax_backward(y, grad, dx, rows, cols): one block per row;
   dot = block_sum(y * grad); WRITES dx = y * (grad - dot).
f32, fixed reduction order, no atomics.
*/
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(256)
softmax_forward(const float* __restrict__ x, float* __restrict__ y, int rows, int cols) {
    __shared__ float scratch[32];
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const float* xr = x + (long long)row * cols;
        float* yr = y + (long long)row * cols;
        float m = neg_inf();
        for (int j = threadIdx.x; j < cols; j += blockDim.x) {
            m = fmaxf(m, xr[j]);
        }
        m = block_max(m, scratch);
        if (m == neg_inf()) {
            for (int j = threadIdx.x; j < cols; j += blockDim.x) {
                yr[j] = 0.0f;
            }
            continue;
        }
        float s = 0.0f;
        for (int j = threadIdx.x; j < cols; j += blockDim.x) {
            const float e = expf(xr[j] - m);
            yr[j] = e;
            s += e;
        }
        const float inv = 1.0f / block_sum(s, scratch);
        for (int j = threadIdx.x; j < cols; j += blockDim.x) {
            yr[j] *= inv;
        }
    }
}

extern "C" __global__ void __launch_bounds__(256)
softmax_backward(const float* __restrict__ y, const float* __restrict__ grad, float* __restrict__ dx,
                 int rows, int cols) {
    __shared__ float scratch[32];
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const float* yr = y + (long long)row * cols;
        const float* gr = grad + (long long)row * cols;
        float* dr = dx + (long long)row * cols;
        float d = 0.0f;
        for (int j = threadIdx.x; j < cols; j += blockDim.x) {
            d += yr[j] * gr[j];
        }
        const float dot = block_sum(d, scratch);
        for (int j = threadIdx.x; j < cols; j += blockDim.x) {
            dr[j] = yr[j] * (gr[j] - dot);
        }
    }
}
