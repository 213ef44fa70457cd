/* AVX-512 kernels (F, BW, DQ, VL, VNNI, VBMI; with FMA and F16C): the integer
 * tile products of every quantized type, the activation quantizers, the
 * float-type dot products and the float vector operations. Compiled with
 * those target flags (CMakeLists.txt); entered only after kernels.c probed
 * the CPU. See kernels.h for the contracts and quant.h for the layouts.
 *
 * Integer products. Weights are unpacked to unsigned bytes u (the quant with
 * its offset removed: Q4_0 stores q = w + 8, Q8_0 is biased by 128 here) and
 * multiplied with the signed activation quants by VPDPBUSD, four products
 * per 32-bit lane. The offset comes back through the activation block sums:
 * sum (u - o) x = sum u x - o * s, and -o * s is the starting value of the
 * lane accumulator, so it costs nothing per row. The k-quants multiply
 * pairs with VPMADDUBSW and apply the 16-bit sub-block scales with VPDPWSSD;
 * their minimums (and the -4 / -32 offsets of Q3_K / Q6_K) meet the
 * activation sums of each 16 (bsums) in one VPMADDWD.
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

INLINE float hsum(__m512 v)
{
    return _mm512_reduce_add_ps(v);
}

/* Lanes 0..n-1 of a 16-lane mask. */
INLINE __mmask16 mask16(int64_t n)
{
    return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
}

/* e^x for every lane, within 2 ulp over the float range; underflows to 0
 * below -103 and saturates to +inf above 88.7. Range reduction by ln 2 in
 * two parts, a degree-6 polynomial for e^r on [-ln2/2, ln2/2], and VSCALEFPS
 * for the power of two (it handles the huge and tiny ends). */
INLINE __m512 exp512(__m512 x)
{
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.0f)), _mm512_set1_ps(88.8f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

/* ---- float-type dot products ---------------------------------------------------- */

/* Two accumulators of 16 lanes over 32 elements a step, then a masked tail;
 * `load` widens 16 weights to floats. */
#define FLOAT_DOT(name, load)                                                                                \
    static float name(const void *w, const float *x, int64_t n)                                              \
    {                                                                                                        \
        __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();                                       \
        int64_t i = 0;                                                                                       \
        for (; i + 32 <= n; i += 32) {                                                                       \
            acc0 = _mm512_fmadd_ps(load(w, i, 0xFFFF), _mm512_loadu_ps(x + i), acc0);                        \
            acc1 = _mm512_fmadd_ps(load(w, i + 16, 0xFFFF), _mm512_loadu_ps(x + i + 16), acc1);              \
        }                                                                                                    \
        for (; i < n; i += 16) {                                                                             \
            const __mmask16 m = mask16(n - i);                                                               \
            acc0 = _mm512_fmadd_ps(load(w, i, m), _mm512_maskz_loadu_ps(m, x + i), acc0);                    \
        }                                                                                                    \
        return hsum(_mm512_add_ps(acc0, acc1));                                                              \
    }

INLINE __m512 load_f32(const void *w, int64_t i, __mmask16 m)
{
    return _mm512_maskz_loadu_ps(m, (const float *)w + i);
}

INLINE __m512 load_f16(const void *w, int64_t i, __mmask16 m)
{
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)w + i));
}

INLINE __m512 load_bf16(const void *w, int64_t i, __mmask16 m)
{
    const __m512i h = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, (const uint16_t *)w + i));
    return _mm512_castsi512_ps(_mm512_slli_epi32(h, 16));
}

FLOAT_DOT(dot_f32, load_f32)
FLOAT_DOT(dot_f16, load_f16)
FLOAT_DOT(dot_bf16, load_bf16)

/* ---- activation quantizers ---------------------------------------------------------
 * The same arithmetic as the reference (quant.c): d = amax / 127 and
 * id = 1 / d in float, q = x * id rounded to nearest even (VCVTPS2DQ in the
 * default rounding mode), so the bytes are identical. */

INLINE float amax512(const __m512 *v, int k)
{
    __m512 m = _mm512_abs_ps(v[0]);
    for (int i = 1; i < k; i++)
        m = _mm512_max_ps(m, _mm512_abs_ps(v[i]));
    return _mm512_reduce_max_ps(m);
}

static void quantize_q8_0(const float *x, void *dst, int64_t n)
{
    int8_t *qs = dst;
    float *d = (float *)(qs + n);
    int32_t *s = (int32_t *)(d + n / SL_QK);
    for (int64_t i = 0; i < n / SL_QK; i++) {
        const __m512 v[2] = {_mm512_loadu_ps(x + 32 * i), _mm512_loadu_ps(x + 32 * i + 16)};
        const float dd = amax512(v, 2) / 127.0f;
        const __m512 id = _mm512_set1_ps(dd != 0.0f ? 1.0f / dd : 0.0f);
        const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v[0], id));
        const __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v[1], id));
        _mm_storeu_si128((__m128i *)(qs + 32 * i), _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(qs + 32 * i + 16), _mm512_cvtepi32_epi8(q1));
        d[i] = sl_act_scale(dd);
        s[i] = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
    }
}

static void quantize_q8_k(const float *x, void *dst, int64_t n)
{
    int8_t *qs = dst;
    float *d = (float *)(qs + n);
    int16_t *bsums = (int16_t *)(d + n / SL_QK_K);
    for (int64_t i = 0; i < n / SL_QK_K; i++) {
        __m512 v[16];
        for (int k = 0; k < 16; k++)
            v[k] = _mm512_loadu_ps(x + SL_QK_K * i + 16 * k);
        const float dd = amax512(v, 16) / 127.0f;
        const __m512 id = _mm512_set1_ps(dd != 0.0f ? 1.0f / dd : 0.0f);
        for (int k = 0; k < 16; k++) {
            const __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(v[k], id));
            _mm_storeu_si128((__m128i *)(qs + SL_QK_K * i + 16 * k), _mm512_cvtepi32_epi8(q));
            bsums[16 * i + k] = (int16_t)_mm512_reduce_add_epi32(q);
        }
        d[i] = dd;
    }
}

/* ---- legacy types: tiles over pairs of 32-blocks ----------------------------------
 * A pair of blocks fills one 512-bit vector: bytes 0..31 block 2p, 32..63
 * block 2p + 1, and each float vector holds block 2p's factor in lanes 0..7
 * and block 2p+1's in lanes 8..15. A row with an odd number of blocks ends
 * with a half pair whose upper half is masked to zero. */

