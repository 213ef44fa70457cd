/* Arm NEON kernels (see kernels_neon.h for how the table is chosen):
 *  - dequantizers and float-activation row dot products for every
 *    supported tensor type;
 *  - the quantized-activation path: the Q8_0 / Q8_K activation quantizers
 *    and the integer tile products of every quantized type, built twice
 *    from kernels_neon_gemm.inc (plain Advanced SIMD, and SDOT for CPUs
 *    with the dot-product extension);
 *  - the float vector operations of the forward pass.
 *
 * Block layouts are quant.h's. Quants are unpacked to small signed integers
 * in byte lanes (a 16-lane vector at a time). For float activations they are
 * widened to float and multiplied with the activations, and each block's (or
 * sub-block's) sum is scaled once by its float scale instead of dequantizing
 * every element first: only the rounding order differs from the reference
 * (the tests bound it per type). For quantized activations the integer sums
 * are exact, as in the reference.
 *
 * The dequantizers and activation quantizers are bit-identical to the
 * reference ones: every reference element is one rounding of an exact
 * product (an f16 scale times a small integer has at most 24 significant
 * bits), and a fused multiply-add of the same product rounds the same way. */
#include "compute/kernels_neon.h"

#include <arm_neon.h>
#include <math.h>
#include <pthread.h>
#include <string.h>
#include <sys/auxv.h>

#include "common/half.h"
#include "common/log.h"
#include "compute/lowbit.h"
#include "compute/quant.h"

/* Helpers that must be inlined into both instruction sets' tiles. */
#define INLINE static inline __attribute__((always_inline))

/* ---- lane helpers ------------------------------------------------------------ */

/* An f16 scale field as a float, by the FCVT instruction (exact for every
 * finite value, subnormals included, like sl_f16_to_f32). */
INLINE float f16_to_f32(uint16_t h)
{
    __fp16 v;
    memcpy(&v, &h, sizeof v);
    return (float)v;
}

/* Sum over 16 lanes of q[i] * x[i] (q small signed integers), as four
 * partial sums. Two independent chains keep both FMA pipes busy. */
static inline float32x4_t dot16_s8(int8x16_t q, const float *x)
{
    const int16x8_t lo = vmovl_s8(vget_low_s8(q));
    const int16x8_t hi = vmovl_high_s8(q);
    float32x4_t a = vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))), vld1q_f32(x));
    float32x4_t b = vmulq_f32(vcvtq_f32_s32(vmovl_high_s16(lo)), vld1q_f32(x + 4));
    a = vfmaq_f32(a, vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))), vld1q_f32(x + 8));
    b = vfmaq_f32(b, vcvtq_f32_s32(vmovl_high_s16(hi)), vld1q_f32(x + 12));
    return vaddq_f32(a, b);
}

/* The same for quants held unsigned (0..63 fits a signed byte). */
static inline float32x4_t dot16_u8(uint8x16_t q, const float *x)
{
    return dot16_s8(vreinterpretq_s8_u8(q), x);
}

/* Sum of 16 activations, as four partial sums (for the per-block offsets
 * m * sum(x) of the types with a minimum). */
static inline float32x4_t sum16(const float *x)
{
    return vaddq_f32(vaddq_f32(vld1q_f32(x), vld1q_f32(x + 4)), vaddq_f32(vld1q_f32(x + 8), vld1q_f32(x + 12)));
}

/* Writes y[i] = q[i] * scale for 16 lanes (one rounding of an exact product,
 * as the reference does; a multiply, not an FMA with 0, keeps -0.0). */
static inline void store16_scaled(float *y, int8x16_t q, float scale)
{
    const int16x8_t lo = vmovl_s8(vget_low_s8(q));
    const int16x8_t hi = vmovl_high_s8(q);
    vst1q_f32(y, vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))), scale));
    vst1q_f32(y + 4, vmulq_n_f32(vcvtq_f32_s32(vmovl_high_s16(lo)), scale));
    vst1q_f32(y + 8, vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))), scale));
    vst1q_f32(y + 12, vmulq_n_f32(vcvtq_f32_s32(vmovl_high_s16(hi)), scale));
}

/* Writes y[i] = q[i] * scale + offset for 16 lanes. The product is exact, so
 * the fused form rounds exactly like the reference's multiply-then-add
 * (and x - m equals x + (-m), zeros included). */
static inline void store16_affine(float *y, uint8x16_t qu, float scale, float offset)
{
    const int8x16_t q = vreinterpretq_s8_u8(qu);
    const int16x8_t lo = vmovl_s8(vget_low_s8(q));
    const int16x8_t hi = vmovl_high_s8(q);
    const float32x4_t off = vdupq_n_f32(offset);
    vst1q_f32(y, vfmaq_n_f32(off, vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))), scale));
    vst1q_f32(y + 4, vfmaq_n_f32(off, vcvtq_f32_s32(vmovl_high_s16(lo)), scale));
    vst1q_f32(y + 8, vfmaq_n_f32(off, vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))), scale));
    vst1q_f32(y + 12, vfmaq_n_f32(off, vcvtq_f32_s32(vmovl_high_s16(hi)), scale));
}

/* 16 lanes holding 16 (bit 4 of a 5-bit quant) where bit i of h is set,
 * 0 elsewhere: the Q5_0 / Q5_1 high-bit plane for 16 consecutive elements. */
static inline uint8x16_t bit4_plane(uint32_t h)
{
    static const uint8_t k_lane_bit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t v = vcombine_u8(vdup_n_u8((uint8_t)h), vdup_n_u8((uint8_t)(h >> 8)));
    return vandq_u8(vtstq_u8(v, vld1q_u8(k_lane_bit)), vdupq_n_u8(16));
}

/* Bits [2s, 2s+1] of every lane (the Q2_K / Q3_K bit planes). */
static inline uint8x16_t crumb(uint8x16_t v, int s)
{
    return vandq_u8(vshlq_u8(v, vdupq_n_s8((int8_t)(-2 * s))), vdupq_n_u8(3));
}

/* `value` in every lane where (v & mask) != 0, 0 elsewhere. */
static inline uint8x16_t bit_select(uint8x16_t v, uint8_t mask, uint8_t value)
{
    return vandq_u8(vtstq_u8(v, vdupq_n_u8(mask)), vdupq_n_u8(value));
}

/* ---- legacy block unpackers ------------------------------------------------------
 * Each fills q[0] with elements 0..15 and q[1] with 16..31 of one block as
 * the integers the scale multiplies (signed for Q4_0/Q5_0/Q8_0, unsigned for
 * the types with a minimum). */

