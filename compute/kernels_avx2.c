/* AVX2 kernels (with FMA and F16C): the integer tile products of every
 * quantized type, the activation quantizers, the float-type dot products and
 * the float vector operations. Compiled with those target flags
 * (CMakeLists.txt); entered only after kernels.c probed the CPU. See
 * kernels.h for the contracts and quant.h for the layouts.
 *
 * Integer products. One 32-block fills a 256-bit vector. Weights unpacked to
 * unsigned bytes u meet the signed activation quants in VPMADDUBSW (pairs of
 * products to 16 bits; every type's range keeps those below 2^15), then
 * VPMADDWD sums pairs to 32 bits, with 1s (legacy types) or with the 16-bit
 * sub-block scales (k-quants). Offsets come back through the activation
 * sums: sum (u - o) x = sum u x - o * s. Q8_0 weights are signed and use the
 * sign trick instead (|w| times x with w's sign), since 255 * 127 * 2 would
 * overflow 16 bits.
 *
 * Every output of a tile is computed by the same instruction sequence
 * whatever the tile's shape, so results do not depend on how matmul.c
 * splits rows and tokens (kernels.h). */
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#include "common/half.h"
#include "common/log.h"
#include "compute/kernels_x86.h"
#include "compute/lowbit.h"
#include "compute/quant.h"

#define INLINE static inline __attribute__((always_inline))

/* ---- helpers ------------------------------------------------------------------ */

INLINE float hsum(__m256 v)
{
    const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

INLINE int32_t hsum_i32(__m256i v)
{
    const __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    const __m128i t = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    return _mm_cvtsi128_si32(_mm_add_epi32(t, _mm_shuffle_epi32(t, 0xb1)));
}

INLINE double hsum_pd(__m256d v)
{
    const __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

INLINE float f16(uint16_t h)
{
    return _cvtsh_ss(h);
}

/* e^x for every lane, within 2 ulp where the result is a normal float; 0
 * below -87.33 (where e^x is subnormal) and +inf from 88.73 up. */
INLINE __m256 exp256(__m256 x)
{
    const __m256 lo = _mm256_set1_ps(-87.33f);
    const __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, lo), _mm256_set1_ps(88.73f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    /* 2^n as a float, n in [-126, 128] (128 gives the +inf pattern). Split
     * in two factors so that p * 2^n does not overflow before p < 1 says. */
    const __m256i ni = _mm256_cvtps_epi32(n);
    const __m256i h = _mm256_srai_epi32(ni, 1);
    const __m256 a = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h, _mm256_set1_epi32(127)), 23));
    const __m256 b = _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, h), _mm256_set1_epi32(127)), 23));
    return _mm256_andnot_ps(under, _mm256_mul_ps(_mm256_mul_ps(p, a), b));
}

/* ---- float-type dot products ---------------------------------------------------- */

#define FLOAT_DOT(name, load, scalar)                                                                        \
    static float name(const void *w, const float *x, int64_t n)                                              \
    {                                                                                                        \
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();                                       \
        int64_t i = 0;                                                                                       \
        for (; i + 16 <= n; i += 16) {                                                                       \
            acc0 = _mm256_fmadd_ps(load(w, i), _mm256_loadu_ps(x + i), acc0);                                \
            acc1 = _mm256_fmadd_ps(load(w, i + 8), _mm256_loadu_ps(x + i + 8), acc1);                        \
        }                                                                                                    \
        for (; i + 8 <= n; i += 8)                                                                           \
            acc0 = _mm256_fmadd_ps(load(w, i), _mm256_loadu_ps(x + i), acc0);                                \
        float tail = 0.0f;                                                                                   \
        for (; i < n; i++)                                                                                   \
            tail += scalar(w, i) * x[i];                                                                     \
        return hsum(_mm256_add_ps(acc0, acc1)) + tail;                                                       \
    }

INLINE __m256 load_f32(const void *w, int64_t i)
{
    return _mm256_loadu_ps((const float *)w + i);
}
INLINE float scalar_f32(const void *w, int64_t i)
{
    return ((const float *)w)[i];
}
INLINE __m256 load_f16(const void *w, int64_t i)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i)));
}
INLINE float scalar_f16(const void *w, int64_t i)
{
    return f16(((const uint16_t *)w)[i]);
}
INLINE __m256 load_bf16(const void *w, int64_t i)
{
    const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
}
INLINE float scalar_bf16(const void *w, int64_t i)
{
    return sl_bf16_to_f32(((const uint16_t *)w)[i]);
}

FLOAT_DOT(dot_f32, load_f32, scalar_f32)
FLOAT_DOT(dot_f16, load_f16, scalar_f16)
FLOAT_DOT(dot_bf16, load_bf16, scalar_bf16)

