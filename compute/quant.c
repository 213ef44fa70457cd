/* Portable reference kernels for every tensor type sluice computes with:
 * block dequantizers, row dot products and float quantizers. Layouts are
 * documented in quant.h. These are the ground truth that native variants are
 * tested against, so they favour following the layout literally over speed. */
#include "compute/quant.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "common/half.h"
#include "common/log.h"
#include "compute/lowbit.h"
#include "model/dtype.h"

/* Block fields are read in place from the mapped file, which is
 * little-endian; supporting a big-endian host would need byte swaps on every
 * load, and no target of this project is big-endian. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "sluice assumes a little-endian host");

/* ---- dequantizing one block ------------------------------------------------
 * Each writes the block's B values to y. The arithmetic (which products are
 * formed first) follows the reference formulas so that results are
 * bit-identical to the reference toolchain's dequantization. */

static void block_q4_0(const void *blk, float *y)
{
    const sl_block_q4_0 *b = blk;
    const float d = sl_f16_to_f32(b->d);
    for (int j = 0; j < SL_QK / 2; j++) {
        y[j] = (float)((b->qs[j] & 15) - 8) * d;
        y[j + SL_QK / 2] = (float)((b->qs[j] >> 4) - 8) * d;
    }
}

static void block_q4_1(const void *blk, float *y)
{
    const sl_block_q4_1 *b = blk;
    const float d = sl_f16_to_f32(b->d);
    const float m = sl_f16_to_f32(b->m);
    for (int j = 0; j < SL_QK / 2; j++) {
        y[j] = (float)(b->qs[j] & 15) * d + m;
        y[j + SL_QK / 2] = (float)(b->qs[j] >> 4) * d + m;
    }
}

static void block_q5_0(const void *blk, float *y)
{
    const sl_block_q5_0 *b = blk;
    const float d = sl_f16_to_f32(b->d);
    uint32_t qh;
    memcpy(&qh, b->qh, sizeof qh); /* little-endian u32, see the static assert */
    for (int j = 0; j < SL_QK / 2; j++) {
        int hi0 = (int)((qh >> j) & 1) << 4;
        int hi1 = (int)((qh >> (j + 16)) & 1) << 4;
        y[j] = (float)(((b->qs[j] & 15) | hi0) - 16) * d;
        y[j + SL_QK / 2] = (float)(((b->qs[j] >> 4) | hi1) - 16) * d;
    }
}

static void block_q5_1(const void *blk, float *y)
{
    const sl_block_q5_1 *b = blk;
    const float d = sl_f16_to_f32(b->d);
    const float m = sl_f16_to_f32(b->m);
    uint32_t qh;
    memcpy(&qh, b->qh, sizeof qh);
    for (int j = 0; j < SL_QK / 2; j++) {
        int hi0 = (int)((qh >> j) & 1) << 4;
        int hi1 = (int)((qh >> (j + 16)) & 1) << 4;
        y[j] = (float)((b->qs[j] & 15) | hi0) * d + m;
        y[j + SL_QK / 2] = (float)((b->qs[j] >> 4) | hi1) * d + m;
    }
}

static void block_q8_0(const void *blk, float *y)
{
    const sl_block_q8_0 *b = blk;
    const float d = sl_f16_to_f32(b->d);
    for (int j = 0; j < SL_QK; j++)
        y[j] = (float)b->qs[j] * d;
}

static void block_q2_k(const void *blk, float *y)
{
    const sl_block_q2_k *b = blk;
    const float d = sl_f16_to_f32(b->d);
    const float dmin = sl_f16_to_f32(b->dmin);
    for (int h = 0; h < 2; h++) {
        const uint8_t *q = b->qs + 32 * h;
        for (int s = 0; s < 4; s++) {
            for (int l = 0; l < 32; l++) {
                int i = 128 * h + 32 * s + l;
                uint8_t sc = b->scales[i / 16];
                float dl = d * (float)(sc & 15);
                float ml = dmin * (float)(sc >> 4);
                y[i] = dl * (float)((q[l] >> (2 * s)) & 3) - ml;
            }
        }
    }
}

static void block_q3_k(const void *blk, float *y)
{
    const sl_block_q3_k *b = blk;
    const float d = sl_f16_to_f32(b->d);
    for (int h = 0; h < 2; h++) {
        const uint8_t *q = b->qs + 32 * h;
        for (int s = 0; s < 4; s++) {
            for (int l = 0; l < 32; l++) {
                int i = 128 * h + 32 * s + l;
                float dl = d * (float)sl_quant_q3_k_scale(i / 16, b->scales);
                int lo = (q[l] >> (2 * s)) & 3;
                int high_set = (b->hmask[l] >> (i / 32)) & 1;
                y[i] = dl * (float)(lo - (high_set ? 0 : 4));
            }
        }
    }
}

static void block_q4_k(const void *blk, float *y)
{
    const sl_block_q4_k *b = blk;
    const float d = sl_f16_to_f32(b->d);
    const float dmin = sl_f16_to_f32(b->dmin);
    for (int g = 0; g < 4; g++) {
        uint8_t sc0, m0, sc1, m1;
        sl_quant_k4_scale_min(2 * g, b->scales, &sc0, &m0);
        sl_quant_k4_scale_min(2 * g + 1, b->scales, &sc1, &m1);
        const float d0 = d * (float)sc0, min0 = dmin * (float)m0;
        const float d1 = d * (float)sc1, min1 = dmin * (float)m1;
        const uint8_t *q = b->qs + 32 * g;
        for (int l = 0; l < 32; l++) {
            y[64 * g + l] = d0 * (float)(q[l] & 15) - min0;
            y[64 * g + 32 + l] = d1 * (float)(q[l] >> 4) - min1;
        }
    }
}

