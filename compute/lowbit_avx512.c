/* AVX-512 integer tiles of sluice's grouped low-bit types with groups of 128
 * (layouts in lowbit.h); everything else of these types stays AVX2's
 * (lowbit_avx2.c, registered first).
 *
 * Compiled with the avx512 table's flags (CMakeLists.txt) and entered only
 * after kernels.c's probe. The activations come in SL_ACT_Q8_0P order
 * (quant.h), which for a group of 128 is lowbit.h's plane order: the first
 * halves of the group's four activation blocks, then their second halves.
 * So unpack() gives the group's quants as two 64-lane vectors in plane order
 * straight from the planes (4 bits: the low and the high nibbles of 64
 * bytes; 2 bits: bit pairs 0,1 and 2,3 of 32 bytes side by side, then 4,5
 * and 6,7), each meets 64 activation bytes in one VPDPBUSD (unsigned weights
 * times signed activations, four products per lane), and both go into one
 * accumulator whose lanes 4b .. 4b+3 then hold block b's exact integer sum.
 * A group costs two VPDPBUSD, one conversion and one multiply-add with the
 * lanes' scales d * dx[b]; the zero point's term m * dx[b] * s[b] is one
 * 4-lane multiply-add per group. Every output is computed by the same
 * sequence whatever the tile's shape. Weights are read with 32-byte loads:
 * 64-byte loads that straddle cache lines stream from memory at half the
 * speed (bench/RESULTS.md), and these blocks are 36, 52 or 68 bytes. */
#include <immintrin.h>
#include <string.h>

#include "common/log.h"
#include "compute/lowbit.h"
#include "compute/quant.h"
#include "model/dtype.h"

#define INLINE static inline __attribute__((always_inline))
#define G 128

INLINE void scales(const uint8_t *blk, float *d, float *m)
{
    uint16_t h[2];
    memcpy(h, blk, sizeof h);
    *d = _cvtsh_ss(h[0]);
    *m = _cvtsh_ss(h[1]);
}

/* Per-16-bit-lane shift counts: a in the low 256 bits, b in the high. */
INLINE __m512i counts2(int a, int b)
{
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16((short)a)), _mm256_set1_epi16((short)b), 1);
}

/* A group's quants in plane order: u[0] positions 0..63, u[1] 64..127. */
INLINE void unpack(int bits, const uint8_t *blk, __m512i u[2])
{
    const uint8_t *p = blk + 4;
    if (bits == 4) {
        const __m512i f = _mm512_set1_epi8(15);
        const __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)p)),
                                             _mm256_loadu_si256((const __m256i *)(p + 32)), 1);
        u[0] = _mm512_and_si512(v, f);
        u[1] = _mm512_and_si512(_mm512_srli_epi16(v, 4), f);
        return;
    }
    const __m512i v = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)p));
    const __m512i three = _mm512_set1_epi8(3);
    u[0] = _mm512_and_si512(_mm512_srlv_epi16(v, counts2(0, 2)), three);
    u[1] = _mm512_and_si512(_mm512_srlv_epi16(v, counts2(4, 6)), three);
    if (bits == 2)
        return;
    /* The high plane: bit j of h[l] is position 16j + l, so 128-bit lane q
     * of u[c] takes bit 4c + q. */
    const __m512i hb = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(p + G / 4)));
    const __m512i lanes = _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_set_m128i(_mm_set1_epi8(2), _mm_set1_epi8(1))),
        _mm256_set_m128i(_mm_set1_epi8(8), _mm_set1_epi8(4)), 1);
    const __m512i four = _mm512_set1_epi8(4);
    for (int c = 0; c < 2; c++) {
        const __mmask64 set = _mm512_test_epi8_mask(hb, c ? _mm512_slli_epi16(lanes, 4) : lanes);
        u[c] = _mm512_mask_add_epi8(u[c], set, u[c], four);
    }
}

