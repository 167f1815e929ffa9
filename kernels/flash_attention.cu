/*
Flash attention on tensor cores, forward and backward, for bf16 heads of
width 64 (src/backend/cuda/flash_attention.rs launches them; f32 attention
and other head widths keep kernels/attention.cu). q [bh, q_len, 64], k and v
[bh, kv_len, 64], out, grad, dq, dk, dv bf16; lse and delta f32. Causal:
query i sees keys j <= i only (q_len == kv_len). Same contract as
src/backend/cpu/attention.rs: the forward saves each query row's natural
log-sum-exp, the backward recomputes the probabilities from it.

Tiles of 64 queries and 64 keys; a block is 4 warps (128 threads), each warp
owns 16 rows of the block's tile. Products are mma.sync m16n8k16 (bf16
operands, f32 accumulators) whose fragments are plain 32-bit shared-memory
loads of tiles with a row stride of 72 elements (144 bytes: the 32 lanes
of a fragment load hit 32 different banks). An operand the mma takes by
column of its row-major tile (V, and Q, grad, K in the backward's second
products) is staged transposed, by conflict-free 16-bit stores, and then
read the same way (ldmatrix.trans would read the row-major tile directly;
the simulator does not have it yet). No [q_len, kv_len] matrix exists
anywhere; the scores of one 64 x 64 tile (or 16 x 16 chunk) live in
registers. Softmax works in base 2: scores are multiplied by
scale * log2(e) and exp2f'd; lse is stored in natural units. Rows and keys
past q_len / kv_len are staged as zeros and masked (p = 0). Causal: blocks
stop at the diagonal tile, and on it a warp skips the 8- or 16-wide slices
that are masked for all its rows (warp-uniform branches).

1. flash_attention_forward(q, k, v, out, lse, bh, q_len, kv_len, causal, scale)
   grid = min(bh * ceil(q_len / 64), max grid) (grid-stride over (head,
   query tile) items), block = 128, static shared 2 tiles (18 KiB): K (Q
   on the way to registers) and V transposed. Each warp keeps its Q
   fragments in registers and, over the key tiles (up to the diagonal when
   causal): S = Q K^T (mma), masks, running row max m and partial row sums
   l (online softmax: O and l rescaled by exp2(m_old - m_new)), P rounded
   to bf16 and O += P V (mma). WRITES out = O / l (bf16) and
   lse = (m + log2 l) ln 2 for every row < q_len.
2. flash_attention_backward_delta(out, grad, delta, rows)
   One warp per row (grid-stride, block 256): WRITES delta = rowsum(grad * out).
3. flash_attention_backward_dkdv(q, k, v, grad, lse, delta, dk, dv, ...)
   One block per (head, key tile), grid-stride as 1, static shared 4 tiles
   and 2 x 64 floats (36.5 KiB): Q and grad, each also transposed (K and V
   pass through them on the way to registers), and the query tile's lse and
   delta. Each warp keeps its 16 keys' K and V fragments in registers and
   walks the query tiles (from the diagonal when causal) in chunks of 16
   queries: S^T = K Q^T, dP^T = V grad^T, P^T = exp2(S^T c - lse),
   dS^T = P^T (dP^T - delta) (mma, then elementwise), dV += P^T grad,
   dK += dS^T Q (mma, P and dS rounded to bf16). WRITES dv and dk = scale dK
   for every key row < kv_len. Must run after 2 on the same stream.
4. flash_attention_backward_dq(q, k, v, grad, lse, delta, dq, ...)
   One block per (head, query tile), grid-stride as 1, static shared 3
   tiles (27 KiB): K, K transposed and V (Q and grad pass through K and V
   on the way to registers). Each warp keeps its 16 queries' Q and grad
   fragments in registers and walks the key tiles (up to the diagonal when
   causal) in chunks of 16 keys: S, dP, P, dS as in 3 and dQ += dS K.
   WRITES dq = scale dQ for every row < q_len. Must run after 2.
Determinism: every output element is written once with `=` by the one
warp lane that accumulated it, in a fixed order (key tiles, chunks and the
mma's k in order); no atomics, so results are bit-identical run to run.
*/
#include "common.cuh"

constexpr int HEAD = 64;                      // head width (elements)
constexpr int TILE = 64;                      // queries or keys per tile
constexpr int STRIDE = 72;                    // shared-memory row stride of a tile (elements)
constexpr int THREADS = 128;                  // 4 warps x 16 rows
constexpr int TILE_WORDS = TILE * STRIDE / 8; // a tile as uint4 words
constexpr float LOG2E = 1.4426950408889634f;
constexpr float LN2 = 0.6931471805599453f;