static void block_q5_k(const void *blk, float *y)
{
    const sl_block_q5_k *b = blk;
    const float d = sl_f16_to_f32(b->d);
    const float dmin = sl_f16_to_f32(b->dmin);
    for (int g = 0; g < 4; g++) {
        uint8_t sc0, m0, sc1, m1;
        sl_quant_k4_scale_min(2 * g, b->scales, &sc0, &m0);
        sl_quant_k4_scale_min(2 * g + 1, b->scales, &sc1, &m1);
        const float d0 = d * (float)sc0, min0 = dmin * (float)m0;
        const float d1 = d * (float)sc1, min1 = dmin * (float)m1;
        const uint8_t *q = b->qs + 32 * g;
        for (int l = 0; l < 32; l++) {
            int hi0 = ((b->qh[l] >> (2 * g)) & 1) << 4;
            int hi1 = ((b->qh[l] >> (2 * g + 1)) & 1) << 4;
            y[64 * g + l] = d0 * (float)((q[l] & 15) | hi0) - min0;
            y[64 * g + 32 + l] = d1 * (float)((q[l] >> 4) | hi1) - min1;
        }
    }
}

static void block_q6_k(const void *blk, float *y)
{
    const sl_block_q6_k *b = blk;
    const float d = sl_f16_to_f32(b->d);
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = b->ql + 64 * h;
        const uint8_t *qh = b->qh + 32 * h;
        const int8_t *sc = b->scales + 8 * h;
        float *out = y + 128 * h;
        for (int l = 0; l < 32; l++) {
            int is = l / 16;
            int q0 = ((ql[l] & 15) | ((qh[l] >> 0) & 3) << 4) - 32;
            int q1 = ((ql[l + 32] & 15) | ((qh[l] >> 2) & 3) << 4) - 32;
            int q2 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
            int q3 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
            out[l] = d * (float)sc[is + 0] * (float)q0;
            out[l + 32] = d * (float)sc[is + 2] * (float)q1;
            out[l + 64] = d * (float)sc[is + 4] * (float)q2;
            out[l + 96] = d * (float)sc[is + 6] * (float)q3;
        }
    }
}

/* ---- rows ------------------------------------------------------------------ */

/* The float types have one-element "blocks"; they are converted and dotted
 * in spans of this many so that the dot accumulates like a block type. */
#define FLOAT_SPAN 256

typedef void (*block_fn)(const void *blk, float *y);

/* Sequential float dot of n values: the accumulation order native kernels'
 * error bounds are stated against. */