/* One pair of weight blocks, unpacked. */
typedef struct wpair {
    __m512i u; /* 64 unsigned quants */
    __m512 d;  /* scales */
    __m512 m;  /* offsets (Q4_1, Q5_1) */
} wpair;

/* Two f16 fields as a float vector: lanes 0..7 from a, 8..15 from b. */
INLINE __m512 f16_pair(uint16_t a, uint16_t b)
{
    return _mm512_cvtph_ps(_mm256_mask_set1_epi16(_mm256_set1_epi16((short)a), 0xFF00, (short)b));
}

/* How a pair of blocks is read: both blocks, or (a half pair, the last of a
 * row with an odd block count) only the first, the rest being zero. */
enum { PAIR_FULL, PAIR_HALF };

/* The 32 nibbles of each of two blocks' 16 quant bytes (block 0's at qa,
 * block 1's at qb) as bytes in element order: block 0's low nibbles
 * (elements 0..15) and high nibbles (16..31), then block 1's. Two 16-byte
 * loads: streaming from memory, wider unaligned loads that straddle cache
 * lines (and masked ones) are markedly slower on the machines measured. */
INLINE __m512i pair_nibbles(const uint8_t *qa, const uint8_t *qb, int mode)
{
    const __m128i a = _mm_loadu_si128((const __m128i *)qa);
    const __m256i y = mode == PAIR_HALF ? _mm256_zextsi128_si256(a)
                                        : _mm256_inserti128_si256(_mm256_castsi128_si256(a),
                                                                  _mm_loadu_si128((const __m128i *)qb), 1);
    /* [a, a, b, b] in 128-bit quarters, then the second and fourth >> 4 */
    const __m512i idx = _mm512_set_epi32(
        0x1f1e1d1c, 0x1b1a1918, 0x17161514, 0x13121110, 0x1f1e1d1c, 0x1b1a1918, 0x17161514, 0x13121110,
        0x0f0e0d0c, 0x0b0a0908, 0x07060504, 0x03020100, 0x0f0e0d0c, 0x0b0a0908, 0x07060504, 0x03020100);
    const __m512i v = _mm512_permutexvar_epi8(idx, _mm512_castsi256_si512(y));
    const __m512i shift = _mm512_set_epi64(0x0004000400040004ll, 0x0004000400040004ll, 0, 0,
                                           0x0004000400040004ll, 0x0004000400040004ll, 0, 0);
    return _mm512_and_si512(_mm512_srlv_epi16(v, shift), _mm512_set1_epi8(15));
}

/* Fifth bits: bit j of a block's qh word is element j's. */
INLINE __m512i add_fifth_bits(__m512i u, const uint8_t *qha, const uint8_t *qhb, bool half)
{
    uint32_t ha, hb = 0;
    memcpy(&ha, qha, 4);
    if (!half)
        memcpy(&hb, qhb, 4);
    const __mmask64 k = _cvtu64_mask64((uint64_t)ha | (uint64_t)hb << 32);
    return _mm512_mask_add_epi8(u, k, u, _mm512_set1_epi8(16));
}

INLINE wpair unpack_q4_1(const void *row, int64_t p, int mode)
{
    const sl_block_q4_1 *b = (const sl_block_q4_1 *)row + 2 * p;
    const bool half = mode == PAIR_HALF;
    wpair w;
    w.u = pair_nibbles(b[0].qs, b[half ? 0 : 1].qs, mode);
    w.d = f16_pair(b[0].d, half ? 0 : b[1].d);
    w.m = f16_pair(b[0].m, half ? 0 : b[1].m);
    return w;
}

INLINE wpair unpack_q5_0(const void *row, int64_t p, int mode)
{
    const sl_block_q5_0 *b = (const sl_block_q5_0 *)row + 2 * p;
    const bool half = mode == PAIR_HALF;
    wpair w;
    w.u = pair_nibbles(b[0].qs, b[half ? 0 : 1].qs, mode);
    w.u = add_fifth_bits(w.u, b[0].qh, b[half ? 0 : 1].qh, half);
    w.d = f16_pair(b[0].d, half ? 0 : b[1].d);
    return w;
}

INLINE wpair unpack_q5_1(const void *row, int64_t p, int mode)
{
    const sl_block_q5_1 *b = (const sl_block_q5_1 *)row + 2 * p;
    const bool half = mode == PAIR_HALF;
    wpair w;
    w.u = pair_nibbles(b[0].qs, b[half ? 0 : 1].qs, mode);
    w.u = add_fifth_bits(w.u, b[0].qh, b[half ? 0 : 1].qh, half);
    w.d = f16_pair(b[0].d, half ? 0 : b[1].d);
    w.m = f16_pair(b[0].m, half ? 0 : b[1].m);
    return w;
}

INLINE wpair unpack_q8_0(const void *row, int64_t p, int mode)
{
    const bool half = mode == PAIR_HALF;
    const sl_block_q8_0 *b = (const sl_block_q8_0 *)row + 2 * p;
    wpair w;
    const __m256i lo = _mm256_loadu_si256((const __m256i *)b[0].qs);
    const __m256i hi = half ? _mm256_setzero_si256() : _mm256_loadu_si256((const __m256i *)b[1].qs);
    /* Signed -> unsigned by adding 128 (the offset the sums take back). */
    w.u = _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1), _mm512_set1_epi8(-128));
    if (half)
        w.u = _mm512_maskz_mov_epi8(0xFFFFFFFFull, w.u);
    w.d = f16_pair(b[0].d, half ? 0 : b[1].d);
    return w;
}

/* One pair of activation blocks. */
typedef struct xpair {
    __m512i init; /* -offset * s in lane 0 of each block's 8 lanes */
    __m512 d;     /* scales */
    __m512 ds;    /* d * s in lane 0 of each half (for the offset types) */
} xpair;

/* `shift`: log2 of the weight offset (3, 4, 7), or -1 for none; `with_min`:
 * the Q4_1 / Q5_1 offset term. */