typedef unsigned short bf16_raw;

// The 32-bit word holding elements p[0] (low half) and p[1].
__device__ __forceinline__ unsigned load_pair(const bf16_raw* p) {
    return *reinterpret_cast<const unsigned*>(p);
}

// Two floats rounded to bf16 in one 32-bit word, `lo` in the low half.
__device__ __forceinline__ unsigned pack_bf16(float lo, float hi) {
    return (unsigned)from_f32<bf16_bits>(lo).bits | ((unsigned)from_f32<bf16_bits>(hi).bits << 16);
}

// D += A B with A 16 x 16 (row-major fragment a), B 16 x 8 (by column, b).
__device__ __forceinline__ void mma_bf16(float d[4], const unsigned a[4], const unsigned b[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(d[0]), "f"(d[1]), "f"(d[2]),
          "f"(d[3]));
}

// Fragment coordinates of this lane: g = lane / 4 (row), t = lane % 4.
struct Lane {
    int g, t;
    __device__ __forceinline__ Lane() : g((threadIdx.x & 31) >> 2), t(threadIdx.x & 3) {}
};

// The A fragment of the 16 x 16 block at (m0, k0) of a tile stored [m][k].
__device__ __forceinline__ void load_a(const bf16_raw* tile, int m0, int k0, const Lane& l, unsigned a[4]) {
    const bf16_raw* p = tile + (m0 + l.g) * STRIDE + k0 + 2 * l.t;
    a[0] = load_pair(p);
    a[1] = load_pair(p + 8 * STRIDE);
    a[2] = load_pair(p + 8);
    a[3] = load_pair(p + 8 * STRIDE + 8);
}

// The B fragment (16 x 8, k x n) at (k0, n0) of a matrix stored [n][k]
// (B^T row-major): two 32-bit loads.
__device__ __forceinline__ void load_b(const bf16_raw* tile, int n0, int k0, const Lane& l, unsigned b[2]) {
    const bf16_raw* p = tile + (n0 + l.g) * STRIDE + k0 + 2 * l.t;
    b[0] = load_pair(p);
    b[1] = load_pair(p + 8);
}

// The A fragments of a warp's 16 rows x 64 columns (4 k-steps of 16).
__device__ __forceinline__ void load_rows(const bf16_raw* tile, int m0, const Lane& l, unsigned a[4][4]) {
#pragma unroll
    for (int kc = 0; kc < 4; ++kc) {
        load_a(tile, m0, kc * 16, l, a[kc]);
    }
}

// Two accumulator tiles (16 x 8 each, columns n0.. and n0 + 8..) as the A
// fragment of the 16 x 16 block they form, rounded to bf16.
__device__ __forceinline__ void to_a(const float c0[4], const float c1[4], unsigned a[4]) {
    a[0] = pack_bf16(c0[0], c0[1]);
    a[1] = pack_bf16(c0[2], c0[3]);
    a[2] = pack_bf16(c1[0], c1[1]);
    a[3] = pack_bf16(c1[2], c1[3]);
}

// Rows row0 .. row0 + 63 of a [len, 64] head into `tile`, rows >= len as
// zeros: 16-byte global loads and shared stores, 8 per row (a warp moves 4
// whole rows).
__device__ __forceinline__ void stage_tile(const bf16_bits* __restrict__ head, int row0, int len, bf16_raw* tile) {
    for (int idx = threadIdx.x; idx < TILE * HEAD / 8; idx += THREADS) {
        const int r = idx >> 3;
        const int c = (idx & 7) * 8;
        uint4 v = make_uint4(0u, 0u, 0u, 0u);
        if (row0 + r < len) {
            v = *reinterpret_cast<const uint4*>(head + (long long)(row0 + r) * HEAD + c);
        }
        *reinterpret_cast<uint4*>(tile + r * STRIDE + c) = v;
    }
}

