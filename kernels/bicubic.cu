/*
Bicubic resize of `channels` f32 grids of h x w to out_h x out_w, matching
PyTorch's F.interpolate(mode="bicubic", align_corners=False) and
src/ops/custom/bicubic.rs: half-pixel centres, Keys' cubic with a = -0.75,
source taps clamped to the border. Forward only (positional-embedding
grids are resampled once, outside the tape).

bicubic_resize(x, out, channels, h, w, out_h, out_w): thread per output
element, block = 256, grid-stride. Taps and weights are computed in f32
exactly as the CPU reference does, and summed in the same order (four
horizontal sums, then the vertical one). WRITES out with `=`.
*/

#define BICUBIC_A (-0.75f)

__device__ __forceinline__ void cubic_weights(float t, float w[4]) {
    const float a = BICUBIC_A;
    const float x0 = t + 1.0f;
    const float x1 = t;
    const float x2 = 1.0f - t;
    const float x3 = 2.0f - t;
    w[0] = ((a * x0 - 5.0f * a) * x0 + 8.0f * a) * x0 - 4.0f * a;
    w[1] = ((a + 2.0f) * x1 - (a + 3.0f)) * x1 * x1 + 1.0f;
    w[2] = ((a + 2.0f) * x2 - (a + 3.0f)) * x2 * x2 + 1.0f;
    w[3] = ((a * x3 - 5.0f * a) * x3 + 8.0f * a) * x3 - 4.0f * a;
}

__device__ __forceinline__ void cubic_taps(int o, int in_len, int out_len, int idx[4], float w[4]) {
    const float scale = (float)in_len / (float)out_len;
    const float src = ((float)o + 0.5f) * scale - 0.5f;
    const float base = floorf(src);
    const int b = (int)base;
    for (int k = 0; k < 4; ++k) {
        idx[k] = min(max(b + k - 1, 0), in_len - 1);
    }
    cubic_weights(src - base, w);
}

extern "C" __global__ void __launch_bounds__(256)
bicubic_resize(const float* __restrict__ x, float* __restrict__ out, int channels, int h, int w,
               int out_h, int out_w) {
    const long long total = (long long)channels * out_h * out_w;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const int ox = (int)(i % out_w);
        const int oy = (int)((i / out_w) % out_h);
        const long long c = i / ((long long)out_w * out_h);
        int ry[4];
        int rx[4];
        float wy[4];
        float wx[4];
        cubic_taps(oy, h, out_h, ry, wy);
        cubic_taps(ox, w, out_w, rx, wx);
        const float* grid = x + c * h * w;
        float acc = 0.0f;
        for (int a = 0; a < 4; ++a) {
            const float* row = grid + (long long)ry[a] * w;
            float horizontal = 0.0f;
            for (int b = 0; b < 4; ++b) {
                horizontal += wx[b] * row[rx[b]];
            }
            acc += wy[a] * horizontal;
        }
        out[i] = acc;
    }
}