INLINE xpair act_pair(const float *xd, const int32_t *xs, int64_t p, bool half, int shift, bool with_min)
{
    const __m512i idx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    const __mmask16 both = half ? 0x00FF : 0xFFFF, firsts = half ? 0x0001 : 0x0101;
    xpair a;
    a.d = _mm512_maskz_permutexvar_ps(
        both, idx, _mm512_castps128_ps512(_mm_loadl_pi(_mm_setzero_ps(), (const __m64 *)(xd + 2 * p))));
    const __m512i s = _mm512_maskz_permutexvar_epi32(
        firsts, idx, _mm512_castsi128_si512(_mm_loadl_epi64((const __m128i *)(xs + 2 * p))));
    a.init = shift >= 0
                 ? _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_sll_epi32(s, _mm_cvtsi32_si128(shift)))
                 : _mm512_setzero_si512();
    if (with_min)
        a.ds = _mm512_mul_ps(a.d, _mm512_cvtepi32_ps(s));
    return a;
}

typedef wpair (*unpack_pair_fn)(const void *row, int64_t p, int mode);

/* One pair of blocks for a tile of R rows by T tokens: the unpacked rows
 * are shared by the tokens, the token vectors by the rows, and every output
 * has one accumulator (two per output, to shorten the add chain, measured
 * no faster for a decode step and would not fit a 4 x 4 tile). */
INLINE void pair_step(unpack_pair_fn unpack, int shift, bool with_min, int R, int T, const uint8_t *w,
                      size_t w_stride, const uint8_t *a, size_t a_stride, int64_t n, int64_t p, int mode,
                      __m512 acc[4][4])
{
    const bool half = mode == PAIR_HALF;
    wpair wp[4];
    for (int r = 0; r < R; r++)
        wp[r] = unpack(w + (size_t)r * w_stride, p, mode);
    for (int t = 0; t < T; t++) {
        const uint8_t *row = a + (size_t)t * a_stride;
        const xpair xp = act_pair(sl_act_q8_0_d(row, n), sl_act_q8_0_s(row, n), p, half, shift, with_min);
        const __m512i x = half ? _mm512_maskz_loadu_epi8(0xFFFFFFFFull, row + 64 * p)
                               : _mm512_load_si512((const void *)(row + 64 * p));
        for (int r = 0; r < R; r++) {
            const __m512i isum = _mm512_dpbusd_epi32(xp.init, wp[r].u, x);
            acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(wp[r].d, xp.d), acc[r][t]);
            if (with_min)
                acc[r][t] = _mm512_fmadd_ps(wp[r].m, xp.ds, acc[r][t]);
        }
    }
}

/* An R x T tile over the whole row (the last pair of a row with an odd
 * block count is a half pair), summed into y: rows w_stride bytes apart in
 * w and y_row floats apart in y, tokens a_stride bytes apart in a and
 * y_stride floats in y. The token vectors are built as it goes, a decode
 * step's too (see quad_step). */
INLINE void tile32(unpack_pair_fn unpack, int shift, bool with_min, int R, int T, int64_t n, const uint8_t *w,
                   size_t w_stride, const uint8_t *a, size_t a_stride, float *y, size_t y_row,
                   size_t y_stride)
{
    __m512 acc[4][4];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++)
            acc[r][t] = _mm512_setzero_ps();
    const int64_t nb = n / SL_QK;
    for (int64_t p = 0; p < nb / 2; p++)
        pair_step(unpack, shift, with_min, R, T, w, w_stride, a, a_stride, n, p, PAIR_FULL, acc);
    if (nb & 1)
        pair_step(unpack, shift, with_min, R, T, w, w_stride, a, a_stride, n, nb / 2, PAIR_HALF, acc);
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++)
            y[(size_t)t * y_stride + (size_t)r * y_row] = hsum(acc[r][t]);
}

/* A decode step: one token against nr rows, read as two halves side by
 * side, as gemm_q4_0_quads does. */
INLINE void decode32(unpack_pair_fn unpack, int shift, bool with_min, int64_t n, const uint8_t *w,
                     size_t w_stride, int nr, const uint8_t *a, float *y)
{
    const int h = nr / 2;
    for (int r = 0; r < h; r++)
        tile32(unpack, shift, with_min, 2, 1, n, w + (size_t)r * w_stride, (size_t)h * w_stride, a, 0, y + r,
               (size_t)h, 0);
    if (nr % 2)
        tile32(unpack, shift, with_min, 1, 1, n, w + (size_t)(nr - 1) * w_stride, w_stride, a, 0, y + nr - 1,
               1, 0);
}

/* Tile shapes: 4 rows by 4 tokens (16 accumulators, 4 unpacked rows and the
 * token's vectors: 28 of the 32 registers), smaller at the edges; a single
 * token goes through decode32, since neighbouring rows side by side stream
 * worse from memory. */
#define TILE32_CASE(R, T, unpack, shift, with_min)                                                           \
    case (R)*8 + (T):                                                                                        \
        tile32(unpack, shift, with_min, R, T, n, w, ws, a, as, y, 1, ys);                                    \
        break;
#define TILE32_ROW(R, unpack, shift, with_min)                                                               \
    TILE32_CASE(R, 1, unpack, shift, with_min)                                                               \
    TILE32_CASE(R, 2, unpack, shift, with_min)                                                               \
    TILE32_CASE(R, 3, unpack, shift, with_min)                                                               \
    TILE32_CASE(R, 4, unpack, shift, with_min)
#define GEMM32(name, unpack, shift, with_min)                                                                \
    static void tile_##name(int R, int T, int64_t n, const uint8_t *w, size_t ws, const uint8_t *a,          \
                            size_t as, float *y, size_t ys)                                                  \
    {                                                                                                        \
        switch (R * 8 + T) {                                                                                 \
            TILE32_ROW(1, unpack, shift, with_min)                                                           \
            TILE32_ROW(2, unpack, shift, with_min)                                                           \
            TILE32_ROW(3, unpack, shift, with_min)                                                           \
            TILE32_ROW(4, unpack, shift, with_min)                                                           \
        default:                                                                                             \
            SL_ASSERT(!"tile shape");                                                                        \
        }                                                                                                    \
    }                                                                                                        \
    static void gemm_##name(int64_t n, const void *w, size_t w_stride, int nr, const void *a,                \
                            size_t a_stride, int nt, float *y, size_t y_stride)                              \
    {                                                                                                        \
        if (nt == 1) {                                                                                       \
            decode32(unpack, shift, with_min, n, w, w_stride, nr, a, y);                                     \
            return;                                                                                          \
        }                                                                                                    \
        const int rstep = 4;                                                                                 \
        for (int t = 0; t < nt; t += 4) {                                                                    \
            const int T = nt - t < 4 ? nt - t : 4;                                                           \
            for (int r = 0; r < nr; r += rstep) {                                                            \
                const int R = nr - r < rstep ? nr - r : rstep;                                               \
                tile_##name(R, T, n, (const uint8_t *)w + (size_t)r * w_stride, w_stride,                    \
                            (const uint8_t *)a + (size_t)t * a_stride, a_stride,                             \
                            y + (size_t)t * y_stride + (size_t)r, y_stride);                                 \
            }                                                                                                \
        }                                                                                                    \
    }

