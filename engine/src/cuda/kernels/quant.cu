// Activation quantization, weight decoding and matrix-vector products for every stored type.
//
// Quantized weights meet activations quantized the way the CPU backend does it (per 32 values:
// scale d = max|x| / (127 * 255), q = round(x / d), split into hi = round(q / 255) and lo =
// q - 255 hi), so the integer part of every block's dot product is exactly the CPU's:
// 255 * dot(w, hi) + dot(w, lo), two dp4a per four values. Only the float sums over blocks
// run in another order. F32, F16 and BF16 weights meet the activations as floats.

// ---- activations -------------------------------------------------------------------------

// grid (cols / 32, rows), block 32: one warp per 32-value block. `s` is d * (sum of q).
extern "C" __global__ void quantize_acts(const float* x, int cols, i8* hi, i8* lo, float* d,
                                         float* s) {
    int b = blockIdx.x, r = blockIdx.y, i = threadIdx.x;
    int nb = cols / QK;
    long at = (long)r * cols + (long)b * QK + i;
    float v = x[at];
    float amax = warp_max(fabsf(v));
    float db = amax / QMAX;
    float id = db > 0.0f ? 1.0f / db : 0.0f;
    int q = round_away(v * id);
    int h = round_away((float)q * (1.0f / 255.0f));
    hi[at] = (i8)h;
    lo[at] = (i8)(q - 255 * h);
    int sum = warp_sum_i(q);
    if (i == 0) {
        d[(long)r * nb + b] = db;
        s[(long)r * nb + b] = db * (float)sum;
    }
}

// The activations of one token, as the matvec kernels read them.
struct Acts {
    const int* hi;  // 8 words per 32-value block
    const int* lo;
    const float* d;
    const float* s;
};

__device__ __forceinline__ Acts acts_row(const i8* hi, const i8* lo, const float* d,
                                         const float* s, int cols, int t) {
    Acts a;
    a.hi = (const int*)(hi + (long)t * cols);
    a.lo = (const int*)(lo + (long)t * cols);
    a.d = d + (long)t * (cols / QK);
    a.s = s + (long)t * (cols / QK);
    return a;
}

// 255 * dot(w, hi) + dot(w, lo) over `words` words starting at word `at` of the activations.
__device__ __forceinline__ int idot(const int* w, const Acts& a, int at, int words) {
    int h = 0, l = 0;
    for (int k = 0; k < words; k++) {
        h = dot4(w[k], a.hi[at + k], h);
        l = dot4(w[k], a.lo[at + k], l);
    }
    return 255 * h + l;
}

// ---- one block of each type against one token ----------------------------------------------
// `blk` is the block's first byte; `b` the index of its first 32-value block in the row.

__device__ float blk_q8_0(const u8* blk, const Acts& a, int b) {
    int w[8];
    for (int k = 0; k < 8; k++) w[k] = ld_i32(blk + 2 + 4 * k);
    return ld_f16(blk) * a.d[b] * (float)idot(w, a, 8 * b, 8);
}

__device__ __forceinline__ void nibbles(const u8* qs, int* w) {
    // Low nibbles are values 0..15, high nibbles values 16..31.
    for (int k = 0; k < 4; k++) {
        int v = ld_i32(qs + 4 * k);
        w[k] = v & 0x0f0f0f0f;
        w[k + 4] = (v >> 4) & 0x0f0f0f0f;
    }
}

__device__ float blk_q4_0(const u8* blk, const Acts& a, int b) {
    int w[8];
    nibbles(blk + 2, w);
    float d = ld_f16(blk);
    return d * a.d[b] * (float)idot(w, a, 8 * b, 8) - 8.0f * d * a.s[b];
}

__device__ float blk_q4_1(const u8* blk, const Acts& a, int b) {
    int w[8];
    nibbles(blk + 4, w);
    return ld_f16(blk) * a.d[b] * (float)idot(w, a, 8 * b, 8) + ld_f16(blk + 2) * a.s[b];
}

