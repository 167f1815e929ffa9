/*
Scaled dot-product attention, forward and backward, over bh independent
heads: q [bh, q_len, hd], k and v [bh, kv_len, hd], f32; every kernel also
in bf16 (`_bf16`: q, k, v, out, grad, dq, dk, dv bf16, widened on load and
rounded once on store; scores, sums, lse and delta f32)
(src/backend/cuda/attention.rs launches them). The backend sends bf16
attention of head width 64 to the tensor-core kernels of
kernels/flash_attention.cu instead; f32 and other widths run here.
Causal: query i sees keys j <= i only (q_len == kv_len). The forward saves
only each query row's log-sum-exp; the backward recomputes probabilities
from it, the same contract as src/backend/cpu/attention.rs.

This is the straightforward version, not a tiled flash kernel: one block
per query row (or key row) holding that row's scores in shared memory, so
the [q_len, kv_len] matrix is never in global memory but kv_len (q_len for
kernel 3) is bounded by the shared memory: the host checks
(len + 2 hd) * 4 bytes <= 48 KiB, i.e. about 12000 positions at hd = 64.

1. attention_forward(q, k, v, out, lse, bh, q_len, kv_len, hd, causal, scale)
   grid = min(bh * q_len, 65535) (grid-stride over rows), block = 128,
   dynamic shared (hd + kv_len) floats. Threads over keys j compute
   s_j = scale * q_i . k_j (serial over hd); block_max; p_j = exp(s_j - m);
   block_sum; then threads over d: out[i, d] = sum_j p_j v[j, d] / sum in
   key order. WRITES out row and lse[row] = m + log(sum).
2. attention_backward_dq(q, k, v, out, lse, grad, dq, delta, ...)
   One block per query row as 1, dynamic shared (2 hd + kv_len) floats.
   delta_i = grad_i . out_i (block_sum); ds_j = p_j (grad_i . v_j - delta_i)
   * scale; WRITES dq[i, d] = sum_j ds_j k[j, d] (key order) and
   delta[row] for kernel 3.
3. attention_backward_dkdv(q, k, v, lse, grad, delta, dk, dv, ...)
   One block per KEY row (bh * kv_len rows), dynamic shared (2 hd + 2 q_len)
   floats. Threads over queries i compute p_ij and ds_ij as in 2; WRITES
   dv[j, d] = sum_i p_ij grad[i, d] and dk[j, d] = sum_i ds_ij q[i, d]
   (query order). Must run after 2 on the same stream (reads delta).
Every output element is written once with `=`; sums in a fixed order; no
atomics, so the results are deterministic.
*/
#include "common.cuh"

// Dynamic shared memory of every kernel here (sized by the launch), declared
// once: a declaration inside the templated forward would clash with the
// kernels' own.
extern __shared__ float smem[];

template <typename T>
__device__ __forceinline__ void attention_forward_impl(const T* __restrict__ q, const T* __restrict__ k,
                                                       const T* __restrict__ v, T* __restrict__ out,
                                                       float* __restrict__ lse, int bh, int q_len, int kv_len,
                                                       int hd, int causal, float scale) {
    __shared__ float scratch[32];
    float* qs = smem;
    float* p = smem + hd;
    const long long rows = (long long)bh * q_len;
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const long long h = row / q_len;
        const int i = (int)(row % q_len);
        const int kv_end = causal ? i + 1 : kv_len;
        const T* kh = k + h * kv_len * hd;
        const T* vh = v + h * kv_len * hd;
        __syncthreads();
        for (int d = threadIdx.x; d < hd; d += blockDim.x) {
            qs[d] = to_f32(q[row * hd + d]);
        }
        __syncthreads();
        float m = neg_inf();
        for (int j = threadIdx.x; j < kv_len; j += blockDim.x) {
            float s = neg_inf();
            if (j < kv_end) {
                float dot = 0.0f;
                for (int d = 0; d < hd; ++d) {
                    dot += qs[d] * to_f32(kh[(long long)j * hd + d]);
                }
                s = dot * scale;
            }
            p[j] = s;
            m = fmaxf(m, s);
        }
        m = block_max(m, scratch);
        float sum = 0.0f;
        for (int j = threadIdx.x; j < kv_len; j += blockDim.x) {
            const float e = j < kv_end ? expf(p[j] - m) : 0.0f;
            p[j] = e;
            sum += e;
        }
        sum = block_sum(sum, scratch);  // its barriers also publish p[]
        const float inv = 1.0f / sum;
        for (int d = threadIdx.x; d < hd; d += blockDim.x) {
            float acc = 0.0f;
            for (int j = 0; j < kv_end; ++j) {
                acc += p[j] * to_f32(vh[(long long)j * hd + d]);
            }
            out[row * hd + d] = from_f32<T>(acc * inv);
        }
        if (threadIdx.x == 0) {
            lse[row] = m + logf(sum);
        }
    }
}

#define ATTENTION_FORWARD(T, NAME) \
    extern "C" __global__ void __launch_bounds__(128) \
    NAME( \
        const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, \
        T* __restrict__ out, float* __restrict__ lse, int bh, int q_len, int kv_len, int hd, \
        int causal, float scale \
    ) { \
        attention_forward_impl(q, k, v, out, lse, bh, q_len, kv_len, hd, causal, scale); \
    }
ATTENTION_FORWARD(float, attention_forward)
ATTENTION_FORWARD(bf16_bits, attention_forward_bf16)