static inline void unpack_q4_0(const sl_block_q4_0 *b, int8x16_t q[2])
{
    const uint8x16_t v = vld1q_u8(b->qs);
    const int8x16_t eight = vdupq_n_s8(8);
    q[0] = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(15))), eight);
    q[1] = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(v, 4)), eight);
}

static inline void unpack_q4_1(const sl_block_q4_1 *b, uint8x16_t q[2])
{
    const uint8x16_t v = vld1q_u8(b->qs);
    q[0] = vandq_u8(v, vdupq_n_u8(15));
    q[1] = vshrq_n_u8(v, 4);
}

static inline void unpack_q5(const uint8_t qs[16], const uint8_t qh[4], uint8x16_t q[2])
{
    uint32_t h;
    memcpy(&h, qh, sizeof h); /* little-endian u32, as quant.h documents */
    const uint8x16_t v = vld1q_u8(qs);
    q[0] = vorrq_u8(vandq_u8(v, vdupq_n_u8(15)), bit4_plane(h & 0xffff));
    q[1] = vorrq_u8(vshrq_n_u8(v, 4), bit4_plane(h >> 16));
}

static inline void unpack_q5_0(const sl_block_q5_0 *b, int8x16_t q[2])
{
    uint8x16_t u[2];
    unpack_q5(b->qs, b->qh, u);
    const int8x16_t sixteen = vdupq_n_s8(16);
    q[0] = vsubq_s8(vreinterpretq_s8_u8(u[0]), sixteen);
    q[1] = vsubq_s8(vreinterpretq_s8_u8(u[1]), sixteen);
}

/* ---- legacy types: dequantize --------------------------------------------------- */

static void to_float_q4_0(const void *src, float *y, int64_t n)
{
    SL_ASSERT(n % SL_QK == 0);
    const sl_block_q4_0 *b = src;
    for (int64_t i = 0; i < n / SL_QK; i++, y += SL_QK) {
        int8x16_t q[2];
        unpack_q4_0(&b[i], q);
        const float d = f16_to_f32(b[i].d);
        store16_scaled(y, q[0], d);
        store16_scaled(y + 16, q[1], d);
    }
}

static void to_float_q4_1(const void *src, float *y, int64_t n)
{
    SL_ASSERT(n % SL_QK == 0);
    const sl_block_q4_1 *b = src;
    for (int64_t i = 0; i < n / SL_QK; i++, y += SL_QK) {
        uint8x16_t q[2];
        unpack_q4_1(&b[i], q);
        const float d = f16_to_f32(b[i].d), m = f16_to_f32(b[i].m);
        store16_affine(y, q[0], d, m);
        store16_affine(y + 16, q[1], d, m);
    }
}

static void to_float_q5_0(const void *src, float *y, int64_t n)
{
    SL_ASSERT(n % SL_QK == 0);
    const sl_block_q5_0 *b = src;
    for (int64_t i = 0; i < n / SL_QK; i++, y += SL_QK) {
        int8x16_t q[2];
        unpack_q5_0(&b[i], q);
        const float d = f16_to_f32(b[i].d);
        store16_scaled(y, q[0], d);
        store16_scaled(y + 16, q[1], d);
    }
}

static void to_float_q5_1(const void *src, float *y, int64_t n)
{
    SL_ASSERT(n % SL_QK == 0);
    const sl_block_q5_1 *b = src;
    for (int64_t i = 0; i < n / SL_QK; i++, y += SL_QK) {
        uint8x16_t q[2];
        unpack_q5(b[i].qs, b[i].qh, q);
        const float d = f16_to_f32(b[i].d), m = f16_to_f32(b[i].m);
        store16_affine(y, q[0], d, m);
        store16_affine(y + 16, q[1], d, m);
    }
}

static void to_float_q8_0(const void *src, float *y, int64_t n)
{
    SL_ASSERT(n % SL_QK == 0);
    const sl_block_q8_0 *b = src;
    for (int64_t i = 0; i < n / SL_QK; i++, y += SL_QK) {
        const float d = f16_to_f32(b[i].d);
        store16_scaled(y, vld1q_s8(b[i].qs), d);
        store16_scaled(y + 16, vld1q_s8(b[i].qs + 16), d);
    }
}

/* ---- legacy types: dot with float activations ---------------------------------
 * Per block: the two 16-lane partial sums of q * x, scaled once by d (and
 * m * sum(x) for the types with a minimum). */

static float dot_q4_0(const void *w, const float *x, int64_t n)
{
    SL_ASSERT(n % SL_QK == 0);
    const sl_block_q4_0 *b = w;
    float32x4_t acc = vdupq_n_f32(0.0f);
    for (int64_t i = 0; i < n / SL_QK; i++, x += SL_QK) {
        int8x16_t q[2];
        unpack_q4_0(&b[i], q);
        const float32x4_t s = vaddq_f32(dot16_s8(q[0], x), dot16_s8(q[1], x + 16));
        acc = vfmaq_n_f32(acc, s, f16_to_f32(b[i].d));
    }
    return vaddvq_f32(acc);
}

static float dot_q4_1(const void *w, const float *x, int64_t n)
{
    SL_ASSERT(n % SL_QK == 0);
    const sl_block_q4_1 *b = w;
    float32x4_t acc = vdupq_n_f32(0.0f);
    for (int64_t i = 0; i < n / SL_QK; i++, x += SL_QK) {
        uint8x16_t q[2];
        unpack_q4_1(&b[i], q);
        const float32x4_t s = vaddq_f32(dot16_u8(q[0], x), dot16_u8(q[1], x + 16));
        acc = vfmaq_n_f32(acc, s, f16_to_f32(b[i].d));
        acc = vfmaq_n_f32(acc, vaddq_f32(sum16(x), sum16(x + 16)), f16_to_f32(b[i].m));
    }
    return vaddvq_f32(acc);
}

static float dot_q5_0(const void *w, const float *x, int64_t n)
{
    SL_ASSERT(n % SL_QK == 0);
    const sl_block_q5_0 *b = w;
    float32x4_t acc = vdupq_n_f32(0.0f);
    for (int64_t i = 0; i < n / SL_QK; i++, x += SL_QK) {
        int8x16_t q[2];
        unpack_q5_0(&b[i], q);
        const float32x4_t s = vaddq_f32(dot16_s8(q[0], x), dot16_s8(q[1], x + 16));
        acc = vfmaq_n_f32(acc, s, f16_to_f32(b[i].d));
    }
    return vaddvq_f32(acc);
}