// The same rows into `columns` as [col][row] (the transposed tile, so that
// an operand the mma takes by column is read like one taken by row). A
// warp moves one 8-column chunk of 32 consecutive rows, so each of its
// 16-bit stores covers 64 contiguous bytes: no bank conflicts.
__device__ __forceinline__ void stage_columns(const bf16_bits* __restrict__ head, int row0, int len,
                                              bf16_raw* columns) {
    for (int idx = threadIdx.x; idx < TILE * HEAD / 8; idx += THREADS) {
        const int r = idx % TILE;
        const int c = idx / TILE * 8;
        Pack16<bf16_bits> v;
        v.raw = make_uint4(0u, 0u, 0u, 0u);
        if (row0 + r < len) {
            v.raw = *reinterpret_cast<const uint4*>(head + (long long)(row0 + r) * HEAD + c);
        }
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            columns[(c + e) * STRIDE + r] = v.v[e].bits;
        }
    }
}

// Reduction over the 4 lanes of a fragment row (lanes 4g .. 4g + 3).
__device__ __forceinline__ float quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

__device__ __forceinline__ float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// Whether query `row` may see key `key`.
__device__ __forceinline__ bool visible(int row, int key, int q_len, int kv_len, int causal) {
    return row < q_len && key < kv_len && (!causal || key <= row);
}

// Writes `scale` times the 16 x 64 accumulators of a warp's rows (row0 + g,
// row0 + g + 8) into a [len, 64] head as bf16, rows < len only.
__device__ __forceinline__ void store_rows(bf16_bits* __restrict__ head, int row0, int len, const float acc[8][4],
                                           const float scale[2], const Lane& l) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        const int row = row0 + l.g + half * 8;
        if (row < len) {
            unsigned* dst = reinterpret_cast<unsigned*>(head + (long long)row * HEAD + 2 * l.t);
#pragma unroll
            for (int n = 0; n < 8; ++n) {
                dst[n * 4] = pack_bf16(acc[n][2 * half] * scale[half], acc[n][2 * half + 1] * scale[half]);
            }
        }
    }
}

extern "C" __global__ void __launch_bounds__(THREADS, 1)
flash_attention_forward(const bf16_bits* __restrict__ q, const bf16_bits* __restrict__ k,
                        const bf16_bits* __restrict__ v, bf16_bits* __restrict__ out, float* __restrict__ lse, int bh,
                        int q_len, int kv_len, int causal, float scale) {
    __shared__ uint4 k_words[TILE_WORDS];
    __shared__ uint4 vt_words[TILE_WORDS];
    bf16_raw* ks = reinterpret_cast<bf16_raw*>(k_words);
    bf16_raw* vts = reinterpret_cast<bf16_raw*>(vt_words);
    const Lane l;
    const int warp_row = (threadIdx.x >> 5) * 16;
    const float scale2 = scale * LOG2E;
    const int q_tiles = (q_len + TILE - 1) / TILE;
    const int kv_tiles = (kv_len + TILE - 1) / TILE;
    const int items = bh * q_tiles;  // the host checks that it fits
    for (int item = blockIdx.x; item < items; item += gridDim.x) {
        const long long h = item / q_tiles;
        const int q0 = item % q_tiles * TILE;
        __syncthreads();  // the previous item's tiles are consumed
        stage_tile(q + h * q_len * HEAD, q0, q_len, ks);  // Q passes through K's tile
        __syncthreads();
        unsigned qa[4][4];
        load_rows(ks, warp_row, l, qa);
        // Per fragment row half (rows g and g + 8): running max (base 2,
        // scaled) and this lane's partial sum of exp2(s - max).
        float m[2] = {neg_inf(), neg_inf()};
        float sum[2] = {0.0f, 0.0f};
        float o[8][4] = {};
        const int last_tile = causal ? min(kv_tiles, q0 / TILE + 1) : kv_tiles;
        for (int kt = 0; kt < last_tile; ++kt) {
            const int k0 = kt * TILE;
            __syncthreads();  // the previous key tile (or Q) is consumed
            stage_tile(k + h * kv_len * HEAD, k0, kv_len, ks);
            stage_columns(v + h * kv_len * HEAD, k0, kv_len, vts);
            __syncthreads();
            // Key columns of 8 this warp can see: on the causal diagonal tile
            // those up to its last row (the rest stay masked), else all.
            const int seen_cols = causal && k0 == q0 ? warp_row / 8 + 2 : 8;
            float s[8][4] = {};
#pragma unroll
            for (int n = 0; n < 8; ++n) {
                if (n < seen_cols) {
#pragma unroll
                    for (int kc = 0; kc < 4; ++kc) {
                        unsigned b[2];
                        load_b(ks, n * 8, kc * 16, l, b);
                        mma_bf16(s[n], qa[kc], b);
                    }
                }
            }
            float tile_max[2] = {neg_inf(), neg_inf()};
#pragma unroll
            for (int n = 0; n < 8; ++n) {
#pragma unroll
                for (int r = 0; r < 4; ++r) {
                    const int row = q0 + warp_row + l.g + (r >> 1) * 8;
                    const int key = k0 + n * 8 + 2 * l.t + (r & 1);
                    // Rows past q_len keep their keys (their results are dropped).
                    const bool seen = key < kv_len && (!causal || key <= row);
                    s[n][r] = seen ? s[n][r] * scale2 : neg_inf();
                    tile_max[r >> 1] = fmaxf(tile_max[r >> 1], s[n][r]);
                }
            }
            float correction[2];
            float shift[2];
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                const float new_max = fmaxf(m[half], quad_max(tile_max[half]));
                // A row with no visible key yet subtracts 0, never -inf - -inf.
                shift[half] = new_max == neg_inf() ? 0.0f : new_max;
                correction[half] = exp2f(m[half] - shift[half]);
                m[half] = new_max;
                sum[half] *= correction[half];
            }
#pragma unroll
            for (int n = 0; n < 8; ++n) {
#pragma unroll
                for (int r = 0; r < 4; ++r) {
                    const float p = exp2f(s[n][r] - shift[r >> 1]);
                    s[n][r] = p;
                    sum[r >> 1] += p;
                    o[n][r] *= correction[r >> 1];
                }
            }
#pragma unroll
            for (int kc = 0; kc < 4; ++kc) {
                if (2 * kc >= seen_cols) {
                    continue;  // p = 0 there
                }
                unsigned pa[4];
                to_a(s[2 * kc], s[2 * kc + 1], pa);
#pragma unroll
                for (int n = 0; n < 8; ++n) {
                    unsigned b[2];
                    load_b(vts, n * 8, kc * 16, l, b);
                    mma_bf16(o[n], pa, b);
                }
            }
        }
        float inv[2];
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            sum[half] = quad_sum(sum[half]);
            inv[half] = 1.0f / sum[half];
            const int row = q0 + warp_row + l.g + half * 8;
            if (l.t == 0 && row < q_len) {
                lse[h * q_len + row] = (m[half] + log2f(sum[half])) * LN2;
            }
        }
        store_rows(out + h * q_len * HEAD, q0 + warp_row, q_len, o, inv, l);
    }
}

