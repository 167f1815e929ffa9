/*
Prompt assembly of the text pass (docs/model.md §3) and its backward into
the learned context; src/ops/custom/prompt_embed.rs launches them and holds
the CPU reference.

Sizes: C categories, L positions run (the longest EOT + 1: the truncation),
M context vectors, width W, S context sets (C, or 1 when shared, as CoOp).
  frozen  T   [C, L - M, W]  the frozen token embeddings of each prompt
                            without its M placeholder rows: row 0 is SOT,
                            rows 1.. the class name, ".", EOT and padding
  pos     T   [P, W], P >= L the tower's positional embeddings (the first
                            L rows are read)
  ctx     f32 [S, M, W]      the learned context
  x       T   [C, L, W]      the transformer's input
T is float or bf16_bits (the tower's dtype: the `_bf16` instances read and
write bf16 as stored, widened on load, computed in f32, rounded once on
store). The context is always f32.

1. prompt_embed_forward(frozen, pos, ctx, x, C, L, W, M, shared, ctx_bf16)
   x[c, l, w] = pos[l, w] + (1 <= l <= M ? r(ctx[s, l - 1, w])
                                         : frozen[c, l < 1 ? 0 : l - M, w])
   with s = 0 when shared, else c, and r the rounding to bf16 when ctx_bf16
   (a bf16 tower: what to_dtype(ctx) fed the add) or the identity: the f32
   sum rounded once to T. This is the whole of to_dtype(ctx) + broadcast +
   concat(prefix, ctx, suffix) + positional add, bit for bit, in one pass
   that writes x once.
   block = 256, grid = min(ceil(C L W / 256), 65535) (grid-stride over the
   C L W elements of x: consecutive threads take consecutive w, so every
   load and store is coalesced). WRITES every x element, with `=`.
2. prompt_embed_backward(dx, dctx, C, L, W, M, shared)
   dctx[s, m, w] = sum over the categories c of set s of dx[c, 1 + m, w]
   (one category per set, or all C, c = 0, 1, ..., C - 1, when shared).
   block = 256, grid = min(ceil(S M W / 256), 65535): one thread per dctx
   element (grid-stride), which walks its categories in increasing c.
   WRITES every dctx element, with `=`; dx rows 0 and M + 1.. are never
   read (their gradient stops at the frozen embeddings and the frozen
   positional table).

Accumulation and determinism: f32 throughout; the shared context's sum runs
in category order in one thread, no atomics, so dctx is bit-identical from
run to run and for any grid. No reduction in the forward. All sizes fit an
int (checked by the host); element offsets are 64-bit.
*/
#include "common.cuh"

template <typename T>
__device__ __forceinline__ void prompt_embed_forward_impl(const T* __restrict__ frozen, const T* __restrict__ pos,
                                                          const float* __restrict__ ctx, T* __restrict__ x, int classes,
                                                          int len, int width, int n_ctx, int shared,
                                                          int ctx_bf16) {
    const long long row = (long long)len * width;
    const long long n = (long long)classes * row;
    const long long frozen_row = (long long)(len - n_ctx) * width;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const long long c = i / row;
        const long long r = i - c * row;  // l * W + w
        const int l = (int)(r / width);
        const long long w = r - (long long)l * width;
        float v;
        if (l >= 1 && l <= n_ctx) {
            v = ctx[(shared ? 0 : c) * (long long)n_ctx * width + (long long)(l - 1) * width + w];
            if (ctx_bf16) {
                v = to_f32(from_f32<bf16_bits>(v));
            }
        } else {
            const int f = (l == 0) ? 0 : l - n_ctx;
            v = to_f32(frozen[c * frozen_row + (long long)f * width + w]);
        }
        x[i] = from_f32<T>(v + to_f32(pos[r]));
    }
}

template <typename T>
__device__ __forceinline__ void prompt_embed_backward_impl(const T* __restrict__ dx, float* __restrict__ dctx,
                                                           int classes, int len, int width, int n_ctx, int shared) {
    const long long row = (long long)len * width;
    const long long per_set = (long long)n_ctx * width;
    const long long n = (shared ? 1 : classes) * per_set;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x; j < n; j += stride) {
        const long long s = j / per_set;
        const long long r = j - s * per_set;  // m * W + w
        // Position 1 + m of category c: c * L W + W + m W + w.
        const T* g = dx + width + r;
        float acc;
        if (shared) {
            acc = 0.0f;
            for (int c = 0; c < classes; ++c) {
                acc += to_f32(g[c * row]);
            }
        } else {
            acc = to_f32(g[s * row]);
        }
        dctx[j] = acc;
    }
}

#define PROMPT_EMBED(T, FWD, BWD) \
    extern "C" __global__ void __launch_bounds__(256) \
    FWD(const T* __restrict__ frozen, const T* __restrict__ pos, const float* __restrict__ ctx, T* __restrict__ x, \
        int classes, int len, int width, int n_ctx, int shared, int ctx_bf16) { \
        prompt_embed_forward_impl(frozen, pos, ctx, x, classes, len, width, n_ctx, shared, ctx_bf16); \
    } \
    extern "C" __global__ void __launch_bounds__(256) \
    BWD(const T* __restrict__ dx, float* __restrict__ dctx, int classes, int len, int width, int n_ctx, int shared) { \
        prompt_embed_backward_impl(dx, dctx, classes, len, width, n_ctx, shared); \
    }
PROMPT_EMBED(float, prompt_embed_forward, prompt_embed_backward)
PROMPT_EMBED(bf16_bits, prompt_embed_forward_bf16, prompt_embed_backward_bf16)
