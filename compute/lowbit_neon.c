/* Arm NEON kernels of sluice's grouped low-bit types (layouts in lowbit.h):
 * dequantization, float-activation dots and integer tiles against
 * SL_ACT_Q8_0 activations (lowbit_neon_gemm.inc, built with and without
 * SDOT), for every (bits, group) pair. Registered into the NEON table by
 * kernels_neon.c.
 *
 * A group is handled 16 elements (half a run) at a time: unpack16() turns
 * the bit planes into 16 unsigned quants with one load, a shift and a mask
 * (plus a bit test for the 3-bit high plane): lowbit.h's plane order keeps
 * every half run in 16 consecutive plane positions. The quants are at most 7
 * or 15, so they are also valid signed bytes for SDOT / SMULL. The
 * dequantizer is bit-identical to the reference (an exact product plus the
 * zero point, one rounding, as a fused multiply-add). */
#include <arm_neon.h>
#include <stdbool.h>
#include <string.h>

#include "common/log.h"
#include "compute/lowbit.h"
#include "compute/quant.h"
#include "model/dtype.h"

#define INLINE static inline __attribute__((always_inline))

INLINE float f16_to_f32(uint16_t h)
{
    __fp16 v;
    memcpy(&v, &h, sizeof v);
    return (float)v;
}

INLINE void scales(const uint8_t *blk, float *d, float *m)
{
    uint16_t h[2];
    memcpy(h, blk, sizeof h);
    *d = f16_to_f32(h[0]);
    *m = f16_to_f32(h[1]);
}

INLINE size_t blk_bytes(int bits, int G)
{
    return 4 + (size_t)(G * bits / 8);
}

/* v >> s for every byte (s may be a run-time value). */
INLINE uint8x16_t shr(uint8x16_t v, int s)
{
    return vshlq_u8(v, vdupq_n_s8((int8_t)-s));
}

/* Quants at plane positions 16c .. 16c+15 of the group at blk (lowbit.h),
 * unsigned: 16 consecutive elements, half h of run k for c = (G/32) h + k
 * (see chunk()). */
INLINE uint8x16_t unpack16(int bits, int G, const uint8_t *blk, int c)
{
    const uint8_t *p = blk + 4;
    if (bits == 4) { /* byte l: element l (low nibble), l + G/2 (high) */
        const int half = G / 2;
        const uint8x16_t v = vld1q_u8(p + (16 * c) % half);
        return 16 * c < half ? vandq_u8(v, vdupq_n_u8(15)) : vshrq_n_u8(v, 4);
    }
    uint8x16_t u;
    if (G == 128) /* 32 bytes; element 32k + l at bits 2k */
        u = shr(vld1q_u8(p + 16 * (c % 2)), 2 * (c / 2));
    else if (G == 64) /* 16 bytes; element 16k + l at bits 2k */
        u = shr(vld1q_u8(p), 2 * c);
    else { /* G == 32: 8 bytes; element 8k + l at bits 2k: k = 2c, 2c + 1 in the halves */
        const uint8x8_t v = vld1_u8(p);
        u = vcombine_u8(vshl_u8(v, vdup_n_s8((int8_t)(-4 * c))), vshl_u8(v, vdup_n_s8((int8_t)(-4 * c - 2))));
    }
    u = vandq_u8(u, vdupq_n_u8(3));
    if (bits == 2)
        return u;
    /* The high plane: bit s of h[l] is element s*G/8 + l. */
    const uint8_t *h = p + G / 4;
    uint8x16_t hb, mask;
    if (G == 128) { /* 16 bytes: bit c */
        hb = vld1q_u8(h);
        mask = vdupq_n_u8((uint8_t)(1u << c));
    } else if (G == 64) { /* 8 bytes in each half: bits 2c, 2c + 1 */
        const uint8x8_t v = vld1_u8(h);
        hb = vcombine_u8(v, v);
        mask = vcombine_u8(vdup_n_u8((uint8_t)(1u << (2 * c))), vdup_n_u8((uint8_t)(1u << (2 * c + 1))));
    } else { /* 4 bytes in each 32-bit lane k: bit 4c + k */
        uint32_t q;
        memcpy(&q, h, sizeof q);
        hb = vreinterpretq_u8_u32(vdupq_n_u32(q));
        static const uint8_t base[16] = {1, 1, 1, 1, 2, 2, 2, 2, 4, 4, 4, 4, 8, 8, 8, 8};
        mask = vshlq_u8(vld1q_u8(base), vdupq_n_s8((int8_t)(4 * c)));
    }
    return vorrq_u8(u, vandq_u8(vtstq_u8(hb, mask), vdupq_n_u8(4)));
}

