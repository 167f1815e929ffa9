// The simulated GPU's cuBLASLt: descriptors, layouts and preferences as
// plain records, a heuristic that offers one algorithm, and cublasLtMatmul
// over the reference GEMM, honouring data types (f32, bf16), transposes,
// leading dimensions, strided batches and the bias epilogue. Built as a
// library whose SONAME is "libcublasLt.so" (see driver.cpp for why).
#include "gemm_ref.h"

#include <cstdio>

typedef int cublasStatus_t;

namespace {

constexpr cublasStatus_t SUCCESS = 0, INVALID_VALUE = 7, NOT_SUPPORTED = 15;
constexpr int CUDA_R_32F = 0, CUDA_R_16BF = 14;
constexpr int EPILOGUE_DEFAULT = 1, EPILOGUE_BIAS = 4;

struct Desc {
    int compute_type, scale_type;
    int trans_a = 0, trans_b = 0;
    int epilogue = EPILOGUE_DEFAULT;
    const void* bias = nullptr;
    int bias_type = -1;  // -1: D's type
    long long bias_stride = 0;
    int pointer_mode = 0;
};

struct Layout {
    int type;
    unsigned long long rows, cols;
    long long ld;
    int order = 0;  // column-major
    int batch = 1;
    long long stride = 0;
};

struct Pref {};
struct Handle {};

struct Algo {
    unsigned long long data[8];
};

struct HeuristicResult {
    Algo algo;
    size_t workspace;
    cublasStatus_t state;
    float waves;
    int reserved[4];
};

bool elem(int type, sim::Elem* out) {
    if (type == CUDA_R_32F) *out = sim::Elem::F32;
    else if (type == CUDA_R_16BF) *out = sim::Elem::BF16;
    else return false;
    return true;
}

template <typename T>
cublasStatus_t read(T* field, const void* buf, size_t size) {
    if (size != sizeof(T)) return INVALID_VALUE;
    memcpy(field, buf, sizeof(T));
    return SUCCESS;
}

cublasStatus_t reject(const char* why) {
    fprintf(stderr, "mlrpl sim: cublasLtMatmul: %s\n", why);
    return INVALID_VALUE;
}

}  // namespace

#define API extern "C" __attribute__((visibility("default")))

API cublasStatus_t cublasLtCreate(Handle** h) { *h = new Handle; return SUCCESS; }
API cublasStatus_t cublasLtDestroy(Handle* h) { delete h; return SUCCESS; }

API cublasStatus_t cublasLtMatmulDescCreate(Desc** d, int compute_type, int scale_type) {
    *d = new Desc{compute_type, scale_type};
    return SUCCESS;
}
API cublasStatus_t cublasLtMatmulDescDestroy(Desc* d) { delete d; return SUCCESS; }

API cublasStatus_t cublasLtMatmulDescSetAttribute(Desc* d, int attr, const void* buf, size_t size) {
    switch (attr) {
        case 2: return read(&d->pointer_mode, buf, size);
        case 3: return read(&d->trans_a, buf, size);
        case 4: return read(&d->trans_b, buf, size);
        case 7: return read(&d->epilogue, buf, size);
        case 8: return read(&d->bias, buf, size);
        case 10: return read(&d->bias_stride, buf, size);
        case 26: return read(&d->bias_type, buf, size);
        default: return NOT_SUPPORTED;
    }
}

API cublasStatus_t cublasLtMatrixLayoutCreate(Layout** l, int type, unsigned long long rows, unsigned long long cols,
                                              long long ld) {
    *l = new Layout{type, rows, cols, ld};
    return SUCCESS;
}
API cublasStatus_t cublasLtMatrixLayoutDestroy(Layout* l) { delete l; return SUCCESS; }

API cublasStatus_t cublasLtMatrixLayoutSetAttribute(Layout* l, int attr, const void* buf, size_t size) {
    switch (attr) {
        case 1: return read(&l->order, buf, size);
        case 5: return read(&l->batch, buf, size);
        case 6: return read(&l->stride, buf, size);
        default: return NOT_SUPPORTED;
    }
}

