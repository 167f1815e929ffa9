/*
Semantic-decoupling scores without the [B, C, N, d] tensor (docs/model.md §4
with fc3/fc4 collapsed), forward and backward, f32
(src/ops/custom/decoupling.rs launches them and holds the CPU reference):
  s[b,c,n] = sum_k u[k] tanh(x[b,n,k] t[c,k]),  x [B,N,d], t [C,d], u [d].
The tanh is recomputed in the backward, never stored. The backward kernels
are also the last step of kernels/decoupling_attention.cu's backward (with
its score gradients as grad).

1. decoupling_forward(x, t, u, s, B, C, N, d): one warp per score
   (b, c, n); block = 256 (8 warps), grid = min(ceil(B C N / 8), 65535),
   grid-stride over warps. Lanes stride k (coalesced), warp_sum in its fixed
   butterfly order; lane 0 WRITES s.
2. decoupling_backward_dx(x, t, u, grad, dx, B, C, N, d): thread per
   (b, n, k), block = 256, grid-stride; sums over c in class order:
   dx = sum_c grad[b,c,n] u[k] (1 - z^2) t[c,k]. WRITES dx.
3. decoupling_backward_partials(x, t, u, grad, partial_dt, partial_du,
   B, C, N, d): thread per (b, c, k), block = 256, grid-stride; sums over n
   in position order: partial_dt = sum_n grad u (1 - z^2) x,
   partial_du = sum_n grad z. WRITES both [B, C, d] partials.
4. decoupling_reduce_dt(partial_dt, dt, B, C, d): thread per (c, k), sums
   the partials over b in batch order. WRITES dt [C, d].
5. decoupling_reduce_du(partial_du, du, B, C, d): thread per k, sums over
   b then c in order. WRITES du [d].
Workspace: 2 B C d floats. No atomics; deterministic for given shapes.
*/
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(256)
decoupling_forward(const float* __restrict__ x, const float* __restrict__ t, const float* __restrict__ u,
                   float* __restrict__ s, int B, int C, int N, int d) {
    const int lane = threadIdx.x & 31;
    const long long warps_total = (long long)gridDim.x * (blockDim.x >> 5);
    const long long scores = (long long)B * C * N;
    for (long long w = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); w < scores;
         w += warps_total) {
        const long long n = w % N;
        const long long c = (w / N) % C;
        const long long b = w / ((long long)N * C);
        const float* xn = x + (b * N + n) * d;
        const float* tc = t + c * d;
        float acc = 0.0f;
        for (int k = lane; k < d; k += 32) {
            acc += u[k] * tanhf(xn[k] * tc[k]);
        }
        acc = warp_sum(acc);
        if (lane == 0) {
            s[w] = acc;
        }
    }
}

extern "C" __global__ void __launch_bounds__(256)
decoupling_backward_dx(const float* __restrict__ x, const float* __restrict__ t, const float* __restrict__ u,
                       const float* __restrict__ grad, float* __restrict__ dx, int B, int C, int N, int d) {
    const long long total = (long long)B * N * d;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const long long k = i % d;
        const long long n = (i / d) % N;
        const long long b = i / ((long long)d * N);
        const float xv = x[i];
        const float uk = u[k];
        float acc = 0.0f;
        for (int c = 0; c < C; ++c) {
            const float g = grad[(b * C + c) * N + n];
            const float tk = t[(long long)c * d + k];
            const float z = tanhf(xv * tk);
            acc += g * uk * (1.0f - z * z) * tk;
        }
        dx[i] = acc;
    }
}

extern "C" __global__ void __launch_bounds__(256)
decoupling_backward_partials(const float* __restrict__ x, const float* __restrict__ t,
                             const float* __restrict__ u, const float* __restrict__ grad,
                             float* __restrict__ partial_dt, float* __restrict__ partial_du,
                             int B, int C, int N, int d) {
    const long long total = (long long)B * C * d;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const long long k = i % d;
        const long long c = (i / d) % C;
        const long long b = i / ((long long)d * C);
        const float tk = t[c * d + k];
        const float uk = u[k];
        float pt = 0.0f;
        float pu = 0.0f;
        for (int n = 0; n < N; ++n) {
            const float g = grad[(b * C + c) * N + n];
            const float xv = x[(b * N + n) * d + k];
            const float z = tanhf(xv * tk);
            pu += g * z;
            pt += g * uk * (1.0f - z * z) * xv;
        }
        partial_dt[i] = pt;
        partial_du[i] = pu;
    }
}

extern "C" __global__ void __launch_bounds__(256)
decoupling_reduce_dt(const float* __restrict__ partial_dt, float* __restrict__ dt, int B, int C, int d) {
    const long long total = (long long)C * d;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        float acc = 0.0f;
        for (int b = 0; b < B; ++b) {
            acc += partial_dt[(long long)b * total + i];
        }
        dt[i] = acc;
    }
}

extern "C" __global__ void __launch_bounds__(256)
decoupling_reduce_du(const float* __restrict__ partial_du, float* __restrict__ du, int B, int C, int d) {
    for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < d; k += gridDim.x * blockDim.x) {
        float acc = 0.0f;
        for (long long bc = 0; bc < (long long)B * C; ++bc) {
            acc += partial_du[bc * d + k];
        }
        du[k] = acc;
    }
}