/* ---- activation quantizers ---------------------------------------------------------
 * The reference's arithmetic (quant.c): d = amax / 127, id = 1 / d in float,
 * q = x * id rounded to nearest even (VCVTPS2DQ), so the bytes are
 * identical. */

INLINE float amax256(const __m256 *v, int k)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_andnot_ps(sign, v[0]);
    for (int i = 1; i < k; i++)
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[i]));
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
}

/* 32 int32 lanes (|q| <= 127) to 32 bytes in order. */
INLINE __m256i pack32(__m256i a, __m256i b, __m256i c, __m256i d)
{
    const __m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d);
    const __m256i p = _mm256_packs_epi16(ab, cd);
    /* The packs work per 128-bit lane: dwords come out as 0,2,4,6,1,3,5,7. */
    return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

static void quantize_q8_0(const float *x, void *dst, int64_t n)
{
    int8_t *qs = dst;
    float *d = (float *)(qs + n);
    int32_t *s = (int32_t *)(d + n / SL_QK);
    for (int64_t i = 0; i < n / SL_QK; i++) {
        __m256 v[4];
        for (int k = 0; k < 4; k++)
            v[k] = _mm256_loadu_ps(x + 32 * i + 8 * k);
        const float dd = amax256(v, 4) / 127.0f;
        const __m256 id = _mm256_set1_ps(dd != 0.0f ? 1.0f / dd : 0.0f);
        __m256i q[4];
        for (int k = 0; k < 4; k++)
            q[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], id));
        _mm256_storeu_si256((__m256i *)(qs + 32 * i), pack32(q[0], q[1], q[2], q[3]));
        d[i] = sl_act_scale(dd);
        s[i] = hsum_i32(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
    }
}

static void quantize_q8_k(const float *x, void *dst, int64_t n)
{
    int8_t *qs = dst;
    float *d = (float *)(qs + n);
    int16_t *bsums = (int16_t *)(d + n / SL_QK_K);
    for (int64_t i = 0; i < n / SL_QK_K; i++) {
        const float *xb = x + SL_QK_K * i;
        __m256 v[32];
        for (int k = 0; k < 32; k++)
            v[k] = _mm256_loadu_ps(xb + 8 * k);
        const float dd = amax256(v, 32) / 127.0f;
        const __m256 id = _mm256_set1_ps(dd != 0.0f ? 1.0f / dd : 0.0f);
        for (int k = 0; k < 8; k++) {
            __m256i q[4];
            for (int j = 0; j < 4; j++)
                q[j] = _mm256_cvtps_epi32(_mm256_mul_ps(v[4 * k + j], id));
            _mm256_storeu_si256((__m256i *)(qs + SL_QK_K * i + 32 * k), pack32(q[0], q[1], q[2], q[3]));
            bsums[16 * i + 2 * k] = (int16_t)hsum_i32(_mm256_add_epi32(q[0], q[1]));
            bsums[16 * i + 2 * k + 1] = (int16_t)hsum_i32(_mm256_add_epi32(q[2], q[3]));
        }
        d[i] = dd;
    }
}

/* ---- legacy types: one 32-block per vector ------------------------------------------ */

/* One weight block, unpacked: 32 bytes in element order. `u` is unsigned
 * for the types with nibbles; for Q8_0 it is |w| and `sign` is w. */
typedef struct wblock {
    __m256i u, sign;
    float d, m;
} wblock;

INLINE __m256i nibbles(const uint8_t *qs)
{
    const __m128i q = _mm_loadu_si128((const __m128i *)qs);
    const __m256i y = _mm256_inserti128_si256(_mm256_castsi128_si256(q), _mm_srli_epi16(q, 4), 1);
    return _mm256_and_si256(y, _mm256_set1_epi8(15));
}

/* Adds 16 to the bytes whose bit is set in the block's qh word. */
INLINE __m256i fifth_bits(__m256i u, const uint8_t *qh4)
{
    uint32_t h;
    memcpy(&h, qh4, 4);
    /* Byte j takes byte j/8 of h, then tests bit j%8 of it. */
    const __m256i hb = _mm256_shuffle_epi8(
        _mm256_set1_epi32((int)h),
        _mm256_setr_epi64x(0, 0x0101010101010101ll, 0x0202020202020202ll, 0x0303030303030303ll));
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(hb, bit), bit);
    return _mm256_add_epi8(u, _mm256_and_si256(set, _mm256_set1_epi8(16)));
}