GEMM32(q4_1, unpack_q4_1, -1, true)
GEMM32(q5_0, unpack_q5_0, 4, false)
GEMM32(q5_1, unpack_q5_1, -1, true)
GEMM32(q8_0, unpack_q8_0, 7, false)

/* ---- Q4_0 in groups of four blocks (activations SL_ACT_Q8_0P) --------------------
 * Four Q4_0 blocks are 72 bytes: their 64 quant bytes come out of three
 * 32-byte loads with one two-source byte permute, their low nibbles then
 * meet the activations' first half (quant.h: SL_ACT_Q8_0P) and their high
 * nibbles the second, and the four f16 scales come out of the first two
 * loads with one word permute. Each block owns four consecutive 32-bit
 * lanes, so a group costs two VPDPBUSD and one conversion, one scale product
 * and one FMA for 128 weights, about half the work per weight of the pair
 * scheme above: enough for two cores to keep up with memory on a decode
 * step. (32-byte loads: 64-byte loads that straddle cache lines stream from
 * memory at half the speed on the machines measured — bench/RESULTS.md.)
 * A last group of r < 4 blocks is read with masked loads and its missing
 * lanes are zero. Every output, whatever the tile, is the same sequence:
 * per group acc += float(isum) * (d_w * d_x), then the lanes summed. */

typedef struct wquad {
    __m512i lo, hi; /* unsigned quants 0..15 */
    __m512 d;       /* lane 4k + j: block k's scale */
} wquad;

typedef struct xquad {
    __m512i init; /* lane 4k: -8 * (block k's quant sum), else 0 */
    __m512 d;     /* lane 4k + j: block k's activation scale */
} xquad;

/* Byte indices into the 72 bytes of four blocks, loaded as bytes 0..63 (the
 * permute's first source) and bytes 40..71 (the second): byte b is index b
 * below 64, else 64 + (b - 40). */
static const uint8_t k_quad_qs_idx[64] __attribute__((aligned(64))) = {
#define QS_IDX(k, i) ((18 * (k) + 2 + (i)) < 64 ? (18 * (k) + 2 + (i)) : (18 * (k) + 2 + (i)) + 24)
#define QS_ROW(k)                                                                                            \
    QS_IDX(k, 0), QS_IDX(k, 1), QS_IDX(k, 2), QS_IDX(k, 3), QS_IDX(k, 4), QS_IDX(k, 5), QS_IDX(k, 6),        \
        QS_IDX(k, 7), QS_IDX(k, 8), QS_IDX(k, 9), QS_IDX(k, 10), QS_IDX(k, 11), QS_IDX(k, 12),               \
        QS_IDX(k, 13), QS_IDX(k, 14), QS_IDX(k, 15)
    QS_ROW(0), QS_ROW(1), QS_ROW(2), QS_ROW(3)
#undef QS_ROW
#undef QS_IDX
};

INLINE wquad unpack_quad_q4_0(const uint8_t *g, int r)
{
    const __m512i idx = _mm512_load_si512((const void *)k_quad_qs_idx);
    __m512i a, b;
    __mmask64 keep;
    if (r == 4) {
        a = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)g)),
                               _mm256_loadu_si256((const __m256i *)(g + 32)), 1);
        b = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(g + 40)));
        keep = ~(__mmask64)0;
    } else {
        /* 18r <= 54 bytes, all in the first source */
        const uint64_t bytes = ((uint64_t)1 << (18 * r)) - 1;
        a = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_maskz_loadu_epi8((__mmask32)bytes, g)),
                               _mm256_maskz_loadu_epi8((__mmask32)(bytes >> 32), g + 32), 1);
        b = _mm512_setzero_si512();
        keep = ((__mmask64)1 << (16 * r)) - 1;
    }
    const __m512i q = _mm512_maskz_permutex2var_epi8(keep, a, idx, b);
    const __m512i m4 = _mm512_set1_epi8(15);
    wquad w;
    w.lo = _mm512_and_si512(q, m4);
    w.hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
    /* scale words 0, 9, 18, 27, each four times */
    const __m512i widx = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 27, 27, 27, 27, 18, 18,
                                          18, 18, 9, 9, 9, 9, 0, 0, 0, 0);
    __m256i dw = _mm512_castsi512_si256(_mm512_permutexvar_epi16(widx, a));
    if (r != 4)
        dw = _mm256_maskz_mov_epi16((__mmask16)((1u << (4 * r)) - 1), dw);
    w.d = _mm512_cvtph_ps(dw);
    return w;
}

/* The activation scales and offset term of group g (r blocks) of a row. */
INLINE xquad act_quad(const float *xd, const int32_t *xs, int64_t g, int r)
{
    const __m512i idx = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    const __mmask16 lanes = (__mmask16)((1u << (4 * r)) - 1), firsts = lanes & 0x1111;
    const __mmask16 in = (__mmask16)((1u << r) - 1);
    xquad x;
    x.d = _mm512_maskz_permutexvar_ps(lanes, idx, _mm512_maskz_loadu_ps(in, xd + 4 * g));
    const __m512i sum = _mm512_maskz_permutexvar_epi32(firsts, idx, _mm512_maskz_loadu_epi32(in, xs + 4 * g));
    x.init = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(sum, 3));
    return x;
}

/* The activation quants of group g (r blocks): low halves, high halves. */
INLINE void act_quants(const uint8_t *row, int64_t g, int r, __m512i *lo, __m512i *hi)
{
    const uint8_t *q = row + 128 * g;
    if (r == 4) {
        *lo = _mm512_load_si512((const void *)q);
        *hi = _mm512_load_si512((const void *)(q + 64));
    } else {
        const __mmask64 m = ((__mmask64)1 << (16 * r)) - 1;
        *lo = _mm512_maskz_loadu_epi8(m, q);
        *hi = _mm512_maskz_loadu_epi8(m, q + 16 * r);
    }
}

