/* Portable reference kernels and encoders of sluice's grouped low-bit types
 * (layouts and formulas in lowbit.h). Like quant.c, these are the ground
 * truth the native variants are tested against: they follow the layout
 * literally, one element at a time. */
#include "compute/lowbit.h"

#include <math.h>
#include <string.h>

#include "common/half.h"
#include "common/log.h"
#include "model/dtype.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "sluice assumes a little-endian host");

/* ---- the types ---------------------------------------------------------------- */

static const struct {
    uint32_t type;
    int bits, group;
} k_lowbit[] = {
    {SL_G2_128, 2, 128}, {SL_G3_128, 3, 128}, {SL_G4_128, 4, 128}, {SL_G2_64, 2, 64}, {SL_G3_64, 3, 64},
    {SL_G4_64, 4, 64},   {SL_G2_32, 2, 32},   {SL_G3_32, 3, 32},   {SL_G4_32, 4, 32},
};
#define N_LOWBIT (sizeof k_lowbit / sizeof k_lowbit[0])

int sl_lowbit_bits(uint32_t type)
{
    for (size_t i = 0; i < N_LOWBIT; i++)
        if (k_lowbit[i].type == type)
            return k_lowbit[i].bits;
    return 0;
}

int sl_lowbit_group(uint32_t type)
{
    for (size_t i = 0; i < N_LOWBIT; i++)
        if (k_lowbit[i].type == type)
            return k_lowbit[i].group;
    return 0;
}

uint32_t sl_lowbit_type(int bits, int group)
{
    for (size_t i = 0; i < N_LOWBIT; i++)
        if (k_lowbit[i].bits == bits && k_lowbit[i].group == group)
            return k_lowbit[i].type;
    return UINT32_MAX;
}

uint32_t sl_lowbit_type_for_row(int bits, int64_t ne0, int max_group)
{
    if (ne0 <= 0 || sl_lowbit_type(bits, max_group) == UINT32_MAX)
        return UINT32_MAX;
    for (int g = max_group; g >= 32; g /= 2)
        if (ne0 % g == 0)
            return sl_lowbit_type(bits, g);
    return UINT32_MAX;
}

/* ---- one group ---------------------------------------------------------------- */

static inline size_t block_bytes(int bits, int G)
{
    return 4 + (size_t)(G * bits / 8);
}

/* Plane position of element e of a group of G (lowbit.h: the first halves
 * of the 32-element runs, then the second halves). */
static inline int plane_pos(int G, int e)
{
    const int k = e / 32, h = (e / 16) % 2, i = e % 16;
    return (G / 2) * h + 16 * k + i;
}

/* The quant at plane position p of the block's planes at blk + 4. */
static inline int plane_get(int bits, int G, const uint8_t *p, int pos)
{
    if (bits == 4)
        return pos < G / 2 ? p[pos] & 15 : p[pos - G / 2] >> 4;
    int v = (p[pos % (G / 4)] >> (2 * (pos / (G / 4)))) & 3;
    if (bits == 3)
        v |= ((p[G / 4 + pos % (G / 8)] >> (pos / (G / 8))) & 1) << 2;
    return v;
}

/* The G quants of the block at blk, in element order. */
static inline void unpack(int bits, int G, const uint8_t *blk, uint8_t *q)
{
    for (int e = 0; e < G; e++)
        q[e] = (uint8_t)plane_get(bits, G, blk + 4, plane_pos(G, e));
}

/* The inverse of unpack: quants (each < 2^bits, element order) into the
 * block's planes. */
static void pack(int bits, int G, const uint8_t *q, uint8_t *blk)
{
    uint8_t *p = blk + 4;
    memset(p, 0, block_bytes(bits, G) - 4);
    for (int e = 0; e < G; e++) {
        const int pos = plane_pos(G, e);
        if (bits == 4) {
            p[pos % (G / 2)] |= (uint8_t)(q[e] << (4 * (pos / (G / 2))));
        } else {
            p[pos % (G / 4)] |= (uint8_t)((q[e] & 3) << (2 * (pos / (G / 4))));
            if (bits == 3)
                p[G / 4 + pos % (G / 8)] |= (uint8_t)((q[e] >> 2) << (pos / (G / 8)));
        }
    }
}

static inline void scales(const uint8_t *blk, float *d, float *m)
{
    uint16_t h[2];
    memcpy(h, blk, sizeof h);
    *d = sl_f16_to_f32(h[0]);
    *m = sl_f16_to_f32(h[1]);
}

/* ---- rows ---------------------------------------------------------------------- */

/* Element e is d * q[e] + m: the product of an f16 and an integer below 16
 * is exact in float, so this is one rounding, and a fused multiply-add gives
 * the same bits (native dequantizers may use either). */