INLINE wblock unpack_q4_0(const void *row, int64_t i)
{
    const sl_block_q4_0 *b = (const sl_block_q4_0 *)row + i;
    return (wblock){.u = nibbles(b->qs), .d = f16(b->d)};
}

INLINE wblock unpack_q4_1(const void *row, int64_t i)
{
    const sl_block_q4_1 *b = (const sl_block_q4_1 *)row + i;
    return (wblock){.u = nibbles(b->qs), .d = f16(b->d), .m = f16(b->m)};
}

INLINE wblock unpack_q5_0(const void *row, int64_t i)
{
    const sl_block_q5_0 *b = (const sl_block_q5_0 *)row + i;
    return (wblock){.u = fifth_bits(nibbles(b->qs), b->qh), .d = f16(b->d)};
}

INLINE wblock unpack_q5_1(const void *row, int64_t i)
{
    const sl_block_q5_1 *b = (const sl_block_q5_1 *)row + i;
    return (wblock){.u = fifth_bits(nibbles(b->qs), b->qh), .d = f16(b->d), .m = f16(b->m)};
}

INLINE wblock unpack_q8_0(const void *row, int64_t i)
{
    const sl_block_q8_0 *b = (const sl_block_q8_0 *)row + i;
    const __m256i w = _mm256_loadu_si256((const __m256i *)b->qs);
    return (wblock){.u = _mm256_abs_epi8(w), .sign = w, .d = f16(b->d)};
}

typedef wblock (*unpack_fn)(const void *row, int64_t i);

/* Kinds of legacy type, for the shared step below. */
enum { OFFSET, MIN, SIGNED };

INLINE void block_step(unpack_fn unpack, int kind, int offset, int R, int T, const uint8_t *w,
                       size_t w_stride, const uint8_t *a, size_t a_stride, int64_t n, int64_t i,
                       __m256 acc[2][3], float macc[2][3])
{
    wblock wb[2];
    for (int r = 0; r < R; r++)
        wb[r] = unpack(w + (size_t)r * w_stride, i);
    const __m256i ones = _mm256_set1_epi16(1);
    for (int t = 0; t < T; t++) {
        const uint8_t *row = a + (size_t)t * a_stride;
        const __m256i x = _mm256_load_si256((const __m256i *)(row + 32 * i));
        const float dx = sl_act_q8_0_d(row, n)[i];
        const int32_t s = sl_act_q8_0_s(row, n)[i];
        const __m256i init = _mm256_zextsi128_si256(_mm_cvtsi32_si128(-offset * s));
        for (int r = 0; r < R; r++) {
            __m256i isum;
            if (kind == SIGNED) {
                isum =
                    _mm256_madd_epi16(_mm256_maddubs_epi16(wb[r].u, _mm256_sign_epi8(x, wb[r].sign)), ones);
            } else {
                isum = _mm256_madd_epi16(_mm256_maddubs_epi16(wb[r].u, x), ones);
                if (kind == OFFSET)
                    isum = _mm256_add_epi32(isum, init);
            }
            acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(wb[r].d * dx), acc[r][t]);
            if (kind == MIN)
                macc[r][t] += wb[r].m * (dx * (float)s);
        }
    }
}

/* Blocks alternate between two accumulator sets (shorter add chains); the
 * result is hsum(even + odd) plus the offset-term sum of Q4_1 / Q5_1. */
INLINE void tile32(unpack_fn unpack, int kind, int offset, int R, int T, int64_t n, const uint8_t *w,
                   size_t w_stride, const uint8_t *a, size_t a_stride, float *y, size_t y_row,
                   size_t y_stride)
{
    __m256 acc0[2][3], acc1[2][3];
    float macc[2][3];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) {
            acc0[r][t] = acc1[r][t] = _mm256_setzero_ps();
            macc[r][t] = 0.0f;
        }
    const int64_t nb = n / SL_QK;
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
        block_step(unpack, kind, offset, R, T, w, w_stride, a, a_stride, n, i, acc0, macc);
        block_step(unpack, kind, offset, R, T, w, w_stride, a, a_stride, n, i + 1, acc1, macc);
    }
    if (i < nb)
        block_step(unpack, kind, offset, R, T, w, w_stride, a, a_stride, n, i, acc0, macc);
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++)
            y[(size_t)t * y_stride + (size_t)r * y_row] =
                hsum(_mm256_add_ps(acc0[r][t], acc1[r][t])) + macc[r][t];
}

/* Tiles: 2 rows by up to 3 tokens (12 accumulators of 16 registers). A
 * single token reads its rows as two halves side by side (rows r and
 * r + h), two long runs of memory, as the AVX-512 kernels do. */