INLINE __m512 quad_fma(const wquad *w, const xquad *x, __m512i xlo, __m512i xhi, __m512 acc)
{
    __m512i isum = _mm512_dpbusd_epi32(x->init, w->lo, xlo);
    isum = _mm512_dpbusd_epi32(isum, w->hi, xhi);
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(w->d, x->d), acc);
}

/* One group step of an R x T tile. The activation vectors are built here
 * for every tile, a decode step's too: built once per token and kept, they
 * are 128 bytes a group that a decode step would read beside each row's 72
 * bytes of weights, and with 11008-column rows that crowded the weights out
 * of the first-level cache (4096 x 11008 from memory at 77-82% of the read
 * rate, 94-97% built as it goes; bench/RESULTS.md). */
INLINE void quad_step(int R, int T, const uint8_t *w, size_t w_stride, const uint8_t *a, size_t a_stride,
                      int64_t n, int64_t g, int r, __m512 acc[4][4])
{
    wquad wq[4];
    for (int i = 0; i < R; i++)
        wq[i] = unpack_quad_q4_0(w + (size_t)i * w_stride + 72 * (size_t)g, r);
    for (int t = 0; t < T; t++) {
        const uint8_t *row = a + (size_t)t * a_stride;
        const xquad xq = act_quad(sl_act_q8_0_d(row, n), sl_act_q8_0_s(row, n), g, r);
        __m512i xlo, xhi;
        act_quants(row, g, r, &xlo, &xhi);
        for (int i = 0; i < R; i++)
            acc[i][t] = quad_fma(&wq[i], &xq, xlo, xhi, acc[i][t]);
    }
}

/* Rows i of an R x T tile are w_stride bytes apart in w and y_row floats
 * apart in y, tokens a_stride bytes apart in a and y_stride floats in y. */
INLINE void tile_quads(int R, int T, int64_t n, const uint8_t *w, size_t w_stride, const uint8_t *a,
                       size_t a_stride, float *y, size_t y_row, size_t y_stride)
{
    __m512 acc[4][4];
    for (int i = 0; i < R; i++)
        for (int t = 0; t < T; t++)
            acc[i][t] = _mm512_setzero_ps();
    const int64_t nb = n / SL_QK;
    for (int64_t g = 0; g < nb / 4; g++)
        quad_step(R, T, w, w_stride, a, a_stride, n, g, 4, acc);
    if (nb % 4)
        quad_step(R, T, w, w_stride, a, a_stride, n, nb / 4, (int)(nb % 4), acc);
    for (int i = 0; i < R; i++)
        for (int t = 0; t < T; t++)
            y[(size_t)t * y_stride + (size_t)i * y_row] = hsum(acc[i][t]);
}

#define QUAD_CASE(R, T)                                                                                      \
    case (R)*8 + (T):                                                                                        \
        tile_quads(R, T, n, w, ws, a, as, y, 1, ys);                                                         \
        break;
#define QUAD_ROW(R) QUAD_CASE(R, 1) QUAD_CASE(R, 2) QUAD_CASE(R, 3) QUAD_CASE(R, 4)

static void tile_q4_0_quads(int R, int T, int64_t n, const uint8_t *w, size_t ws, const uint8_t *a, size_t as,
                            float *y, size_t ys)
{
    switch (R * 8 + T) {
        QUAD_ROW(1)
        QUAD_ROW(2)
        QUAD_ROW(3)
        QUAD_ROW(4)
    default:
        SL_ASSERT(!"tile shape");
    }
}

static void gemm_q4_0_quads(int64_t n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride,
                            int nt, float *y, size_t y_stride)
{
    if (nt == 1) {
        /* A decode step reads its rows in two halves side by side, rows r
         * and r + h: two long runs of memory, each of which the hardware
         * prefetchers follow, sharing the activation loads. Each row's
         * sequence is a 1 x 1 tile's. (Neighbouring rows side by side run
         * at half speed from memory: the prefetchers lose both runs at
         * every row. A 4096 x 4096 product in matmul.c's claims streamed
         * at 82-91% of the plain read rate one row at a time, at 98-100%
         * in two halves: bench/RESULTS.md.) */
        const int h = nr / 2;
        for (int r = 0; r < h; r++)
            tile_quads(2, 1, n, (const uint8_t *)w + (size_t)r * w_stride, (size_t)h * w_stride, a, 0, y + r,
                       (size_t)h, 0);
        if (nr % 2)
            tile_quads(1, 1, n, (const uint8_t *)w + (size_t)(nr - 1) * w_stride, w_stride, a, 0, y + nr - 1,
                       1, 0);
        return;
    }
    for (int t = 0; t < nt; t += 4) {
        const int T = nt - t < 4 ? nt - t : 4;
        for (int r = 0; r < nr; r += 4) {
            const int R = nr - r < 4 ? nr - r : 4;
            tile_q4_0_quads(R, T, n, (const uint8_t *)w + (size_t)r * w_stride, w_stride,
                            (const uint8_t *)a + (size_t)t * a_stride, a_stride, y + (size_t)t * y_stride + r,
                            y_stride);
        }
    }
}

/* SL_ACT_Q8_0P: the Q8_0 row, then each whole group's quants reordered with
 * two two-source byte permutes (a last partial group by the reference). */
static void quantize_q8_0p(const float *x, void *dst, int64_t n)
{
    quantize_q8_0(x, dst, n);
    static const uint8_t lo_idx[64] __attribute__((aligned(64))) = {
        0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 32, 33, 34, 35, 36, 37,
        38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75,
        76, 77, 78, 79, 96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111};
    const __m512i il = _mm512_load_si512((const void *)lo_idx);
    const __m512i ih = _mm512_add_epi8(il, _mm512_set1_epi8(16));
    uint8_t *q = dst;
    const int64_t whole = n / (4 * SL_QK) * (4 * SL_QK);
    for (int64_t i = 0; i < whole; i += 4 * SL_QK) {
        const __m512i a = _mm512_loadu_si512((const void *)(q + i)), b = _mm512_loadu_si512((const void *)(q + i + 64));
        _mm512_storeu_si512((void *)(q + i), _mm512_permutex2var_epi8(a, il, b));
        _mm512_storeu_si512((void *)(q + i + 64), _mm512_permutex2var_epi8(a, ih, b));
    }
    if (whole < n) {
        /* the reference reorders group by group: hand it the tail as a row */
        int8_t tail[4 * SL_QK];
        memcpy(tail, q + whole, (size_t)(n - whole));
        sl_quant_act_q8_0_to_p(tail, n - whole);
        memcpy(q + whole, tail, (size_t)(n - whole));
    }
}

