/*
Masked binary cross-entropy with logits, forward and backward, for
multi-label recognition with partial labels (docs/model.md §5);
src/ops/custom/masked_bce.rs launches them and holds the CPU reference.

Inputs, both f32, contiguous, n = B*C elements:
  logits[i]  any real
  labels[i]  > 0: positive (t = 1), < 0: negative (t = 0), == 0: unknown
Per known element, the stable softplus form of BCE with logits
  l_i = max(x,0) - x*t + log1p(exp(-|x|))
is computed as l_i = max(z,0) + log1p(exp(-|x|)) with z = (t ? -x : x), the
same value for finite x and still correct (not inf - inf) for infinite x.
  loss      = sum_{known} l_i / count,   count = number of known entries
  dlogits_i = (sigmoid(x_i) - t_i) * dloss / count   for known entries
            = 0                                       for unknown entries
where sigmoid(x) - t is evaluated as (t ? -sigmoid(-x) : sigmoid(x)), which
keeps full relative precision for large |x|. With count == 0 the loss is 0
and every gradient is 0, never NaN. Unknown entries are removed by a select,
not a multiply by 0, so a NaN or inf logit at an unknown entry never leaks.
All math is IEEE f32 (expf, log1pf, IEEE division): build WITHOUT
--use_fast_math.

Kernels (extern "C"; every kernel needs blockDim.x a multiple of 32, <= 1024;
n <= 2^30; count is exact up to 2^24 known entries, B*C here is ~10^3):

1. masked_bce_forward_partials(logits, labels, partial_loss, partial_count, n)
   grid  = G = clamp(ceil(ceil(n/4) / 256), 1, 1024), block = 256
   Grid-stride over float4 chunks (16-byte loads when logits and labels are
   both 16-byte aligned, else a scalar loop), scalar tail for n % 4.
   Each thread accumulates its f32 loss sum and its count in registers, then
   common.cuh's block_sum reduces each (the count as an f32, exact below
   2^24).
   WRITES partial_loss[blockIdx.x] (f32) and partial_count[blockIdx.x] (u32).

2. masked_bce_forward_finalize(partial_loss, partial_count, num_partials,
                               loss, count)
   grid = 1, block = 256. num_partials = G of kernel 1.
   Each thread sums partials tid, tid + 256, ... in that order, then
   block_sum as in kernel 1.
   WRITES loss[0] = sum / count (0 when count == 0) and count[0] (u32, read
   by the backward kernel).

3. masked_bce_backward(logits, labels, dloss, count, dlogits, n)
   grid = clamp(ceil(ceil(n/4) / 256), 1, 65535), block = 256
   (any grid is correct: grid-stride). dloss is a device scalar (the incoming
   gradient of the loss), count the device scalar written by kernel 2.
   Float4 loads/stores when logits, labels and dlogits are 16-byte aligned,
   else scalar; scalar tail for n % 4.
   WRITES dlogits[i] for every i < n (assigned with =, never accumulated: the
   caller adds it into an existing gradient if it has to).

Accumulation and determinism: f32 accumulation, a fixed two-pass reduction
(per-thread sums in a fixed grid-stride order, fixed shuffle tree, fixed
per-warp order, then one block over the partials in a fixed order), no
floating-point atomics. For the launch shapes above (G a function of n only)
the loss is bit-identical from run to run and across GPUs of one arch.
Workspace: G floats + G u32 for the partials, 1 f32 loss, 1 u32 count.
*/
#include "common.cuh"

#define MBCE_MAX_THREADS 1024

// One element of the forward: adds l_i to s and 1 to c when the label is known.
__device__ __forceinline__ void mbce_loss_term(float x, float y, float& s, unsigned int& c) {
    const bool known = (y != 0.0f);
    const float z = (y > 0.0f) ? -x : x;
    const float l = fmaxf(z, 0.0f) + log1pf(expf(-fabsf(x)));
    s += known ? l : 0.0f;
    c += known ? 1u : 0u;
}

// One element of the backward: (sigmoid(x) - t) * g for known labels, else 0.
__device__ __forceinline__ float mbce_grad_term(float x, float y, float g) {
    const bool pos = (y > 0.0f);
    const float z = pos ? -x : x;
    const float e = expf(-fabsf(x));
    const float sig_z = ((z >= 0.0f) ? 1.0f : e) / (1.0f + e);   // sigmoid(z)
    const float d = pos ? -sig_z : sig_z;                         // sigmoid(x) - t
    return (y != 0.0f) ? d * g : 0.0f;
}