extern "C" __global__ void __launch_bounds__(256)
flash_attention_backward_delta(const bf16_bits* __restrict__ out, const bf16_bits* __restrict__ grad,
                               float* __restrict__ delta, int rows) {
    FOR_WARP_ROWS(row, rows) {
        const int lane = threadIdx.x & 31;
        const long long at = (long long)row * HEAD + 2 * lane;
        float part = to_f32(out[at]) * to_f32(grad[at]) + to_f32(out[at + 1]) * to_f32(grad[at + 1]);
        part = warp_sum(part);
        if (lane == 0) {
            delta[row] = part;
        }
    }
}

// Per chunk of 16 x 16 (rows of the warp x columns c0 .. c0 + 15): the
// recomputed probabilities P and dS = P (dP - delta) in the accumulators
// s and dp (2 tiles of 16 x 8 each). `lse2` and `delta` per accumulator
// element come from `row_stat`, visibility from `seen`.
template <typename Stat, typename Seen>
__device__ __forceinline__ void probabilities_and_ds(float s[2][4], float dp[2][4], float scale2, Stat row_stat,
                                                     Seen seen) {
#pragma unroll
    for (int n = 0; n < 2; ++n) {
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            float lse2, dlt;
            row_stat(n, r, lse2, dlt);
            const float p = seen(n, r) ? exp2f(s[n][r] * scale2 - lse2) : 0.0f;
            s[n][r] = p;
            dp[n][r] = p * (dp[n][r] - dlt);
        }
    }
}

