/*
CLIP's symmetric contrastive loss of an [n, n] f32 logit matrix whose
diagonal holds the matching pairs, forward and backward
(src/ops/custom/contrastive_loss.rs launches them and holds the CPU reference):
  loss = (sum_i (row_lse_i - l_ii) + sum_i (col_lse_i - l_ii)) / (2 n)
  dlogits[i, j] = dloss * (softmax_row + softmax_col - 2 [i == j]) / (2 n)
The CPU reference works in f64; this is f32 with max-subtracted sums.

1. contrastive_lse(logits, row_lse, col_lse, n): one block (256 threads)
   per line, 2n lines (line < n: row line, else column line - n), grid =
   min(2n, 65535), grid-stride. block_max then block_sum of exp(l - max).
   WRITES row_lse[i] / col_lse[i].
2. contrastive_forward_finalize(logits, row_lse, col_lse, loss, n): one
   block of 256; thread t sums lines t, t + 256, ... then block_sum.
   WRITES loss[0].
3. contrastive_backward(logits, row_lse, col_lse, dloss, dlogits, n):
   thread per element, block = 256, grid-stride; dloss is a device scalar.
   WRITES dlogits with `=`.
Fixed reduction orders, no atomics: deterministic.
*/
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(256)
contrastive_lse(const float* __restrict__ logits, float* __restrict__ row_lse, float* __restrict__ col_lse,
                int n) {
    __shared__ float scratch[32];
    for (int line = blockIdx.x; line < 2 * n; line += gridDim.x) {
        const bool by_row = line < n;
        const int l = by_row ? line : line - n;
        const long long step = by_row ? 1 : n;
        const float* base = logits + (by_row ? (long long)l * n : (long long)l);
        float m = neg_inf();
        for (int k = threadIdx.x; k < n; k += blockDim.x) {
            m = fmaxf(m, base[k * step]);
        }
        m = block_max(m, scratch);
        float s = 0.0f;
        for (int k = threadIdx.x; k < n; k += blockDim.x) {
            s += expf(base[k * step] - m);
        }
        s = block_sum(s, scratch);
        if (threadIdx.x == 0) {
            const float value = m + logf(s);
            if (by_row) {
                row_lse[l] = value;
            } else {
                col_lse[l] = value;
            }
        }
    }
}

extern "C" __global__ void __launch_bounds__(256)
contrastive_forward_finalize(const float* __restrict__ logits, const float* __restrict__ row_lse,
                             const float* __restrict__ col_lse, float* __restrict__ loss, int n) {
    __shared__ float scratch[32];
    float acc = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        acc += row_lse[i] + col_lse[i] - 2.0f * logits[(long long)i * n + i];
    }
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) {
        loss[0] = acc / (float)(2 * n);
    }
}

extern "C" __global__ void __launch_bounds__(256)
contrastive_backward(const float* __restrict__ logits, const float* __restrict__ row_lse,
                     const float* __restrict__ col_lse, const float* __restrict__ dloss,
                     float* __restrict__ dlogits, int n) {
    const float factor = dloss[0] / (float)(2 * n);
    const long long total = (long long)n * n;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += stride) {
        const int i = (int)(idx / n);
        const int j = (int)(idx % n);
        const float l = logits[idx];
        const float diagonal = (i == j) ? 2.0f : 0.0f;
        dlogits[idx] = (expf(l - row_lse[i]) + expf(l - col_lse[j]) - diagonal) * factor;
    }
}