static float dot_q5_1(const void *w, const float *x, int64_t n)
{
    SL_ASSERT(n % SL_QK == 0);
    const sl_block_q5_1 *b = w;
    float32x4_t acc = vdupq_n_f32(0.0f);
    for (int64_t i = 0; i < n / SL_QK; i++, x += SL_QK) {
        uint8x16_t q[2];
        unpack_q5(b[i].qs, b[i].qh, q);
        const float32x4_t s = vaddq_f32(dot16_u8(q[0], x), dot16_u8(q[1], x + 16));
        acc = vfmaq_n_f32(acc, s, f16_to_f32(b[i].d));
        acc = vfmaq_n_f32(acc, vaddq_f32(sum16(x), sum16(x + 16)), f16_to_f32(b[i].m));
    }
    return vaddvq_f32(acc);
}

static float dot_q8_0(const void *w, const float *x, int64_t n)
{
    SL_ASSERT(n % SL_QK == 0);
    const sl_block_q8_0 *b = w;
    float32x4_t acc = vdupq_n_f32(0.0f);
    for (int64_t i = 0; i < n / SL_QK; i++, x += SL_QK) {
        const float32x4_t s = vaddq_f32(dot16_s8(vld1q_s8(b[i].qs), x), dot16_s8(vld1q_s8(b[i].qs + 16), x + 16));
        acc = vfmaq_n_f32(acc, s, f16_to_f32(b[i].d));
    }
    return vaddvq_f32(acc);
}

/* ---- k-quant unpackers -------------------------------------------------------------
 * Each visits one super-block as 16 runs of 16 consecutive elements (run r
 * covers elements [16r, 16r+16), which is sub-block r for Q2_K/Q3_K/Q6_K and
 * half of sub-block r/2 for Q4_K/Q5_K) and hands every run's integer quants
 * to a visitor (dequantize, float dot, integer tile: VISIT(r, int8x16_t)),
 * which the macro inlines. */

/* Q2_K: half h uses qs[32h..32h+31]; element 128h + 32s + l is bits 2s and
 * 2s + 1 of qs[32h + l], so lanes l = 0..15 form run 8h + 2s and l = 16..31 run
 * 8h + 2s + 1. */
#define Q2_K_RUNS(b, VISIT)                                                                                  \
    for (int h_ = 0; h_ < 2; h_++) {                                                                         \
        const uint8x16_t v0_ = vld1q_u8((b)->qs + 32 * h_), v1_ = vld1q_u8((b)->qs + 32 * h_ + 16);         \
        for (int s_ = 0; s_ < 4; s_++) {                                                                     \
            VISIT(8 * h_ + 2 * s_, vreinterpretq_s8_u8(crumb(v0_, s_)));                                     \
            VISIT(8 * h_ + 2 * s_ + 1, vreinterpretq_s8_u8(crumb(v1_, s_)));                                 \
        }                                                                                                    \
    }

/* Q3_K: as Q2_K for the low two bits; the high bit of element 128h+32s+l is
 * bit 4h + s of hmask[l]. The quant is (lo | high << 2) - 4, in -4..3. */
#define Q3_K_RUNS(b, VISIT)                                                                                  \
    do {                                                                                                     \
        const uint8x16_t m0_ = vld1q_u8((b)->hmask), m1_ = vld1q_u8((b)->hmask + 16);                       \
        const int8x16_t four_ = vdupq_n_s8(4);                                                               \
        for (int h_ = 0; h_ < 2; h_++) {                                                                     \
            const uint8x16_t v0_ = vld1q_u8((b)->qs + 32 * h_), v1_ = vld1q_u8((b)->qs + 32 * h_ + 16);     \
            for (int s_ = 0; s_ < 4; s_++) {                                                                 \
                const uint8_t bit_ = (uint8_t)(1u << (4 * h_ + s_));                                         \
                const uint8x16_t u0_ = vorrq_u8(crumb(v0_, s_), bit_select(m0_, bit_, 4));                 \
                const uint8x16_t u1_ = vorrq_u8(crumb(v1_, s_), bit_select(m1_, bit_, 4));                 \
                VISIT(8 * h_ + 2 * s_, vsubq_s8(vreinterpretq_s8_u8(u0_), four_));                          \
                VISIT(8 * h_ + 2 * s_ + 1, vsubq_s8(vreinterpretq_s8_u8(u1_), four_));                      \
            }                                                                                                \
        }                                                                                                    \
    } while (0)

/* Q4_K: group g = 0..3 uses qs[32g..32g+31]; its low nibbles are elements
 * 64g + l (runs 4g, 4g+1), its high nibbles 64g + 32 + l (runs 4g+2, 4g+3).
 * Q5_K adds bit 4 from qh[l]: bit 2g for the low nibbles, 2g+1 for the
 * high ones. */
#define Q45_K_RUNS(b, QH, VISIT)                                                                             \
    do {                                                                                                     \
        const uint8_t *qh_ = (QH); /* NULL for Q4_K */                                                       \
        uint8x16_t h0_ = vdupq_n_u8(0), h1_ = vdupq_n_u8(0);                                                 \
        if (qh_) {                                                                                           \
            h0_ = vld1q_u8(qh_);                                                                             \
            h1_ = vld1q_u8(qh_ + 16);                                                                        \
        }                                                                                                    \
        const uint8x16_t low4_ = vdupq_n_u8(15);                                                             \
        for (int g_ = 0; g_ < 4; g_++) {                                                                     \
            const uint8x16_t v0_ = vld1q_u8((b)->qs + 32 * g_), v1_ = vld1q_u8((b)->qs + 32 * g_ + 16);     \
            uint8x16_t a0_ = vandq_u8(v0_, low4_), a1_ = vandq_u8(v1_, low4_);                               \
            uint8x16_t c0_ = vshrq_n_u8(v0_, 4), c1_ = vshrq_n_u8(v1_, 4);                                   \
            if (qh_) {                                                                                       \
                const uint8_t lo_bit_ = (uint8_t)(1u << (2 * g_)), hi_bit_ = (uint8_t)(2u << (2 * g_));      \
                a0_ = vorrq_u8(a0_, bit_select(h0_, lo_bit_, 16));                                           \
                a1_ = vorrq_u8(a1_, bit_select(h1_, lo_bit_, 16));                                           \
                c0_ = vorrq_u8(c0_, bit_select(h0_, hi_bit_, 16));                                           \
                c1_ = vorrq_u8(c1_, bit_select(h1_, hi_bit_, 16));                                           \
            }                                                                                                \
            VISIT(4 * g_, vreinterpretq_s8_u8(a0_));                                                         \
            VISIT(4 * g_ + 1, vreinterpretq_s8_u8(a1_));                                                     \
            VISIT(4 * g_ + 2, vreinterpretq_s8_u8(c0_));                                                     \
            VISIT(4 * g_ + 3, vreinterpretq_s8_u8(c1_));                                                     \
        }                                                                                                    \
    } while (0)

