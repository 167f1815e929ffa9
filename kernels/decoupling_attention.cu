/*
Semantic-decoupling cross-attention, fused (docs/model.md §4, fc3 and fc4
collapsed into u = W3^T w4), forward and backward, f32
(src/ops/custom/decoupling_attention.rs launches them and holds the CPU
reference). Per image b and category c:
  s[n]   = sum_k u[k] tanh(x[b,n,k] t[c,k])          x [B,N,d], t [C,d], u [d]
  P[n]   = exp(s[n] - lse[b,c]),  lse = log sum_n exp(s[n])
  out[b,c,:] = sum_n P[n] X[b,n,:]                   X (patches) [B,N,D]
The constant w4.b3 + b4 of the scores cancels in the softmax and never
reaches these kernels. Neither the [B,C,N,d] tanh terms nor the [B,C,N]
scores are written in the forward: the softmax is online over position
tiles (running max and sum per category, the output accumulator rescaled
when the max grows), and only lse [B,C] is saved for the backward.

Tiles: a block of 256 threads = 8 warps; warp w owns category c0 + w, lane l
owns position n0 + l of the current 32-position tile. tile_reduce computes
one value per (category, position) of the tile, summing over the reduction
axis in index order, 32 elements at a time staged in shared memory (the
tile's 32 rows, padded to 33 columns so that lanes hit distinct banks, the 8
categories' rows and u, broadcast within a warp).

1. decoupling_attention_forward(x, t, u, patches, out, lse, B, C, N, d, D)
   grid = (ceil(C/8), B), block = 256; D <= 1024 (4 columns a thread).
   Per tile: scores by tile_reduce (the tanh form), then per warp the new
   max and sum (warp_max / warp_sum butterflies: identical in every lane),
   the tile's weights exp(s - max) to shared memory; then each thread
   rescales and accumulates its columns j = tid + 256 q of all 8 categories
   in registers, positions in order, reading each X row once per block.
   WRITES out[b, c, :] = acc / sum and lse[b, c] = max + log(sum).
2. decoupling_attention_backward_scores(x, t, u, patches, out, lse, dout,
   prob, dscore, B, C, N, d, D)
   grid = (ceil(C/8), B), block = 256. delta = dout[b,c] . out[b,c] (lanes
   stride D, then the butterfly); per tile s recomputed (tanh form) and
   dP = dout[b,c] . X[b,n] (tile_reduce's dot form over D);
   WRITES prob[b,c,n] = P and dscore[b,c,n] = P (dP - delta), [B,C,N] each:
   the backward's only workspace besides the dt/du partials of step 4.
3. decoupling_attention_backward_patches(prob, dout, dpatches, B, C, N, D)
   (only when the patches need a gradient) thread per (b, n, j), block =
   256, grid-stride; sums over c in class order:
   WRITES dpatches[b,n,j] = sum_c prob[b,c,n] dout[b,c,j].
4. dx, dt and du are the scores' backward with dscore as its gradient:
   kernels/decoupling.cu's decoupling_backward_* and decoupling_reduce_*,
   launched by src/ops/custom/decoupling.rs (per-batch partials summed in
   batch order).
Accumulation: f32, every sum in a fixed order (index order per thread,
fixed butterflies), every output written by exactly one thread, no atomics:
deterministic for given shapes. Built without --use_fast_math (tanhf, expf
and logf are the accurate ones).
*/
#include "common.cuh"

#define DA_THREADS 256
// Categories per block (one per warp) and positions per tile (one per lane).
#define DA_CATS 8
#define DA_POS 32
// Reduction-axis elements staged per step.
#define DA_CHUNK 32
// Output columns per thread: D <= DA_THREADS * DA_MAX_COLS.
#define DA_MAX_COLS 4

struct TileStage {
    float rows[DA_POS][DA_CHUNK + 1];
    float cats[DA_CATS][DA_CHUNK];
    float u[DA_CHUNK];
};

// For category c0 + warp and position n0 + lane of the calling thread:
//   Tanh:  sum_k u[k] tanh(rows[n][k] cats[c][k])   (a decoupling score)
//   !Tanh: sum_k rows[n][k] cats[c][k]              (a dot product)
// summed in k order. rows is [N, width] (one image's), cats [C, width];
// positions and categories out of range read zeros. Every thread of the
// block calls it (it holds barriers); it starts with a barrier, so the
// caller's previous reads of `st` are done before it is overwritten.
template <bool Tanh>
__device__ __forceinline__ float tile_reduce(const float* __restrict__ rows, const float* __restrict__ cats,
                                             const float* __restrict__ u, int n0, int c0, int N, int C, int width,
                                             TileStage& st) {
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    float acc = 0.0f;
    for (int k0 = 0; k0 < width; k0 += DA_CHUNK) {
        const int kn = min(DA_CHUNK, width - k0);
        __syncthreads();
        for (int i = threadIdx.x; i < DA_POS * DA_CHUNK; i += DA_THREADS) {
            const int r = i / DA_CHUNK;
            const int k = i % DA_CHUNK;
            st.rows[r][k] = (n0 + r < N && k < kn) ? rows[(long long)(n0 + r) * width + k0 + k] : 0.0f;
        }
        for (int i = threadIdx.x; i < DA_CATS * DA_CHUNK; i += DA_THREADS) {
            const int r = i / DA_CHUNK;
            const int k = i % DA_CHUNK;
            st.cats[r][k] = (c0 + r < C && k < kn) ? cats[(long long)(c0 + r) * width + k0 + k] : 0.0f;
        }
        if (Tanh && threadIdx.x < DA_CHUNK) {
            st.u[threadIdx.x] = (int)threadIdx.x < kn ? u[k0 + threadIdx.x] : 0.0f;
        }
        __syncthreads();
#pragma unroll 4
        for (int k = 0; k < kn; ++k) {
            const float a = st.rows[lane][k] * st.cats[warp][k];
            if (Tanh) {
                acc += st.u[k] * tanhf(a);
            } else {
                acc += a;
            }
        }
    }
    return acc;
}

