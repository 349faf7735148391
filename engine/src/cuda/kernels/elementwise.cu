// Per-row and per-element steps of the forward pass, in the CPU backend's arithmetic.

// grid (rows), block 256: out = x / sqrt(mean(x^2) + eps) * w.
extern "C" __global__ void rms_norm(const float* x, const float* w, float eps, int dim, float* out) {
    const float* xr = x + (long)blockIdx.x * dim;
    float* o = out + (long)blockIdx.x * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
    ss = block_sum(ss);
    float s = 1.0f / sqrtf(ss / (float)dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) o[i] = xr[i] * s * w[i];
}

// x[i] += y[i]
extern "C" __global__ void add(float* x, const float* y, long n) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += y[i];
}

// Every row of x (width `width`) gets the bias added.
extern "C" __global__ void add_bias(float* x, const float* bias, int width, long n) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += bias[i % width];
}

// out = silu(gate) * up
extern "C" __global__ void swiglu(const float* gate, const float* up, float* out, long n) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

// Rotary embedding of the first 2 * half dims of every head. `table` holds per row the cosines
// then the sines (computed on the host in f64, as the CPU backend does). layout 0: pairs
// (2i, 2i+1) (interleaved, llama); layout 1: pairs (i, i + half) (halves, NeoX / qwen2).
// grid (ceil(heads * half / 128), rows), block 128.
extern "C" __global__ void rope(float* x, int heads, int head_dim, int half, const float* table,
                                int layout) {
    int k = blockIdx.x * blockDim.x + threadIdx.x, row = blockIdx.y;
    if (k >= heads * half) return;
    int h = k / half, i = k % half;
    const float* cs = table + (long)row * 2 * half;
    float c = cs[i], s = cs[half + i];
    float* head = x + ((long)row * heads + h) * head_dim;
    int a = layout == 0 ? 2 * i : i;
    int b = layout == 0 ? 2 * i + 1 : i + half;
    float x0 = head[a], x1 = head[b];
    head[a] = x0 * c - x1 * s;
    head[b] = x0 * s + x1 * c;
}