static inline void rows_to_float(int bits, int G, const void *src, float *dst, int64_t n)
{
    SL_ASSERT(n % G == 0);
    const uint8_t *p = src;
    uint8_t q[SL_LOWBIT_MAX_GROUP];
    for (int64_t i = 0; i < n / G; i++, p += block_bytes(bits, G)) {
        float d, m;
        scales(p, &d, &m);
        unpack(bits, G, p, q);
        for (int e = 0; e < G; e++)
            dst[i * G + e] = d * (float)q[e] + m;
    }
}

static inline float rows_dot(int bits, int G, const void *w, const float *x, int64_t n)
{
    SL_ASSERT(n % G == 0);
    float buf[SL_LOWBIT_MAX_GROUP];
    float sum = 0.0f;
    for (int64_t i = 0; i < n / G; i++) {
        rows_to_float(bits, G, (const uint8_t *)w + (size_t)i * block_bytes(bits, G), buf, G);
        float s = 0.0f;
        for (int e = 0; e < G; e++)
            s += buf[e] * x[i * G + e];
        sum += s;
    }
    return sum;
}

/* One row against one SL_ACT_Q8_0 activation row (lowbit.h, Products). */
static inline float row_qdot(int bits, int G, const uint8_t *w, const uint8_t *a, int64_t n)
{
    const int8_t *xq = (const int8_t *)a;
    const float *xd = sl_act_q8_0_d(a, n);
    const int32_t *xs = sl_act_q8_0_s(a, n);
    uint8_t q[SL_LOWBIT_MAX_GROUP];
    float sum = 0.0f;
    for (int64_t i = 0; i < n / G; i++, w += block_bytes(bits, G)) {
        float d, m;
        scales(w, &d, &m);
        unpack(bits, G, w, q);
        for (int b = 0; b < G / SL_QK; b++) {
            const int64_t k = i * (G / SL_QK) + b; /* activation block */
            int32_t isum = 0;
            for (int j = 0; j < SL_QK; j++)
                isum += (int32_t)q[SL_QK * b + j] * xq[k * SL_QK + j];
            sum += (d * xd[k]) * (float)isum + (m * xd[k]) * (float)xs[k];
        }
    }
    return sum;
}

static inline void rows_gemm(int bits, int G, int64_t n, const void *w, size_t w_stride, int nr, const void *a,
                             size_t a_stride, int nt, float *y, size_t y_stride)
{
    SL_ASSERT(n % G == 0);
    for (int t = 0; t < nt; t++)
        for (int r = 0; r < nr; r++)
            y[(size_t)t * y_stride + (size_t)r] = row_qdot(bits, G, (const uint8_t *)w + (size_t)r * w_stride,
                                                           (const uint8_t *)a + (size_t)t * a_stride, n);
}

/* ---- encoders ------------------------------------------------------------------ */