extern "C" __global__ void __launch_bounds__(MBCE_MAX_THREADS)
masked_bce_forward_partials(const float* __restrict__ logits,
                            const float* __restrict__ labels,
                            float* __restrict__ partial_loss,
                            unsigned int* __restrict__ partial_count,
                            int n) {
    const int tid = blockIdx.x * blockDim.x + threadIdx.x;
    const int stride = gridDim.x * blockDim.x;
    float s = 0.0f;
    unsigned int c = 0u;
    if (aligned16(logits) && aligned16(labels)) {
        const int n4 = n >> 2;
        const float4* x4 = reinterpret_cast<const float4*>(logits);
        const float4* y4 = reinterpret_cast<const float4*>(labels);
        for (int i = tid; i < n4; i += stride) {
            const float4 x = x4[i];
            const float4 y = y4[i];
            mbce_loss_term(x.x, y.x, s, c);
            mbce_loss_term(x.y, y.y, s, c);
            mbce_loss_term(x.z, y.z, s, c);
            mbce_loss_term(x.w, y.w, s, c);
        }
        const int i = (n4 << 2) + tid;  // tail: at most 3 elements
        if (i < n) {
            mbce_loss_term(logits[i], labels[i], s, c);
        }
    } else {
        for (int i = tid; i < n; i += stride) {
            mbce_loss_term(logits[i], labels[i], s, c);
        }
    }
    __shared__ float scratch[32];
    s = block_sum(s, scratch);
    const float known = block_sum((float)c, scratch);
    if (threadIdx.x == 0) {
        partial_loss[blockIdx.x] = s;
        partial_count[blockIdx.x] = (unsigned int)known;
    }
}

extern "C" __global__ void __launch_bounds__(MBCE_MAX_THREADS)
masked_bce_forward_finalize(const float* __restrict__ partial_loss,
                            const unsigned int* __restrict__ partial_count,
                            int num_partials,
                            float* __restrict__ loss,
                            unsigned int* __restrict__ count) {
    float s = 0.0f;
    unsigned int c = 0u;
    for (int i = threadIdx.x; i < num_partials; i += blockDim.x) {
        s += partial_loss[i];
        c += partial_count[i];
    }
    __shared__ float scratch[32];
    s = block_sum(s, scratch);
    const float known = block_sum((float)c, scratch);
    if (threadIdx.x == 0) {
        loss[0] = (known > 0.0f) ? s / known : 0.0f;
        count[0] = (unsigned int)known;
    }
}

extern "C" __global__ void __launch_bounds__(MBCE_MAX_THREADS)
masked_bce_backward(const float* __restrict__ logits,
                    const float* __restrict__ labels,
                    const float* __restrict__ dloss,
                    const unsigned int* __restrict__ count,
                    float* __restrict__ dlogits,
                    int n) {
    const unsigned int cnt = count[0];
    // Scale shared by every known entry; 0 when nothing is known (then every
    // entry is unknown and gets 0 anyway, but no inf is ever formed).
    const float g = (cnt > 0u) ? dloss[0] / (float)cnt : 0.0f;
    const int tid = blockIdx.x * blockDim.x + threadIdx.x;
    const int stride = gridDim.x * blockDim.x;
    if (aligned16(logits) && aligned16(labels) && aligned16(dlogits)) {
        const int n4 = n >> 2;
        const float4* x4 = reinterpret_cast<const float4*>(logits);
        const float4* y4 = reinterpret_cast<const float4*>(labels);
        float4* d4 = reinterpret_cast<float4*>(dlogits);
        for (int i = tid; i < n4; i += stride) {
            const float4 x = x4[i];
            const float4 y = y4[i];
            float4 d;
            d.x = mbce_grad_term(x.x, y.x, g);
            d.y = mbce_grad_term(x.y, y.y, g);
            d.z = mbce_grad_term(x.z, y.z, g);
            d.w = mbce_grad_term(x.w, y.w, g);
            d4[i] = d;
        }
        const int i = (n4 << 2) + tid;  // tail: at most 3 elements
        if (i < n) {
            dlogits[i] = mbce_grad_term(logits[i], labels[i], g);
        }
    } else {
        for (int i = tid; i < n; i += stride) {
            dlogits[i] = mbce_grad_term(logits[i], labels[i], g);
        }
    }
}
