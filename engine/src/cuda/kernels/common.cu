// Helpers every kernel uses. NVRTC compiles these sources with no CUDA headers at all (the
// NVRTC wheel ships none), so half and bfloat16 conversions are inline PTX, and integer dot
// products use `dp4a` where the card has it (sm_61 and newer) and plain multiplies elsewhere.
// Every kernel is `extern "C"` so the host finds it by name.

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;

#define QK 32
#define QMAX 32385.0f  // 127 * 255: activations are quantized to 16 bits, split into hi/lo bytes
#define NEG_INF __int_as_float(0xff800000)

__device__ __forceinline__ float h2f(u16 h) {
    float f;
    asm("{ .reg .f16 t; mov.b16 t, %1; cvt.f32.f16 %0, t; }" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ u16 f2h(float f) {
    u16 h;
    asm("{ .reg .f16 t; cvt.rn.f16.f32 t, %1; mov.b16 %0, t; }" : "=h"(h) : "f"(f));
    return h;
}

__device__ __forceinline__ float bf2f(u16 b) { return __uint_as_float(((u32)b) << 16); }

// Round to nearest even (weights and activations are finite).
__device__ __forceinline__ u16 f2bf(float f) {
    u32 u = __float_as_uint(f);
    return (u16)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// Element i of a buffer of `kind`: 0 f32, 1 f16, 2 bf16.
__device__ __forceinline__ void store(void* out, long i, int kind, float v) {
    if (kind == 0) ((float*)out)[i] = v;
    else if (kind == 1) ((u16*)out)[i] = f2h(v);
    else ((u16*)out)[i] = f2bf(v);
}
__device__ __forceinline__ float load(const void* p, long i, int kind) {
    if (kind == 0) return ((const float*)p)[i];
    if (kind == 1) return h2f(((const u16*)p)[i]);
    return bf2f(((const u16*)p)[i]);
}

// Little-endian loads from byte addresses (quantized blocks are not 4-byte aligned).
__device__ __forceinline__ float ld_f16(const u8* p) { return h2f((u16)(p[0] | (p[1] << 8))); }
__device__ __forceinline__ int ld_i32(const u8* p) {
    return (int)((u32)p[0] | ((u32)p[1] << 8) | ((u32)p[2] << 16) | ((u32)p[3] << 24));
}

// c + the dot product of four signed bytes of a and b.
__device__ __forceinline__ int dot4(int a, int b, int c) {
#if __CUDA_ARCH__ >= 610
    int r;
    asm("dp4a.s32.s32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
#else
    const i8* x = (const i8*)&a;
    const i8* y = (const i8*)&b;
    return c + x[0] * y[0] + x[1] * y[1] + x[2] * y[2] + x[3] * y[3];
#endif
}

// Rounds half away from zero, as the CPU backend's activation quantizer does.
__device__ __forceinline__ int round_away(float x) { return (int)(x + copysignf(0.5f, x)); }

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ int warp_sum_i(int v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum of `v` over the whole thread block (blockDim.x a multiple of 32, at most 1024).
__device__ float block_sum(float v) {
    __shared__ float part[32];
    __shared__ float total;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    if (lane == 0) part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float s = lane < (int)(blockDim.x >> 5) ? part[lane] : 0.0f;
        s = warp_sum(s);
        if (lane == 0) total = s;
    }
    __syncthreads();
    float r = total;
    __syncthreads();
    return r;
}

__device__ float block_max(float v) {
    __shared__ float part[32];
    __shared__ float total;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_max(v);
    if (lane == 0) part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float s = lane < (int)(blockDim.x >> 5) ? part[lane] : NEG_INF;
        s = warp_max(s);
        if (lane == 0) total = s;
    }
    __syncthreads();
    float r = total;
    __syncthreads();
    return r;
}