API cublasStatus_t cublasLtMatmulPreferenceCreate(Pref** p) { *p = new Pref; return SUCCESS; }
API cublasStatus_t cublasLtMatmulPreferenceDestroy(Pref* p) { delete p; return SUCCESS; }
API cublasStatus_t cublasLtMatmulPreferenceSetAttribute(Pref*, int, const void*, size_t) { return SUCCESS; }

API cublasStatus_t cublasLtMatmulAlgoGetHeuristic(Handle*, Desc*, Layout*, Layout*, Layout*, Layout*, Pref*,
                                                  int requested, HeuristicResult* results, int* returned) {
    if (requested < 1) return INVALID_VALUE;
    memset(&results[0], 0, sizeof(HeuristicResult));
    results[0].state = SUCCESS;
    results[0].waves = 1.0f;
    *returned = 1;
    return SUCCESS;
}

API cublasStatus_t cublasLtMatmul(Handle*, Desc* desc, const void* alpha, const void* a, Layout* la, const void* b,
                                  Layout* lb, const void* beta, const void* c, Layout* lc, void* d, Layout* ld,
                                  const Algo*, void*, size_t, void*) {
    if (desc->pointer_mode != 0) return reject("only host alpha and beta are simulated");
    if (la->order || lb->order || lc->order || ld->order) return reject("only column-major layouts are simulated");
    sim::GemmCall g{};
    g.m = (long long)ld->rows;
    g.n = (long long)ld->cols;
    g.k = (long long)(desc->trans_a ? la->rows : la->cols);
    const long long a_rows = (long long)(desc->trans_a ? la->cols : la->rows);
    const long long b_rows = (long long)(desc->trans_b ? lb->cols : lb->rows);
    const long long b_cols = (long long)(desc->trans_b ? lb->rows : lb->cols);
    if (a_rows != g.m || b_rows != g.k || b_cols != g.n) return reject("op(A), op(B) and D do not fit together");
    if (lc->rows != ld->rows || lc->cols != ld->cols) return reject("C and D differ in shape");
    if (la->batch != ld->batch || lb->batch != ld->batch || lc->batch != ld->batch) return reject("batch counts differ");
    if (la->ld < (long long)la->rows || lb->ld < (long long)lb->rows || lc->ld < (long long)lc->rows || ld->ld < (long long)ld->rows) {
        return reject("a leading dimension smaller than the rows");
    }
    g.batch = ld->batch;
    g.alpha = *static_cast<const float*>(alpha);
    g.beta = *static_cast<const float*>(beta);
    if (!elem(la->type, &g.a.type) || !elem(lb->type, &g.b.type) || !elem(lc->type, &g.c_type) ||
        !elem(ld->type, &g.d_type)) {
        return reject("a data type other than f32 and bf16");
    }
    g.a.ptr = a, g.a.ld = la->ld, g.a.batch_stride = la->stride, g.a.trans = desc->trans_a != 0;
    g.b.ptr = b, g.b.ld = lb->ld, g.b.batch_stride = lb->stride, g.b.trans = desc->trans_b != 0;
    g.c = c, g.ldc = lc->ld, g.stride_c = lc->stride;
    g.d = d, g.ldd = ld->ld, g.stride_d = ld->stride;
    if (desc->epilogue == EPILOGUE_BIAS) {
        if (!desc->bias) return reject("the bias epilogue without a bias pointer");
        if (!elem(desc->bias_type < 0 ? ld->type : desc->bias_type, &g.bias_type)) return reject("a bias data type other than f32 and bf16");
        g.bias = desc->bias;
        g.bias_stride = desc->bias_stride;
    } else if (desc->epilogue != EPILOGUE_DEFAULT) {
        return reject("an epilogue other than DEFAULT and BIAS");
    }
    sim::gemm_reference(g);
    return SUCCESS;
}
