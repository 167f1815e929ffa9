/*
Row L2 normalisation y = x / max(||x||, eps) and its backward
(src/backend/cuda/norm.rs launches them), as src/backend/cpu/norm.rs.

1. l2_normalize_forward(x, y, norm, rows, cols, eps): one block (256
   threads) per row, grid = min(rows, 65535), grid-stride; n =
   max(sqrt(block_sum(x^2)), eps). WRITES y and norm[row].
2. l2_normalize_backward(y, norm, grad, dx, rows, cols): one block per row;
   dot = sum(y * grad) when the row of y is a unit vector (sum y^2 > 0.5),
   else 0 (the norm was clamped to eps and the map was x / eps).
   WRITES dx = (grad - y * dot) / norm.
f32, fixed reduction order, no atomics.
*/
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(256)
l2_normalize_forward(const float* __restrict__ x, float* __restrict__ y, float* __restrict__ norm,
                     int rows, int cols, float eps) {
    __shared__ float scratch[32];
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const float* xr = x + (long long)row * cols;
        float* yr = y + (long long)row * cols;
        float s = 0.0f;
        for (int j = threadIdx.x; j < cols; j += blockDim.x) {
            s += xr[j] * xr[j];
        }
        const float n = fmaxf(sqrtf(block_sum(s, scratch)), eps);
        for (int j = threadIdx.x; j < cols; j += blockDim.x) {
            yr[j] = xr[j] / n;
        }
        if (threadIdx.x == 0) {
            norm[row] = n;
        }
    }
}

extern "C" __global__ void __launch_bounds__(256)
l2_normalize_backward(const float* __restrict__ y, const float* __restrict__ norm,
                      const float* __restrict__ grad, float* __restrict__ dx, int rows, int cols) {
    __shared__ float scratch[32];
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const float* yr = y + (long long)row * cols;
        const float* gr = grad + (long long)row * cols;
        float* dr = dx + (long long)row * cols;
        float sq = 0.0f;
        float d = 0.0f;
        for (int j = threadIdx.x; j < cols; j += blockDim.x) {
            sq += yr[j] * yr[j];
            d += yr[j] * gr[j];
        }
        const bool unit = block_sum(sq, scratch) > 0.5f;
        const float dot = block_sum(d, scratch);
        const float use_dot = unit ? dot : 0.0f;
        const float n = norm[row];
        for (int j = threadIdx.x; j < cols; j += blockDim.x) {
            dr[j] = (gr[j] - yr[j] * use_dot) / n;
        }
    }
}