#define GEMM32(name, unpack, kind, offset)                                                                   \
    static void tile_##name(int R, int T, int64_t n, const uint8_t *w, size_t ws, const uint8_t *a,          \
                            size_t as, float *y, size_t ys)                                                  \
    {                                                                                                        \
        switch (R * 4 + T) {                                                                                 \
        case 1 * 4 + 1:                                                                                      \
            tile32(unpack, kind, offset, 1, 1, n, w, ws, a, as, y, 1, ys);                                   \
            break;                                                                                           \
        case 1 * 4 + 2:                                                                                      \
            tile32(unpack, kind, offset, 1, 2, n, w, ws, a, as, y, 1, ys);                                   \
            break;                                                                                           \
        case 1 * 4 + 3:                                                                                      \
            tile32(unpack, kind, offset, 1, 3, n, w, ws, a, as, y, 1, ys);                                   \
            break;                                                                                           \
        case 2 * 4 + 1:                                                                                      \
            tile32(unpack, kind, offset, 2, 1, n, w, ws, a, as, y, 1, ys);                                   \
            break;                                                                                           \
        case 2 * 4 + 2:                                                                                      \
            tile32(unpack, kind, offset, 2, 2, n, w, ws, a, as, y, 1, ys);                                   \
            break;                                                                                           \
        case 2 * 4 + 3:                                                                                      \
            tile32(unpack, kind, offset, 2, 3, n, w, ws, a, as, y, 1, ys);                                   \
            break;                                                                                           \
        default:                                                                                             \
            SL_ASSERT(!"tile shape");                                                                        \
        }                                                                                                    \
    }                                                                                                        \
    static void gemm_##name(int64_t n, const void *w, size_t w_stride, int nr, const void *a,                \
                            size_t a_stride, int nt, float *y, size_t y_stride)                              \
    {                                                                                                        \
        if (nt == 1) {                                                                                       \
            const int h = nr / 2;                                                                            \
            for (int r = 0; r < h; r++)                                                                      \
                tile32(unpack, kind, offset, 2, 1, n, (const uint8_t *)w + (size_t)r * w_stride,             \
                       (size_t)h * w_stride, a, 0, y + r, (size_t)h, 0);                                     \
            if (nr % 2)                                                                                      \
                tile_##name(1, 1, n, (const uint8_t *)w + (size_t)(nr - 1) * w_stride, w_stride, a, 0,       \
                            y + nr - 1, 0);                                                                  \
            return;                                                                                          \
        }                                                                                                    \
        for (int t = 0; t < nt; t += 3) {                                                                    \
            const int T = nt - t < 3 ? nt - t : 3;                                                           \
            for (int r = 0; r < nr; r += 2) {                                                                \
                const int R = nr - r < 2 ? nr - r : 2;                                                       \
                tile_##name(R, T, n, (const uint8_t *)w + (size_t)r * w_stride, w_stride,                    \
                            (const uint8_t *)a + (size_t)t * a_stride, a_stride,                             \
                            y + (size_t)t * y_stride + (size_t)r, y_stride);                                 \
            }                                                                                                \
        }                                                                                                    \
    }

GEMM32(q4_0, unpack_q4_0, OFFSET, 8)
GEMM32(q4_1, unpack_q4_1, MIN, 0)
GEMM32(q5_0, unpack_q5_0, OFFSET, 16)
GEMM32(q5_1, unpack_q5_1, MIN, 0)
GEMM32(q8_0, unpack_q8_0, SIGNED, 0)

/* ---- k-quants: one super-block of 256 at a time ----------------------------------
 * Unpacked: eight vectors of unsigned quants in element order (u[k] =
 * elements 32k .. 32k+31), eight vectors of 16-bit scales matching
 * VPMADDUBSW's pairs (lanes 0..7 the scale of elements 32k .. 32k+15, lanes
 * 8..15 of the next 16), the 16 per-16 minimums as 16-bit lanes, and
 *   value = d * sc * u - dmin * mn                      (Q2_K, Q4_K, Q5_K)
 *   value = d * (sc * u - mn), mn = o * sc               (Q3_K o = 4, Q6_K o = 32). */
typedef struct ksuper {
    __m256i u[8];
    __m256i sc[8];
    __m256i mn;
    float d, dmin;
} ksuper;

/* From 16 signed 8-bit scales (one per 16 elements): vector k's lanes 0..7
 * take scale 2k, lanes 8..15 scale 2k + 1. */
INLINE void spread16(__m128i s8, __m256i sc[8])
{
    for (int k = 0; k < 8; k++) {
        const __m128i idx =
            _mm_set_epi64x(0x0101010101010101ll * (2 * k + 1), 0x0101010101010101ll * (2 * k));
        sc[k] = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(s8, idx));
    }
}

