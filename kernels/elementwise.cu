/*
Elementwise maps: unary ops and their backward, broadcasting binary ops and
in-place accumulation (src/backend/cuda/elementwise.rs launches them).

Op codes (must match UnaryCode/BinaryCode in src/backend/cuda/elementwise.rs):
  unary:  0 neg, 1 exp, 2 log, 3 sqrt, 4 tanh, 5 sigmoid, 6 quick_gelu
          (x * sigmoid(1.702 x)), 7 affine (scale * x + shift),
          8 clamp (min(max(x, scale), shift); gradient 1 where
          scale <= x <= shift, else 0)
  binary: 0 add, 1 sub, 2 mul, 3 div

Kernels (n < 2^31; every launch is grid-stride, so any grid is correct;
the host uses block = 256, grid = min(ceil(n / 256), 65535), and
ceil(n / lanes / 256) for the 16-byte kernels, lanes = 4 f32 or 8 bf16).
Kernels 1 to 3 come in f32 and in bf16 (`_bf16`: bf16 in and out, each
element widened to f32, computed in f32, rounded once on store);
add_in_place (parameter gradients, f32) is f32 only.

1. unary_forward(x, y, n, op, scale, shift): y[i] = op(x[i]).
   16-byte loads/stores when x and y are 16-byte aligned, scalar tail.
2. unary_backward(x, y, grad, dx, n, op, scale, shift): dx[i] = grad[i] * op'(x[i]),
   using the forward output y where that is cheaper (exp, sqrt, tanh,
   sigmoid), exactly the formulas of src/backend/cpu/elementwise.rs.
3. binary_broadcast(lhs, rhs, out, n, op, map): out[i] = lhs[a(i)] op
   rhs[b(i)], where map.dims are the output dims and map.a / map.b the
   broadcast strides (0 on broadcast dims) of lhs / rhs.
4. add_in_place(acc, x, n): acc[i] += x[i] (parameter-gradient
   accumulation); float4 when both are 16-byte aligned.

Every output element is written by exactly one thread with `=` (add_in_place
reads and writes its own element only): no atomics, no reductions, results
are deterministic. IEEE expf/logf/sqrtf/tanhf: build WITHOUT --use_fast_math.
*/
#include "common.cuh"

#define QUICK_GELU_ALPHA 1.702f

__device__ __forceinline__ float sigmoid_f(float x) {
    return 1.0f / (1.0f + expf(-x));
}

__device__ __forceinline__ float unary_apply(int op, float x, float scale, float shift) {
    switch (op) {
        case 0: return -x;
        case 1: return expf(x);
        case 2: return logf(x);
        case 3: return sqrtf(x);
        case 4: return tanhf(x);
        case 5: return sigmoid_f(x);
        case 6: return x * sigmoid_f(QUICK_GELU_ALPHA * x);
        case 8: return fminf(fmaxf(x, scale), shift);
        default: return scale * x + shift;
    }
}

__device__ __forceinline__ float unary_derivative(int op, float x, float y, float scale, float shift) {
    switch (op) {
        case 0: return -1.0f;
        case 1: return y;
        case 2: return 1.0f / x;
        case 3: return 0.5f / y;
        case 4: return 1.0f - y * y;
        case 5: return y * (1.0f - y);
        case 6: {
            const float s = sigmoid_f(QUICK_GELU_ALPHA * x);
            return s + QUICK_GELU_ALPHA * x * s * (1.0f - s);
        }
        case 8: return (x >= scale && x <= shift) ? 1.0f : 0.0f;
        default: return scale;
    }
}

template <typename T>
__device__ __forceinline__ T unary_one(const T x, int op, float scale, float shift) {
    return from_f32<T>(unary_apply(op, to_f32(x), scale, shift));
}