/* Q6_K: half h, L = ql + 64h, H = qh + 32h; for lanes l in chunk c (0..15,
 * 16..31) the four runs are 8h + c + {0, 2, 4, 6} (elements 128h + 16c +
 * {0, 32, 64, 96} + l), with low nibbles from L[16c..] / L[32+16c..] and two
 * high bits from H[16c..] at shifts 0, 2, 4, 6. Quants are q - 32. */
#define Q6_K_RUNS(b, VISIT)                                                                                  \
    for (int h_ = 0; h_ < 2; h_++) {                                                                         \
        const uint8_t *L_ = (b)->ql + 64 * h_, *H_ = (b)->qh + 32 * h_;                                      \
        const uint8x16_t low4_ = vdupq_n_u8(15), two_ = vdupq_n_u8(3 << 4);                                  \
        const int8x16_t bias_ = vdupq_n_s8(32);                                                              \
        for (int c_ = 0; c_ < 2; c_++) {                                                                     \
            const uint8x16_t la_ = vld1q_u8(L_ + 16 * c_), lb_ = vld1q_u8(L_ + 32 + 16 * c_);               \
            const uint8x16_t hh_ = vld1q_u8(H_ + 16 * c_);                                                   \
            const uint8x16_t q0_ = vorrq_u8(vandq_u8(la_, low4_), vandq_u8(vshlq_n_u8(hh_, 4), two_));      \
            const uint8x16_t q1_ = vorrq_u8(vandq_u8(lb_, low4_), vandq_u8(vshlq_n_u8(hh_, 2), two_));      \
            const uint8x16_t q2_ = vorrq_u8(vshrq_n_u8(la_, 4), vandq_u8(hh_, two_));                       \
            const uint8x16_t q3_ = vorrq_u8(vshrq_n_u8(lb_, 4), vandq_u8(vshrq_n_u8(hh_, 2), two_));        \
            VISIT(8 * h_ + c_, vsubq_s8(vreinterpretq_s8_u8(q0_), bias_));                                   \
            VISIT(8 * h_ + c_ + 2, vsubq_s8(vreinterpretq_s8_u8(q1_), bias_));                               \
            VISIT(8 * h_ + c_ + 4, vsubq_s8(vreinterpretq_s8_u8(q2_), bias_));                               \
            VISIT(8 * h_ + c_ + 6, vsubq_s8(vreinterpretq_s8_u8(q3_), bias_));                               \
        }                                                                                                    \
    }

/* Per-run float scale and offset of one super-block: element e of run r is
 * scale[r] * q + offset[r] (offset = -min), computed as the reference
 * computes its dl and ml (exact products of f16 values and small ints). */
typedef struct run_scales {
    float scale[16];
    float offset[16];
} run_scales;

static inline void scales_q2_k(const sl_block_q2_k *b, run_scales *rs)
{
    const float d = f16_to_f32(b->d), dmin = f16_to_f32(b->dmin);
    for (int r = 0; r < 16; r++) {
        rs->scale[r] = d * (float)(b->scales[r] & 15);
        rs->offset[r] = -(dmin * (float)(b->scales[r] >> 4));
    }
}

static inline void scales_q3_k(const sl_block_q3_k *b, run_scales *rs)
{
    const float d = f16_to_f32(b->d);
    for (int r = 0; r < 16; r++) {
        rs->scale[r] = d * (float)sl_quant_q3_k_scale(r, b->scales);
        rs->offset[r] = 0.0f;
    }
}

/* Q4_K and Q5_K share the scale packing; run r belongs to sub-block j:
 * runs 4g, 4g+1 to 2g and 4g+2, 4g+3 to 2g+1, i.e. j = r / 2. */
static inline void scales_q45_k(uint16_t d16, uint16_t dmin16, const uint8_t s[12], run_scales *rs)
{
    const float d = f16_to_f32(d16), dmin = f16_to_f32(dmin16);
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        sl_quant_k4_scale_min(j, s, &sc, &m);
        rs->scale[2 * j] = rs->scale[2 * j + 1] = d * (float)sc;
        rs->offset[2 * j] = rs->offset[2 * j + 1] = -(dmin * (float)m);
    }
}

static inline void scales_q6_k(const sl_block_q6_k *b, run_scales *rs)
{
    const float d = f16_to_f32(b->d);
    for (int r = 0; r < 16; r++) {
        rs->scale[r] = d * (float)b->scales[r];
        rs->offset[r] = 0.0f;
    }
}

/* ---- k-quants: dequantize ------------------------------------------------------ */

/* Offset types: y = scale * q + offset (one rounding, as the reference). */
#define VISIT_STORE_AFFINE(r, q) store16_affine(y + 16 * (r), vreinterpretq_u8_s8(q), rs.scale[r], rs.offset[r])
/* Pure-scale types: y = scale * q. */
#define VISIT_STORE_SCALED(r, q) store16_scaled(y + 16 * (r), (q), rs.scale[r])

static void to_float_q2_k(const void *src, float *y, int64_t n)
{
    SL_ASSERT(n % SL_QK_K == 0);
    const sl_block_q2_k *b = src;
    for (int64_t i = 0; i < n / SL_QK_K; i++, y += SL_QK_K) {
        run_scales rs;
        scales_q2_k(&b[i], &rs);
        Q2_K_RUNS(&b[i], VISIT_STORE_AFFINE);
    }
}

static void to_float_q3_k(const void *src, float *y, int64_t n)
{
    SL_ASSERT(n % SL_QK_K == 0);
    const sl_block_q3_k *b = src;
    for (int64_t i = 0; i < n / SL_QK_K; i++, y += SL_QK_K) {
        run_scales rs;
        scales_q3_k(&b[i], &rs);
        Q3_K_RUNS(&b[i], VISIT_STORE_SCALED);
    }
}

static void to_float_q4_k(const void *src, float *y, int64_t n)
{
    SL_ASSERT(n % SL_QK_K == 0);
    const sl_block_q4_k *b = src;
    for (int64_t i = 0; i < n / SL_QK_K; i++, y += SL_QK_K) {
        run_scales rs;
        scales_q45_k(b[i].d, b[i].dmin, b[i].scales, &rs);
        Q45_K_RUNS(&b[i], NULL, VISIT_STORE_AFFINE);
    }
}