INLINE void kunpack_q2_k(const void *blk, ksuper *k)
{
    const sl_block_q2_k *b = blk;
    const __m256i m3 = _mm256_set1_epi8(3);
    for (int h = 0; h < 2; h++) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * h));
        k->u[4 * h + 0] = _mm256_and_si256(q, m3);
        k->u[4 * h + 1] = _mm256_and_si256(_mm256_srli_epi16(q, 2), m3);
        k->u[4 * h + 2] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m3);
        k->u[4 * h + 3] = _mm256_and_si256(_mm256_srli_epi16(q, 6), m3);
    }
    const __m128i s = _mm_loadu_si128((const __m128i *)b->scales);
    spread16(_mm_and_si128(s, _mm_set1_epi8(15)), k->sc);
    k->mn = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(s, 4), _mm_set1_epi8(15)));
    k->d = f16(b->d);
    k->dmin = f16(b->dmin);
}

/* Adds `add` to the bytes of u whose bit `bit` is set in mask m. */
INLINE __m256i add_if_bit(__m256i u, __m256i m, int bit, int add)
{
    const __m256i sel = _mm256_set1_epi8((char)(1 << bit));
    const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(m, sel), sel);
    return _mm256_add_epi8(u, _mm256_and_si256(set, _mm256_set1_epi8((char)add)));
}

INLINE void kunpack_q3_k(const void *blk, ksuper *k)
{
    const sl_block_q3_k *b = blk;
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m256i hm = _mm256_loadu_si256((const __m256i *)b->hmask);
    for (int h = 0; h < 2; h++) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * h));
        k->u[4 * h + 0] = add_if_bit(_mm256_and_si256(q, m3), hm, 4 * h + 0, 4);
        k->u[4 * h + 1] = add_if_bit(_mm256_and_si256(_mm256_srli_epi16(q, 2), m3), hm, 4 * h + 1, 4);
        k->u[4 * h + 2] = add_if_bit(_mm256_and_si256(_mm256_srli_epi16(q, 4), m3), hm, 4 * h + 2, 4);
        k->u[4 * h + 3] = add_if_bit(_mm256_and_si256(_mm256_srli_epi16(q, 6), m3), hm, 4 * h + 3, 4);
    }
    uint64_t lo8;
    uint32_t hi4;
    memcpy(&lo8, b->scales, 8);
    memcpy(&hi4, b->scales + 8, 4);
    const __m128i lo =
        _mm_and_si128(_mm_set_epi64x((long long)(lo8 >> 4), (long long)lo8), _mm_set1_epi8(15));
    const __m128i hi = _mm_set_epi32((int)((hi4 >> 6) & 0x03030303u), (int)((hi4 >> 4) & 0x03030303u),
                                     (int)((hi4 >> 2) & 0x03030303u), (int)(hi4 & 0x03030303u));
    const __m128i sc8 = _mm_sub_epi8(_mm_or_si128(lo, _mm_slli_epi16(hi, 4)), _mm_set1_epi8(32));
    spread16(sc8, k->sc);
    k->mn = _mm256_slli_epi16(_mm256_cvtepi8_epi16(sc8), 2); /* 4 * sc */
    k->d = f16(b->d);
    k->dmin = 0.0f;
}

/* Scales (bytes 0..7) and mins (8..15) of Q4_K / Q5_K from the 12 packed
 * bytes (quant.h). */
INLINE __m128i k4_scales_mins(const uint8_t *s12)
{
    uint32_t a, b, c;
    memcpy(&a, s12, 4);
    memcpy(&b, s12 + 4, 4);
    memcpy(&c, s12 + 8, 4);
    const uint32_t sc_lo = a & 0x3f3f3f3fu, m_lo = b & 0x3f3f3f3fu;
    const uint32_t sc_hi = (c & 0x0f0f0f0fu) | ((a >> 6) & 0x03030303u) << 4;
    const uint32_t m_hi = ((c >> 4) & 0x0f0f0f0fu) | ((b >> 6) & 0x03030303u) << 4;
    return _mm_set_epi32((int)m_hi, (int)m_lo, (int)sc_hi, (int)sc_lo);
}

/* Spreads 8 scales of 32-element sub-blocks (bytes 0..7 of v) and the
 * per-16 mins (bytes 8..15, each used twice). */
INLINE void k4_spread(__m128i v, ksuper *k)
{
    for (int j = 0; j < 8; j++)
        k->sc[j] = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(v, _mm_set1_epi8((char)j)));
    k->mn = _mm256_cvtepu8_epi16(
        _mm_shuffle_epi8(v, _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15)));
}

