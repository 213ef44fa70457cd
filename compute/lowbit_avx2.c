/* AVX2 kernels of sluice's grouped low-bit types (layouts in lowbit.h):
 * dequantization, float-activation dots and integer tiles against
 * SL_ACT_Q8_0 activations, for every (bits, group) pair.
 *
 * Compiled with -mavx2 -mfma -mf16c (CMakeLists.txt) and entered only
 * through the avx2 (or avx512) table, after kernels.c's probe. A group is
 * handled one 32-element run (one activation block) at a time: unpack32()
 * turns the bit planes into the run's 32 unsigned quants in element order
 * with a 16-byte load, two shifts side by side and a mask (lowbit.h's plane
 * order puts each half run in 16 consecutive plane positions), and
 * VPMADDUBSW + VPMADDWD form the exact integer sum against the block's
 * activation quants (SL_ACT_Q8_0, element order). The dequantizer is
 * bit-identical to the reference (one rounding of an exact product plus the
 * zero point, as a fused multiply-add); the dots differ from the reference
 * only in the order of float additions. */
#include <immintrin.h>
#include <stdbool.h>
#include <string.h>

#include "common/log.h"
#include "compute/lowbit.h"
#include "compute/quant.h"
#include "model/dtype.h"

#define INLINE static inline __attribute__((always_inline))

INLINE float hsum(__m256 v)
{
    const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

INLINE void scales(const uint8_t *blk, float *d, float *m)
{
    uint16_t h[2];
    memcpy(h, blk, sizeof h);
    *d = _cvtsh_ss(h[0]);
    *m = _cvtsh_ss(h[1]);
}

INLINE size_t blk_bytes(int bits, int G)
{
    return 4 + (size_t)(G * bits / 8);
}

/* Bytes of one value repeated in every byte of a 64-bit word (computed
 * unsigned: 0x80 repeated does not fit a signed product). */
#define REP8(v) ((long long)(0x0101010101010101ull * (unsigned long long)(v)))

/* Run k of a group is plane positions 16k .. 16k+15 (its first half, low
 * 128-bit lane of the result) and G/2 + 16k .. (its second half, high
 * lane): lowbit.h's plane order. */

/* The low two bits of run k's quants from the 2-bit plane (G/4 bytes at p). */
INLINE __m256i plane2(int G, const uint8_t *p, int k)
{
    const __m256i three = _mm256_set1_epi8(3);
    if (G == 32) { /* 8 bytes; positions 8j + l at bits 2j, j = the qword of the result */
        long long q;
        memcpy(&q, p, sizeof q);
        const __m256i y = _mm256_srlv_epi64(_mm256_set1_epi64x(q), _mm256_setr_epi64x(0, 2, 4, 6));
        return _mm256_and_si256(y, three);
    }
    /* G/4 >= 16 bytes: 16 consecutive positions share one bit pair j */
    const int quarter = G / 4, p0 = 16 * k, p1 = G / 2 + 16 * k;
    const __m128i v = _mm_loadu_si128((const __m128i *)(p + p0 % quarter));
    const __m256i y = _mm256_set_m128i(_mm_srli_epi16(v, 2 * (p1 / quarter)), _mm_srli_epi16(v, 2 * (p0 / quarter)));
    return _mm256_and_si256(y, three);
}

/* Adds 4 to run k's quants whose bit is set in the 3-bit types' high plane
 * (G/8 bytes at h): bit j of h[l] belongs to position j*G/8 + l. */
INLINE __m256i plane1(int G, const uint8_t *h, int k, __m256i u)
{
    __m256i hb, mask;
    if (G == 128) { /* 16 bytes; the halves' positions are bits k and 4 + k */
        const __m128i v = _mm_loadu_si128((const __m128i *)h);
        hb = _mm256_set_m128i(v, v);
        mask = _mm256_set_m128i(_mm_set1_epi8((char)(1 << (4 + k))), _mm_set1_epi8((char)(1 << k)));
    } else if (G == 64) { /* 8 bytes per qword: bits 2k, 2k + 1, then 4 + 2k, 5 + 2k */
        long long q;
        memcpy(&q, h, sizeof q);
        hb = _mm256_set1_epi64x(q);
        mask = _mm256_setr_epi64x(REP8(1 << (2 * k)), REP8(1 << (2 * k + 1)), REP8(1 << (2 * k + 4)),
                                  REP8(1 << (2 * k + 5)));
    } else { /* G == 32: 4 bytes per dword j: bit j */
        int32_t q;
        memcpy(&q, h, sizeof q);
        hb = _mm256_set1_epi32(q);
        mask = _mm256_setr_epi32(0x01010101, 0x02020202, 0x04040404, 0x08080808, 0x10101010, 0x20202020,
                                 0x40404040, (int)0x80808080u);
    }
    const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(hb, mask), mask);
    return _mm256_or_si256(u, _mm256_and_si256(set, _mm256_set1_epi8(4)));
}