extern "C" __global__ void __launch_bounds__(THREADS, 1)
flash_attention_backward_dkdv(const bf16_bits* __restrict__ q, const bf16_bits* __restrict__ k,
                              const bf16_bits* __restrict__ v, const bf16_bits* __restrict__ grad,
                              const float* __restrict__ lse, const float* __restrict__ delta,
                              bf16_bits* __restrict__ dk, bf16_bits* __restrict__ dv, int bh, int q_len, int kv_len,
                              int causal, float scale) {
    __shared__ uint4 q_words[TILE_WORDS];
    __shared__ uint4 qt_words[TILE_WORDS];
    __shared__ uint4 g_words[TILE_WORDS];
    __shared__ uint4 gt_words[TILE_WORDS];
    __shared__ float lse2_s[TILE];
    __shared__ float delta_s[TILE];
    bf16_raw* qs = reinterpret_cast<bf16_raw*>(q_words);
    bf16_raw* qts = reinterpret_cast<bf16_raw*>(qt_words);
    bf16_raw* gs = reinterpret_cast<bf16_raw*>(g_words);
    bf16_raw* gts = reinterpret_cast<bf16_raw*>(gt_words);
    const Lane l;
    const int warp_row = (threadIdx.x >> 5) * 16;
    const float scale2 = scale * LOG2E;
    const int q_tiles = (q_len + TILE - 1) / TILE;
    const int kv_tiles = (kv_len + TILE - 1) / TILE;
    const int items = bh * kv_tiles;  // the host checks that it fits
    for (int item = blockIdx.x; item < items; item += gridDim.x) {
        const long long h = item / kv_tiles;
        const int kt = item % kv_tiles;
        const int k0 = kt * TILE;
        __syncthreads();  // the previous item's tiles are consumed
        stage_tile(k + h * kv_len * HEAD, k0, kv_len, qs);
        stage_tile(v + h * kv_len * HEAD, k0, kv_len, gs);
        __syncthreads();
        unsigned ka[4][4], va[4][4];
        load_rows(qs, warp_row, l, ka);
        load_rows(gs, warp_row, l, va);
        float dk_acc[8][4] = {};
        float dv_acc[8][4] = {};
        for (int qt = causal ? kt : 0; qt < q_tiles; ++qt) {
            const int q0 = qt * TILE;
            __syncthreads();  // the previous query tile (or K and V) is consumed
            stage_tile(q + h * q_len * HEAD, q0, q_len, qs);
            stage_columns(q + h * q_len * HEAD, q0, q_len, qts);
            stage_tile(grad + h * q_len * HEAD, q0, q_len, gs);
            stage_columns(grad + h * q_len * HEAD, q0, q_len, gts);
            for (int i = threadIdx.x; i < TILE; i += THREADS) {
                const bool in = q0 + i < q_len;
                lse2_s[i] = in ? lse[h * q_len + q0 + i] * LOG2E : 0.0f;
                delta_s[i] = in ? delta[h * q_len + q0 + i] : 0.0f;
            }
            __syncthreads();
#pragma unroll 1
            for (int c0 = 0; c0 < TILE; c0 += 16) {
                if (causal && q0 == k0 && c0 < warp_row) {
                    continue;  // on the diagonal tile these queries precede all of the warp's keys
                }
                // Transposed scores: rows are this warp's keys, columns queries.
                float st[2][4] = {};
                float dpt[2][4] = {};
#pragma unroll
                for (int n = 0; n < 2; ++n) {
#pragma unroll
                    for (int kc = 0; kc < 4; ++kc) {
                        unsigned b[2];
                        load_b(qs, c0 + n * 8, kc * 16, l, b);
                        mma_bf16(st[n], ka[kc], b);
                        load_b(gs, c0 + n * 8, kc * 16, l, b);
                        mma_bf16(dpt[n], va[kc], b);
                    }
                }
                const auto column = [&](int n, int r) { return c0 + n * 8 + 2 * l.t + (r & 1); };
                probabilities_and_ds(
                    st, dpt, scale2,
                    [&](int n, int r, float& lse2, float& dlt) {
                        lse2 = lse2_s[column(n, r)];
                        dlt = delta_s[column(n, r)];
                    },
                    [&](int n, int r) {
                        const int key = k0 + warp_row + l.g + (r >> 1) * 8;
                        return visible(q0 + column(n, r), key, q_len, kv_len, causal);
                    });
                unsigned pa[4], dsa[4];
                to_a(st[0], st[1], pa);
                to_a(dpt[0], dpt[1], dsa);
#pragma unroll
                for (int n = 0; n < 8; ++n) {
                    unsigned b[2];
                    load_b(gts, n * 8, c0, l, b);
                    mma_bf16(dv_acc[n], pa, b);
                    load_b(qts, n * 8, c0, l, b);
                    mma_bf16(dk_acc[n], dsa, b);
                }
            }
        }
        const float ones[2] = {1.0f, 1.0f};
        const float scales[2] = {scale, scale};
        store_rows(dv + h * kv_len * HEAD, k0 + warp_row, kv_len, dv_acc, ones, l);
        store_rows(dk + h * kv_len * HEAD, k0 + warp_row, kv_len, dk_acc, scales, l);
    }
}

