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
