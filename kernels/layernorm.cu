/*
Layer normalisation over rows of `cols` contiguous f32 values, forward and
backward (src/backend/cuda/norm.rs launches them). Same formulas as
src/backend/cpu/norm.rs: two-pass mean and variance, rstd = 1 / sqrt(var +
eps), dx from the saved mean and rstd.

1. layernorm_forward(x, gamma, beta, y, mean, rstd, rows, cols, eps)
   One block (256 threads) per row, grid = min(rows, 65535), grid-stride
   over rows. Row sums by block_sum (fixed order). WRITES y, mean[row],
   rstd[row].
2. layernorm_backward_input(x, gamma, mean, rstd, grad, dx, rows, cols)
   One block per row as in 1: two block sums (mean of dxhat, mean of
   dxhat * xhat), then WRITES dx.
3. layernorm_backward_param_partials(x, mean, rstd, grad, partial_gamma,
   partial_beta, rows, cols, rows_per_chunk)
   grid = (ceil(cols / 256), chunks), block = 256: thread j of chunk c sums
   grad * xhat and grad over rows [c * rows_per_chunk, ...) in row order;
   WRITES partial_*[c * cols + j].
4. column_sum(partials, out, chunks, cols): thread per column j sums
   partials[0..chunks][j] in chunk order; WRITES out[j].
   dgamma and dbeta are each one launch of 4 over the partials of 3.
f32 accumulation throughout; no atomics; deterministic for a given shape.
Every kernel also comes in bf16 (`_bf16`): x, gamma, beta, y, grad, dx and
the column sums' outputs bf16 (widened on load, rounded once on store);
mean, rstd and the partial sums f32.
*/
#include "common.cuh"

template <typename T>
__device__ __forceinline__ void layernorm_forward_impl(const T* __restrict__ x, const T* __restrict__ gamma,
                                                       const T* __restrict__ beta, T* __restrict__ y,
                                                       float* __restrict__ mean, float* __restrict__ rstd,
                                                       int rows, int cols, float eps) {
    __shared__ float scratch[32];
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* xr = x + (long long)row * cols;
        T* yr = y + (long long)row * cols;
        float s = 0.0f;
        for (int j = threadIdx.x; j < cols; j += blockDim.x) {
            s += to_f32(xr[j]);
        }
        const float m = block_sum(s, scratch) / (float)cols;
        float v = 0.0f;
        for (int j = threadIdx.x; j < cols; j += blockDim.x) {
            const float d = to_f32(xr[j]) - m;
            v += d * d;
        }
        const float var = block_sum(v, scratch) / (float)cols;
        const float r = 1.0f / sqrtf(var + eps);
        for (int j = threadIdx.x; j < cols; j += blockDim.x) {
            yr[j] = from_f32<T>((to_f32(xr[j]) - m) * r * to_f32(gamma[j]) + to_f32(beta[j]));
        }
        if (threadIdx.x == 0) {
            mean[row] = m;
            rstd[row] = r;
        }
    }
}

#define LAYERNORM_FORWARD(T, NAME) \
    extern "C" __global__ void __launch_bounds__(256) \
    NAME( \
        const T* __restrict__ x, const T* __restrict__ gamma, const T* __restrict__ beta, \
        T* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd, int rows, int cols, \
        float eps \
    ) { \
        layernorm_forward_impl(x, gamma, beta, y, mean, rstd, rows, cols, eps); \
    }
LAYERNORM_FORWARD(float, layernorm_forward)
LAYERNORM_FORWARD(bf16_bits, layernorm_forward_bf16)

template <typename T>
__device__ __forceinline__ void layernorm_backward_input_impl(const T* __restrict__ x, const T* __restrict__ gamma,
                                                              const float* __restrict__ mean,
                                                              const float* __restrict__ rstd,
                                                              const T* __restrict__ grad, T* __restrict__ dx,
                                                              int rows, int cols) {
    __shared__ float scratch[32];
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* xr = x + (long long)row * cols;
        const T* gr = grad + (long long)row * cols;
        T* dr = dx + (long long)row * cols;
        const float m = mean[row];
        const float rs = rstd[row];
        float a = 0.0f;
        float b = 0.0f;
        for (int j = threadIdx.x; j < cols; j += blockDim.x) {
            const float xhat = (to_f32(xr[j]) - m) * rs;
            const float dxhat = to_f32(gr[j]) * to_f32(gamma[j]);
            a += dxhat;
            b += dxhat * xhat;
        }
        const float mean_dxhat = block_sum(a, scratch) / (float)cols;
        const float mean_dxhat_xhat = block_sum(b, scratch) / (float)cols;
        for (int j = threadIdx.x; j < cols; j += blockDim.x) {
            const float xhat = (to_f32(xr[j]) - m) * rs;
            dr[j] = from_f32<T>((to_f32(gr[j]) * to_f32(gamma[j]) - mean_dxhat - xhat * mean_dxhat_xhat) * rs);
        }
    }
}

#define LAYERNORM_BACKWARD_INPUT(T, NAME) \
    extern "C" __global__ void __launch_bounds__(256) \
    NAME( \
        const T* __restrict__ x, const T* __restrict__ gamma, const float* __restrict__ mean, \
        const float* __restrict__ rstd, const T* __restrict__ grad, T* __restrict__ dx, int rows, \
        int cols \
    ) { \
        layernorm_backward_input_impl(x, gamma, mean, rstd, grad, dx, rows, cols); \
    }
LAYERNORM_BACKWARD_INPUT(float, layernorm_backward_input)
LAYERNORM_BACKWARD_INPUT(bf16_bits, layernorm_backward_input_bf16)

template <typename T>
__device__ __forceinline__ void layernorm_backward_param_partials_impl(
    const T* __restrict__ x, const float* __restrict__ mean, const float* __restrict__ rstd,
    const T* __restrict__ grad, float* __restrict__ partial_gamma, float* __restrict__ partial_beta, int rows,
    int cols, int rows_per_chunk) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= cols) {
        return;
    }
    const int chunk = blockIdx.y;
    const int start = chunk * rows_per_chunk;
    const int end = min(rows, start + rows_per_chunk);
    float pg = 0.0f;
    float pb = 0.0f;
    for (int r = start; r < end; ++r) {
        const long long i = (long long)r * cols + j;
        const float g = to_f32(grad[i]);
        pg += g * (to_f32(x[i]) - mean[r]) * rstd[r];
        pb += g;
    }
    partial_gamma[(long long)chunk * cols + j] = pg;
    partial_beta[(long long)chunk * cols + j] = pb;
}

#define LAYERNORM_BACKWARD_PARAM_PARTIALS(T, NAME) \
    extern "C" __global__ void __launch_bounds__(256) \
    NAME( \
        const T* __restrict__ x, const float* __restrict__ mean, const float* __restrict__ rstd, \
        const T* __restrict__ grad, float* __restrict__ partial_gamma, \
        float* __restrict__ partial_beta, int rows, int cols, int rows_per_chunk \
    ) { \
        layernorm_backward_param_partials_impl(x, mean, rstd, grad, partial_gamma, partial_beta, rows, cols, rows_per_chunk); \
    }
LAYERNORM_BACKWARD_PARAM_PARTIALS(float, layernorm_backward_param_partials)
LAYERNORM_BACKWARD_PARAM_PARTIALS(bf16_bits, layernorm_backward_param_partials_bf16)

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