static void to_float_q5_k(const void *src, float *y, int64_t n)
{
    SL_ASSERT(n % SL_QK_K == 0);
    const sl_block_q5_k *b = src;
    for (int64_t i = 0; i < n / SL_QK_K; i++, y += SL_QK_K) {
        run_scales rs;
        scales_q45_k(b[i].d, b[i].dmin, b[i].scales, &rs);
        Q45_K_RUNS(&b[i], b[i].qh, VISIT_STORE_AFFINE);
    }
}

static void to_float_q6_k(const void *src, float *y, int64_t n)
{
    SL_ASSERT(n % SL_QK_K == 0);
    const sl_block_q6_k *b = src;
    for (int64_t i = 0; i < n / SL_QK_K; i++, y += SL_QK_K) {
        run_scales rs;
        scales_q6_k(&b[i], &rs);
        Q6_K_RUNS(&b[i], VISIT_STORE_SCALED);
    }
}

/* ---- k-quants: dot with float activations -----------------------------------------
 * Every run contributes scale[r] * sum(q x) + offset[r] * sum(x) over its
 * 16 elements. */

#define VISIT_DOT(r, q) acc = vfmaq_n_f32(acc, dot16_s8((q), x + 16 * (r)), rs.scale[r])
#define VISIT_DOT_OFFSET(r, q)                                                                               \
    do {                                                                                                     \
        VISIT_DOT(r, q);                                                                                     \
        acc_off = vfmaq_n_f32(acc_off, sum16(x + 16 * (r)), rs.offset[r]);                                   \
    } while (0)

static float dot_q2_k(const void *w, const float *x, int64_t n)
{
    SL_ASSERT(n % SL_QK_K == 0);
    const sl_block_q2_k *b = w;
    float32x4_t acc = vdupq_n_f32(0.0f), acc_off = vdupq_n_f32(0.0f);
    for (int64_t i = 0; i < n / SL_QK_K; i++, x += SL_QK_K) {
        run_scales rs;
        scales_q2_k(&b[i], &rs);
        Q2_K_RUNS(&b[i], VISIT_DOT_OFFSET);
    }
    return vaddvq_f32(vaddq_f32(acc, acc_off));
}

static float dot_q3_k(const void *w, const float *x, int64_t n)
{
    SL_ASSERT(n % SL_QK_K == 0);
    const sl_block_q3_k *b = w;
    float32x4_t acc = vdupq_n_f32(0.0f);
    for (int64_t i = 0; i < n / SL_QK_K; i++, x += SL_QK_K) {
        run_scales rs;
        scales_q3_k(&b[i], &rs);
        Q3_K_RUNS(&b[i], VISIT_DOT);
    }
    return vaddvq_f32(acc);
}

static float dot_q4_k(const void *w, const float *x, int64_t n)
{
    SL_ASSERT(n % SL_QK_K == 0);
    const sl_block_q4_k *b = w;
    float32x4_t acc = vdupq_n_f32(0.0f), acc_off = vdupq_n_f32(0.0f);
    for (int64_t i = 0; i < n / SL_QK_K; i++, x += SL_QK_K) {
        run_scales rs;
        scales_q45_k(b[i].d, b[i].dmin, b[i].scales, &rs);
        Q45_K_RUNS(&b[i], NULL, VISIT_DOT_OFFSET);
    }
    return vaddvq_f32(vaddq_f32(acc, acc_off));
}

static float dot_q5_k(const void *w, const float *x, int64_t n)
{
    SL_ASSERT(n % SL_QK_K == 0);
    const sl_block_q5_k *b = w;
    float32x4_t acc = vdupq_n_f32(0.0f), acc_off = vdupq_n_f32(0.0f);
    for (int64_t i = 0; i < n / SL_QK_K; i++, x += SL_QK_K) {
        run_scales rs;
        scales_q45_k(b[i].d, b[i].dmin, b[i].scales, &rs);
        Q45_K_RUNS(&b[i], b[i].qh, VISIT_DOT_OFFSET);
    }
    return vaddvq_f32(vaddq_f32(acc, acc_off));
}

static float dot_q6_k(const void *w, const float *x, int64_t n)
{
    SL_ASSERT(n % SL_QK_K == 0);
    const sl_block_q6_k *b = w;
    float32x4_t acc = vdupq_n_f32(0.0f);
    for (int64_t i = 0; i < n / SL_QK_K; i++, x += SL_QK_K) {
        run_scales rs;
        scales_q6_k(&b[i], &rs);
        Q6_K_RUNS(&b[i], VISIT_DOT);
    }
    return vaddvq_f32(acc);
}

/* ---- float types ------------------------------------------------------------------
 * Rows of these have no block structure, so n need not be a multiple of the
 * vector width: the tail is done one element at a time. */

static void to_float_f32(const void *src, float *y, int64_t n)
{
    memcpy(y, src, (size_t)n * sizeof(float));
}

/* FCVT widens every binary16 value exactly (subnormals included), like
 * sl_f16_to_f32; only a signalling NaN's quiet bit could differ, and weights
 * are finite. */
static inline float32x4_t load4_f16(const uint16_t *h)
{
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(h)));
}

static inline float32x4_t load4_bf16(const uint16_t *h)
{
    return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(h), 16));
}

static void to_float_f16(const void *src, float *y, int64_t n)
{
    const uint16_t *h = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        vst1q_f32(y + i, load4_f16(h + i));
        vst1q_f32(y + i + 4, load4_f16(h + i + 4));
    }
    for (; i < n; i++)
        y[i] = sl_f16_to_f32(h[i]);
}

static void to_float_bf16(const void *src, float *y, int64_t n)
{
    const uint16_t *h = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        vst1q_f32(y + i, load4_bf16(h + i));
        vst1q_f32(y + i + 4, load4_bf16(h + i + 4));
    }
    for (; i < n; i++)
        y[i] = sl_bf16_to_f32(h[i]);
}

/* The float dots keep four independent accumulators (16 elements a step):
 * FMA latency is about four times its issue interval on current cores. */