/* ---- k-quants: one super-block of 256 at a time --------------------------------
 * Unpacked, a super-block is four vectors of unsigned quants in element
 * order (u[k] = elements 64k .. 64k+63), four vectors of 16-bit scales (one
 * per pair of elements, matching VPMADDUBSW's output), the 16 per-16
 * "minimums" as 16-bit lanes, and two float factors:
 *   value = d * sc * u - dmin * mn           (Q2_K, Q4_K, Q5_K)
 *   value = d * sc * (u - o) = d * (sc * u - (o * sc))   (Q3_K o = 4, Q6_K o = 32;
 *                                             mn = o * sc, folded into the integer sum). */
typedef struct ksuper {
    __m512i u[4];
    __m512i sc[4];
    __m256i mn;
    float d, dmin;
} ksuper;

/* Scales of 16-element sub-blocks (16 lanes of 16 bits) spread so that
 * vector k's lane j (elements 64k + 2j, +1) holds sub-block 4k + j / 8. */
INLINE void spread16(__m256i s16, __m512i sc[4])
{
    const __m512i z = _mm512_castsi256_si512(s16);
    for (int k = 0; k < 4; k++) {
        const __m512i idx = _mm512_add_epi16(
            _mm512_set1_epi16((short)(4 * k)),
            _mm512_srli_epi16(_mm512_set_epi16(31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16,
                                               15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                              3));
        sc[k] = _mm512_permutexvar_epi16(idx, z);
    }
}

/* Scales of 32-element sub-blocks (lanes 0..7 of s16): vector k's lane j
 * holds sub-block 2k + j / 16. */
INLINE void spread32(__m256i s16, __m512i sc[4])
{
    const __m512i z = _mm512_castsi256_si512(s16);
    for (int k = 0; k < 4; k++) {
        const __m512i idx = _mm512_add_epi16(
            _mm512_set1_epi16((short)(2 * k)),
            _mm512_srli_epi16(_mm512_set_epi16(31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16,
                                               15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                              4));
        sc[k] = _mm512_permutexvar_epi16(idx, z);
    }
}

/* Two 256-bit halves as one vector. */
INLINE __m512i join(__m256i lo, __m256i hi)
{
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

INLINE void kunpack_q2_k(const void *blk, ksuper *k)
{
    const sl_block_q2_k *b = blk;
    const __m256i m3 = _mm256_set1_epi8(3);
    for (int h = 0; h < 2; h++) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * h));
        k->u[2 * h] = join(_mm256_and_si256(q, m3), _mm256_and_si256(_mm256_srli_epi16(q, 2), m3));
        k->u[2 * h + 1] = join(_mm256_and_si256(_mm256_srli_epi16(q, 4), m3),
                               _mm256_and_si256(_mm256_srli_epi16(q, 6), m3));
    }
    const __m128i s = _mm_loadu_si128((const __m128i *)b->scales);
    spread16(_mm256_cvtepu8_epi16(_mm_and_si128(s, _mm_set1_epi8(15))), k->sc);
    k->mn = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(s, 4), _mm_set1_epi8(15)));
    k->d = sl_f16_to_f32(b->d);
    k->dmin = sl_f16_to_f32(b->dmin);
}

INLINE void kunpack_q3_k(const void *blk, ksuper *k)
{
    const sl_block_q3_k *b = blk;
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m256i hm = _mm256_loadu_si256((const __m256i *)b->hmask);
    const __m512i hm2 = join(hm, hm);
    for (int h = 0; h < 2; h++) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * h));
        for (int s = 0; s < 4; s += 2) {
            /* elements 128h + 32s + l (lower half) and 128h + 32(s+1) + l (upper) */
            __m512i u = join(_mm256_and_si256(_mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * s)), m3),
                             _mm256_and_si256(_mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * s + 2)), m3));
            const int bit = 4 * h + s;
            const __m512i sel =
                join(_mm256_set1_epi8((char)(1 << bit)), _mm256_set1_epi8((char)(1 << (bit + 1))));
            u = _mm512_mask_add_epi8(u, _mm512_test_epi8_mask(hm2, sel), u, _mm512_set1_epi8(4));
            k->u[2 * h + s / 2] = u;
        }
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
    const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
    spread16(sc16, k->sc);
    k->mn = _mm256_slli_epi16(sc16, 2); /* 4 * sc */
    k->d = sl_f16_to_f32(b->d);
    k->dmin = 0.0f;
}

/* The 8 scales and 8 mins of Q4_K / Q5_K as 16-bit lanes (scales 0..7, then
 * mins 0..7), from the 12 packed bytes (quant.h). */
INLINE __m256i k4_scales_mins(const uint8_t *s12)
{
    uint32_t a, b, c;
    memcpy(&a, s12, 4);
    memcpy(&b, s12 + 4, 4);
    memcpy(&c, s12 + 8, 4);
    const uint32_t sc_lo = a & 0x3f3f3f3fu, m_lo = b & 0x3f3f3f3fu;
    const uint32_t sc_hi = (c & 0x0f0f0f0fu) | ((a >> 6) & 0x03030303u) << 4;
    const uint32_t m_hi = ((c >> 4) & 0x0f0f0f0fu) | ((b >> 6) & 0x03030303u) << 4;
    return _mm256_cvtepu8_epi16(_mm_set_epi32((int)m_hi, (int)m_lo, (int)sc_hi, (int)sc_lo));
}

/* Mins of 32-element sub-blocks (lanes 8..15 of v) once per 16 elements. */
INLINE __m256i mins_per16(__m256i v)
{
    const __m256i idx = _mm256_set_epi16(15, 15, 14, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8, 8);
    return _mm256_permutexvar_epi16(idx, v);
}

