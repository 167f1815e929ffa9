/*
Fused optimizer updates over many f32 tensors at once, in place
(src/backend/cuda/optimizer.rs launches them), with the formulas of
src/backend/cpu/optim.rs (PyTorch's SGD and AdamW).

One launch updates up to MAX_UPDATE_TENSORS tensors (every trainable
tensor of an MLR-PL run fits one launch). Their pointers, lengths and
weight decays travel in a table passed by value as a __grid_constant__
kernel parameter, so no table is uploaded and the step needs no host
synchronisation. The host packs the tensors one after another into one
index space, each starting at a multiple of 4 (`offset`); the space is cut
into chunks of UPDATE_CHUNK elements, one per block (grid-stride over
chunks, grid = min(chunks, 65535)), and a chunk may span several tensors.
Within a chunk, thread t takes groups of 4 elements t, t + 256, ...: a
whole group is one 16-byte load/store per buffer (pool buffers are 256-byte
aligned and groups start at multiples of 4), the tail of a tensor goes
element by element.

1. sgd_step(table, total, lr, momentum):
   g' = g + wd p; m = momentum m + g'; p -= lr m.
2. adamw_step(table, total, lr, beta1, beta2, eps, bias_correction1,
   bias_correction2): p *= 1 - lr wd; Adam moments;
   p -= lr m_hat / (sqrt(v_hat) + eps). The bias corrections 1 - beta^step
   are computed once on the host in f32 (as the CPU does).
block = 256. Each element of p, m (and v) is read and written by exactly
one thread: no races, no atomics, deterministic; f32 throughout.
*/
#include "common.cuh"

#define MAX_UPDATE_TENSORS 48
#define UPDATE_CHUNK 4096

// One tensor of a fused update (mirrored by `UpdateTensor` in src/backend/cuda/optimizer.rs).
struct UpdateTensor {
    float* p;
    const float* grad;
    float* m;
    float* v;  // AdamW's second moment; unused (null) for SGD
    long long offset;
    int n;
    float weight_decay;
};

struct UpdateTable {
    UpdateTensor t[MAX_UPDATE_TENSORS];
    int count;
};

// Up to 4 consecutive floats: one 16-byte access for a whole group. Not
// common.cuh's Group: p, m and v are read and then written by the same
// kernel, and Group's __restrict__ loads let nvcc use the read-only (.nc)
// path for them, which PTX leaves undefined for memory the kernel writes
// (nvcc 13.0 also split Group's stores here into 4-byte ones).
__device__ __forceinline__ void load_group(const float* src, int lanes, float* dst) {
    if (lanes == 4) {
        const float4 q = *reinterpret_cast<const float4*>(src);
        dst[0] = q.x;
        dst[1] = q.y;
        dst[2] = q.z;
        dst[3] = q.w;
    } else {
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            if (k < lanes) dst[k] = src[k];  // constant indices keep dst in registers
        }
    }
}

__device__ __forceinline__ void store_group(float* dst, int lanes, const float* src) {
    if (lanes == 4) {
        // nvcc 13.0 splits a plain float4 assignment here into four 4-byte
        // stores; __stwb (the default write-back store) keeps one 16-byte one.
        __stwb(reinterpret_cast<float4*>(dst), make_float4(src[0], src[1], src[2], src[3]));
    } else {
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            if (k < lanes) dst[k] = src[k];
        }
    }
}

// Calls update(tensor, first element, lanes) for every group of up to 4
// elements of every tensor in `table`, each group by exactly one thread.
template <typename Update>
__device__ __forceinline__ void for_each_group(const UpdateTable& table, long long total, Update update) {
    for (long long chunk = (long long)blockIdx.x * UPDATE_CHUNK; chunk < total;
         chunk += (long long)gridDim.x * UPDATE_CHUNK) {
        const long long chunk_end = chunk + UPDATE_CHUNK;
        for (int t = 0; t < table.count; ++t) {
            const UpdateTensor& x = table.t[t];
            if (x.offset >= chunk_end) break;  // tensors are packed in order
            const long long lo = max(chunk, x.offset) - x.offset;
            const long long hi = min(chunk_end, x.offset + x.n) - x.offset;
            for (long long e = lo + 4 * threadIdx.x; e < hi; e += 4 * blockDim.x) {
                update(x, e, (int)min(4LL, x.n - e));
            }
        }
    }
}

struct SgdUpdate {
    float lr, momentum;
    __device__ __forceinline__ void operator()(const UpdateTensor& x, long long e, int lanes) const {
        float p[4], g[4], m[4];
        load_group(x.p + e, lanes, p);
        load_group(x.grad + e, lanes, g);
        load_group(x.m + e, lanes, m);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            m[k] = momentum * m[k] + (g[k] + x.weight_decay * p[k]);
            p[k] -= lr * m[k];
        }
        store_group(x.m + e, lanes, m);
        store_group(x.p + e, lanes, p);
    }
};

struct AdamWUpdate {
    float lr, beta1, beta2, eps, bias_correction1, bias_correction2;
    __device__ __forceinline__ void operator()(const UpdateTensor& x, long long e, int lanes) const {
        float p[4], g[4], m[4], v[4];
        load_group(x.p + e, lanes, p);
        load_group(x.grad + e, lanes, g);
        load_group(x.m + e, lanes, m);
        load_group(x.v + e, lanes, v);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            p[k] *= 1.0f - lr * x.weight_decay;
            m[k] = beta1 * m[k] + (1.0f - beta1) * g[k];
            v[k] = beta2 * v[k] + (1.0f - beta2) * g[k] * g[k];
            const float m_hat = m[k] / bias_correction1;
            const float v_hat = v[k] / bias_correction2;
            p[k] -= lr * m_hat / (sqrtf(v_hat) + eps);
        }
        store_group(x.m + e, lanes, m);
        store_group(x.v + e, lanes, v);
        store_group(x.p + e, lanes, p);
    }
};

extern "C" __global__ void __launch_bounds__(256)
sgd_step(const __grid_constant__ UpdateTable table, long long total, float lr, float momentum) {
    for_each_group(table, total, SgdUpdate{lr, momentum});
}

extern "C" __global__ void __launch_bounds__(256)
adamw_step(const __grid_constant__ UpdateTable table, long long total, float lr, float beta1, float beta2, float eps,
           float bias_correction1, float bias_correction2) {
    for_each_group(table, total, AdamWUpdate{lr, beta1, beta2, eps, bias_correction1, bias_correction2});
}