/* R rows by T tokens. */
INLINE void tile(int bits, int R, int T, int64_t n, const uint8_t *w, size_t ws, const uint8_t *a, size_t as,
                 float *y, size_t ys)
{
    __m512 acc[4][4];
    __m128 macc[4][4];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) {
            acc[r][t] = _mm512_setzero_ps();
            macc[r][t] = _mm_setzero_ps();
        }
    const float *dx[4];
    const int32_t *sx[4];
    for (int t = 0; t < T; t++) {
        dx[t] = sl_act_q8_0_d(a + (size_t)t * as, n);
        sx[t] = sl_act_q8_0_s(a + (size_t)t * as, n);
    }
    /* lane 4b + j: block b */
    const __m512i spread = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    const size_t bb = 4 + G * (size_t)bits / 8;
    for (int64_t i = 0; i < n / G; i++) {
        float d[4], m[4];
        __m512i u[4][2];
        for (int r = 0; r < R; r++) {
            const uint8_t *blk = w + (size_t)r * ws + (size_t)i * bb;
            scales(blk, &d[r], &m[r]);
            unpack(bits, blk, u[r]);
        }
        for (int t = 0; t < T; t++) {
            const uint8_t *x = a + (size_t)t * as + (size_t)i * G;
            const __m512i x0 = _mm512_load_si512(x), x1 = _mm512_load_si512(x + 64);
            const __m128 dx4 = _mm_loadu_ps(dx[t] + 4 * i);
            const __m512 sx16 = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(dx4));
            const __m128 ms4 = _mm_mul_ps(dx4, _mm_cvtepi32_ps(_mm_loadu_si128((const __m128i *)(sx[t] + 4 * i))));
            for (int r = 0; r < R; r++) {
                const __m512i isum =
                    _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), u[r][0], x0), u[r][1], x1);
                acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(sx16, _mm512_set1_ps(d[r])),
                                            acc[r][t]);
                macc[r][t] = _mm_fmadd_ps(ms4, _mm_set1_ps(m[r]), macc[r][t]);
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) {
            __m128 s = macc[r][t];
            s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            s = _mm_add_ss(s, _mm_movehdup_ps(s));
            y[(size_t)t * ys + (size_t)r] = _mm512_reduce_add_ps(acc[r][t]) + _mm_cvtss_f32(s);
        }
}

#define TILE_CASE(R, T)                                                                                      \
    case R * 8 + T:                                                                                          \
        tile(bits, R, T, n, wp, w_stride, ap, a_stride, yp, y_stride);                                       \
        break;

/* One row at a time for a single token (a decode step streams its rows:
 * side-by-side rows defeat the hardware prefetchers), else 4 rows by up to
 * 4 tokens. */
INLINE void rows_gemm(int bits, int64_t n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride,
                      int nt, float *y, size_t y_stride)
{
    SL_ASSERT(n % G == 0);
    const int rstep = nt == 1 ? 1 : 4;
    for (int t = 0; t < nt; t += 4) {
        const int T = nt - t < 4 ? nt - t : 4;
        for (int r = 0; r < nr; r += rstep) {
            const int R = nr - r < rstep ? nr - r : rstep;
            const uint8_t *wp = (const uint8_t *)w + (size_t)r * w_stride;
            const uint8_t *ap = (const uint8_t *)a + (size_t)t * a_stride;
            float *yp = y + (size_t)t * y_stride + (size_t)r;
            switch (R * 8 + T) {
                TILE_CASE(1, 1)
                TILE_CASE(1, 2)
                TILE_CASE(1, 3)
                TILE_CASE(1, 4)
                TILE_CASE(2, 1)
                TILE_CASE(2, 2)
                TILE_CASE(2, 3)
                TILE_CASE(2, 4)
                TILE_CASE(3, 1)
                TILE_CASE(3, 2)
                TILE_CASE(3, 3)
                TILE_CASE(3, 4)
                TILE_CASE(4, 1)
                TILE_CASE(4, 2)
                TILE_CASE(4, 3)
                TILE_CASE(4, 4)
            default: SL_ASSERT(!"tile shape");
            }
        }
    }
}

#define LOWBIT_AVX512(name, bits)                                                                            \
    static void gemm_##name(int64_t n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride, \
                            int nt, float *y, size_t y_stride)                                               \
    {                                                                                                        \
        rows_gemm(bits, n, w, w_stride, nr, a, a_stride, nt, y, y_stride);                                   \
    }

LOWBIT_AVX512(g2_128, 2)
LOWBIT_AVX512(g3_128, 3)
LOWBIT_AVX512(g4_128, 4)

void sl_lowbit_register_avx512(sl_kernels *k)
{
    SL_ASSERT(k->quantize[SL_ACT_Q8_0P] != NULL);
    k->gemm[SL_G2_128] = gemm_g2_128;
    k->gemm[SL_G3_128] = gemm_g3_128;
    k->gemm[SL_G4_128] = gemm_g4_128;
    k->act[SL_G2_128] = k->act[SL_G3_128] = k->act[SL_G4_128] = SL_ACT_Q8_0P;
}
