/*
Masked binary cross-entropy with logits, forward and backward in one pass
over the logits and labels, for multi-label recognition with partial labels
(docs/model.md §5); src/ops/custom/masked_bce.rs launches them and holds the
CPU reference.

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
where sigmoid(x) - t is evaluated as (t ? -sigmoid(-x) : sigmoid(x)) from
the same exp(-|x|) as the loss, which keeps full relative precision for
large |x|. With count == 0 the loss is 0 and every gradient is 0, never NaN.
Unknown entries are removed by a select, not a multiply by 0, so a NaN or
inf logit at an unknown entry never leaks. All math is IEEE f32 (expf,
log1pf, IEEE division): build WITHOUT --use_fast_math.

One pass: the forward reads each logit and label once and writes, beside
the loss, the unscaled gradient r_i = sigmoid(x_i) - t_i (0 where unknown)
and the count into a saved buffer of n + 1 floats; the backward only scales
r by dloss / count (it never reads the logits or labels again). The count
needs every block's partial, so the forward's last block to finish (an
integer ticket) sums the partials; the gradient's scale waits for the
backward, which the loss's consumer launches anyway.

Kernels (extern "C"; blockDim.x a multiple of 32, <= 1024; n <= 2^30; the
count is stored as an f32, exact up to 2^24 known entries, checked by the
host):

1. masked_bce_forward(logits, labels, saved, partial_loss, partial_count,
                      ticket, loss, n)
   grid = G = clamp(ceil(ceil(n/4) / 256), 1, 1024), block = 256; ticket is
   one zeroed u32.
   Grid-stride over float4 chunks (16-byte accesses when logits, labels and
   saved are all 16-byte aligned, else a scalar loop), scalar tail for
   n % 4. Each thread accumulates its f32 loss sum and its count in
   registers, then common.cuh's block_sum reduces each (the count as an
   f32, exact below 2^24).
   WRITES saved[i] = r_i for i < n, partial_loss[blockIdx.x] and
   partial_count[blockIdx.x]; then thread 0 fences and takes a ticket
   (atomicAdd on the u32, the only atomic: an integer); the block that
   draws G - 1 sums the partials in block order (thread k takes partials
   k, k + 256, ..., then block_sum, read through volatile so no stale
   cache line is seen) and WRITES loss[0] = sum / count (0 when count == 0)
   and saved[n] = count.
2. masked_bce_backward(saved, dloss, dlogits, n)
   grid = clamp(ceil(ceil(n/4) / 256), 1, 65535), block = 256 (any grid is
   correct: grid-stride). dloss is a device scalar (the incoming gradient of
   the loss). Float4 loads/stores when saved and dlogits are 16-byte
   aligned, else scalar; scalar tail for n % 4.
   WRITES dlogits[i] = saved[i] * (count > 0 ? dloss / count : 0), for
   every i < n (assigned with =, never accumulated).

Accumulation and determinism: f32 accumulation, a fixed two-stage reduction
(per-thread sums in a fixed grid-stride order, fixed shuffle tree, fixed
per-warp order, then the partials in block order whichever block sums
them), no floating-point atomics. For the launch shapes above (G a function
of n only) the loss is bit-identical from run to run and across GPUs of one
arch. Workspace: G floats + G u32 for the partials, one u32 ticket.
*/
#include "common.cuh"

#define MBCE_MAX_THREADS 1024

// One element: adds l_i to s and 1 to c when the label is known, and
// returns r_i = sigmoid(x) - t (0 when unknown).
__device__ __forceinline__ float mbce_term(float x, float y, float& s, unsigned int& c) {
    const bool known = (y != 0.0f);
    const bool pos = (y > 0.0f);
    const float z = pos ? -x : x;
    const float e = expf(-fabsf(x));
    const float l = fmaxf(z, 0.0f) + log1pf(e);
    const float sig_z = ((z >= 0.0f) ? 1.0f : e) / (1.0f + e);  // sigmoid(z)
    s += known ? l : 0.0f;
    c += known ? 1u : 0u;
    const float r = pos ? -sig_z : sig_z;  // sigmoid(x) - t
    return known ? r : 0.0f;
}