INLINE void kunpack_q4_k(const void *blk, ksuper *k)
{
    const sl_block_q4_k *b = blk;
    const __m256i m4 = _mm256_set1_epi8(15);
    for (int g = 0; g < 4; g++) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * g));
        k->u[2 * g] = _mm256_and_si256(q, m4);
        k->u[2 * g + 1] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
    }
    k4_spread(k4_scales_mins(b->scales), k);
    k->d = f16(b->d);
    k->dmin = f16(b->dmin);
}

INLINE void kunpack_q5_k(const void *blk, ksuper *k)
{
    const sl_block_q5_k *b = blk;
    const __m256i m4 = _mm256_set1_epi8(15);
    const __m256i qh = _mm256_loadu_si256((const __m256i *)b->qh);
    for (int g = 0; g < 4; g++) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * g));
        k->u[2 * g] = add_if_bit(_mm256_and_si256(q, m4), qh, 2 * g, 16);
        k->u[2 * g + 1] = add_if_bit(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4), qh, 2 * g + 1, 16);
    }
    k4_spread(k4_scales_mins(b->scales), k);
    k->d = f16(b->d);
    k->dmin = f16(b->dmin);
}

INLINE void kunpack_q6_k(const void *blk, ksuper *k)
{
    const sl_block_q6_k *b = blk;
    const __m256i m4 = _mm256_set1_epi8(15), m3 = _mm256_set1_epi8(3);
    for (int h = 0; h < 2; h++) {
        const __m256i l0 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h));
        const __m256i l1 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32));
        const __m256i q = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
        k->u[4 * h + 0] =
            _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(q, m3), 4));
        k->u[4 * h + 1] = _mm256_or_si256(
            _mm256_and_si256(l1, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(q, 2), m3), 4));
        k->u[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                          _mm256_and_si256(q, _mm256_set1_epi8(0x30)));
        k->u[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                          _mm256_and_si256(_mm256_srli_epi16(q, 2), _mm256_set1_epi8(0x30)));
    }
    const __m128i sc8 = _mm_loadu_si128((const __m128i *)b->scales);
    spread16(sc8, k->sc);
    k->mn = _mm256_slli_epi16(_mm256_cvtepi8_epi16(sc8), 5); /* 32 * sc */
    k->d = f16(b->d);
    k->dmin = 0.0f;
}

typedef void (*kunpack_fn)(const void *blk, ksuper *k);

/* One row against T activation rows, a super-block at a time; `folded`:
 * the minimums are offsets scaled by d (Q3_K, Q6_K). */
INLINE void tile256(kunpack_fn unpack, bool folded, size_t bbytes, int T, int64_t n, const uint8_t *w,
                    const uint8_t *a, size_t a_stride, float *y, size_t y_stride)
{
    __m256 acc[4];
    for (int t = 0; t < T; t++)
        acc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / SL_QK_K; i++) {
        ksuper k;
        unpack(w + (size_t)i * bbytes, &k);
        for (int t = 0; t < T; t++) {
            const uint8_t *row = a + (size_t)t * a_stride;
            const int8_t *xq = (const int8_t *)row + SL_QK_K * i;
            const float dx = sl_act_q8_k_d(row, n)[i];
            const __m256i bs = _mm256_loadu_si256((const __m256i *)(sl_act_q8_k_bsums(row, n) + 16 * i));
            __m256i isum = _mm256_setzero_si256();
            for (int v = 0; v < 8; v++) {
                const __m256i x = _mm256_load_si256((const __m256i *)(xq + 32 * v));
                isum = _mm256_add_epi32(isum, _mm256_madd_epi16(_mm256_maddubs_epi16(k.u[v], x), k.sc[v]));
            }
            const __m256i msum = _mm256_madd_epi16(bs, k.mn);
            if (folded) {
                isum = _mm256_sub_epi32(isum, msum);
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(k.d * dx), acc[t]);
            } else {
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(k.d * dx), acc[t]);
                acc[t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum), _mm256_set1_ps(k.dmin * dx), acc[t]);
            }
        }
    }
    for (int t = 0; t < T; t++)
        y[(size_t)t * y_stride] = hsum(acc[t]);
}