/* The plane chunk (unpack16's c) of elements 16e .. 16e+15 of a group:
 * half e % 2 of run e / 2. */
INLINE int chunk(int G, int e)
{
    return (G / 32) * (e % 2) + e / 2;
}

/* The first c (1..4) floats / int32s at p in a vector, the rest zero (the
 * memory after them may hold anything, NaN bit patterns included). */
INLINE float32x4_t load_f32_lanes(const float *p, int c)
{
    if (c == 4)
        return vld1q_f32(p);
    float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    memcpy(v, p, (size_t)c * sizeof *v);
    return vld1q_f32(v);
}

INLINE int32x4_t load_s32_lanes(const int32_t *p, int c)
{
    if (c == 4)
        return vld1q_s32(p);
    int32_t v[4] = {0, 0, 0, 0};
    memcpy(v, p, (size_t)c * sizeof *v);
    return vld1q_s32(v);
}

/* ---- dequantization and float dots ------------------------------------------------- */

INLINE void rows_to_float(int bits, int G, const void *src, float *dst, int64_t n)
{
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / G; i++, b += blk_bytes(bits, G)) {
        float d, m;
        scales(b, &d, &m);
        const float32x4_t mv = vdupq_n_f32(m);
        for (int c = 0; c < G / 16; c++) {
            const uint8x16_t u = unpack16(bits, G, b, chunk(G, c));
            const uint16x8_t lo = vmovl_u8(vget_low_u8(u)), hi = vmovl_high_u8(u);
            float *y = dst + i * G + 16 * c;
            vst1q_f32(y, vfmaq_n_f32(mv, vcvtq_f32_u32(vmovl_u16(vget_low_u16(lo))), d));
            vst1q_f32(y + 4, vfmaq_n_f32(mv, vcvtq_f32_u32(vmovl_high_u16(lo)), d));
            vst1q_f32(y + 8, vfmaq_n_f32(mv, vcvtq_f32_u32(vmovl_u16(vget_low_u16(hi))), d));
            vst1q_f32(y + 12, vfmaq_n_f32(mv, vcvtq_f32_u32(vmovl_high_u16(hi)), d));
        }
    }
}

/* Per group: sum(q x) and sum(x), combined as d * sum(q x) + m * sum(x). */
INLINE float rows_dot(int bits, int G, const void *w, const float *x, int64_t n)
{
    const uint8_t *b = w;
    float32x4_t acc = vdupq_n_f32(0.0f);
    for (int64_t i = 0; i < n / G; i++, b += blk_bytes(bits, G), x += G) {
        float d, m;
        scales(b, &d, &m);
        float32x4_t qx0 = vdupq_n_f32(0.0f), qx1 = qx0, sx = qx0;
        for (int c = 0; c < G / 16; c++) {
            const uint8x16_t u = unpack16(bits, G, b, chunk(G, c));
            const uint16x8_t lo = vmovl_u8(vget_low_u8(u)), hi = vmovl_high_u8(u);
            const float *xc = x + 16 * c;
            const float32x4_t x0 = vld1q_f32(xc), x1 = vld1q_f32(xc + 4), x2 = vld1q_f32(xc + 8),
                              x3 = vld1q_f32(xc + 12);
            qx0 = vfmaq_f32(qx0, vcvtq_f32_u32(vmovl_u16(vget_low_u16(lo))), x0);
            qx1 = vfmaq_f32(qx1, vcvtq_f32_u32(vmovl_high_u16(lo)), x1);
            qx0 = vfmaq_f32(qx0, vcvtq_f32_u32(vmovl_u16(vget_low_u16(hi))), x2);
            qx1 = vfmaq_f32(qx1, vcvtq_f32_u32(vmovl_high_u16(hi)), x3);
            sx = vaddq_f32(sx, vaddq_f32(vaddq_f32(x0, x1), vaddq_f32(x2, x3)));
        }
        acc = vfmaq_n_f32(acc, vaddq_f32(qx0, qx1), d);
        acc = vfmaq_n_f32(acc, sx, m);
    }
    return vaddvq_f32(acc);
}