extern "C" __global__ void __launch_bounds__(MBCE_MAX_THREADS)
masked_bce_forward(const float* __restrict__ logits,
                   const float* __restrict__ labels,
                   float* __restrict__ saved,
                   float* partial_loss,
                   unsigned int* partial_count,
                   unsigned int* ticket,
                   float* __restrict__ loss,
                   int n) {
    const int tid = blockIdx.x * blockDim.x + threadIdx.x;
    const int stride = gridDim.x * blockDim.x;
    float s = 0.0f;
    unsigned int c = 0u;
    if (aligned16(logits) && aligned16(labels) && aligned16(saved)) {
        const int n4 = n >> 2;
        const float4* x4 = reinterpret_cast<const float4*>(logits);
        const float4* y4 = reinterpret_cast<const float4*>(labels);
        float4* r4 = reinterpret_cast<float4*>(saved);
        for (int i = tid; i < n4; i += stride) {
            const float4 x = x4[i];
            const float4 y = y4[i];
            float4 r;
            r.x = mbce_term(x.x, y.x, s, c);
            r.y = mbce_term(x.y, y.y, s, c);
            r.z = mbce_term(x.z, y.z, s, c);
            r.w = mbce_term(x.w, y.w, s, c);
            r4[i] = r;
        }
        const int i = (n4 << 2) + tid;  // tail: at most 3 elements
        if (i < n) {
            saved[i] = mbce_term(logits[i], labels[i], s, c);
        }
    } else {
        for (int i = tid; i < n; i += stride) {
            saved[i] = mbce_term(logits[i], labels[i], s, c);
        }
    }
    __shared__ float scratch[32];
    __shared__ unsigned int is_last;
    s = block_sum(s, scratch);
    const float known = block_sum((float)c, scratch);
    if (threadIdx.x == 0) {
        partial_loss[blockIdx.x] = s;
        partial_count[blockIdx.x] = (unsigned int)known;
        // The partials are visible device-wide before the ticket is taken.
        __threadfence();
        is_last = (atomicAdd(ticket, 1u) == gridDim.x - 1) ? 1u : 0u;
    }
    __syncthreads();
    if (is_last == 0u) {
        return;
    }
    const volatile float* all_loss = partial_loss;
    const volatile unsigned int* all_count = partial_count;
    float total = 0.0f;
    unsigned int count = 0u;
    for (int i = threadIdx.x; i < (int)gridDim.x; i += blockDim.x) {
        total += all_loss[i];
        count += all_count[i];
    }
    total = block_sum(total, scratch);
    const float all_known = block_sum((float)count, scratch);
    if (threadIdx.x == 0) {
        loss[0] = (all_known > 0.0f) ? total / all_known : 0.0f;
        saved[n] = all_known;
    }
}

extern "C" __global__ void __launch_bounds__(MBCE_MAX_THREADS)
masked_bce_backward(const float* __restrict__ saved,
                    const float* __restrict__ dloss,
                    float* __restrict__ dlogits,
                    int n) {
    const float count = saved[n];
    // 0 when nothing is known (then every r_i is 0 anyway, but no inf is
    // ever formed).
    const float g = (count > 0.0f) ? dloss[0] / count : 0.0f;
    const int tid = blockIdx.x * blockDim.x + threadIdx.x;
    const int stride = gridDim.x * blockDim.x;
    if (aligned16(saved) && aligned16(dlogits)) {
        const int n4 = n >> 2;
        const float4* r4 = reinterpret_cast<const float4*>(saved);
        float4* d4 = reinterpret_cast<float4*>(dlogits);
        for (int i = tid; i < n4; i += stride) {
            const float4 r = r4[i];
            d4[i] = make_float4(r.x * g, r.y * g, r.z * g, r.w * g);
        }
        const int i = (n4 << 2) + tid;  // tail: at most 3 elements
        if (i < n) {
            dlogits[i] = saved[i] * g;
        }
    } else {
        for (int i = tid; i < n; i += stride) {
            dlogits[i] = saved[i] * g;
        }
    }
}