template <typename T>
__device__ __forceinline__ void attention_backward_dq_impl(const T* __restrict__ q, const T* __restrict__ k,
                                                           const T* __restrict__ v, const T* __restrict__ out,
                                                           const float* __restrict__ lse, const T* __restrict__ grad,
                                                           T* __restrict__ dq, float* __restrict__ delta, int bh,
                                                           int q_len, int kv_len, int hd, int causal, float scale) {
    __shared__ float scratch[32];
    float* qs = smem;
    float* gs = smem + hd;
    float* ds = smem + 2 * hd;
    const long long rows = (long long)bh * q_len;
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const long long h = row / q_len;
        const int i = (int)(row % q_len);
        const int kv_end = causal ? i + 1 : kv_len;
        const T* kh = k + h * kv_len * hd;
        const T* vh = v + h * kv_len * hd;
        __syncthreads();
        float part = 0.0f;
        for (int d = threadIdx.x; d < hd; d += blockDim.x) {
            qs[d] = to_f32(q[row * hd + d]);
            const float g = to_f32(grad[row * hd + d]);
            gs[d] = g;
            part += g * to_f32(out[row * hd + d]);
        }
        const float dlt = block_sum(part, scratch);  // its barriers also publish qs, gs
        const float l = lse[row];
        for (int j = threadIdx.x; j < kv_len; j += blockDim.x) {
            float value = 0.0f;
            if (j < kv_end) {
                float s = 0.0f;
                float dp = 0.0f;
                for (int d = 0; d < hd; ++d) {
                    s += qs[d] * to_f32(kh[(long long)j * hd + d]);
                    dp += gs[d] * to_f32(vh[(long long)j * hd + d]);
                }
                const float pj = expf(s * scale - l);
                value = pj * (dp - dlt) * scale;
            }
            ds[j] = value;
        }
        __syncthreads();
        for (int d = threadIdx.x; d < hd; d += blockDim.x) {
            float acc = 0.0f;
            for (int j = 0; j < kv_end; ++j) {
                acc += ds[j] * to_f32(kh[(long long)j * hd + d]);
            }
            dq[row * hd + d] = from_f32<T>(acc);
        }
        if (threadIdx.x == 0) {
            delta[row] = dlt;
        }
    }
}

#define ATTENTION_BACKWARD_DQ(T, NAME) \
    extern "C" __global__ void __launch_bounds__(128) \
    NAME( \
        const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, \
        const T* __restrict__ out, const float* __restrict__ lse, const T* __restrict__ grad, \
        T* __restrict__ dq, float* __restrict__ delta, int bh, int q_len, int kv_len, int hd, \
        int causal, float scale \
    ) { \
        attention_backward_dq_impl(q, k, v, out, lse, grad, dq, delta, bh, q_len, kv_len, hd, causal, scale); \
    }
ATTENTION_BACKWARD_DQ(float, attention_backward_dq)
ATTENTION_BACKWARD_DQ(bf16_bits, attention_backward_dq_bf16)

template <typename T>
__device__ __forceinline__ void attention_backward_dkdv_impl(const T* __restrict__ q, const T* __restrict__ k,
                                                             const T* __restrict__ v, const float* __restrict__ lse,
                                                             const T* __restrict__ grad,
                                                             const float* __restrict__ delta, T* __restrict__ dk,
                                                             T* __restrict__ dv, int bh, int q_len, int kv_len,
                                                             int hd, int causal, float scale) {
    float* ks = smem;
    float* vs = smem + hd;
    float* p = smem + 2 * hd;
    float* ds = smem + 2 * hd + q_len;
    const long long rows = (long long)bh * kv_len;
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const long long h = row / kv_len;
        const int j = (int)(row % kv_len);
        const int q_start = causal ? j : 0;
        const T* qh = q + h * q_len * hd;
        const T* gh = grad + h * q_len * hd;
        __syncthreads();
        for (int d = threadIdx.x; d < hd; d += blockDim.x) {
            ks[d] = to_f32(k[row * hd + d]);
            vs[d] = to_f32(v[row * hd + d]);
        }
        __syncthreads();
        for (int i = threadIdx.x; i < q_len; i += blockDim.x) {
            float pi = 0.0f;
            float dsi = 0.0f;
            if (i >= q_start) {
                float s = 0.0f;
                float dp = 0.0f;
                for (int d = 0; d < hd; ++d) {
                    s += to_f32(qh[(long long)i * hd + d]) * ks[d];
                    dp += to_f32(gh[(long long)i * hd + d]) * vs[d];
                }
                pi = expf(s * scale - lse[h * q_len + i]);
                dsi = pi * (dp - delta[h * q_len + i]) * scale;
            }
            p[i] = pi;
            ds[i] = dsi;
        }
        __syncthreads();
        for (int d = threadIdx.x; d < hd; d += blockDim.x) {
            float acc_v = 0.0f;
            float acc_k = 0.0f;
            for (int i = q_start; i < q_len; ++i) {
                acc_v += p[i] * to_f32(gh[(long long)i * hd + d]);
                acc_k += ds[i] * to_f32(qh[(long long)i * hd + d]);
            }
            dv[row * hd + d] = from_f32<T>(acc_v);
            dk[row * hd + d] = from_f32<T>(acc_k);
        }
    }
}

#define ATTENTION_BACKWARD_DKDV(T, NAME) \
    extern "C" __global__ void __launch_bounds__(128) \
    NAME( \
        const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, \
        const float* __restrict__ lse, const T* __restrict__ grad, const float* __restrict__ delta, \
        T* __restrict__ dk, T* __restrict__ dv, int bh, int q_len, int kv_len, int hd, int causal, \
        float scale \
    ) { \
        attention_backward_dkdv_impl(q, k, v, lse, grad, delta, dk, dv, bh, q_len, kv_len, hd, causal, scale); \
    }
ATTENTION_BACKWARD_DKDV(float, attention_backward_dkdv)
ATTENTION_BACKWARD_DKDV(bf16_bits, attention_backward_dkdv_bf16)
