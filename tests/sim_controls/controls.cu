/*
Negative controls of the simulated GPU (tests/sim_controls.rs): kernels with
one planted bug each, switched on by an argument, so that the same launch
passes with the switch off and must fail with it on. Built into the
simulator beside kernels/*.cu (module "controls"); never part of the engine.
All launches: one block.

1. control_block_sum(x, out, mode): out[0] = sum of x[0..blockDim.x)
   through shared memory, read back by thread 0 (mode bit 1 clear) or by
   the last thread (set); mode bit 0 clear leaves out the __syncthreads
   between the writes and the reads.
2. control_unwritten_shared(out, written): out[t] = part[t], where part is
   written only when `written` != 0.
3. control_shuffle(out, exit_from): lanes >= exit_from return, the rest
   shuffle with the full mask (naming the exited lanes when exit_from < 32).
4. control_deadlock(out, split): split = 0: every thread meets at one
   __syncthreads. split = 1: thread 32 waits at __syncthreads while the rest
   of its warp waits for it at __syncwarp.
5. control_shared_write(out, offset): thread t writes part[t + offset] of a
   __shared__ float[32] (block = 32): offset 1 writes one past its end.
6. control_global_write(out, offset): thread t writes out[t + offset] of a
   buffer of blockDim.x floats: offset 1 writes one past its end.
7. control_warp_votes(out, unused): one warp; out[k * 32 + lane] holds, as
   float bits, the ballot of lane % 3 == 0, any(lane == 5), all(lane < 31),
   and the shuffles down by 1, up by 1 and from lane 7 of the lane index,
   each after a __syncwarp.
8. control_mma(a, b, c, d): one warp computes D = A B + C with
   mma.sync.m16n8k16 (bf16 in, f32 accumulation); A (16 x 16) and B
   (16 x 8) are row-major bf16 bits, C and D row-major 16 x 8 f32. Each lane
   loads and stores the fragments of the PTX ISA's layout (g = lane / 4,
   q = lane % 4; see kernels/sim/runtime.cpp), so on a GPU this kernel also
   checks the simulator's reading of that layout.
*/

extern "C" __global__ void control_block_sum(const float* x, float* out, int mode) {
    __shared__ float part[256];
    part[threadIdx.x] = x[threadIdx.x];
    if (mode & 1) {
        __syncthreads();
    }
    const unsigned reader = (mode & 2) ? blockDim.x - 1 : 0;
    if (threadIdx.x == reader) {
        float s = 0.0f;
        for (unsigned i = 0; i < blockDim.x; i++) {
            s += part[i];
        }
        out[0] = s;
    }
}

extern "C" __global__ void control_unwritten_shared(float* out, int written) {
    __shared__ float part[64];
    if (written) {
        part[threadIdx.x] = 1.0f;
    }
    __syncthreads();
    out[threadIdx.x] = part[threadIdx.x];
}

extern "C" __global__ void control_shuffle(float* out, int exit_from) {
    if ((int)threadIdx.x >= exit_from) {
        return;
    }
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (float)threadIdx.x, 1);
}

extern "C" __global__ void control_deadlock(float* out, int split) {
    if (split && threadIdx.x > 32) {
        __syncwarp();
    } else {
        __syncthreads();
    }
    out[threadIdx.x] = 1.0f;
}

extern "C" __global__ void control_shared_write(float* out, int offset) {
    __shared__ float part[32];
    part[threadIdx.x + offset] = (float)threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = part[threadIdx.x];
}

extern "C" __global__ void control_global_write(float* out, int offset) {
    out[threadIdx.x + offset] = (float)threadIdx.x;
}

extern "C" __global__ void control_warp_votes(float* out, int) {
    const unsigned lane = threadIdx.x;
    const unsigned full = 0xFFFFFFFFu;
    __syncwarp();
    out[0 * 32 + lane] = __uint_as_float(__ballot_sync(full, lane % 3 == 0));
    out[1 * 32 + lane] = __uint_as_float((unsigned)__any_sync(full, lane == 5));
    out[2 * 32 + lane] = __uint_as_float((unsigned)__all_sync(full, lane < 31));
    out[3 * 32 + lane] = __uint_as_float(__shfl_down_sync(full, lane, 1));
    out[4 * 32 + lane] = __uint_as_float(__shfl_up_sync(full, lane, 1));
    out[5 * 32 + lane] = __uint_as_float(__shfl_sync(full, lane, 7));
}

extern "C" __global__ void control_mma(const unsigned short* a, const unsigned short* b, const float* c, float* d) {
    const int lane = threadIdx.x, g = lane / 4, q = lane % 4;
    unsigned ra[4], rb[2];
    float rc[4], rd[4];
    for (int r = 0; r < 4; r++) {
        const int row = g + (r & 1) * 8, col = 2 * q + (r >> 1) * 8;
        ra[r] = a[row * 16 + col] | ((unsigned)a[row * 16 + col + 1] << 16);
    }
    for (int r = 0; r < 2; r++) {
        const int k = 2 * q + r * 8;
        rb[r] = b[k * 8 + g] | ((unsigned)b[(k + 1) * 8 + g] << 16);
    }
    for (int r = 0; r < 4; r++) {
        rc[r] = c[(g + (r >> 1) * 8) * 8 + 2 * q + (r & 1)];
    }
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};"
        : "=f"(rd[0]), "=f"(rd[1]), "=f"(rd[2]), "=f"(rd[3])
        : "r"(ra[0]), "r"(ra[1]), "r"(ra[2]), "r"(ra[3]), "r"(rb[0]), "r"(rb[1]), "f"(rc[0]), "f"(rc[1]),
          "f"(rc[2]), "f"(rc[3]));
    for (int r = 0; r < 4; r++) {
        d[(g + (r >> 1) * 8) * 8 + 2 * q + (r & 1)] = rd[r];
    }
}
