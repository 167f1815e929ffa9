/*
Row gathers and their deterministic scatter-add adjoint
(src/backend/cuda/index.rs launches them). Tables are f32 [rows, cols]
(index_select also bf16: index_select_bf16 copies the 16-bit values as they
are, so the bf16 token-embedding table is never widened), ids are u32.

1. index_select(table, ids, out, n_ids, rows, cols, bad)
   out[i, j] = table[ids[i], j]. block = 256, grid-stride over n_ids * cols
   elements, or over 16-byte packs (4 f32, 8 bf16) when cols is a multiple
   of a pack: each thread then copies 16 bytes of a row.
   An id >= rows writes NaN to its output row and raises bad[0] to
   max(bad[0], id + 1) (an integer atomicMax: the final value does not
   depend on the order). bad is the device's one index-fault word: the
   host reads it at its next download, not after this launch, so a gather
   never stalls the stream (src/backend/cuda/device.rs, with_index_fault).
2. index_add(grad, ids, out, n_ids, rows, cols, bad)
   out must be zeroed first (the host memsets it). One block (256 threads)
   per position i, grid-stride over i: the block checks whether ids[i]
   occurred at an earlier position (__syncthreads_or); only the FIRST occurrence of each id
   writes, and it sums grad[k, j] over every k >= i with ids[k] == id in
   increasing k, then WRITES out[id, j] with `=`. So repeated ids accumulate
   in the order of ids, as the CPU reference does, with no float atomics.
   Work is O(n_ids^2 + n_ids * cols) per launch: fine for the few thousand
   ids of a token-embedding gradient. Bad ids are reported as in 1.
*/
#include "common.cuh"

template <typename T>
__device__ __forceinline__ void index_select_impl(const T* __restrict__ table, const unsigned int* __restrict__ ids,
                                                  T* __restrict__ out, int n_ids, int rows, int cols,
                                                  unsigned int* __restrict__ bad) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    constexpr int lanes = Pack16<T>::lanes;
    if (cols % lanes == 0) {
        // Rows of whole 16-byte packs: copy packs, bits as they are.
        const int packs = cols / lanes;
        const uint4* src = reinterpret_cast<const uint4*>(table);
        uint4* dst = reinterpret_cast<uint4*>(out);
        for (long long i = tid; i < (long long)n_ids * packs; i += stride) {
            const unsigned int id = ids[i / packs];
            if (id >= (unsigned int)rows) {
                Pack16<T> nan;
#pragma unroll
                for (int k = 0; k < lanes; ++k) nan.v[k] = from_f32<T>(__int_as_float(0x7fc00000));
                dst[i] = nan.raw;
                atomicMax(bad, id + 1u);
            } else {
                dst[i] = src[(long long)id * packs + i % packs];
            }
        }
        return;
    }
    for (long long i = tid; i < (long long)n_ids * cols; i += stride) {
        const unsigned int id = ids[i / cols];
        if (id >= (unsigned int)rows) {
            out[i] = from_f32<T>(__int_as_float(0x7fc00000));
            atomicMax(bad, id + 1u);
        } else {
            out[i] = table[(long long)id * cols + i % cols];
        }
    }
}

#define INDEX_SELECT(T, NAME) \
    extern "C" __global__ void __launch_bounds__(256) \
    NAME( \
        const T* __restrict__ table, const unsigned int* __restrict__ ids, T* __restrict__ out, int n_ids, \
        int rows, int cols, unsigned int* __restrict__ bad \
    ) { \
        index_select_impl(table, ids, out, n_ids, rows, cols, bad); \
    }
INDEX_SELECT(float, index_select)
INDEX_SELECT(bf16_bits, index_select_bf16)

extern "C" __global__ void __launch_bounds__(256)
index_add(const float* __restrict__ grad, const unsigned int* __restrict__ ids, float* __restrict__ out,
          int n_ids, int rows, int cols, unsigned int* __restrict__ bad) {
    for (int i = blockIdx.x; i < n_ids; i += gridDim.x) {
        const unsigned int id = ids[i];
        int seen_before = 0;
        for (int k = threadIdx.x; k < i; k += blockDim.x) {
            seen_before |= (ids[k] == id);
        }
        // Uniform across the block: every thread takes the same branch.
        if (__syncthreads_or(seen_before)) {
            continue;
        }
        if (id >= (unsigned int)rows) {
            if (threadIdx.x == 0) {
                atomicMax(bad, id + 1u);
            }
            continue;
        }
        for (int j = threadIdx.x; j < cols; j += blockDim.x) {
            float acc = 0.0f;
            for (int k = i; k < n_ids; ++k) {
                if (ids[k] == id) {
                    acc += grad[(long long)k * cols + j];
                }
            }
            out[(long long)id * cols + j] = acc;
        }
    }
}