/* The quants of run k (elements 32k .. 32k+31) of the group at blk,
 * unsigned, in element order. */
INLINE __m256i unpack32(int bits, int G, const uint8_t *blk, int k)
{
    const uint8_t *p = blk + 4;
    if (bits == 4) { /* bytes 16k .. 16k+15: low nibbles the first half, high the second */
        const __m128i v = _mm_loadu_si128((const __m128i *)(p + 16 * k));
        return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(15));
    }
    const __m256i u = plane2(G, p, k);
    return bits == 3 ? plane1(G, p + G / 4, k, u) : u;
}

/* ---- dequantization and float dots ------------------------------------------------- */

/* y[0..32) = d * u + m: exact product, one rounding (== the reference). */
INLINE void store32(float *y, __m256i u, __m256 d, __m256 m)
{
    const __m128i lo = _mm256_castsi256_si128(u), hi = _mm256_extracti128_si256(u, 1);
    _mm256_storeu_ps(y, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)), d, m));
    _mm256_storeu_ps(y + 8, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8))), d, m));
    _mm256_storeu_ps(y + 16, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)), d, m));
    _mm256_storeu_ps(y + 24, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))), d, m));
}

INLINE void rows_to_float(int bits, int G, const void *src, float *dst, int64_t n)
{
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / G; i++, b += blk_bytes(bits, G)) {
        float d, m;
        scales(b, &d, &m);
        const __m256 dv = _mm256_set1_ps(d), mv = _mm256_set1_ps(m);
        for (int c = 0; c < G / 32; c++)
            store32(dst + i * G + 32 * c, unpack32(bits, G, b, c), dv, mv);
    }
}

/* Per group: the quant-weighted sum and the plain sum of the activations,
 * combined as d * sum(q x) + m * sum(x). */
INLINE float rows_dot(int bits, int G, const void *w, const float *x, int64_t n)
{
    const uint8_t *b = w;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / G; i++, b += blk_bytes(bits, G), x += G) {
        float d, m;
        scales(b, &d, &m);
        __m256 qx0 = _mm256_setzero_ps(), qx1 = _mm256_setzero_ps(), sx = _mm256_setzero_ps();
        for (int c = 0; c < G / 32; c++) {
            const __m256i u = unpack32(bits, G, b, c);
            const __m128i lo = _mm256_castsi256_si128(u), hi = _mm256_extracti128_si256(u, 1);
            const __m256 q0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));
            const __m256 q1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)));
            const __m256 q2 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));
            const __m256 q3 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)));
            const __m256 x0 = _mm256_loadu_ps(x + 32 * c), x1 = _mm256_loadu_ps(x + 32 * c + 8);
            const __m256 x2 = _mm256_loadu_ps(x + 32 * c + 16), x3 = _mm256_loadu_ps(x + 32 * c + 24);
            qx0 = _mm256_fmadd_ps(q0, x0, qx0);
            qx1 = _mm256_fmadd_ps(q1, x1, qx1);
            qx0 = _mm256_fmadd_ps(q2, x2, qx0);
            qx1 = _mm256_fmadd_ps(q3, x3, qx1);
            sx = _mm256_add_ps(sx, _mm256_add_ps(_mm256_add_ps(x0, x1), _mm256_add_ps(x2, x3)));
        }
        acc = _mm256_fmadd_ps(_mm256_add_ps(qx0, qx1), _mm256_set1_ps(d), acc);
        acc = _mm256_fmadd_ps(sx, _mm256_set1_ps(m), acc);
    }
    return hsum(acc);
}

/* ---- integer tiles ---------------------------------------------------------------------
 * R rows by T tokens. Per group and 32-element chunk: each row's quants are
 * unpacked once, each token's activation quants loaded once, and every pair
 * gets its exact integer sum (VPMADDUBSW: unsigned weights times signed
 * activations, pairs at most 2 * 15 * 127, no saturation), scaled by
 * d * dx and accumulated in float lanes. The zero point's term
 * m * sum_b dx[b] * s[b] is a scalar per group and token. Every output is
 * computed by the same sequence of operations whatever R and T are, so a
 * tile's shape never changes a value. */