/* One row by up to 4 tokens: the unpacked super-block is reused across them. */
#define GEMM256(name, folded, btype)                                                                         \
    static void tile_##name(int T, int64_t n, const uint8_t *w, const uint8_t *a, size_t as, float *y,       \
                            size_t ys)                                                                       \
    {                                                                                                        \
        switch (T) {                                                                                         \
        case 1:                                                                                              \
            tile256(kunpack_##name, folded, sizeof(btype), 1, n, w, a, as, y, ys);                           \
            break;                                                                                           \
        case 2:                                                                                              \
            tile256(kunpack_##name, folded, sizeof(btype), 2, n, w, a, as, y, ys);                           \
            break;                                                                                           \
        case 3:                                                                                              \
            tile256(kunpack_##name, folded, sizeof(btype), 3, n, w, a, as, y, ys);                           \
            break;                                                                                           \
        case 4:                                                                                              \
            tile256(kunpack_##name, folded, sizeof(btype), 4, n, w, a, as, y, ys);                           \
            break;                                                                                           \
        default:                                                                                             \
            SL_ASSERT(!"tile shape");                                                                        \
        }                                                                                                    \
    }                                                                                                        \
    static void gemm_##name(int64_t n, const void *w, size_t w_stride, int nr, const void *a,                \
                            size_t a_stride, int nt, float *y, size_t y_stride)                              \
    {                                                                                                        \
        for (int t = 0; t < nt; t += 4) {                                                                    \
            const int T = nt - t < 4 ? nt - t : 4;                                                           \
            for (int r = 0; r < nr; r++)                                                                     \
                tile_##name(T, n, (const uint8_t *)w + (size_t)r * w_stride,                                 \
                            (const uint8_t *)a + (size_t)t * a_stride, a_stride,                             \
                            y + (size_t)t * y_stride + (size_t)r, y_stride);                                 \
        }                                                                                                    \
    }

GEMM256(q2_k, false, sl_block_q2_k)
GEMM256(q3_k, true, sl_block_q3_k)
GEMM256(q4_k, false, sl_block_q4_k)
GEMM256(q5_k, false, sl_block_q5_k)
GEMM256(q6_k, true, sl_block_q6_k)

/* ---- float vector operations ------------------------------------------------------ */

static float vdot(const float *a, const float *b, int64_t n)
{
    return dot_f32(a, b, n);
}

static void axpy(float *y, float a, const float *x, int64_t n)
{
    const __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] = fmaf(a, x[i], y[i]);
}

/* Element-wise operations treat a short tail as a zero-padded vector, so an
 * element's value never depends on where in the vector it falls (callers
 * split rows across threads and batches at arbitrary points). */
INLINE __m256 load_tail(const float *p, int64_t n)
{
    float buf[8] = {0};
    memcpy(buf, p, (size_t)n * sizeof *p);
    return _mm256_loadu_ps(buf);
}

INLINE void store_tail(float *p, __m256 v, int64_t n)
{
    float buf[8];
    _mm256_storeu_ps(buf, v);
    memcpy(p, buf, (size_t)n * sizeof *p);
}

INLINE __m256 silu_mul8(__m256 v, __m256 u)
{
    const __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), v));
    return _mm256_mul_ps(_mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), u);
}

static float attn_scores(const float *q, const float *k, int64_t n, int64_t dim, float scale, float *s)
{
    float mx = -INFINITY;
    for (int64_t j = 0; j < n; j++) {
        s[j] = dot_f32(q, k + j * dim, dim) * scale;
        mx = s[j] > mx ? s[j] : mx;
    }
    return mx;
}

/* Columns [i0, i0 + 8 nv) of the weighted sum, in nv registers while the
 * rows pass. */
static inline __attribute__((always_inline)) void wsum_pass(int nv, float *o, const float *p, float c,
                                                            const float *v, int64_t n, int64_t dim, int64_t i0)
{
    __m256 acc[8];
    for (int k = 0; k < nv; k++)
        acc[k] = _mm256_setzero_ps();
    for (int64_t j = 0; j < n; j++) {
        const __m256 a = _mm256_set1_ps(p[j] * c);
        const float *row = v + j * dim + i0;
        for (int k = 0; k < nv; k++)
            acc[k] = _mm256_fmadd_ps(a, _mm256_loadu_ps(row + 8 * k), acc[k]);
    }
    for (int k = 0; k < nv; k++)
        _mm256_storeu_ps(o + i0 + 8 * k, acc[k]);
}

/* The output stays in registers, 64 floats a pass (a constant register
 * count in each case, so that they stay registers), while the rows pass; a
 * dimension that is not a multiple of 8 ends in scalar FMAs. */