INLINE void kunpack_q4_k(const void *blk, ksuper *k)
{
    const sl_block_q4_k *b = blk;
    const __m256i m4 = _mm256_set1_epi8(15);
    for (int g = 0; g < 4; g++) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * g));
        k->u[g] = join(_mm256_and_si256(q, m4), _mm256_and_si256(_mm256_srli_epi16(q, 4), m4));
    }
    const __m256i v = k4_scales_mins(b->scales);
    spread32(v, k->sc);
    k->mn = mins_per16(v);
    k->d = sl_f16_to_f32(b->d);
    k->dmin = sl_f16_to_f32(b->dmin);
}

INLINE void kunpack_q5_k(const void *blk, ksuper *k)
{
    const sl_block_q5_k *b = blk;
    const __m256i m4 = _mm256_set1_epi8(15);
    const __m256i qh = _mm256_loadu_si256((const __m256i *)b->qh);
    const __m512i qh2 = join(qh, qh);
    for (int g = 0; g < 4; g++) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * g));
        __m512i u = join(_mm256_and_si256(q, m4), _mm256_and_si256(_mm256_srli_epi16(q, 4), m4));
        const __m512i sel =
            join(_mm256_set1_epi8((char)(1 << (2 * g))), _mm256_set1_epi8((char)(1 << (2 * g + 1))));
        k->u[g] = _mm512_mask_add_epi8(u, _mm512_test_epi8_mask(qh2, sel), u, _mm512_set1_epi8(16));
    }
    const __m256i v = k4_scales_mins(b->scales);
    spread32(v, k->sc);
    k->mn = mins_per16(v);
    k->d = sl_f16_to_f32(b->d);
    k->dmin = sl_f16_to_f32(b->dmin);
}

INLINE void kunpack_q6_k(const void *blk, ksuper *k)
{
    const sl_block_q6_k *b = blk;
    const __m512i m4 = _mm512_set1_epi8(15), m3 = _mm512_set1_epi8(3);
    for (int h = 0; h < 2; h++) {
        /* bytes 0..31: ql[l], 32..63: ql[l + 32]; high bits for the same
         * element pairs come from qh >> 0 and qh >> 2 (then >> 4, >> 6). */
        const __m512i l = _mm512_loadu_si512((const void *)(b->ql + 64 * h));
        const __m256i q = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
        const __m512i hb = join(q, _mm256_srli_epi16(q, 2));
        k->u[2 * h] =
            _mm512_or_si512(_mm512_and_si512(l, m4), _mm512_slli_epi16(_mm512_and_si512(hb, m3), 4));
        k->u[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m4),
                                          _mm512_and_si512(hb, _mm512_set1_epi8(0x30)));
    }
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales));
    spread16(sc16, k->sc);
    k->mn = _mm256_slli_epi16(sc16, 5); /* 32 * sc */
    k->d = sl_f16_to_f32(b->d);
    k->dmin = 0.0f;
}

typedef void (*kunpack_fn)(const void *blk, ksuper *k);

/* R rows (one super-block at a time, R * T <= 8) against T activation rows:
 * rows w_stride bytes apart in w and y_row floats apart in y, tokens
 * a_stride bytes apart in a and y_stride floats in y. `folded`: the
 * minimums are offsets scaled by d (Q3_K, Q6_K). */
INLINE void tile256(kunpack_fn unpack, bool folded, size_t bbytes, int R, int T, int64_t n, const uint8_t *w,
                    size_t w_stride, const uint8_t *a, size_t a_stride, float *y, size_t y_row,
                    size_t y_stride)
{
    __m512 acc[8];
    for (int o = 0; o < R * T; o++)
        acc[o] = _mm512_setzero_ps();
    for (int64_t i = 0; i < n / SL_QK_K; i++) {
        for (int r = 0; r < R; r++) {
            ksuper k;
            unpack(w + (size_t)r * w_stride + (size_t)i * bbytes, &k);
            for (int t = 0; t < T; t++) {
                const uint8_t *row = a + (size_t)t * a_stride;
                const int8_t *xq = (const int8_t *)row + SL_QK_K * i;
                const float dx = sl_act_q8_k_d(row, n)[i];
                const __m256i bs = _mm256_loadu_si256((const __m256i *)(sl_act_q8_k_bsums(row, n) + 16 * i));
                __m512i isum = _mm512_setzero_si512();
                for (int v = 0; v < 4; v++) {
                    const __m512i x = _mm512_load_si512((const void *)(xq + 64 * v));
                    isum = _mm512_dpwssd_epi32(isum, _mm512_maddubs_epi16(k.u[v], x), k.sc[v]);
                }
                const __m512i msum = _mm512_zextsi256_si512(_mm256_madd_epi16(bs, k.mn));
                __m512 *ac = &acc[r * T + t];
                if (folded) {
                    isum = _mm512_sub_epi32(isum, msum);
                    *ac = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(k.d * dx), *ac);
                } else {
                    *ac = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(k.d * dx), *ac);
                    *ac = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(msum), _mm512_set1_ps(k.dmin * dx), *ac);
                }
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++)
            y[(size_t)r * y_row + (size_t)t * y_stride] = hsum(acc[r * T + t]);
}

/* Tiles of one row by up to 8 tokens: the unpacked super-block (13
 * registers) is reused across the tokens. */