INLINE void tile(int bits, int G, int R, int T, int64_t n, const uint8_t *w, size_t ws, const uint8_t *a,
                 size_t as, float *y, size_t ys)
{
    __m256 acc[2][3];
    float macc[2][3];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) {
            acc[r][t] = _mm256_setzero_ps();
            macc[r][t] = 0.0f;
        }
    const __m256i ones = _mm256_set1_epi16(1);
    const float *dx[3];
    const int32_t *sx[3];
    for (int t = 0; t < T; t++) {
        dx[t] = sl_act_q8_0_d(a + (size_t)t * as, n);
        sx[t] = sl_act_q8_0_s(a + (size_t)t * as, n);
    }
    const size_t bb = blk_bytes(bits, G);
    for (int64_t i = 0; i < n / G; i++) {
        float d[2], m[2];
        for (int r = 0; r < R; r++)
            scales(w + (size_t)r * ws + (size_t)i * bb, &d[r], &m[r]);
        for (int c = 0; c < G / 32; c++) {
            const int64_t k = i * (G / 32) + c; /* activation block */
            __m256i u[2];
            for (int r = 0; r < R; r++)
                u[r] = unpack32(bits, G, w + (size_t)r * ws + (size_t)i * bb, c);
            for (int t = 0; t < T; t++) {
                const __m256i x = _mm256_load_si256((const __m256i *)(a + (size_t)t * as + 32 * k));
                for (int r = 0; r < R; r++) {
                    const __m256i isum = _mm256_madd_epi16(_mm256_maddubs_epi16(u[r], x), ones);
                    acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(d[r] * dx[t][k]), acc[r][t]);
                }
            }
        }
        for (int t = 0; t < T; t++) {
            float ms = 0.0f;
            for (int c = 0; c < G / 32; c++) {
                const int64_t k = i * (G / 32) + c;
                ms += dx[t][k] * (float)sx[t][k];
            }
            for (int r = 0; r < R; r++)
                macc[r][t] += m[r] * ms;
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++)
            y[(size_t)t * ys + (size_t)r] = hsum(acc[r][t]) + macc[r][t];
}

/* One row at a time for a single token (a decode step streams rows), else
 * 2 rows by up to 3 tokens. */
INLINE void rows_gemm(int bits, int G, int64_t n, const void *w, size_t w_stride, int nr, const void *a,
                      size_t a_stride, int nt, float *y, size_t y_stride)
{
    const int rstep = nt == 1 ? 1 : 2;
    for (int t = 0; t < nt; t += 3) {
        const int T = nt - t < 3 ? nt - t : 3;
        for (int r = 0; r < nr; r += rstep) {
            const int R = nr - r < rstep ? nr - r : rstep;
            const uint8_t *wp = (const uint8_t *)w + (size_t)r * w_stride;
            const uint8_t *ap = (const uint8_t *)a + (size_t)t * a_stride;
            float *yp = y + (size_t)t * y_stride + (size_t)r;
            switch (R * 4 + T) {
            case 1 * 4 + 1: tile(bits, G, 1, 1, n, wp, w_stride, ap, a_stride, yp, y_stride); break;
            case 1 * 4 + 2: tile(bits, G, 1, 2, n, wp, w_stride, ap, a_stride, yp, y_stride); break;
            case 1 * 4 + 3: tile(bits, G, 1, 3, n, wp, w_stride, ap, a_stride, yp, y_stride); break;
            case 2 * 4 + 1: tile(bits, G, 2, 1, n, wp, w_stride, ap, a_stride, yp, y_stride); break;
            case 2 * 4 + 2: tile(bits, G, 2, 2, n, wp, w_stride, ap, a_stride, yp, y_stride); break;
            case 2 * 4 + 3: tile(bits, G, 2, 3, n, wp, w_stride, ap, a_stride, yp, y_stride); break;
            default: SL_ASSERT(!"tile shape");
            }
        }
    }
}

/* ---- the table entries ---------------------------------------------------------------- */

#define LOWBIT_AVX2(name, bits, G)                                                                           \
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
    }

LOWBIT_AVX2(g2_128, 2, 128)
LOWBIT_AVX2(g3_128, 3, 128)
LOWBIT_AVX2(g4_128, 4, 128)
LOWBIT_AVX2(g2_64, 2, 64)
LOWBIT_AVX2(g3_64, 3, 64)
LOWBIT_AVX2(g4_64, 4, 64)
LOWBIT_AVX2(g2_32, 2, 32)
LOWBIT_AVX2(g3_32, 3, 32)
LOWBIT_AVX2(g4_32, 4, 32)

void sl_lowbit_register_avx2(sl_kernels *k)
{
#define SET(T, name)                                                                                         \
    do {                                                                                                     \
        k->to_float[T] = to_float_##name;                                                                    \
        k->dot[T] = dot_##name;                                                                              \
        k->gemm[T] = gemm_##name;                                                                            \
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
}
