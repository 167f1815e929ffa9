/*
Layer normalisation over rows of `cols` contiguous f32 values, forward and
backward (src/backend/cuda/layernorm.rs launches them). Same formulas as
src/backend/cpu/norm.rs: two-pass mean and variance, rstd = 1 / sqrt(var +
eps), dx from the saved mean and rstd.

1. layernorm_forward(x, gamma, beta, y, mean, rstd, rows, cols, eps)
   One warp per row, 8 rows per block (256 threads), grid =
   min(ceil(rows / 8), 65535), grid-stride over rows. Lane l reads the
   groups l, l + 32, ... of the row: 16-byte groups (4 f32, 8 bf16) when
   cols is a multiple of that, else single elements; rows of a few hundred
   elements keep every lane busy, which a block per row did not (a 128-wide
   row left half of 256 threads idle). Row sums by warp_sum (fixed order),
   three passes over the row (mean, variance, output; the re-reads hit
   L1/L2). WRITES y, mean[row], rstd[row].
2. layernorm_backward_input(x, gamma, mean, rstd, grad, dx, rows, cols)
   One warp per row as in 1: two warp sums (mean of dxhat, mean of
   dxhat * xhat), then WRITES dx.
3. layernorm_backward_param_partials(x, mean, rstd, grad, partial_gamma,
   partial_beta, rows, cols, rows_per_chunk)
   grid = (ceil(cols / 256), chunks), block = 256: thread j of chunk c sums
   grad * xhat and grad over rows [c * rows_per_chunk, ...) in row order;
   WRITES partial_*[c * cols + j].
   dgamma and dbeta are then each one launch of reduce.cu's column_sum
   over the partials of 3.
f32 accumulation throughout; no atomics; deterministic for a given shape.
Every kernel also comes in bf16 (`_bf16`): x, gamma, beta, y, grad and dx
bf16 (widened on load, rounded once on store); mean, rstd and the partial
sums f32.
*/
#include "common.cuh"

// One row of the forward in groups of W (see for_lane_groups); returns the
// row's mean and rstd to every lane.
template <typename T, int W>
__device__ __forceinline__ void layernorm_forward_row(const T* __restrict__ xr, const T* __restrict__ gamma,
                                                      const T* __restrict__ beta, T* __restrict__ yr, int cols,
                                                      float eps, float& mean, float& rstd) {
    float s = 0.0f;
    for_lane_groups<W>(cols, [&](int j) {
        Group<T, W> x;
        x.load(xr + j);
#pragma unroll
        for (int k = 0; k < W; ++k) s += x.v[k];
    });
    const float m = warp_sum(s) / (float)cols;
    float v = 0.0f;
    for_lane_groups<W>(cols, [&](int j) {
        Group<T, W> x;
        x.load(xr + j);
#pragma unroll
        for (int k = 0; k < W; ++k) v += (x.v[k] - m) * (x.v[k] - m);
    });
    const float r = 1.0f / sqrtf(warp_sum(v) / (float)cols + eps);
    for_lane_groups<W>(cols, [&](int j) {
        Group<T, W> x, g, b;
        x.load(xr + j);
        g.load(gamma + j);
        b.load(beta + j);
#pragma unroll
        for (int k = 0; k < W; ++k) x.v[k] = (x.v[k] - m) * r * g.v[k] + b.v[k];
        x.store(yr + j);
    });
    mean = m;
    rstd = r;
}

template <typename T>
__device__ __forceinline__ void layernorm_forward_impl(const T* __restrict__ x, const T* __restrict__ gamma,
                                                       const T* __restrict__ beta, T* __restrict__ y,
                                                       float* __restrict__ mean, float* __restrict__ rstd,
                                                       int rows, int cols, float eps) {
    constexpr int lanes = Pack16<T>::lanes;
    FOR_WARP_ROWS(row, rows) {
        const T* xr = x + (long long)row * cols;
        T* yr = y + (long long)row * cols;
        float m, r;
        if (cols % lanes == 0) {
            layernorm_forward_row<T, lanes>(xr, gamma, beta, yr, cols, eps, m, r);
        } else {
            layernorm_forward_row<T, 1>(xr, gamma, beta, yr, cols, eps, m, r);
        }
        if ((threadIdx.x & 31) == 0) {
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

// One row of dx in groups of W: two passes over x, gamma and grad.
template <typename T, int W>
__device__ __forceinline__ void layernorm_backward_row(const T* __restrict__ xr, const T* __restrict__ gamma,
                                                       float m, float rs, const T* __restrict__ gr,
                                                       T* __restrict__ dr, int cols) {
    using G = Group<T, W>;
    float a = 0.0f;
    float b = 0.0f;
    for_lane_group_triples<T, W>(xr, gamma, gr, cols, [&](int, const G& x, const G& g, const G& dy) {
#pragma unroll
        for (int k = 0; k < W; ++k) {
            const float dxhat = dy.v[k] * g.v[k];
            a += dxhat;
            b += dxhat * (x.v[k] - m) * rs;
        }
    });
    const float mean_dxhat = warp_sum(a) / (float)cols;
    const float mean_dxhat_xhat = warp_sum(b) / (float)cols;
    for_lane_group_triples<T, W>(xr, gamma, gr, cols, [&](int j, const G& x, const G& g, const G& dy) {
        G dx;
#pragma unroll
        for (int k = 0; k < W; ++k) {
            const float xhat = (x.v[k] - m) * rs;
            dx.v[k] = (dy.v[k] * g.v[k] - mean_dxhat - xhat * mean_dxhat_xhat) * rs;
        }
        dx.store(dr + j);
    });
}

template <typename T>
__device__ __forceinline__ void layernorm_backward_input_impl(const T* __restrict__ x, const T* __restrict__ gamma,
                                                              const float* __restrict__ mean,
                                                              const float* __restrict__ rstd,
                                                              const T* __restrict__ grad, T* __restrict__ dx,
                                                              int rows, int cols) {
    constexpr int lanes = Pack16<T>::lanes;
    FOR_WARP_ROWS(row, rows) {
        const long long off = (long long)row * cols;
        if (cols % lanes == 0) {
            layernorm_backward_row<T, lanes>(x + off, gamma, mean[row], rstd[row], grad + off, dx + off, cols);
        } else {
            layernorm_backward_row<T, 1>(x + off, gamma, mean[row], rstd[row], grad + off, dx + off, cols);
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
    // 64-bit: start + rows_per_chunk may pass 2^31 in the last chunk.
    const int start = chunk * rows_per_chunk;
    const int end = (int)min((long long)rows, (long long)start + rows_per_chunk);
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