#define FLOAT_DOT(name, elem_t, LOAD4, SCALAR)                                                               \
    static float dot_##name(const void *w, const float *x, int64_t n)                                        \
    {                                                                                                        \
        const elem_t *a = w;                                                                                 \
        float32x4_t s0 = vdupq_n_f32(0.0f), s1 = s0, s2 = s0, s3 = s0;                                       \
        int64_t i = 0;                                                                                       \
        for (; i + 16 <= n; i += 16) {                                                                       \
            s0 = vfmaq_f32(s0, LOAD4(a + i), vld1q_f32(x + i));                                              \
            s1 = vfmaq_f32(s1, LOAD4(a + i + 4), vld1q_f32(x + i + 4));                                      \
            s2 = vfmaq_f32(s2, LOAD4(a + i + 8), vld1q_f32(x + i + 8));                                      \
            s3 = vfmaq_f32(s3, LOAD4(a + i + 12), vld1q_f32(x + i + 12));                                    \
        }                                                                                                    \
        for (; i + 4 <= n; i += 4)                                                                           \
            s0 = vfmaq_f32(s0, LOAD4(a + i), vld1q_f32(x + i));                                              \
        float sum = vaddvq_f32(vaddq_f32(vaddq_f32(s0, s1), vaddq_f32(s2, s3)));                             \
        for (; i < n; i++)                                                                                   \
            sum += SCALAR(a[i]) * x[i];                                                                      \
        return sum;                                                                                          \
    }

#define IDENTITY(v) (v)
FLOAT_DOT(f32, float, vld1q_f32, IDENTITY)
FLOAT_DOT(f16, uint16_t, load4_f16, sl_f16_to_f32)
FLOAT_DOT(bf16, uint16_t, load4_bf16, sl_bf16_to_f32)

/* ---- activation quantizers -------------------------------------------------------------
 * The reference's arithmetic (quant.c): d = amax / 127 and id = 1 / d in
 * float, q = x * id rounded to nearest even (FCVTNS, like nearbyintf in the
 * default rounding mode), so every byte is the reference's. |x * id| <= 127
 * up to one rounding, so the saturating narrows never saturate. */

/* The largest |x[i]| of n floats (n a multiple of 16). */
INLINE float amax_f32(const float *x, int n)
{
    float32x4_t m0 = vdupq_n_f32(0.0f), m1 = m0;
    for (int i = 0; i < n; i += 8) {
        m0 = vmaxq_f32(m0, vabsq_f32(vld1q_f32(x + i)));
        m1 = vmaxq_f32(m1, vabsq_f32(vld1q_f32(x + i + 4)));
    }
    return vmaxvq_f32(vmaxq_f32(m0, m1));
}

/* x[0..15] * id rounded to nearest even, as 16 bytes; *sum gets the sum of
 * the 16 quants. */
INLINE int8x16_t quant16(const float *x, float id, int32_t *sum)
{
    const int32x4_t q0 = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x), id));
    const int32x4_t q1 = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + 4), id));
    const int32x4_t q2 = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + 8), id));
    const int32x4_t q3 = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + 12), id));
    *sum = vaddvq_s32(vaddq_s32(vaddq_s32(q0, q1), vaddq_s32(q2, q3)));
    const int16x8_t h0 = vcombine_s16(vqmovn_s32(q0), vqmovn_s32(q1));
    const int16x8_t h1 = vcombine_s16(vqmovn_s32(q2), vqmovn_s32(q3));
    return vcombine_s8(vqmovn_s16(h0), vqmovn_s16(h1));
}

static void quantize_q8_0(const float *x, void *dst, int64_t n)
{
    SL_ASSERT(n % SL_QK == 0);
    int8_t *qs = dst;
    float *d = (float *)(qs + n);
    int32_t *s = (int32_t *)(d + n / SL_QK);
    for (int64_t i = 0; i < n / SL_QK; i++) {
        const float *xb = x + i * SL_QK;
        const float dd = amax_f32(xb, SL_QK) / 127.0f;
        const float id = dd != 0.0f ? 1.0f / dd : 0.0f;
        int32_t s0, s1;
        vst1q_s8(qs + i * SL_QK, quant16(xb, id, &s0));
        vst1q_s8(qs + i * SL_QK + 16, quant16(xb + 16, id, &s1));
        d[i] = sl_act_scale(dd);
        s[i] = s0 + s1;
    }
}

/* SL_ACT_Q8_0P: no NEON table uses it (act[] stays the reference's), but
 * the table offers every format, so a row quantized here reorders the same. */
static void quantize_q8_0p(const float *x, void *dst, int64_t n)
{
    quantize_q8_0(x, dst, n);
    sl_quant_act_q8_0_to_p(dst, n);
}

static void quantize_q8_k(const float *x, void *dst, int64_t n)
{
    SL_ASSERT(n % SL_QK_K == 0);
    int8_t *qs = dst;
    float *d = (float *)(qs + n);
    int16_t *bsums = (int16_t *)(d + n / SL_QK_K);
    for (int64_t i = 0; i < n / SL_QK_K; i++) {
        const float *xb = x + i * SL_QK_K;
        const float dd = amax_f32(xb, SL_QK_K) / 127.0f;
        const float id = dd != 0.0f ? 1.0f / dd : 0.0f;
        for (int k = 0; k < SL_QK_K / 16; k++) {
            int32_t sum;
            vst1q_s8(qs + i * SL_QK_K + 16 * k, quant16(xb + 16 * k, id, &sum));
            bsums[i * (SL_QK_K / 16) + k] = (int16_t)sum;
        }
        d[i] = dd;
    }
}

/* ---- integer tiles: pieces shared by both instruction sets -------------------------- */

static inline size_t legacy_block_bytes(uint32_t type)
{
    switch (type) {
    case SL_Q4_0:
        return sizeof(sl_block_q4_0);
    case SL_Q4_1:
        return sizeof(sl_block_q4_1);
    case SL_Q5_0:
        return sizeof(sl_block_q5_0);
    case SL_Q5_1:
        return sizeof(sl_block_q5_1);
    default:
        return sizeof(sl_block_q8_0);
    }
}

/* One legacy block as the integers the reference multiplies (quant.c:
 * offsets applied for Q4_0/Q5_0, q itself for Q4_1/Q5_1), with its scale d
 * and offset m (left alone for the symmetric types). */
INLINE void legacy_unpack(uint32_t type, const uint8_t *blk, int8x16_t q[2], float *d, float *m)
{
    uint8x16_t u[2];
    switch (type) {
    case SL_Q4_0: {
        const sl_block_q4_0 *b = (const void *)blk;
        unpack_q4_0(b, q);
        *d = f16_to_f32(b->d);
        break;
    }
    case SL_Q4_1: {
        const sl_block_q4_1 *b = (const void *)blk;
        unpack_q4_1(b, u);
        q[0] = vreinterpretq_s8_u8(u[0]);
        q[1] = vreinterpretq_s8_u8(u[1]);
        *d = f16_to_f32(b->d);
        *m = f16_to_f32(b->m);
        break;
    }
    case SL_Q5_0: {
        const sl_block_q5_0 *b = (const void *)blk;
        unpack_q5_0(b, q);
        *d = f16_to_f32(b->d);
        break;
    }
    case SL_Q5_1: {
        const sl_block_q5_1 *b = (const void *)blk;
        unpack_q5(b->qs, b->qh, u);
        q[0] = vreinterpretq_s8_u8(u[0]);
        q[1] = vreinterpretq_s8_u8(u[1]);
        *d = f16_to_f32(b->d);
        *m = f16_to_f32(b->m);
        break;
    }
    default: {
        const sl_block_q8_0 *b = (const void *)blk;
        q[0] = vld1q_s8(b->qs);
        q[1] = vld1q_s8(b->qs + 16);
        *d = f16_to_f32(b->d);
        break;
    }
    }
}