template <typename T>
__device__ __forceinline__ void unary_forward_impl(const T* __restrict__ x, T* __restrict__ y, int n, int op,
                                                   float scale, float shift) {
    const int tid = blockIdx.x * blockDim.x + threadIdx.x;
    const int stride = gridDim.x * blockDim.x;
    if (aligned16(x) && aligned16(y)) {
        constexpr int lanes = Pack16<T>::lanes;
        const int packs = n / lanes;
        for (int i = tid; i < packs; i += stride) {
            Group<T, lanes> g;
            g.load(x + (long long)i * lanes);
#pragma unroll
            for (int l = 0; l < lanes; ++l) {
                g.v[l] = unary_apply(op, g.v[l], scale, shift);
            }
            g.store(y + (long long)i * lanes);
        }
        const int i = packs * lanes + tid;  // tail: fewer than `lanes` elements
        if (i < n) {
            y[i] = unary_one(x[i], op, scale, shift);
        }
    } else {
        for (int i = tid; i < n; i += stride) {
            y[i] = unary_one(x[i], op, scale, shift);
        }
    }
}

#define UNARY_FORWARD(T, NAME) \
    extern "C" __global__ void __launch_bounds__(256) \
    NAME( \
        const T* __restrict__ x, T* __restrict__ y, int n, int op, float scale, float shift \
    ) { \
        unary_forward_impl(x, y, n, op, scale, shift); \
    }
UNARY_FORWARD(float, unary_forward)
UNARY_FORWARD(bf16_bits, unary_forward_bf16)

template <typename T>
__device__ __forceinline__ void unary_backward_impl(const T* __restrict__ x, const T* __restrict__ y,
                                                    const T* __restrict__ grad, T* __restrict__ dx, int n, int op,
                                                    float scale, float shift) {
    const int stride = gridDim.x * blockDim.x;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        dx[i] = from_f32<T>(to_f32(grad[i]) * unary_derivative(op, to_f32(x[i]), to_f32(y[i]), scale, shift));
    }
}

#define UNARY_BACKWARD(T, NAME) \
    extern "C" __global__ void __launch_bounds__(256) \
    NAME( \
        const T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ grad, \
        T* __restrict__ dx, int n, int op, float scale, float shift \
    ) { \
        unary_backward_impl(x, y, grad, dx, n, op, scale, shift); \
    }
UNARY_BACKWARD(float, unary_backward)
UNARY_BACKWARD(bf16_bits, unary_backward_bf16)

template <typename T>
__device__ __forceinline__ void binary_broadcast_impl(const T* __restrict__ lhs, const T* __restrict__ rhs,
                                                      T* __restrict__ out, int n, int op, const IndexMap& map) {
    const int stride = gridDim.x * blockDim.x;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        long long off_a;
        long long off_b;
        map_offsets(i, map, off_a, off_b);
        const float a = to_f32(lhs[off_a]);
        const float b = to_f32(rhs[off_b]);
        float r;
        switch (op) {
            case 0: r = a + b; break;
            case 1: r = a - b; break;
            case 2: r = a * b; break;
            default: r = a / b; break;
        }
        out[i] = from_f32<T>(r);
    }
}

#define BINARY_BROADCAST(T, NAME) \
    extern "C" __global__ void __launch_bounds__(256) \
    NAME( \
        const T* __restrict__ lhs, const T* __restrict__ rhs, T* __restrict__ out, int n, int op, \
        IndexMap map \
    ) { \
        binary_broadcast_impl(lhs, rhs, out, n, op, map); \
    }
BINARY_BROADCAST(float, binary_broadcast)
BINARY_BROADCAST(bf16_bits, binary_broadcast_bf16)

extern "C" __global__ void __launch_bounds__(256)
add_in_place(float* __restrict__ acc, const float* __restrict__ x, int n) {
    const int tid = blockIdx.x * blockDim.x + threadIdx.x;
    const int stride = gridDim.x * blockDim.x;
    if (aligned16(acc) && aligned16(x)) {
        const int n4 = n >> 2;
        float4* a4 = reinterpret_cast<float4*>(acc);
        const float4* x4 = reinterpret_cast<const float4*>(x);
        for (int i = tid; i < n4; i += stride) {
            float4 a = a4[i];
            const float4 v = x4[i];
            a.x += v.x;
            a.y += v.y;
            a.z += v.z;
            a.w += v.w;
            a4[i] = a;
        }
        const int i = (n4 << 2) + tid;
        if (i < n) {
            acc[i] += x[i];
        }
    } else {
        for (int i = tid; i < n; i += stride) {
            acc[i] += x[i];
        }
    }
}