__device__ __forceinline__ void scale_min_k4(int j, const u8* q, int* sc, int* m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

// Sub-block j (32 values) of a Q4_K super-block.
__device__ float sub_q4_k(const u8* blk, int j, const Acts& a, int b) {
    const u8* qs = blk + 16 + (j / 2) * 32;
    int shift = (j % 2) * 4, w[8];
    for (int k = 0; k < 8; k++) w[k] = (ld_i32(qs + 4 * k) >> shift) & 0x0f0f0f0f;
    int sc, m;
    scale_min_k4(j, blk + 4, &sc, &m);
    return ld_f16(blk) * (float)sc * a.d[b] * (float)idot(w, a, 8 * b, 8) -
           ld_f16(blk + 2) * (float)m * a.s[b];
}

// Value i (0..255) of a Q6_K super-block, in -32..31.
__device__ __forceinline__ int q6k_value(const u8* blk, int i) {
    int half = i / 128, r = i % 128, l = r % 32, quarter = r / 32;
    const u8* ql = blk + half * 64;
    const u8* qh = blk + 128 + half * 32;
    int lowbits = (quarter & 1) ? ql[l + 32] : ql[l];
    lowbits = (quarter >= 2) ? (lowbits >> 4) : (lowbits & 0xF);
    int highbits = (qh[l] >> (2 * quarter)) & 3;
    return (lowbits | (highbits << 4)) - 32;
}

// Sub-block j (32 values: two groups of 16 with their own scales) of a Q6_K super-block.
__device__ float sub_q6_k(const u8* blk, int j, const Acts& a, int b) {
    float d = ld_f16(blk + 208), acc = 0.0f;
    for (int g = 0; g < 2; g++) {
        int w[4];
        for (int k = 0; k < 4; k++) {
            int base = j * 32 + g * 16 + 4 * k;
            u32 packed = 0;
            for (int e = 0; e < 4; e++) packed |= ((u32)(u8)(i8)q6k_value(blk, base + e)) << (8 * e);
            w[k] = (int)packed;
        }
        float scale = (float)(i8)blk[192 + 2 * j + g];
        acc += d * scale * a.d[b] * (float)idot(w, a, 8 * b + 4 * g, 4);
    }
    return acc;
}

// ---- matrix-vector products ----------------------------------------------------------------
// out[t * rows + r] = dot(weight row r, activation row t) for t < ntok.
// grid (ceil(rows / 4), ceil(ntok / 8)), block 128: one warp per weight row, which it reads
// once for up to 8 tokens; lanes split the row's 32-value blocks.

#define MV_TOK 8

#define MATVEC_Q(NAME, BLOCK_BYTES, SUBS, SUBFN)                                                 \
    extern "C" __global__ void NAME(const u8* w, int rows, int cols, const i8* hi, const i8* lo, \
                                    const float* d, const float* s, float* out, int ntok) {     \
        int r = blockIdx.x * 4 + (threadIdx.x >> 5), lane = threadIdx.x & 31;                   \
        int t0 = blockIdx.y * MV_TOK;                                                            \
        if (r >= rows) return;                                                                   \
        int nt = min(MV_TOK, ntok - t0);                                                         \
        int nsub = cols / QK; /* 32-value blocks per row */                                      \
        long row_bytes = (long)(nsub / SUBS) * BLOCK_BYTES;                                      \
        const u8* wr = w + (long)r * row_bytes;                                                  \
        float acc[MV_TOK];                                                                       \
        for (int t = 0; t < MV_TOK; t++) acc[t] = 0.0f;                                          \
        for (int b = lane; b < nsub; b += 32) {                                                  \
            const u8* blk = wr + (long)(b / SUBS) * BLOCK_BYTES;                                 \
            for (int t = 0; t < nt; t++) {                                                       \
                Acts a = acts_row(hi, lo, d, s, cols, t0 + t);                                   \
                acc[t] += SUBFN(blk, b % SUBS, a, b);                                            \
            }                                                                                    \
        }                                                                                        \
        for (int t = 0; t < nt; t++) {                                                           \
            float v = warp_sum(acc[t]);                                                          \
            if (lane == 0) out[(long)(t0 + t) * rows + r] = v;                                   \
        }                                                                                        \
    }

__device__ __forceinline__ float sub_q8_0(const u8* blk, int, const Acts& a, int b) { return blk_q8_0(blk, a, b); }
__device__ __forceinline__ float sub_q4_0(const u8* blk, int, const Acts& a, int b) { return blk_q4_0(blk, a, b); }
__device__ __forceinline__ float sub_q4_1(const u8* blk, int, const Acts& a, int b) { return blk_q4_1(blk, a, b); }

MATVEC_Q(matvec_q8_0, 34, 1, sub_q8_0)
MATVEC_Q(matvec_q4_0, 18, 1, sub_q4_0)
MATVEC_Q(matvec_q4_1, 20, 1, sub_q4_1)
MATVEC_Q(matvec_q4_k, 144, 8, sub_q4_k)
MATVEC_Q(matvec_q6_k, 210, 8, sub_q6_k)

// Float weights against float activations x[t * cols + c].
#define MATVEC_F(NAME, T, LOAD)                                                                 \
    extern "C" __global__ void NAME(const T* w, int rows, int cols, const float* x, float* out, \
                                    int ntok) {                                                 \
        int r = blockIdx.x * 4 + (threadIdx.x >> 5), lane = threadIdx.x & 31;                  \
        int t0 = blockIdx.y * MV_TOK;                                                           \
        if (r >= rows) return;                                                                  \
        int nt = min(MV_TOK, ntok - t0);                                                        \
        const T* wr = w + (long)r * cols;                                                       \
        float acc[MV_TOK];                                                                      \
        for (int t = 0; t < MV_TOK; t++) acc[t] = 0.0f;                                         \
        for (int c = lane; c < cols; c += 32) {                                                 \
            float wv = LOAD(wr[c]);                                                             \
            for (int t = 0; t < nt; t++) acc[t] += wv * x[(long)(t0 + t) * cols + c];          \
        }                                                                                       \
        for (int t = 0; t < nt; t++) {                                                          \
            float v = warp_sum(acc[t]);                                                         \
            if (lane == 0) out[(long)(t0 + t) * rows + r] = v;                                  \
        }                                                                                       \
    }

__device__ __forceinline__ float id_f32(float v) { return v; }
MATVEC_F(matvec_f32, float, id_f32)
MATVEC_F(matvec_f16, u16, h2f)
MATVEC_F(matvec_bf16, u16, bf2f)

// ---- whole rows to floats: embedding lookups and tiles for cuBLAS --------------------------
// rows_T: row ids[i] (or first + i when ids is null) of the weight, expanded into f32
// out[i * cols ..]. tile_T: rows first..first + n, expanded into `kind` (0 f32, 1 f16, 2 bf16)
// for cuBLAS. grid (ceil(cols / 256), n), block 256: one thread per value.

__device__ float value_q8_0(const u8* row, int c) {
    const u8* blk = row + (c / 32) * 34;
    return ld_f16(blk) * (float)(i8)blk[2 + c % 32];
}
__device__ float value_q4_0(const u8* row, int c) {
    const u8* blk = row + (c / 32) * 18;
    int j = c % 32, q = j < 16 ? (blk[2 + j] & 0xF) : (blk[2 + j - 16] >> 4);
    float d = ld_f16(blk);
    return d * (float)q + (-8.0f * d);
}
__device__ float value_q4_1(const u8* row, int c) {
    const u8* blk = row + (c / 32) * 20;
    int j = c % 32, q = j < 16 ? (blk[4 + j] & 0xF) : (blk[4 + j - 16] >> 4);
    return ld_f16(blk) * (float)q + ld_f16(blk + 2);
}
__device__ float value_q4_k(const u8* row, int c) {
    const u8* blk = row + (c / 256) * 144;
    int i = c % 256, j = i / 32, l = i % 32, sc, m;
    scale_min_k4(j, blk + 4, &sc, &m);
    u8 q = blk[16 + (j / 2) * 32 + l];
    int n = (j % 2 == 0) ? (q & 0xF) : (q >> 4);
    return ld_f16(blk) * (float)sc * (float)n - ld_f16(blk + 2) * (float)m;
}
__device__ float value_q6_k(const u8* row, int c) {
    const u8* blk = row + (c / 256) * 210;
    int i = c % 256;
    return ld_f16(blk + 208) * (float)(i8)blk[192 + i / 16] * (float)q6k_value(blk, i);
}
__device__ float value_f32(const u8* row, int c) { return ((const float*)row)[c]; }
__device__ float value_f16(const u8* row, int c) { return ld_f16(row + 2 * c); }
__device__ float value_bf16(const u8* row, int c) { return bf2f((u16)(row[2 * c] | (row[2 * c + 1] << 8))); }

#define DEQUANT(TYPE)                                                                             \
    extern "C" __global__ void rows_##TYPE(const u8* w, long row_bytes, const int* ids, int first, \
                                           int n, int cols, float* out) {                        \
        int c = blockIdx.x * blockDim.x + threadIdx.x, i = blockIdx.y;                           \
        if (c >= cols || i >= n) return;                                                          \
        long r = ids ? (long)ids[i] : (long)(first + i);                                          \
        out[(long)i * cols + c] = value_##TYPE(w + r * row_bytes, c);                             \
    }                                                                                             \
    extern "C" __global__ void tile_##TYPE(const u8* w, long row_bytes, int first, int n,         \
                                           int cols, void* out, int kind) {                       \
        int c = blockIdx.x * blockDim.x + threadIdx.x, i = blockIdx.y;                           \
        if (c >= cols || i >= n) return;                                                          \
        store(out, (long)i * cols + c, kind, value_##TYPE(w + (long)(first + i) * row_bytes, c)); \
    }

DEQUANT(f32)
DEQUANT(f16)
DEQUANT(bf16)
DEQUANT(q8_0)
DEQUANT(q4_0)
DEQUANT(q4_1)
DEQUANT(q4_k)
DEQUANT(q6_k)

// ---- activations for cuBLAS ----------------------------------------------------------------
// x (n values) as two 16-bit halves of `kind` (1 f16, 2 bf16): out[i] = hi = round(x),
// out[n + i] = lo = round(x - hi). One product over [hi | lo] then keeps about twice the
// bits of one 16-bit copy, so only the weights' own rounding is lost.
extern "C" __global__ void split_acts(const float* x, long n, void* out, int kind) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = x[i];
    store(out, i, kind, v);
    store(out, n + i, kind, v - load(out, i, kind));
}

// out = a + b over n values (the hi and lo halves of a split product).
extern "C" __global__ void add2(const float* a, const float* b, float* out, long n) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = a[i] + b[i];
}