#define LOWBIT_NEON(name, bits, G)                                                                           \
    static void to_float_##name(const void *src, float *dst, int64_t n)                                      \
    {                                                                                                        \
        rows_to_float(bits, G, src, dst, n);                                                                 \
    }                                                                                                        \
    static float dot_##name(const void *w, const float *x, int64_t n)                                        \
    {                                                                                                        \
        return rows_dot(bits, G, w, x, n);                                                                   \
    }

LOWBIT_NEON(g2_128, 2, 128)
LOWBIT_NEON(g3_128, 3, 128)
LOWBIT_NEON(g4_128, 4, 128)
LOWBIT_NEON(g2_64, 2, 64)
LOWBIT_NEON(g3_64, 3, 64)
LOWBIT_NEON(g4_64, 4, 64)
LOWBIT_NEON(g2_32, 2, 32)
LOWBIT_NEON(g3_32, 3, 32)
LOWBIT_NEON(g4_32, 4, 32)

/* ---- integer tiles: the two instruction sets ------------------------------------------ */

/* Four lanes whose sum is the exact dot product of 16 signed byte pairs,
 * without the dot-product extension (|a b| <= 2^14 fits 16 bits). */
INLINE int32x4_t idot16_plain(int32x4_t acc, int8x16_t a, int8x16_t b)
{
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
    return vpadalq_s16(acc, vmull_high_s8(a, b));
}

#define LB_SUF(name) name##_plain
#define LB_IDOT(acc, a, b) idot16_plain(acc, a, b)
#include "compute/lowbit_neon_gemm.inc"
#undef LB_SUF
#undef LB_IDOT

/* The SDOT tiles, compiled for Armv8.2 with the dot-product extension and
 * entered only when the caller says the CPU has it (see kernels_neon.c for
 * why GCC and clang differ here). */
#if defined(__GNUC__) && !defined(__clang__)
#define LB_HAVE_SDOT 1
#pragma GCC push_options
#pragma GCC target("arch=armv8.2-a+dotprod")
#elif defined(__ARM_FEATURE_DOTPROD)
#define LB_HAVE_SDOT 1
#else
#define LB_HAVE_SDOT 0
#endif
#if LB_HAVE_SDOT
#define LB_SUF(name) name##_dotprod
#define LB_IDOT(acc, a, b) vdotq_s32(acc, a, b)
#include "compute/lowbit_neon_gemm.inc"
#undef LB_SUF
#undef LB_IDOT
#endif
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

void sl_lowbit_register_neon(sl_kernels *k, bool sdot)
{
#define SET(T, name)                                                                                         \
    do {                                                                                                     \
        k->to_float[T] = to_float_##name;                                                                    \
        k->dot[T] = dot_##name;                                                                              \
        k->act[T] = SL_ACT_Q8_0;                                                                             \
    } while (0)
    SET(SL_G2_128, g2_128);
    SET(SL_G3_128, g3_128);
    SET(SL_G4_128, g4_128);
    SET(SL_G2_64, g2_64);
    SET(SL_G3_64, g3_64);
    SET(SL_G4_64, g4_64);
    SET(SL_G2_32, g2_32);
    SET(SL_G3_32, g3_32);
    SET(SL_G4_32, g4_32);
#undef SET
    set_gemms_plain(k);
#if LB_HAVE_SDOT
    if (sdot)
        set_gemms_dotprod(k);
#else
    (void)sdot;
#endif
}