/* The first c (1..4) values at p in a vector, zeros after them (a row's
 * last group of blocks must not read past its scales). */
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

static inline size_t kq_block_bytes(uint32_t type)
{
    switch (type) {
    case SL_Q2_K:
        return sizeof(sl_block_q2_k);
    case SL_Q3_K:
        return sizeof(sl_block_q3_k);
    case SL_Q4_K:
        return sizeof(sl_block_q4_k);
    case SL_Q5_K:
        return sizeof(sl_block_q5_k);
    default:
        return sizeof(sl_block_q6_k);
    }
}

/* A super-block's integer scale of each run of 16 (the Q4_K/Q5_K scale of
 * a 32-element sub-block twice), its integer minimum per run (for the types
 * with one), and the float factors: element = d * sc * q - dmin * mn. */
typedef struct int_scales {
    int32_t sc[16];
    int16x8_t mn[2];
    float d, dmin;
} int_scales;

INLINE void kq_int_scales(uint32_t type, const uint8_t *blk, int_scales *rs)
{
    int16_t mn[16] = {0};
    switch (type) {
    case SL_Q2_K: {
        const sl_block_q2_k *b = (const void *)blk;
        for (int r = 0; r < 16; r++) {
            rs->sc[r] = b->scales[r] & 15;
            mn[r] = (int16_t)(b->scales[r] >> 4);
        }
        rs->d = f16_to_f32(b->d);
        rs->dmin = f16_to_f32(b->dmin);
        break;
    }
    case SL_Q3_K: {
        const sl_block_q3_k *b = (const void *)blk;
        for (int r = 0; r < 16; r++)
            rs->sc[r] = sl_quant_q3_k_scale(r, b->scales);
        rs->d = f16_to_f32(b->d);
        rs->dmin = 0.0f;
        break;
    }
    case SL_Q4_K:
    case SL_Q5_K: {
        /* d, dmin and scales[12] sit at the same offsets in both types. */
        const sl_block_q4_k *b = (const void *)blk;
        for (int j = 0; j < 8; j++) {
            uint8_t sc, m;
            sl_quant_k4_scale_min(j, b->scales, &sc, &m);
            rs->sc[2 * j] = rs->sc[2 * j + 1] = sc;
            mn[2 * j] = mn[2 * j + 1] = m;
        }
        rs->d = f16_to_f32(b->d);
        rs->dmin = f16_to_f32(b->dmin);
        break;
    }
    default: {
        const sl_block_q6_k *b = (const void *)blk;
        for (int r = 0; r < 16; r++)
            rs->sc[r] = b->scales[r];
        rs->d = f16_to_f32(b->d);
        rs->dmin = 0.0f;
        break;
    }
    }
    rs->mn[0] = vld1q_s16(mn);
    rs->mn[1] = vld1q_s16(mn + 8);
}

/* Four lanes whose sum is the exact dot product of 16 signed byte pairs,
 * added to acc, without the dot-product extension: widening multiplies
 * (|a b| <= 2^14 fits 16 bits) and pairwise widening adds. */
INLINE int32x4_t idot16_plain(int32x4_t acc, int8x16_t a, int8x16_t b)
{
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
    return vpadalq_s16(acc, vmull_high_s8(a, b));
}

/* ---- integer tiles: the two instruction sets ------------------------------------------ */

#define NEON_SUF(name) name##_plain
#define NEON_IDOT(acc, a, b) idot16_plain(acc, a, b)
#include "compute/kernels_neon_gemm.inc"
#undef NEON_SUF
#undef NEON_IDOT

/* The SDOT tiles. GCC compiles them for any aarch64 target: everything up to
 * pop_options may use Armv8.2 with the dot-product extension, and is only
 * entered when neon_init found HWCAP_ASIMDDP. Clang's arm_neon.h (14) offers
 * vdotq_s32 only when the whole build targets the extension, so there the
 * tiles exist only in such a build. */
#if defined(__GNUC__) && !defined(__clang__)
#define NEON_HAVE_SDOT 1
#pragma GCC push_options
#pragma GCC target("arch=armv8.2-a+dotprod")
#elif defined(__ARM_FEATURE_DOTPROD)
#define NEON_HAVE_SDOT 1
#else
#define NEON_HAVE_SDOT 0
#endif
#if NEON_HAVE_SDOT
#define NEON_SUF(name) name##_dotprod
#define NEON_IDOT(acc, a, b) vdotq_s32(acc, a, b)
#include "compute/kernels_neon_gemm.inc"
#undef NEON_SUF
#undef NEON_IDOT
#endif
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

/* ---- float vector operations -------------------------------------------------------------
 * Contracts in kernels.h; references in vec.c. */

/* e^x in four lanes: within 2 ulps of expf where the result is a normal
 * float; 0 or a subnormal below that, +inf from about 88.72 up. x = n ln2 +
 * r with |r| <= ln2 / 2 (ln2 split in two so that n ln2 is nearly exact),
 * e^r by its Taylor polynomial to degree 7 (truncation below 2^-27), and
 * 2^n applied as two powers of two so that each stays a normal float. */
INLINE float32x4_t exp4(float32x4_t x)
{
    x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-104.0f)), vdupq_n_f32(89.0f));
    const float32x4_t n = vrndnq_f32(vmulq_n_f32(x, 1.44269504088896341f));
    float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(0.693145751953125f));
    r = vfmsq_f32(r, n, vdupq_n_f32(1.42860682030941723e-6f));
    float32x4_t p = vdupq_n_f32(1.0f / 5040.0f);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 720.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 120.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 24.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 6.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(0.5f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
    const int32x4_t ni = vcvtq_s32_f32(n); /* -150 .. 129 */
    const int32x4_t n1 = vshrq_n_s32(ni, 1), n2 = vsubq_s32(ni, n1);
    const float32x4_t s1 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n1, vdupq_n_s32(127)), 23));
    const float32x4_t s2 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n2, vdupq_n_s32(127)), 23));
    return vmulq_f32(vmulq_f32(p, s1), s2);
}

