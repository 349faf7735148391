// The paged KV cache and attention over it. A layer's cache is blocks of `bs` slots per KV head;
// block `blk`, head `g` starts at ((blk * kv_heads + g) * bs * head_dim). Keys are stored
// dimension-major within a block (key d of slot s at d * bs + s), values slot-major (value d of
// slot s at s * head_dim + d), as in the CPU backend's store.

// Writes the new tokens' keys and values. slot_block[t], slot_index[t]: where row t goes.
// grid (ceil(kv_heads * head_dim / 128), rows), block 128.
#define KV_WRITE(NAME, T, CONV)                                                                   \
    extern "C" __global__ void NAME(const float* k, const float* v, const int* slot_block,       \
                                    const int* slot_index, int kv_heads, int head_dim, int bs,   \
                                    T* kc, T* vc) {                                              \
        int i = blockIdx.x * blockDim.x + threadIdx.x, t = blockIdx.y;                          \
        int kvd = kv_heads * head_dim;                                                          \
        if (i >= kvd) return;                                                                   \
        int g = i / head_dim, d = i % head_dim, slot = slot_index[t];                           \
        long base = ((long)slot_block[t] * kv_heads + g) * bs * head_dim;                       \
        kc[base + (long)d * bs + slot] = CONV(k[(long)t * kvd + i]);                            \
        vc[base + (long)slot * head_dim + d] = CONV(v[(long)t * kvd + i]);                      \
    }

__device__ __forceinline__ float keep(float x) { return x; }
KV_WRITE(kv_write_f32, float, keep)
KV_WRITE(kv_write_f16, u16, f2h)

// Causal attention of each new token over its own sequence, for decode (one token per
// sequence) and chunked prefill (many) alike: row t sits at position pos[t] and sees positions
// 0..=pos[t] through its sequence's block table (block_tables + table_start[t]).
// grid (heads, rows), block 128. scores: scratch of rows * heads * max_len floats.
// Softmax as the CPU backend: m = max(score) * scale, p = exp(score * scale - m) / sum.
#define ATTENTION(NAME, T, LOAD)                                                                 \
    extern "C" __global__ void NAME(const float* q, const T* kc, const T* vc,                   \
                                    const int* block_tables, const int* table_start,            \
                                    const int* pos, int heads, int kv_heads, int head_dim,      \
                                    int bs, float scale, int max_len, float* scores,            \
                                    float* out) {                                               \
        int h = blockIdx.x, t = blockIdx.y, g = h / (heads / kv_heads);                         \
        int len = pos[t] + 1;                                                                   \
        const float* qh = q + ((long)t * heads + h) * head_dim;                                 \
        const int* table = block_tables + table_start[t];                                       \
        float* sc = scores + ((long)t * heads + h) * max_len;                                   \
        for (int p = threadIdx.x; p < len; p += blockDim.x) {                                   \
            long base = ((long)table[p / bs] * kv_heads + g) * bs * head_dim;                   \
            int slot = p % bs;                                                                  \
            float acc = 0.0f;                                                                   \
            for (int d = 0; d < head_dim; d++) acc += qh[d] * LOAD(kc[base + (long)d * bs + slot]); \
            sc[p] = acc;                                                                        \
        }                                                                                       \
        __syncthreads();                                                                        \
        float m = NEG_INF;                                                                      \
        for (int p = threadIdx.x; p < len; p += blockDim.x) m = fmaxf(m, sc[p]);               \
        m = block_max(m) * scale;                                                               \
        float sum = 0.0f;                                                                       \
        for (int p = threadIdx.x; p < len; p += blockDim.x) {                                   \
            float e = expf(sc[p] * scale - m);                                                  \
            sc[p] = e;                                                                          \
            sum += e;                                                                           \
        }                                                                                       \
        float inv = 1.0f / block_sum(sum);                                                      \
        __syncthreads();                                                                        \
        float* o = out + ((long)t * heads + h) * head_dim;                                      \
        for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {                              \
            float acc = 0.0f;                                                                   \
            for (int p = 0; p < len; p++) {                                                     \
                long base = ((long)table[p / bs] * kv_heads + g) * bs * head_dim;               \
                acc += sc[p] * inv * LOAD(vc[base + (long)(p % bs) * head_dim + d]);            \
            }                                                                                   \
            o[d] = acc;                                                                         \
        }                                                                                       \
    }

__device__ __forceinline__ float load_f32(float x) { return x; }
ATTENTION(attention_f32, float, load_f32)
ATTENTION(attention_f16, u16, h2f)