extern "C" __global__ void __launch_bounds__(DA_THREADS)
decoupling_attention_forward(const float* __restrict__ x, const float* __restrict__ t, const float* __restrict__ u,
                             const float* __restrict__ patches, float* __restrict__ out, float* __restrict__ lse,
                             int B, int C, int N, int d, int D) {
    __shared__ TileStage st;
    __shared__ float weight[DA_CATS][DA_POS];
    __shared__ float rescale[DA_CATS];
    __shared__ float total[DA_CATS];
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int b = blockIdx.y;
    const int c0 = blockIdx.x * DA_CATS;
    const float* x_b = x + (long long)b * N * d;
    const float* patches_b = patches + (long long)b * N * D;
    float acc[DA_MAX_COLS][DA_CATS];
#pragma unroll
    for (int q = 0; q < DA_MAX_COLS; ++q) {
#pragma unroll
        for (int c = 0; c < DA_CATS; ++c) {
            acc[q][c] = 0.0f;
        }
    }
    // This warp's category: running max and sum of exp(s - max).
    float run_max = neg_inf();
    float run_sum = 0.0f;
    for (int n0 = 0; n0 < N; n0 += DA_POS) {
        float s = tile_reduce<true>(x_b, t, u, n0, c0, N, C, d, st);
        if (n0 + lane >= N) {
            s = neg_inf();
        }
        const float new_max = fmaxf(run_max, warp_max(s));
        const float scale = expf(run_max - new_max);  // 0 on the first tile
        const float p = expf(s - new_max);
        run_sum = run_sum * scale + warp_sum(p);
        run_max = new_max;
        weight[warp][lane] = p;
        if (lane == 0) {
            rescale[warp] = scale;
        }
        __syncthreads();
        const int rows = min(DA_POS, N - n0);
#pragma unroll
        for (int q = 0; q < DA_MAX_COLS; ++q) {
            const int j = threadIdx.x + q * DA_THREADS;
            if (j < D) {
#pragma unroll
                for (int c = 0; c < DA_CATS; ++c) {
                    acc[q][c] *= rescale[c];
                }
                for (int r = 0; r < rows; ++r) {
                    const float xv = patches_b[(long long)(n0 + r) * D + j];
#pragma unroll
                    for (int c = 0; c < DA_CATS; ++c) {
                        acc[q][c] += weight[c][r] * xv;
                    }
                }
            }
        }
        // The next tile_reduce starts with a barrier: weight and rescale
        // are rewritten only after every thread is done with them.
    }
    const int c = c0 + warp;
    if (lane == 0) {
        total[warp] = run_sum;
        if (c < C) {
            lse[(long long)b * C + c] = run_max + logf(run_sum);
        }
    }
    __syncthreads();
#pragma unroll
    for (int q = 0; q < DA_MAX_COLS; ++q) {
        const int j = threadIdx.x + q * DA_THREADS;
        if (j < D) {
#pragma unroll
            for (int k = 0; k < DA_CATS; ++k) {
                if (c0 + k < C) {
                    out[((long long)b * C + c0 + k) * D + j] = acc[q][k] / total[k];
                }
            }
        }
    }
}

extern "C" __global__ void __launch_bounds__(DA_THREADS)
decoupling_attention_backward_scores(const float* __restrict__ x, const float* __restrict__ t,
                                     const float* __restrict__ u, const float* __restrict__ patches,
                                     const float* __restrict__ out, const float* __restrict__ lse,
                                     const float* __restrict__ dout, float* __restrict__ prob,
                                     float* __restrict__ dscore, int B, int C, int N, int d, int D) {
    __shared__ TileStage st;
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int b = blockIdx.y;
    const int c0 = blockIdx.x * DA_CATS;
    const int c = c0 + warp;
    const long long bc = (long long)b * C + c;
    float delta = 0.0f;
    if (c < C) {
        for (int j = lane; j < D; j += 32) {
            delta += dout[bc * D + j] * out[bc * D + j];
        }
    }
    delta = warp_sum(delta);
    const float lse_c = c < C ? lse[bc] : 0.0f;
    const float* x_b = x + (long long)b * N * d;
    const float* patches_b = patches + (long long)b * N * D;
    const float* dout_b = dout + (long long)b * C * D;
    for (int n0 = 0; n0 < N; n0 += DA_POS) {
        const float s = tile_reduce<true>(x_b, t, u, n0, c0, N, C, d, st);
        const float dp = tile_reduce<false>(patches_b, dout_b, u, n0, c0, N, C, D, st);
        const int n = n0 + lane;
        if (c < C && n < N) {
            const float p = expf(s - lse_c);
            prob[bc * N + n] = p;
            dscore[bc * N + n] = p * (dp - delta);
        }
    }
}

extern "C" __global__ void __launch_bounds__(DA_THREADS)
decoupling_attention_backward_patches(const float* __restrict__ prob, const float* __restrict__ dout,
                                      float* __restrict__ dpatches, int B, int C, int N, int D) {
    const long long total = (long long)B * N * D;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const long long j = i % D;
        const long long n = (i / D) % N;
        const long long b = i / ((long long)D * N);
        float acc = 0.0f;
        for (int c = 0; c < C; ++c) {
            acc += prob[(b * C + c) * N + n] * dout[(b * C + c) * D + j];
        }
        dpatches[i] = acc;
    }
}