extern "C" __global__ void __launch_bounds__(THREADS, 1)
flash_attention_backward_dq(const bf16_bits* __restrict__ q, const bf16_bits* __restrict__ k,
                            const bf16_bits* __restrict__ v, const bf16_bits* __restrict__ grad,
                            const float* __restrict__ lse, const float* __restrict__ delta,
                            bf16_bits* __restrict__ dq, int bh, int q_len, int kv_len, int causal, float scale) {
    __shared__ uint4 k_words[TILE_WORDS];
    __shared__ uint4 kt_words[TILE_WORDS];
    __shared__ uint4 v_words[TILE_WORDS];
    bf16_raw* ks = reinterpret_cast<bf16_raw*>(k_words);
    bf16_raw* kts = reinterpret_cast<bf16_raw*>(kt_words);
    bf16_raw* vs = reinterpret_cast<bf16_raw*>(v_words);
    const Lane l;
    const int warp_row = (threadIdx.x >> 5) * 16;
    const float scale2 = scale * LOG2E;
    const int q_tiles = (q_len + TILE - 1) / TILE;
    const int kv_tiles = (kv_len + TILE - 1) / TILE;
    const int items = bh * q_tiles;  // the host checks that it fits
    for (int item = blockIdx.x; item < items; item += gridDim.x) {
        const long long h = item / q_tiles;
        const int q0 = item % q_tiles * TILE;
        __syncthreads();  // the previous item's tiles are consumed
        stage_tile(q + h * q_len * HEAD, q0, q_len, ks);
        stage_tile(grad + h * q_len * HEAD, q0, q_len, vs);
        __syncthreads();
        unsigned qa[4][4], ga[4][4];
        load_rows(ks, warp_row, l, qa);
        load_rows(vs, warp_row, l, ga);
        float lse2[2], dlt[2];
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int row = q0 + warp_row + l.g + half * 8;
            lse2[half] = row < q_len ? lse[h * q_len + row] * LOG2E : 0.0f;
            dlt[half] = row < q_len ? delta[h * q_len + row] : 0.0f;
        }
        float dq_acc[8][4] = {};
        const int last_tile = causal ? min(kv_tiles, q0 / TILE + 1) : kv_tiles;
        for (int kt = 0; kt < last_tile; ++kt) {
            const int k0 = kt * TILE;
            __syncthreads();  // the previous key tile (or Q and grad) is consumed
            stage_tile(k + h * kv_len * HEAD, k0, kv_len, ks);
            stage_columns(k + h * kv_len * HEAD, k0, kv_len, kts);
            stage_tile(v + h * kv_len * HEAD, k0, kv_len, vs);
            __syncthreads();
#pragma unroll 1
            for (int c0 = 0; c0 < TILE; c0 += 16) {
                if (causal && k0 == q0 && c0 > warp_row) {
                    continue;  // on the diagonal tile these keys follow all of the warp's queries
                }
                float s[2][4] = {};
                float dp[2][4] = {};
#pragma unroll
                for (int n = 0; n < 2; ++n) {
#pragma unroll
                    for (int kc = 0; kc < 4; ++kc) {
                        unsigned b[2];
                        load_b(ks, c0 + n * 8, kc * 16, l, b);
                        mma_bf16(s[n], qa[kc], b);
                        load_b(vs, c0 + n * 8, kc * 16, l, b);
                        mma_bf16(dp[n], ga[kc], b);
                    }
                }
                probabilities_and_ds(
                    s, dp, scale2,
                    [&](int, int r, float& l2, float& d) {
                        l2 = r < 2 ? lse2[0] : lse2[1];
                        d = r < 2 ? dlt[0] : dlt[1];
                    },
                    [&](int n, int r) {
                        const int row = q0 + warp_row + l.g + (r >> 1) * 8;
                        return visible(row, k0 + c0 + n * 8 + 2 * l.t + (r & 1), q_len, kv_len, causal);
                    });
                unsigned dsa[4];
                to_a(dp[0], dp[1], dsa);
#pragma unroll
                for (int n = 0; n < 8; ++n) {
                    unsigned b[2];
                    load_b(kts, n * 8, c0, l, b);
                    mma_bf16(dq_acc[n], dsa, b);
                }
            }
        }
        const float scales[2] = {scale, scale};
        store_rows(dq + h * q_len * HEAD, q0 + warp_row, q_len, dq_acc, scales, l);
    }
}