static inline int clamp_int(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* Quants of x for the stored (f16) pair; returns the squared error. */
static double assign(const float *x, int G, int L, float d, float m, uint8_t *q)
{
    const float id = d > 0.0f ? 1.0f / d : 0.0f;
    double err = 0;
    for (int e = 0; e < G; e++) {
        q[e] = (uint8_t)clamp_int((int)lrintf((x[e] - m) * id), 0, L);
        const double r = (double)x[e] - ((double)d * q[e] + (double)m);
        err += r * r;
    }
    return err;
}

/* The f16 pair nearest (d, m) (d clamped at 0), its quants and error. */
static double try_pair(const float *x, int G, int L, float d, float m, uint16_t h[2], uint8_t *q)
{
    h[0] = sl_f32_to_f16(d > 0.0f ? d : 0.0f);
    h[1] = sl_f32_to_f16(m);
    return assign(x, G, L, sl_f16_to_f32(h[0]), sl_f16_to_f32(h[1]), q);
}

/* Least-squares (d, m) for fixed quants q: minimises sum (d q + m - x)^2.
 * Returns false when the quants are all equal (no unique solution). */
static bool refit(const float *x, const uint8_t *q, int G, float *d, float *m)
{
    double sq = 0, sqq = 0, sx = 0, sqx = 0;
    for (int e = 0; e < G; e++) {
        sq += q[e];
        sqq += (double)q[e] * q[e];
        sx += x[e];
        sqx += (double)q[e] * x[e];
    }
    const double det = G * sqq - sq * sq;
    if (det <= 0)
        return false;
    *d = (float)((G * sqx - sq * sx) / det);
    *m = (float)((sx - (double)*d * sq) / G);
    return true;
}

/* Candidate step counts for the search, as multiples of (max - min) / L:
 * below 1 clips the extremes to let the bulk sit on finer levels. */
static const float k_shrink[] = {1.0f, 0.95f, 0.9f, 0.85f, 0.8f, 0.75f, 0.7f, 0.65f, 0.6f, 0.55f, 0.5f};

static void encode_group(int bits, int G, sl_lowbit_fit fit, const float *x, uint8_t *blk)
{
    const int L = (1 << bits) - 1;
    float lo = x[0], hi = x[0];
    for (int e = 1; e < G; e++) {
        lo = fminf(lo, x[e]);
        hi = fmaxf(hi, x[e]);
    }
    uint8_t q[SL_LOWBIT_MAX_GROUP], tq[SL_LOWBIT_MAX_GROUP];
    uint16_t best[2], h[2];
    double best_err = try_pair(x, G, L, (hi - lo) / (float)L, lo, best, q);
    if (fit == SL_LOWBIT_FIT_SEARCH && hi > lo) {
        const float range = hi - lo;
        for (size_t c = 0; c < sizeof k_shrink / sizeof k_shrink[0]; c++) {
            /* A step of shrink * range / L, the levels centred on the range;
             * then two rounds of least squares over the rounded quants. */
            float d = k_shrink[c] * range / (float)L;
            float m = lo + 0.5f * (range - d * (float)L);
            for (int round = 0; round < 3; round++) {
                const double err = try_pair(x, G, L, d, m, h, tq);
                if (err < best_err) {
                    best_err = err;
                    memcpy(best, h, sizeof best);
                    memcpy(q, tq, (size_t)G);
                }
                if (round == 2 || !refit(x, tq, G, &d, &m))
                    break;
            }
        }
    }
    memcpy(blk, best, sizeof best);
    pack(bits, G, q, blk);
}

void sl_lowbit_quantize(uint32_t type, sl_lowbit_fit fit, const float *src, void *dst, int64_t n)
{
    const int bits = sl_lowbit_bits(type), G = sl_lowbit_group(type);
    SL_ASSERT(bits > 0 && n % G == 0);
    uint8_t *p = dst;
    for (int64_t i = 0; i < n / G; i++, p += block_bytes(bits, G)) {
        for (int e = 0; e < G; e++)
            SL_ASSERT(isfinite(src[i * G + e]) && fabsf(src[i * G + e]) < 65504.0f);
        encode_group(bits, G, fit, src + i * G, p);
    }
}

/* ---- per-type entry points and lookups ------------------------------------------ */

#define LOWBIT_FNS(name, type, bits, G)                                                                      \
    static void to_float_##name(const void *src, float *dst, int64_t n)                                      \
    {                                                                                                        \
        rows_to_float(bits, G, src, dst, n);                                                                 \
    }                                                                                                        \
    static float dot_##name(const void *w, const float *x, int64_t n)                                        \
    {                                                                                                        \
        return rows_dot(bits, G, w, x, n);                                                                   \
    }                                                                                                        \
    static void gemm_##name(int64_t n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride, \
                            int nt, float *y, size_t y_stride)                                               \
    {                                                                                                        \
        rows_gemm(bits, G, n, w, w_stride, nr, a, a_stride, nt, y, y_stride);                                \
    }                                                                                                        \
    static void from_float_##name(const float *src, void *dst, int64_t n)                                    \
    {                                                                                                        \
        sl_lowbit_quantize(type, SL_LOWBIT_FIT_SEARCH, src, dst, n);                                         \
    }

LOWBIT_FNS(g2_128, SL_G2_128, 2, 128)
LOWBIT_FNS(g3_128, SL_G3_128, 3, 128)
LOWBIT_FNS(g4_128, SL_G4_128, 4, 128)
LOWBIT_FNS(g2_64, SL_G2_64, 2, 64)
LOWBIT_FNS(g3_64, SL_G3_64, 3, 64)
LOWBIT_FNS(g4_64, SL_G4_64, 4, 64)
LOWBIT_FNS(g2_32, SL_G2_32, 2, 32)
LOWBIT_FNS(g3_32, SL_G3_32, 3, 32)
LOWBIT_FNS(g4_32, SL_G4_32, 4, 32)

#define LOOKUP(fn, ret)                                                                                      \
    ret sl_lowbit_##fn(uint32_t type)                                                                        \
    {                                                                                                        \
        switch (type) {                                                                                      \
        case SL_G2_128: return fn##_g2_128;                                                                  \
        case SL_G3_128: return fn##_g3_128;                                                                  \
        case SL_G4_128: return fn##_g4_128;                                                                  \
        case SL_G2_64: return fn##_g2_64;                                                                    \
        case SL_G3_64: return fn##_g3_64;                                                                    \
        case SL_G4_64: return fn##_g4_64;                                                                    \
        case SL_G2_32: return fn##_g2_32;                                                                    \
        case SL_G3_32: return fn##_g3_32;                                                                    \
        case SL_G4_32: return fn##_g4_32;                                                                    \
        default: return NULL;                                                                                \
        }                                                                                                    \
    }

LOOKUP(to_float, sl_to_float_fn)
LOOKUP(dot, sl_dot_fn)
LOOKUP(gemm, sl_gemm_fn)
LOOKUP(from_float, sl_from_float_fn)
