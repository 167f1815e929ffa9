// The simulated GPU's cuBLAS: the handle calls and the f32 GEMMs the CUDA
// backend makes (stride-0 batches, k = 0, shapes cuBLASLt declines), over
// the reference GEMM. Built as a library whose SONAME is "libcublas.so"
// (see driver.cpp for why).
#include "gemm_ref.h"

typedef int cublasStatus_t;
struct Handle {};

#define API extern "C" __attribute__((visibility("default")))

namespace {
constexpr cublasStatus_t SUCCESS = 0, INVALID_VALUE = 7;

sim::Operand operand(const float* p, int trans, int ld, long long stride) {
    return sim::Operand{p, sim::Elem::F32, ld, stride, trans != 0};
}

cublasStatus_t sgemm(int transa, int transb, int m, int n, int k, const float* alpha, const float* a, int lda,
                     long long sa, const float* b, int ldb, long long sb, const float* beta, float* c, int ldc,
                     long long sc, int batch) {
    if (m < 0 || n < 0 || k < 0 || batch < 0 || (transa > 1) || (transb > 1)) return INVALID_VALUE;
    sim::GemmCall g{};
    g.m = m, g.n = n, g.k = k, g.batch = batch, g.alpha = *alpha, g.beta = *beta;
    g.a = operand(a, transa, lda, sa);
    g.b = operand(b, transb, ldb, sb);
    g.c = c, g.c_type = sim::Elem::F32, g.ldc = ldc, g.stride_c = sc;
    g.d = c, g.d_type = sim::Elem::F32, g.ldd = ldc, g.stride_d = sc;
    sim::gemm_reference(g);
    return SUCCESS;
}
}  // namespace

API cublasStatus_t cublasCreate_v2(Handle** h) { *h = new Handle; return SUCCESS; }
API cublasStatus_t cublasDestroy_v2(Handle* h) { delete h; return SUCCESS; }
API cublasStatus_t cublasSetStream_v2(Handle*, void*) { return SUCCESS; }
API cublasStatus_t cublasSetWorkspace_v2(Handle*, void*, size_t) { return SUCCESS; }
API cublasStatus_t cublasSetMathMode(Handle*, int) { return SUCCESS; }
API cublasStatus_t cublasSetPointerMode_v2(Handle*, int mode) { return mode == 0 ? SUCCESS : INVALID_VALUE; }

API cublasStatus_t cublasSgemm_v2(Handle*, int transa, int transb, int m, int n, int k, const float* alpha,
                                  const float* a, int lda, const float* b, int ldb, const float* beta, float* c,
                                  int ldc) {
    return sgemm(transa, transb, m, n, k, alpha, a, lda, 0, b, ldb, 0, beta, c, ldc, 0, 1);
}

API cublasStatus_t cublasSgemmStridedBatched(Handle*, int transa, int transb, int m, int n, int k,
                                             const float* alpha, const float* a, int lda, long long sa,
                                             const float* b, int ldb, long long sb, const float* beta, float* c,
                                             int ldc, long long sc, int batch) {
    return sgemm(transa, transb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc, sc, batch);
}