/* Up to 4 floats at p in a vector (the rest `fill`). */
INLINE float32x4_t load_tail(const float *p, int64_t c, float fill)
{
    float v[4] = {fill, fill, fill, fill};
    memcpy(v, p, (size_t)c * sizeof *v);
    return vld1q_f32(v);
}

static float vdot_neon(const float *a, const float *b, int64_t n)
{
    return dot_f32(a, b, n);
}

/* Multiply, then add: the reference's two roundings, so the same bits (a
 * fused multiply-add would differ by up to an ulp of the product, and
 * attention sums hundreds of these). */
static void axpy_neon(float *y, float a, const float *x, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        vst1q_f32(y + i, vaddq_f32(vld1q_f32(y + i), vmulq_n_f32(vld1q_f32(x + i), a)));
        vst1q_f32(y + i + 4, vaddq_f32(vld1q_f32(y + i + 4), vmulq_n_f32(vld1q_f32(x + i + 4), a)));
    }
    for (; i < n; i++)
        y[i] += a * x[i];
}

INLINE float32x4_t silu_mul4(float32x4_t g, float32x4_t u)
{
    const float32x4_t den = vaddq_f32(vdupq_n_f32(1.0f), exp4(vnegq_f32(g)));
    return vmulq_f32(vdivq_f32(g, den), u);
}

static void silu_mul_neon(float *g, const float *u, int64_t n)
{
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        vst1q_f32(g + i, silu_mul4(vld1q_f32(g + i), vld1q_f32(u + i)));
    if (i < n) {
        float v[4];
        vst1q_f32(v, silu_mul4(load_tail(g + i, n - i, 0.0f), load_tail(u + i, n - i, 0.0f)));
        memcpy(g + i, v, (size_t)(n - i) * sizeof *v);
    }
}

static double exp_sum_neon(float *s, float m, int64_t n)
{
    float64x2_t acc0 = vdupq_n_f64(0.0), acc1 = acc0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t e = exp4(vsubq_f32(vld1q_f32(s + i), vdupq_n_f32(m)));
        vst1q_f32(s + i, e);
        acc0 = vaddq_f64(acc0, vcvt_f64_f32(vget_low_f32(e)));
        acc1 = vaddq_f64(acc1, vcvt_high_f64_f32(e));
    }
    double sum = vaddvq_f64(vaddq_f64(acc0, acc1));
    if (i < n) {
        float v[4];
        vst1q_f32(v, exp4(vsubq_f32(load_tail(s + i, n - i, 0.0f), vdupq_n_f32(m))));
        for (int64_t j = 0; j < n - i; j++) {
            s[i + j] = v[j];
            sum += (double)v[j];
        }
    }
    return sum;
}

/* Squares rounded to float, then summed in double (two lanes of two
 * accumulators), as the reference; scaling in the reference's order. */
static void rms_norm_neon(const float *x, const float *w, float *y, int64_t n, float eps)
{
    float64x2_t s0 = vdupq_n_f64(0.0), s1 = s0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t v = vld1q_f32(x + i);
        const float32x4_t sq = vmulq_f32(v, v);
        s0 = vaddq_f64(s0, vcvt_f64_f32(vget_low_f32(sq)));
        s1 = vaddq_f64(s1, vcvt_high_f64_f32(sq));
    }
    double ss = vaddvq_f64(vaddq_f64(s0, s1));
    for (int64_t j = i; j < n; j++)
        ss += (double)(x[j] * x[j]);
    const float scale = 1.0f / sqrtf((float)(ss / (double)n) + eps);
    for (i = 0; i + 4 <= n; i += 4)
        vst1q_f32(y + i, vmulq_f32(vmulq_n_f32(vld1q_f32(x + i), scale), vld1q_f32(w + i)));
    for (; i < n; i++)
        y[i] = x[i] * scale * w[i];
}

/* ---- the table ----------------------------------------------------------------------- */

static sl_kernels g_neon;
static pthread_once_t g_neon_once = PTHREAD_ONCE_INIT;

bool sl_kernels_neon_uses_sdot(void)
{
    return NEON_HAVE_SDOT && (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
}

static void neon_init(void)
{
    const sl_kernels *gen = sl_kernels_generic();
    g_neon = *gen; /* whatever is not specialised below stays generic */
    g_neon.name = "neon";
    const bool sdot = sl_kernels_neon_uses_sdot();

#define SET(T, name)                                                                                         \
    do {                                                                                                     \
        g_neon.to_float[T] = to_float_##name;                                                                \
        g_neon.dot[T] = dot_##name;                                                                          \
    } while (0)
    SET(SL_F32, f32);
    SET(SL_F16, f16);
    SET(SL_BF16, bf16);
    SET(SL_Q4_0, q4_0);
    SET(SL_Q4_1, q4_1);
    SET(SL_Q5_0, q5_0);
    SET(SL_Q5_1, q5_1);
    SET(SL_Q8_0, q8_0);
    SET(SL_Q2_K, q2_k);
    SET(SL_Q3_K, q3_k);
    SET(SL_Q4_K, q4_k);
    SET(SL_Q5_K, q5_k);
    SET(SL_Q6_K, q6_k);
#undef SET
    /* Quantized activations: the reference's formats and bytes (act[] stays
     * the generic choice), integer tiles with SDOT where the CPU has it. */
    g_neon.quantize[SL_ACT_Q8_0] = quantize_q8_0;
    g_neon.quantize[SL_ACT_Q8_K] = quantize_q8_k;
    g_neon.quantize[SL_ACT_Q8_0P] = quantize_q8_0p;
    set_gemms_plain(&g_neon);
#if NEON_HAVE_SDOT
    if (sdot)
        set_gemms_dotprod(&g_neon);
#endif
    /* sluice's own low-bit types: compute/lowbit_neon.c */
    sl_lowbit_register_neon(&g_neon, sdot);
    g_neon.vdot = vdot_neon;
    g_neon.axpy = axpy_neon;
    g_neon.silu_mul = silu_mul_neon;
    g_neon.exp_sum = exp_sum_neon;
    g_neon.rms_norm = rms_norm_neon;
    SL_DEBUG("neon kernels, integer tiles %s", sdot ? "with SDOT" : "without SDOT");
}

const sl_kernels *sl_kernels_neon(void)
{
    int rc = pthread_once(&g_neon_once, neon_init);
    SL_ASSERT(rc == 0);
    return &g_neon;
}
