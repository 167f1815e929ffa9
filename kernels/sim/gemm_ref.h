// The reference GEMM behind the simulated cuBLAS and cuBLASLt, in their
// column-major terms: D[b] = alpha op(A[b]) op(B[b]) + beta C[b] (+ bias[i]
// on every column), accumulated in double and stored in D's type. With
// beta == 0, C is not read (cuBLAS's rule: it may hold anything, NaN too).
#pragma once

#include <stdint.h>
#include <string.h>

namespace sim {

enum class Elem { F32, BF16 };

inline double load(const void* base, Elem t, long long i) {
    if (t == Elem::F32) return static_cast<const float*>(base)[i];
    const uint32_t bits = (uint32_t) static_cast<const uint16_t*>(base)[i] << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

inline void store(void* base, Elem t, long long i, double v) {
    const float f = (float)v;
    if (t == Elem::F32) {
        static_cast<float*>(base)[i] = f;
        return;
    }
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t bits = (u & 0x7FFFFFFFu) > 0x7F800000u ? 0x7FFF : (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
    static_cast<uint16_t*>(base)[i] = bits;
}

struct Operand {
    const void* ptr;
    Elem type;
    long long ld;
    long long batch_stride;
    bool trans;
};

struct GemmCall {
    long long m, n, k;
    int batch;
    double alpha, beta;
    Operand a, b;
    const void* c;
    Elem c_type;
    long long ldc, stride_c;
    void* d;
    Elem d_type;
    long long ldd, stride_d;
    const void* bias;  // m elements, or null
    Elem bias_type;
    long long bias_stride;
};

inline void gemm_reference(const GemmCall& g) {
    for (int b = 0; b < g.batch; b++) {
        const char* a = static_cast<const char*>(g.a.ptr);
        const char* bm = static_cast<const char*>(g.b.ptr);
        const long long ea = g.a.type == Elem::F32 ? 4 : 2, eb = g.b.type == Elem::F32 ? 4 : 2;
        const void* ab = a + b * g.a.batch_stride * ea;
        const void* bb = bm + b * g.b.batch_stride * eb;
        for (long long j = 0; j < g.n; j++) {
            for (long long i = 0; i < g.m; i++) {
                double acc = 0;
                for (long long p = 0; p < g.k; p++) {
                    const long long ia = g.a.trans ? p + i * g.a.ld : i + p * g.a.ld;
                    const long long ib = g.b.trans ? j + p * g.b.ld : p + j * g.b.ld;
                    acc += load(ab, g.a.type, ia) * load(bb, g.b.type, ib);
                }
                double v = g.alpha * acc;
                if (g.beta != 0.0) v += g.beta * load(g.c, g.c_type, b * g.stride_c + i + j * g.ldc);
                if (g.bias) v += load(g.bias, g.bias_type, b * g.bias_stride + i);
                store(g.d, g.d_type, b * g.stride_d + i + j * g.ldd, v);
            }
        }
    }
}

}  // namespace sim