static void attn_wsum(float *o, const float *p, float c, const float *v, int64_t n, int64_t dim)
{
    const int64_t whole = dim / 8 * 8;
    for (int64_t i0 = 0; i0 < whole; i0 += 64) {
        switch ((whole - i0) / 8 < 8 ? (whole - i0) / 8 : 8) {
        case 1: wsum_pass(1, o, p, c, v, n, dim, i0); break;
        case 2: wsum_pass(2, o, p, c, v, n, dim, i0); break;
        case 3: wsum_pass(3, o, p, c, v, n, dim, i0); break;
        case 4: wsum_pass(4, o, p, c, v, n, dim, i0); break;
        case 5: wsum_pass(5, o, p, c, v, n, dim, i0); break;
        case 6: wsum_pass(6, o, p, c, v, n, dim, i0); break;
        case 7: wsum_pass(7, o, p, c, v, n, dim, i0); break;
        default: wsum_pass(8, o, p, c, v, n, dim, i0); break;
        }
    }
    for (int64_t i = whole; i < dim; i++) {
        float acc = 0.0f;
        for (int64_t j = 0; j < n; j++)
            acc = fmaf(p[j] * c, v[j * dim + i], acc);
        o[i] = acc;
    }
}

static void silu_mul(float *g, const float *u, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(g + i, silu_mul8(_mm256_loadu_ps(g + i), _mm256_loadu_ps(u + i)));
    if (i < n)
        store_tail(g + i, silu_mul8(load_tail(g + i, n - i), load_tail(u + i, n - i)), n - i);
}

static double exp_sum(float *s, float mx, int64_t n)
{
    __m256d acc = _mm256_setzero_pd();
    const __m256 vm = _mm256_set1_ps(mx);
    for (int64_t i = 0; i < n; i += 8) {
        const int64_t k = n - i < 8 ? n - i : 8;
        __m256 e = exp256(_mm256_sub_ps(k == 8 ? _mm256_loadu_ps(s + i) : load_tail(s + i, k), vm));
        if (k == 8) {
            _mm256_storeu_ps(s + i, e);
        } else {
            store_tail(s + i, e, k);
            /* lanes past the tail held exp(0 - mx): keep them out of the sum */
            e = load_tail(s + i, k);
        }
        acc = _mm256_add_pd(acc, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        acc = _mm256_add_pd(acc, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    return hsum_pd(acc);
}

static void rms_norm(const float *x, const float *w, float *y, int64_t n, float eps)
{
    __m256d acc = _mm256_setzero_pd();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        const __m256 sq = _mm256_mul_ps(v, v);
        acc = _mm256_add_pd(acc, _mm256_cvtps_pd(_mm256_castps256_ps128(sq)));
        acc = _mm256_add_pd(acc, _mm256_cvtps_pd(_mm256_extractf128_ps(sq, 1)));
    }
    double ss = hsum_pd(acc);
    for (; i < n; i++)
        ss += (double)(x[i] * x[i]);
    const float scale = 1.0f / sqrtf((float)(ss / (double)n) + eps);
    const __m256 vs = _mm256_set1_ps(scale);
    for (i = 0; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i,
                         _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vs), _mm256_loadu_ps(w + i)));
    for (; i < n; i++)
        y[i] = x[i] * scale * w[i];
}

/* ---- the table ------------------------------------------------------------------------ */

static sl_kernels g_table;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void init(void)
{
    g_table = *sl_kernels_generic();
    g_table.name = "avx2";
    g_table.dot[SL_F32] = dot_f32;
    g_table.dot[SL_F16] = dot_f16;
    g_table.dot[SL_BF16] = dot_bf16;
    g_table.quantize[SL_ACT_Q8_0] = quantize_q8_0;
    g_table.quantize[SL_ACT_Q8_K] = quantize_q8_k;
    g_table.gemm[SL_Q4_0] = gemm_q4_0;
    g_table.gemm[SL_Q4_1] = gemm_q4_1;
    g_table.gemm[SL_Q5_0] = gemm_q5_0;
    g_table.gemm[SL_Q5_1] = gemm_q5_1;
    g_table.gemm[SL_Q8_0] = gemm_q8_0;
    g_table.gemm[SL_Q2_K] = gemm_q2_k;
    g_table.gemm[SL_Q3_K] = gemm_q3_k;
    g_table.gemm[SL_Q4_K] = gemm_q4_k;
    g_table.gemm[SL_Q5_K] = gemm_q5_k;
    g_table.gemm[SL_Q6_K] = gemm_q6_k;
    g_table.vdot = vdot;
    g_table.axpy = axpy;
    g_table.attn_scores = attn_scores;
    g_table.attn_wsum = attn_wsum;
    g_table.silu_mul = silu_mul;
    g_table.exp_sum = exp_sum;
    g_table.rms_norm = rms_norm;
    sl_lowbit_register_avx2(&g_table); /* sluice's own low-bit types: compute/lowbit_avx2.c */
}

const sl_kernels *sl_kernels_avx2(void)
{
    int rc = pthread_once(&g_once, init);
    SL_ASSERT(rc == 0);
    return &g_table;
}
