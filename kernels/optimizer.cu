/*
Optimizer updates, in place, f32 (src/backend/cuda/optim.rs launches them),
the formulas of src/backend/cpu/optim.rs (PyTorch's SGD and AdamW).

1. sgd_step(p, grad, m, n, lr, momentum, weight_decay):
   g' = g + wd p; m = momentum m + g'; p -= lr m.
2. adamw_step(p, grad, m, v, n, lr, beta1, beta2, eps, weight_decay,
   bias_correction1, bias_correction2): p *= 1 - lr wd; Adam moments;
   p -= lr m_hat / (sqrt(v_hat) + eps). The bias corrections
   1 - beta^step are computed once on the host in f32 (as the CPU does).
Thread per element, block = 256, grid-stride; each thread reads and writes
its own element of p, m (and v) only: no races, deterministic.
*/

extern "C" __global__ void __launch_bounds__(256)
sgd_step(float* __restrict__ p, const float* __restrict__ grad, float* __restrict__ m, int n, float lr,
         float momentum, float weight_decay) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const float g = grad[i] + weight_decay * p[i];
        const float mi = momentum * m[i] + g;
        m[i] = mi;
        p[i] -= lr * mi;
    }
}

extern "C" __global__ void __launch_bounds__(256)
adamw_step(float* __restrict__ p, const float* __restrict__ grad, float* __restrict__ m, float* __restrict__ v,
           int n, float lr, float beta1, float beta2, float eps, float weight_decay, float bias_correction1,
           float bias_correction2) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const float g = grad[i];
        float pi = p[i] * (1.0f - lr * weight_decay);
        const float mi = beta1 * m[i] + (1.0f - beta1) * g;
        const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        const float m_hat = mi / bias_correction1;
        const float v_hat = vi / bias_correction2;
        pi -= lr * m_hat / (sqrtf(v_hat) + eps);
        p[i] = pi;
    }
}