static inline float span_dot(const float *a, const float *b, int n)
{
    float s = 0.0f;
    for (int i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* Inlined with constant arguments into each type's wrappers (ROW_FNS below),
 * so every type gets its own specialised loop. */
static inline void rows_to_float(block_fn f, int64_t bsize, size_t bbytes, const void *src, float *dst,
                                 int64_t n)
{
    SL_ASSERT(n % bsize == 0);
    const uint8_t *p = src;
    for (int64_t i = 0; i < n / bsize; i++)
        f(p + (size_t)i * bbytes, dst + i * bsize);
}

/* Dequantizes a block at a time into a stack buffer and accumulates each
 * block's dot in float, then the block sums in float. */
static inline float rows_dot(block_fn f, int64_t bsize, size_t bbytes, const void *w, const float *x,
                             int64_t n)
{
    SL_ASSERT(n % bsize == 0);
    const uint8_t *p = w;
    float buf[SL_QK_K];
    float sum = 0.0f;
    for (int64_t i = 0; i < n / bsize; i++) {
        f(p + (size_t)i * bbytes, buf);
        sum += span_dot(buf, x + i * bsize, (int)bsize);
    }
    return sum;
}

#define ROW_FNS(name, bsize, btype)                                                                          \
    static void to_float_##name(const void *src, float *dst, int64_t n)                                      \
    {                                                                                                        \
        rows_to_float(block_##name, bsize, sizeof(btype), src, dst, n);                                      \
    }                                                                                                        \
    static float dot_##name(const void *w, const float *x, int64_t n)                                        \
    {                                                                                                        \
        return rows_dot(block_##name, bsize, sizeof(btype), w, x, n);                                        \
    }

ROW_FNS(q4_0, SL_QK, sl_block_q4_0)
ROW_FNS(q4_1, SL_QK, sl_block_q4_1)
ROW_FNS(q5_0, SL_QK, sl_block_q5_0)
ROW_FNS(q5_1, SL_QK, sl_block_q5_1)
ROW_FNS(q8_0, SL_QK, sl_block_q8_0)
ROW_FNS(q2_k, SL_QK_K, sl_block_q2_k)
ROW_FNS(q3_k, SL_QK_K, sl_block_q3_k)
ROW_FNS(q4_k, SL_QK_K, sl_block_q4_k)
ROW_FNS(q5_k, SL_QK_K, sl_block_q5_k)
ROW_FNS(q6_k, SL_QK_K, sl_block_q6_k)

static void to_float_f32(const void *src, float *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static void to_float_f16(const void *src, float *dst, int64_t n)
{
    const uint16_t *h = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = sl_f16_to_f32(h[i]);
}

static void to_float_bf16(const void *src, float *dst, int64_t n)
{
    const uint16_t *h = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = sl_bf16_to_f32(h[i]);
}

static float dot_f32(const void *w, const float *x, int64_t n)
{
    const float *a = w;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i += FLOAT_SPAN) {
        int len = n - i < FLOAT_SPAN ? (int)(n - i) : FLOAT_SPAN;
        sum += span_dot(a + i, x + i, len);
    }
    return sum;
}

static float dot_f16(const void *w, const float *x, int64_t n)
{
    const uint16_t *h = w;
    float buf[FLOAT_SPAN];
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i += FLOAT_SPAN) {
        int len = n - i < FLOAT_SPAN ? (int)(n - i) : FLOAT_SPAN;
        to_float_f16(h + i, buf, len);
        sum += span_dot(buf, x + i, len);
    }
    return sum;
}

static float dot_bf16(const void *w, const float *x, int64_t n)
{
    const uint16_t *h = w;
    float buf[FLOAT_SPAN];
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i += FLOAT_SPAN) {
        int len = n - i < FLOAT_SPAN ? (int)(n - i) : FLOAT_SPAN;
        to_float_bf16(h + i, buf, len);
        sum += span_dot(buf, x + i, len);
    }
    return sum;
}

/* ---- quantizers ------------------------------------------------------------ */

static void from_float_f32(const float *src, void *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static void from_float_f16(const float *src, void *dst, int64_t n)
{
    uint16_t *h = dst;
    for (int64_t i = 0; i < n; i++)
        h[i] = sl_f32_to_f16(src[i]);
}

static void from_float_bf16(const float *src, void *dst, int64_t n)
{
    uint16_t *h = dst;
    for (int64_t i = 0; i < n; i++)
        h[i] = sl_f32_to_bf16(src[i]);
}

/* The element of largest magnitude, with its sign (the first on ties). */
static float signed_absmax(const float *x, int n)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < n; j++) {
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    return max;
}

static void min_max(const float *x, int n, float *lo, float *hi)
{
    *lo = x[0];
    *hi = x[0];
    for (int j = 1; j < n; j++) {
        *lo = fminf(*lo, x[j]);
        *hi = fmaxf(*hi, x[j]);
    }
}

static int clamp_int(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* The legacy quantizers use the scale computed in float (not the rounded
 * f16 one) to pick the quants, as the reference toolchain does, so that
 * quantizing the same floats gives the same bytes. */

static void from_float_q8_0(const float *src, void *dst, int64_t n)
{
    SL_ASSERT(n % SL_QK == 0);
    sl_block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / SL_QK; i++, src += SL_QK) {
        float amax = fabsf(signed_absmax(src, SL_QK));
        float d = amax / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = sl_f32_to_f16(d);
        for (int j = 0; j < SL_QK; j++)
            b[i].qs[j] = (int8_t)roundf(src[j] * id);
    }
}

static void from_float_q4_0(const float *src, void *dst, int64_t n)
{
    SL_ASSERT(n % SL_QK == 0);
    sl_block_q4_0 *b = dst;
    for (int64_t i = 0; i < n / SL_QK; i++, src += SL_QK) {
        /* The extreme element maps to -8 exactly; the other side gets only
         * up to +7, so elements of the opposite sign may clip by one step. */
        float d = signed_absmax(src, SL_QK) / -8.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = sl_f32_to_f16(d);
        for (int j = 0; j < SL_QK / 2; j++) {
            /* +8.5 then truncation: round half up of x/d + 8 (all >= 0). */
            int q0 = clamp_int((int)(src[j] * id + 8.5f), 0, 15);
            int q1 = clamp_int((int)(src[j + SL_QK / 2] * id + 8.5f), 0, 15);
            b[i].qs[j] = (uint8_t)(q0 | q1 << 4);
        }
    }
}

static void from_float_q4_1(const float *src, void *dst, int64_t n)
{
    SL_ASSERT(n % SL_QK == 0);
    sl_block_q4_1 *b = dst;
    for (int64_t i = 0; i < n / SL_QK; i++, src += SL_QK) {
        float lo, hi;
        min_max(src, SL_QK, &lo, &hi);
        float d = (hi - lo) / 15.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = sl_f32_to_f16(d);
        b[i].m = sl_f32_to_f16(lo);
        for (int j = 0; j < SL_QK / 2; j++) {
            int q0 = clamp_int((int)((src[j] - lo) * id + 0.5f), 0, 15);
            int q1 = clamp_int((int)((src[j + SL_QK / 2] - lo) * id + 0.5f), 0, 15);
            b[i].qs[j] = (uint8_t)(q0 | q1 << 4);
        }
    }
}

/* Packs 32 five-bit quants into the qs nibbles and the qh bit mask. */
static void pack_q5(const int *q, uint8_t qs[SL_QK / 2], uint8_t qh[4])
{
    uint32_t h = 0;
    for (int j = 0; j < SL_QK / 2; j++) {
        qs[j] = (uint8_t)((q[j] & 15) | (q[j + SL_QK / 2] & 15) << 4);
        h |= (uint32_t)(q[j] >> 4) << j;
        h |= (uint32_t)(q[j + SL_QK / 2] >> 4) << (j + 16);
    }
    memcpy(qh, &h, sizeof h);
}

static void from_float_q5_0(const float *src, void *dst, int64_t n)
{
    SL_ASSERT(n % SL_QK == 0);
    sl_block_q5_0 *b = dst;
    for (int64_t i = 0; i < n / SL_QK; i++, src += SL_QK) {
        float d = signed_absmax(src, SL_QK) / -16.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = sl_f32_to_f16(d);
        int q[SL_QK];
        for (int j = 0; j < SL_QK; j++)
            q[j] = clamp_int((int)(src[j] * id + 16.5f), 0, 31);
        pack_q5(q, b[i].qs, b[i].qh);
    }
}

static void from_float_q5_1(const float *src, void *dst, int64_t n)
{
    SL_ASSERT(n % SL_QK == 0);
    sl_block_q5_1 *b = dst;
    for (int64_t i = 0; i < n / SL_QK; i++, src += SL_QK) {
        float lo, hi;
        min_max(src, SL_QK, &lo, &hi);
        float d = (hi - lo) / 31.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = sl_f32_to_f16(d);
        b[i].m = sl_f32_to_f16(lo);
        int q[SL_QK];
        for (int j = 0; j < SL_QK; j++)
            q[j] = clamp_int((int)((src[j] - lo) * id + 0.5f), 0, 31);
        pack_q5(q, b[i].qs, b[i].qh);
    }
}

/* The smallest f16 that is >= v (v >= 0 and finite). Super-block scales are
 * rounded up so that the integer sub-block scales derived from them never
 * need to exceed their bit width. */
static uint16_t f16_round_up(float v)
{
    uint16_t h = sl_f32_to_f16(v);
    if (sl_f16_to_f32(h) < v)
        h++; /* positive f16 bit patterns are ordered like their values */
    return h;
}

static void from_float_q4_k(const float *src, void *dst, int64_t n)
{
    SL_ASSERT(n % SL_QK_K == 0);
    sl_block_q4_k *b = dst;
    for (int64_t i = 0; i < n / SL_QK_K; i++, src += SL_QK_K) {
        /* Sub-block j represents [-dmin*m, -dmin*m + 15*d*sc]: offsets are
         * non-negative multiples of dmin, so the represented range always
         * reaches down to min(0, smallest element). */
        float lo[8], hi[8], max_off = 0.0f;
        for (int j = 0; j < 8; j++) {
            min_max(src + 32 * j, 32, &lo[j], &hi[j]);
            lo[j] = fminf(lo[j], 0.0f);
            max_off = fmaxf(max_off, -lo[j]);
        }
        b[i].dmin = f16_round_up(max_off / 63.0f);
        const float dmin = sl_f16_to_f32(b[i].dmin);
        int m[8];
        float off[8], range[8], max_range = 0.0f;
        for (int j = 0; j < 8; j++) {
            m[j] = dmin > 0.0f ? clamp_int((int)ceilf(-lo[j] / dmin), 0, 63) : 0;
            off[j] = dmin * (float)m[j];
            range[j] = fmaxf(hi[j] + off[j], 0.0f);
            max_range = fmaxf(max_range, range[j]);
        }
        b[i].d = f16_round_up(max_range / (15.0f * 63.0f));
        const float d = sl_f16_to_f32(b[i].d);
        int sc[8];
        int q[SL_QK_K];
        for (int j = 0; j < 8; j++) {
            sc[j] = d > 0.0f ? clamp_int((int)ceilf(range[j] / (15.0f * d)), 0, 63) : 0;
            const float step = d * (float)sc[j];
            for (int l = 0; l < 32; l++) {
                float v = step > 0.0f ? roundf((src[32 * j + l] + off[j]) / step) : 0.0f;
                q[32 * j + l] = clamp_int((int)v, 0, 15);
            }
        }
        for (int j = 0; j < 4; j++) {
            b[i].scales[j] = (uint8_t)(sc[j] | (sc[j + 4] >> 4) << 6);
            b[i].scales[j + 4] = (uint8_t)(m[j] | (m[j + 4] >> 4) << 6);
            b[i].scales[j + 8] = (uint8_t)((sc[j + 4] & 15) | (m[j + 4] & 15) << 4);
        }
        for (int g = 0; g < 4; g++)
            for (int l = 0; l < 32; l++)
                b[i].qs[32 * g + l] = (uint8_t)(q[64 * g + l] | q[64 * g + 32 + l] << 4);
    }
}

static void from_float_q6_k(const float *src, void *dst, int64_t n)
{
    SL_ASSERT(n % SL_QK_K == 0);
    sl_block_q6_k *b = dst;
    for (int64_t i = 0; i < n / SL_QK_K; i++, src += SL_QK_K) {
        /* Each sub-block needs a step with -32*step <= lo and 31*step >= hi. */
        float need[16], max_need = 0.0f;
        for (int k = 0; k < 16; k++) {
            float lo, hi;
            min_max(src + 16 * k, 16, &lo, &hi);
            need[k] = fmaxf(fmaxf(-lo / 32.0f, hi / 31.0f), 0.0f);
            max_need = fmaxf(max_need, need[k]);
        }
        b[i].d = f16_round_up(max_need / 127.0f);
        const float d = sl_f16_to_f32(b[i].d);
        int q[SL_QK_K];
        for (int k = 0; k < 16; k++) {
            int sc = d > 0.0f ? clamp_int((int)ceilf(need[k] / d), 0, 127) : 0;
            b[i].scales[k] = (int8_t)sc;
            const float step = d * (float)sc;
            for (int l = 0; l < 16; l++) {
                float v = step > 0.0f ? roundf(src[16 * k + l] / step) : 0.0f;
                q[16 * k + l] = clamp_int((int)v, -32, 31) + 32;
            }
        }
        for (int h = 0; h < 2; h++) {
            const int *qq = q + 128 * h;
            for (int l = 0; l < 32; l++) {
                b[i].ql[64 * h + l] = (uint8_t)((qq[l] & 15) | (qq[l + 64] & 15) << 4);
                b[i].ql[64 * h + l + 32] = (uint8_t)((qq[l + 32] & 15) | (qq[l + 96] & 15) << 4);
                b[i].qh[32 * h + l] = (uint8_t)((qq[l] >> 4) | (qq[l + 32] >> 4) << 2 |
                                                (qq[l + 64] >> 4) << 4 | (qq[l + 96] >> 4) << 6);
            }
        }
    }
}

/* ---- activation rows and integer dot products ----------------------------------
 * The reference for the quantized-activation path (layouts in quant.h). Each
 * weight block is first unpacked into its small integers (quants with their
 * fixed offset applied) and integer sub-block scales, then multiplied with
 * the activation quants exactly in integers; only the per-block combination
 * with the float scales rounds. */

size_t sl_quant_act_row_bytes(uint32_t act, int64_t n)
{
    SL_ASSERT(act < SL_ACT_COUNT && n >= 0 && n % sl_quant_act_block(act) == 0);
    size_t bytes;
    switch (act) {
    case SL_ACT_Q8_0:
    case SL_ACT_Q8_0P:
        bytes = (size_t)n + 8 * (size_t)(n / SL_QK);
        break;
    case SL_ACT_Q8_K:
        bytes = (size_t)n + 4 * (size_t)(n / SL_QK_K) + (size_t)n / 8;
        break;
    default:
        bytes = (size_t)n * sizeof(float);
        break;
    }
    /* One spare vector for kernels' whole-vector loads, then to 64 bytes. */
    return (bytes + 64 + 63) / 64 * 64;
}

int64_t sl_quant_act_block(uint32_t act)
{
    return act == SL_ACT_Q8_0 || act == SL_ACT_Q8_0P ? SL_QK : act == SL_ACT_Q8_K ? SL_QK_K : 1;
}

static float abs_max(const float *x, int n)
{
    float amax = 0.0f;
    for (int j = 0; j < n; j++)
        amax = fmaxf(amax, fabsf(x[j]));
    return amax;
}

/* q = round-to-nearest-even(x * id): what SIMD conversions do in the default
 * rounding mode, so native quantizers can match these bytes exactly. */
static int8_t quant8(float x, float id)
{
    return (int8_t)nearbyintf(x * id);
}

static void quantize_q8_0(const float *x, void *dst, int64_t n)
{
    SL_ASSERT(n % SL_QK == 0);
    int8_t *qs = dst;
    float *d = (float *)(qs + n);
    int32_t *s = (int32_t *)(d + n / SL_QK);
    for (int64_t i = 0; i < n / SL_QK; i++) {
        const float *xb = x + i * SL_QK;
        const float dd = abs_max(xb, SL_QK) / 127.0f;
        const float id = dd != 0.0f ? 1.0f / dd : 0.0f;
        int32_t sum = 0;
        for (int j = 0; j < SL_QK; j++) {
            qs[i * SL_QK + j] = quant8(xb[j], id);
            sum += qs[i * SL_QK + j];
        }
        d[i] = sl_act_scale(dd);
        s[i] = sum;
    }
}

static void quantize_q8_k(const float *x, void *dst, int64_t n)
{
    SL_ASSERT(n % SL_QK_K == 0);
    int8_t *qs = dst;
    float *d = (float *)(qs + n);
    int16_t *bsums = (int16_t *)(d + n / SL_QK_K);
    for (int64_t i = 0; i < n / SL_QK_K; i++) {
        const float *xb = x + i * SL_QK_K;
        const float dd = abs_max(xb, SL_QK_K) / 127.0f;
        const float id = dd != 0.0f ? 1.0f / dd : 0.0f;
        for (int j = 0; j < SL_QK_K; j++)
            qs[i * SL_QK_K + j] = quant8(xb[j], id);
        for (int k = 0; k < SL_QK_K / 16; k++) {
            int sum = 0;
            for (int j = 0; j < 16; j++)
                sum += qs[i * SL_QK_K + 16 * k + j];
            bsums[i * (SL_QK_K / 16) + k] = (int16_t)sum;
        }
        d[i] = dd;
    }
}

static int32_t idot(const int8_t *a, const int8_t *b, int n)
{
    int32_t s = 0;
    for (int j = 0; j < n; j++)
        s += (int32_t)a[j] * b[j];
    return s;
}

/* Legacy blocks: the 32 weight integers (offset applied: Q4_0 and Q5_0 give
 * q - 8 and q - 16; Q4_1 and Q5_1 give q, their offset m is separate), the
 * scale d and the offset m (0 for the symmetric types). */
typedef void (*unpack32_fn)(const void *blk, int8_t *q, float *d, float *m);

static void unpack_q4_0(const void *blk, int8_t *q, float *d, float *m)
{
    const sl_block_q4_0 *b = blk;
    for (int j = 0; j < SL_QK / 2; j++) {
        q[j] = (int8_t)((b->qs[j] & 15) - 8);
        q[j + SL_QK / 2] = (int8_t)((b->qs[j] >> 4) - 8);
    }
    *d = sl_f16_to_f32(b->d);
    *m = 0.0f;
}

static void unpack_q4_1(const void *blk, int8_t *q, float *d, float *m)
{
    const sl_block_q4_1 *b = blk;
    for (int j = 0; j < SL_QK / 2; j++) {
        q[j] = (int8_t)(b->qs[j] & 15);
        q[j + SL_QK / 2] = (int8_t)(b->qs[j] >> 4);
    }
    *d = sl_f16_to_f32(b->d);
    *m = sl_f16_to_f32(b->m);
}

static void unpack_q5(const uint8_t *qs, const uint8_t *qh4, int offset, int8_t *q)
{
    uint32_t qh;
    memcpy(&qh, qh4, sizeof qh);
    for (int j = 0; j < SL_QK / 2; j++) {
        q[j] = (int8_t)(((qs[j] & 15) | (int)((qh >> j) & 1) << 4) - offset);
        q[j + SL_QK / 2] = (int8_t)(((qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4) - offset);
    }
}

static void unpack_q5_0(const void *blk, int8_t *q, float *d, float *m)
{
    const sl_block_q5_0 *b = blk;
    unpack_q5(b->qs, b->qh, 16, q);
    *d = sl_f16_to_f32(b->d);
    *m = 0.0f;
}

static void unpack_q5_1(const void *blk, int8_t *q, float *d, float *m)
{
    const sl_block_q5_1 *b = blk;
    unpack_q5(b->qs, b->qh, 0, q);
    *d = sl_f16_to_f32(b->d);
    *m = sl_f16_to_f32(b->m);
}

static void unpack_q8_0(const void *blk, int8_t *q, float *d, float *m)
{
    const sl_block_q8_0 *b = blk;
    memcpy(q, b->qs, SL_QK);
    *d = sl_f16_to_f32(b->d);
    *m = 0.0f;
}

/* One row of a legacy type against a Q8_0 activation row:
 * sum += (d * dx) * isum + (m * dx) * s, block by block. */
static inline float vdot32(unpack32_fn unpack, bool has_min, size_t bbytes, const void *w, const void *a,
                           int64_t n)
{
    const uint8_t *p = w;
    const int8_t *xq = a;
    const float *xd = sl_act_q8_0_d(a, n);
    const int32_t *xs = sl_act_q8_0_s(a, n);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / SL_QK; i++) {
        int8_t q[SL_QK];
        float d, m;
        unpack(p + (size_t)i * bbytes, q, &d, &m);
        const int32_t isum = idot(q, xq + i * SL_QK, SL_QK);
        sum += (d * xd[i]) * (float)isum;
        if (has_min)
            sum += (m * xd[i]) * (float)xs[i];
    }
    return sum;
}

/* k-quant super-blocks: the 256 weight integers, 16 integer scales (one per
 * 16 elements; Q4_K and Q5_K repeat each 32-element scale twice), 16
 * integer mins in the same way (0 for the types without), and the float
 * factors d and dmin: element = d * sc * q - dmin * mn. */
typedef struct kunpacked {
    int8_t q[SL_QK_K];
    int sc[16], mn[16];
    float d, dmin;
} kunpacked;

static void kunpack_q2_k(const void *blk, kunpacked *u)
{
    const sl_block_q2_k *b = blk;
    for (int h = 0; h < 2; h++)
        for (int s = 0; s < 4; s++)
            for (int l = 0; l < 32; l++)
                u->q[128 * h + 32 * s + l] = (int8_t)((b->qs[32 * h + l] >> (2 * s)) & 3);
    for (int k = 0; k < 16; k++) {
        u->sc[k] = b->scales[k] & 15;
        u->mn[k] = b->scales[k] >> 4;
    }
    u->d = sl_f16_to_f32(b->d);
    u->dmin = sl_f16_to_f32(b->dmin);
}

static void kunpack_q3_k(const void *blk, kunpacked *u)
{
    const sl_block_q3_k *b = blk;
    for (int h = 0; h < 2; h++)
        for (int s = 0; s < 4; s++)
            for (int l = 0; l < 32; l++) {
                const int i = 128 * h + 32 * s + l;
                const int lo = (b->qs[32 * h + l] >> (2 * s)) & 3;
                u->q[i] = (int8_t)(lo - (((b->hmask[l] >> (i / 32)) & 1) ? 0 : 4));
            }
    for (int k = 0; k < 16; k++) {
        u->sc[k] = sl_quant_q3_k_scale(k, b->scales);
        u->mn[k] = 0;
    }
    u->d = sl_f16_to_f32(b->d);
    u->dmin = 0.0f;
}

static void k4_scales(const uint8_t *scales, kunpacked *u)
{
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        sl_quant_k4_scale_min(j, scales, &sc, &m);
        u->sc[2 * j] = u->sc[2 * j + 1] = sc;
        u->mn[2 * j] = u->mn[2 * j + 1] = m;
    }
}

static void kunpack_q4_k(const void *blk, kunpacked *u)
{
    const sl_block_q4_k *b = blk;
    for (int g = 0; g < 4; g++)
        for (int l = 0; l < 32; l++) {
            u->q[64 * g + l] = (int8_t)(b->qs[32 * g + l] & 15);
            u->q[64 * g + 32 + l] = (int8_t)(b->qs[32 * g + l] >> 4);
        }
    k4_scales(b->scales, u);
    u->d = sl_f16_to_f32(b->d);
    u->dmin = sl_f16_to_f32(b->dmin);
}

static void kunpack_q5_k(const void *blk, kunpacked *u)
{
    const sl_block_q5_k *b = blk;
    for (int g = 0; g < 4; g++)
        for (int l = 0; l < 32; l++) {
            u->q[64 * g + l] = (int8_t)((b->qs[32 * g + l] & 15) | ((b->qh[l] >> (2 * g)) & 1) << 4);
            u->q[64 * g + 32 + l] = (int8_t)((b->qs[32 * g + l] >> 4) | ((b->qh[l] >> (2 * g + 1)) & 1) << 4);
        }
    k4_scales(b->scales, u);
    u->d = sl_f16_to_f32(b->d);
    u->dmin = sl_f16_to_f32(b->dmin);
}

static void kunpack_q6_k(const void *blk, kunpacked *u)
{
    const sl_block_q6_k *b = blk;
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
        int8_t *q = u->q + 128 * h;
        for (int l = 0; l < 32; l++) {
            q[l] = (int8_t)(((ql[l] & 15) | ((qh[l] >> 0) & 3) << 4) - 32);
            q[l + 32] = (int8_t)(((ql[l + 32] & 15) | ((qh[l] >> 2) & 3) << 4) - 32);
            q[l + 64] = (int8_t)(((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32);
            q[l + 96] = (int8_t)(((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32);
        }
    }
    for (int k = 0; k < 16; k++) {
        u->sc[k] = b->scales[k];
        u->mn[k] = 0;
    }
    u->d = sl_f16_to_f32(b->d);
    u->dmin = 0.0f;
}

typedef void (*kunpack_fn)(const void *blk, kunpacked *u);

/* One row of a k-quant against a Q8_K activation row: per super-block,
 * isum = sum_k sc[k] * (quants . activation quants over sub-block k) and
 * msum = sum_k mn[k] * bsums[k], exact; then
 * sum += (dx * d) * isum - (dx * dmin) * msum. */
static inline float vdot256(kunpack_fn unpack, bool has_min, size_t bbytes, const void *w, const void *a,
                            int64_t n)
{
    const uint8_t *p = w;
    const int8_t *xq = a;
    const float *xd = sl_act_q8_k_d(a, n);
    const int16_t *bsums = sl_act_q8_k_bsums(a, n);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / SL_QK_K; i++) {
        kunpacked u;
        unpack(p + (size_t)i * bbytes, &u);
        int32_t isum = 0, msum = 0;
        for (int k = 0; k < 16; k++) {
            isum += u.sc[k] * idot(u.q + 16 * k, xq + i * SL_QK_K + 16 * k, 16);
            msum += u.mn[k] * bsums[i * 16 + k];
        }
        sum += (xd[i] * u.d) * (float)isum;
        if (has_min)
            sum -= (xd[i] * u.dmin) * (float)msum;
    }
    return sum;
}

/* The reference tile: one row dot per output. */
#define GEMM_FNS(name, vdot, unpack, has_min, btype)                                                                  \
    static void gemm_##name(int64_t n, const void *w, size_t w_stride, int nr, const void *a,                \
                            size_t a_stride, int nt, float *y, size_t y_stride)                              \
    {                                                                                                        \
        for (int t = 0; t < nt; t++)                                                                         \
            for (int r = 0; r < nr; r++)                                                                     \
                y[(size_t)t * y_stride + (size_t)r] =                                                        \
                    vdot(unpack, has_min, sizeof(btype), (const uint8_t *)w + (size_t)r * w_stride,                   \
                         (const uint8_t *)a + (size_t)t * a_stride, n);                                      \
    }

GEMM_FNS(q4_0, vdot32, unpack_q4_0, false, sl_block_q4_0)
GEMM_FNS(q4_1, vdot32, unpack_q4_1, true, sl_block_q4_1)
GEMM_FNS(q5_0, vdot32, unpack_q5_0, false, sl_block_q5_0)
GEMM_FNS(q5_1, vdot32, unpack_q5_1, true, sl_block_q5_1)
GEMM_FNS(q8_0, vdot32, unpack_q8_0, false, sl_block_q8_0)
GEMM_FNS(q2_k, vdot256, kunpack_q2_k, true, sl_block_q2_k)
GEMM_FNS(q3_k, vdot256, kunpack_q3_k, false, sl_block_q3_k)
GEMM_FNS(q4_k, vdot256, kunpack_q4_k, true, sl_block_q4_k)
GEMM_FNS(q5_k, vdot256, kunpack_q5_k, true, sl_block_q5_k)
GEMM_FNS(q6_k, vdot256, kunpack_q6_k, false, sl_block_q6_k)

/* ---- lookups ----------------------------------------------------------------- */

sl_to_float_fn sl_quant_to_float(uint32_t type)
{
    switch (type) {
    case SL_F32:
        return to_float_f32;
    case SL_F16:
        return to_float_f16;
    case SL_BF16:
        return to_float_bf16;
    case SL_Q4_0:
        return to_float_q4_0;
    case SL_Q4_1:
        return to_float_q4_1;
    case SL_Q5_0:
        return to_float_q5_0;
    case SL_Q5_1:
        return to_float_q5_1;
    case SL_Q8_0:
        return to_float_q8_0;
    case SL_Q2_K:
        return to_float_q2_k;
    case SL_Q3_K:
        return to_float_q3_k;
    case SL_Q4_K:
        return to_float_q4_k;
    case SL_Q5_K:
        return to_float_q5_k;
    case SL_Q6_K:
        return to_float_q6_k;
    default:
        return sl_lowbit_to_float(type); /* NULL for anything else */
    }
}

sl_dot_fn sl_quant_dot(uint32_t type)
{
    switch (type) {
    case SL_F32:
        return dot_f32;
    case SL_F16:
        return dot_f16;
    case SL_BF16:
        return dot_bf16;
    case SL_Q4_0:
        return dot_q4_0;
    case SL_Q4_1:
        return dot_q4_1;
    case SL_Q5_0:
        return dot_q5_0;
    case SL_Q5_1:
        return dot_q5_1;
    case SL_Q8_0:
        return dot_q8_0;
    case SL_Q2_K:
        return dot_q2_k;
    case SL_Q3_K:
        return dot_q3_k;
    case SL_Q4_K:
        return dot_q4_k;
    case SL_Q5_K:
        return dot_q5_k;
    case SL_Q6_K:
        return dot_q6_k;
    default:
        return sl_lowbit_dot(type);
    }
}

sl_from_float_fn sl_quant_from_float(uint32_t type)
{
    switch (type) {
    case SL_F32:
        return from_float_f32;
    case SL_F16:
        return from_float_f16;
    case SL_BF16:
        return from_float_bf16;
    case SL_Q4_0:
        return from_float_q4_0;
    case SL_Q4_1:
        return from_float_q4_1;
    case SL_Q5_0:
        return from_float_q5_0;
    case SL_Q5_1:
        return from_float_q5_1;
    case SL_Q8_0:
        return from_float_q8_0;
    case SL_Q4_K:
        return from_float_q4_k;
    case SL_Q6_K:
        return from_float_q6_k;
    default:
        return sl_lowbit_from_float(type);
    }
}

void sl_quant_act_q8_0_to_p(void *row, int64_t n)
{
    int8_t *qs = row, tmp[4 * SL_QK];
    for (int64_t b0 = 0; b0 < n / SL_QK; b0 += 4) {
        const int64_t r = n / SL_QK - b0 < 4 ? n / SL_QK - b0 : 4;
        int8_t *g = qs + b0 * SL_QK;
        for (int64_t k = 0; k < r; k++)
            for (int i = 0; i < SL_QK / 2; i++) {
                tmp[16 * k + i] = g[SL_QK * k + i];
                tmp[16 * r + 16 * k + i] = g[SL_QK * k + SL_QK / 2 + i];
            }
        memcpy(g, tmp, (size_t)(r * SL_QK));
    }
}

static void quantize_q8_0p(const float *x, void *dst, int64_t n)
{
    quantize_q8_0(x, dst, n);
    sl_quant_act_q8_0_to_p(dst, n);
}

sl_quantize_fn sl_quant_quantize(uint32_t act)
{
    switch (act) {
    case SL_ACT_Q8_0:
        return quantize_q8_0;
    case SL_ACT_Q8_0P:
        return quantize_q8_0p;
    case SL_ACT_Q8_K:
        return quantize_q8_k;
    default:
        return NULL;
    }
}

uint32_t sl_quant_act_of(uint32_t type)
{
    switch (type) {
    case SL_Q4_0:
    case SL_Q4_1:
    case SL_Q5_0:
    case SL_Q5_1:
    case SL_Q8_0:
        return SL_ACT_Q8_0;
    case SL_Q2_K:
    case SL_Q3_K:
    case SL_Q4_K:
    case SL_Q5_K:
    case SL_Q6_K:
        return SL_ACT_Q8_K;
    default:
        return sl_lowbit_bits(type) ? SL_ACT_Q8_0 : SL_ACT_F32;
    }
}

sl_gemm_fn sl_quant_gemm(uint32_t type)
{
    switch (type) {
    case SL_Q4_0:
        return gemm_q4_0;
    case SL_Q4_1:
        return gemm_q4_1;
    case SL_Q5_0:
        return gemm_q5_0;
    case SL_Q5_1:
        return gemm_q5_1;
    case SL_Q8_0:
        return gemm_q8_0;
    case SL_Q2_K:
        return gemm_q2_k;
    case SL_Q3_K:
        return gemm_q3_k;
    case SL_Q4_K:
        return gemm_q4_k;
    case SL_Q5_K:
        return gemm_q5_k;
    case SL_Q6_K:
        return gemm_q6_k;
    default:
        return sl_lowbit_gemm(type);
    }
}