#define GEMM256(name, folded, btype)                                                                         \
    static void tile_##name(int T, int64_t n, const uint8_t *w, const uint8_t *a, size_t as, float *y,       \
                            size_t ys)                                                                       \
    {                                                                                                        \
        switch (T) {                                                                                         \
        case 1:                                                                                              \
            tile256(kunpack_##name, folded, sizeof(btype), 1, 1, n, w, 0, a, as, y, 1, ys);                  \
            break;                                                                                           \
        case 2:                                                                                              \
            tile256(kunpack_##name, folded, sizeof(btype), 1, 2, n, w, 0, a, as, y, 1, ys);                  \
            break;                                                                                           \
        case 3:                                                                                              \
            tile256(kunpack_##name, folded, sizeof(btype), 1, 3, n, w, 0, a, as, y, 1, ys);                  \
            break;                                                                                           \
        case 4:                                                                                              \
            tile256(kunpack_##name, folded, sizeof(btype), 1, 4, n, w, 0, a, as, y, 1, ys);                  \
            break;                                                                                           \
        case 5:                                                                                              \
            tile256(kunpack_##name, folded, sizeof(btype), 1, 5, n, w, 0, a, as, y, 1, ys);                  \
            break;                                                                                           \
        case 6:                                                                                              \
            tile256(kunpack_##name, folded, sizeof(btype), 1, 6, n, w, 0, a, as, y, 1, ys);                  \
            break;                                                                                           \
        case 7:                                                                                              \
            tile256(kunpack_##name, folded, sizeof(btype), 1, 7, n, w, 0, a, as, y, 1, ys);                  \
            break;                                                                                           \
        case 8:                                                                                              \
            tile256(kunpack_##name, folded, sizeof(btype), 1, 8, n, w, 0, a, as, y, 1, ys);                  \
            break;                                                                                           \
        default:                                                                                             \
            SL_ASSERT(!"tile shape");                                                                        \
        }                                                                                                    \
    }                                                                                                        \
    static void gemm_##name(int64_t n, const void *w, size_t w_stride, int nr, const void *a,                \
                            size_t a_stride, int nt, float *y, size_t y_stride)                              \
    {                                                                                                        \
        if (nt == 1) {                                                                                       \
            /* A decode step: two halves side by side, as gemm_q4_0_quads. */                                \
            const int h = nr / 2;                                                                            \
            for (int r = 0; r < h; r++)                                                                      \
                tile256(kunpack_##name, folded, sizeof(btype), 2, 1, n,                                      \
                        (const uint8_t *)w + (size_t)r * w_stride, (size_t)h * w_stride, a, 0, y + r,        \
                        (size_t)h, 0);                                                                       \
            if (nr % 2)                                                                                      \
                tile_##name(1, n, (const uint8_t *)w + (size_t)(nr - 1) * w_stride, a, 0, y + nr - 1, 0);    \
            return;                                                                                          \
        }                                                                                                    \
        for (int t = 0; t < nt; t += 8) {                                                                    \
            const int T = nt - t < 8 ? nt - t : 8;                                                           \
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
    const __m512 va = _mm512_set1_ps(a);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = mask16(n - i);
        const __m512 r =
            _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i));
        _mm512_mask_storeu_ps(y + i, m, r);
    }
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

/* Columns [i0, i0 + 16 nv) of the weighted sum (the last vector masked to
 * dim), accumulated in nv registers while the rows pass. */
INLINE void wsum_pass(int nv, float *o, const float *p, float c, const float *v, int64_t n, int64_t dim,
                      int64_t i0)
{
    __m512 acc[8];
    for (int k = 0; k < nv; k++)
        acc[k] = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; j++) {
        const __m512 a = _mm512_set1_ps(p[j] * c);
        const float *row = v + j * dim + i0;
        for (int k = 0; k < nv; k++)
            acc[k] = _mm512_fmadd_ps(a, _mm512_maskz_loadu_ps(mask16(dim - i0 - 16 * k), row + 16 * k), acc[k]);
    }
    for (int k = 0; k < nv; k++)
        _mm512_mask_storeu_ps(o + i0 + 16 * k, mask16(dim - i0 - 16 * k), acc[k]);
}

/* The output stays in registers, 128 floats a pass, while the rows pass
 * (one read of each value row per pass, no read-modify-write of o per row).
 * The register count is a constant in each case, so that they stay
 * registers. */
static void attn_wsum(float *o, const float *p, float c, const float *v, int64_t n, int64_t dim)
{
    for (int64_t i0 = 0; i0 < dim; i0 += 128) {
        switch ((dim - i0 + 15) / 16 < 8 ? (dim - i0 + 15) / 16 : 8) {
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
}

static void silu_mul(float *g, const float *u, int64_t n)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = mask16(n - i);
        const __m512 v = _mm512_maskz_loadu_ps(m, g + i);
        const __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), v));
        const __m512 r =
            _mm512_mul_ps(_mm512_div_ps(v, _mm512_add_ps(one, e)), _mm512_maskz_loadu_ps(m, u + i));
        _mm512_mask_storeu_ps(g + i, m, r);
    }
}

static double exp_sum(float *s, float mx, int64_t n)
{
    __m512d acc = _mm512_setzero_pd();
    const __m512 vm = _mm512_set1_ps(mx);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = mask16(n - i);
        const __m512 e = _mm512_maskz_mov_ps(m, exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + i), vm)));
        _mm512_mask_storeu_ps(s + i, m, e);
        acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
        acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm512_extractf32x8_ps(e, 1)));
    }
    return _mm512_reduce_add_pd(acc);
}

static void rms_norm(const float *x, const float *w, float *y, int64_t n, float eps)
{
    __m512d acc = _mm512_setzero_pd();
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = mask16(n - i);
        const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        const __m512 sq = _mm512_mul_ps(v, v);
        acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm512_castps512_ps256(sq)));
        acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm512_extractf32x8_ps(sq, 1)));
    }
    const double ss = _mm512_reduce_add_pd(acc);
    const __m512 scale = _mm512_set1_ps(1.0f / sqrtf((float)(ss / (double)n) + eps));
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = mask16(n - i);
        const __m512 r = _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), scale),
                                       _mm512_maskz_loadu_ps(m, w + i));
        _mm512_mask_storeu_ps(y + i, m, r);
    }
}

/* ---- the table ------------------------------------------------------------------------ */

static sl_kernels g_table;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void init(void)
{
    g_table = *sl_kernels_generic();
    g_table.name = "avx512";
    g_table.dot[SL_F32] = dot_f32;
    g_table.dot[SL_F16] = dot_f16;
    g_table.dot[SL_BF16] = dot_bf16;
    g_table.quantize[SL_ACT_Q8_0] = quantize_q8_0;
    g_table.quantize[SL_ACT_Q8_K] = quantize_q8_k;
    g_table.quantize[SL_ACT_Q8_0P] = quantize_q8_0p;
    g_table.act[SL_Q4_0] = SL_ACT_Q8_0P;
    g_table.gemm[SL_Q4_0] = gemm_q4_0_quads;
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
    /* sluice's own low-bit types: AVX-512 tiles where compute/lowbit_avx512.c
     * has them, AVX2's for the rest */
    sl_lowbit_register_avx2(&g_table);
    sl_lowbit_register_avx512(&g_table);
}

const sl_kernels *sl_kernels_avx512(void)
{
    int rc = pthread_once(&g_once, init);
    SL_ASSERT(rc == 0);
    return &g_table;
}
