/* Tests of sluice's grouped low-bit types (compute/lowbit.h) and of the
 * re-quantization rules (compute/requant.h):
 *  - the layout: blocks packed by hand from lowbit.h's byte-by-byte
 *    description dequantize to the quants they were packed from;
 *  - the type table: ids, names, sizes, the group fallback;
 *  - the encoders: min-max error bounds per element, the search never worse
 *    than min-max per group, zeros and constants exact;
 *  - the kernel table chosen for this CPU (or by SL_CPU) against the
 *    reference: dequantization bit-identical, float dots and integer tiles
 *    within named tolerances, tiles bit-identical whatever their shape;
 *  - requant: which type each kind of tensor gets, conversions and their
 *    errors.
 * Exits 77 (ctest's SKIP_RETURN_CODE) when SL_CPU names a variant this
 * build or CPU does not have, as test_kernels does. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/half.h"
#include "common/log.h"
#include "compute/kernels.h"
#include "compute/lowbit.h"
#include "compute/quant.h"
#include "compute/requant.h"
#include "model/dtype.h"
#include "tests/testutil.h"

#define SKIP 77

static const uint32_t k_types[] = {SL_G2_128, SL_G3_128, SL_G4_128, SL_G2_64, SL_G3_64,
                                   SL_G4_64,  SL_G2_32,  SL_G3_32,  SL_G4_32};
#define N_TYPES (sizeof k_types / sizeof k_types[0])

static const sl_kernels *g_k;   /* under test */
static const sl_kernels *g_ref; /* generic */

/* ---- deterministic random numbers ------------------------------------------ */

static uint64_t g_rng = 0x6c6f776269747321ull;

static uint64_t rng_u64(void)
{
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_unit(void)
{
    return (double)(rng_u64() >> 11) * 0x1p-53;
}

static float rng_normal(void)
{
    double u = rng_unit(), v = rng_unit();
    return (float)(sqrt(-2.0 * log(1.0 - u)) * cos(6.283185307179586 * v));
}

/* A random finite f16 of magnitude 2^-14 .. 2^-2, either sign. */
static uint16_t rng_f16(void)
{
    const float v = (float)pow(2.0, -14.0 + 12.0 * rng_unit());
    return sl_f32_to_f16(rng_u64() % 2 ? v : -v);
}

/* Random blocks: every quant bit pattern, finite f16 scale and zero point
 * of either sign (files are outside input: kernels must not assume d >= 0). */
static void random_blocks(uint32_t type, uint8_t *p, int64_t n)
{
    const sl_dtype_info *info = sl_dtype_get(type);
    for (int64_t b = 0; b < n / info->block; b++, p += info->block_bytes) {
        for (uint32_t i = 0; i < info->block_bytes; i++)
            p[i] = (uint8_t)rng_u64();
        const uint16_t h[2] = {rng_f16(), rng_f16()};
        memcpy(p, h, sizeof h);
    }
}

/* Activations like a model's (test_kernels.c's recipe): normal, a per-32
 * magnitude over four decades, outliers, the odd all-zero block. */
static void random_acts(float *x, int64_t n)
{
    for (int64_t b = 0; b < n; b += 32) {
        const float scale = (float)pow(10.0, -3.0 + 4.0 * rng_unit());
        const bool zero = rng_u64() % 17 == 0;
        for (int64_t j = b; j < b + 32 && j < n; j++) {
            x[j] = zero ? 0.0f : rng_normal() * scale;
            if (!zero && rng_u64() % 97 == 0)
                x[j] *= 20.0f;
        }
    }
}

/* ---- layout and table --------------------------------------------------------- */

/* Packs quants q[0..G) (element order) into a block by lowbit.h's
 * description, written out independently of lowbit.c: d = 1, m = 0. */
static void hand_pack(int bits, int G, const uint8_t *q, uint8_t *blk)
{
    const uint16_t h[2] = {sl_f32_to_f16(1.0f), sl_f32_to_f16(0.0f)};
    memcpy(blk, h, 4);
    /* plane order: element 32k + 16h + i at position 16R h + 16k + i */
    uint8_t qp[128];
    const int R = G / 32;
    for (int k = 0; k < R; k++)
        for (int hh = 0; hh < 2; hh++)
            for (int i = 0; i < 16; i++)
                qp[16 * R * hh + 16 * k + i] = q[32 * k + 16 * hh + i];
    uint8_t *p = blk + 4;
    memset(p, 0, (size_t)(G * bits / 8));
    if (bits == 4) {
        for (int l = 0; l < G / 2; l++)
            p[l] = (uint8_t)(qp[l] | qp[l + G / 2] << 4);
        return;
    }
    for (int l = 0; l < G / 4; l++)
        for (int j = 0; j < 4; j++)
            p[l] |= (uint8_t)((qp[l + j * G / 4] & 3) << (2 * j));
    if (bits == 3)
        for (int l = 0; l < G / 8; l++)
            for (int j = 0; j < 8; j++)
                p[G / 4 + l] |= (uint8_t)((qp[l + j * G / 8] >> 2) << j);
}

static void test_layout(void)
{
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        const uint32_t t = k_types[ti];
        const int bits = sl_lowbit_bits(t), G = sl_lowbit_group(t);
        const sl_dtype_info *info = sl_dtype_get(t);
        CHECK(info && info->supported && info->block == (uint32_t)G &&
                  info->block_bytes == 4 + (uint32_t)(G * bits / 8),
              "%s: table geometry", sl_dtype_name(t));
        CHECK(t >= 224 && t <= 232 && sl_lowbit_type(bits, G) == t, "%s: id %u", sl_dtype_name(t), t);
        char name[16];
        snprintf(name, sizeof name, "G%d_%d", bits, G);
        CHECK(!strcmp(sl_dtype_name(t), name), "%s: name, expected %s", sl_dtype_name(t), name);
        uint8_t q[128], blk[80];
        float y[128];
        int bad = 0;
        for (int rep = 0; rep < 20; rep++) {
            for (int e = 0; e < G; e++)
                q[e] = (uint8_t)(rng_u64() % (1u << bits));
            hand_pack(bits, G, q, blk);
            g_ref->to_float[t](blk, y, G);
            for (int e = 0; e < G; e++)
                bad += y[e] != (float)q[e];
        }
        CHECK(bad == 0, "%s: %d quants differ from the documented layout", sl_dtype_name(t), bad);
    }
    CHECK(sl_lowbit_bits(SL_Q4_0) == 0 && sl_lowbit_group(SL_F32) == 0, "not low-bit types");
    CHECK(sl_lowbit_type(5, 128) == UINT32_MAX && sl_lowbit_type(4, 96) == UINT32_MAX, "no such type");
    CHECK(sl_lowbit_type_for_row(4, 4096, 128) == SL_G4_128, "4096 -> 128");
    CHECK(sl_lowbit_type_for_row(4, 64, 128) == SL_G4_64, "64 -> 64");
    CHECK(sl_lowbit_type_for_row(3, 288, 128) == SL_G3_32, "288 -> 32");
    CHECK(sl_lowbit_type_for_row(2, 896, 64) == SL_G2_64, "896 with max 64 -> 64");
    CHECK(sl_lowbit_type_for_row(2, 172, 128) == UINT32_MAX, "172 fits no group");
    CHECK(sl_lowbit_type_for_row(2, 256, 100) == UINT32_MAX, "a group that is not a type");
    for (uint32_t t = 0; t < SL_DTYPE_COUNT; t++)
        if (sl_lowbit_bits(t))
            CHECK(g_ref->act[t] == SL_ACT_Q8_0 && g_ref->gemm[t] && sl_quant_from_float(t),
                  "%s: generic entries", sl_dtype_name(t));
}

/* ---- encoders ---------------------------------------------------------------------- */

static double u16(double v)
{
    return fmax(fabs(v) * 0x1p-11, 0x1p-25);
}

/* Inputs of several shapes: normal, skewed, with outliers, tiny, constant
 * runs. */
static void fill(float *x, int64_t n, int kind)
{
    for (int64_t i = 0; i < n; i++) {
        switch (kind) {
        case 0: x[i] = rng_normal() * 0.02f; break;
        case 1: x[i] = fabsf(rng_normal()) * 3.0f + 1.0f; break;
        case 2: x[i] = rng_normal() * (rng_u64() % 50 == 0 ? 8.0f : 0.05f); break;
        case 3: x[i] = rng_normal() * 1e-6f; break;
        default: x[i] = (float)((i / 40) % 3) - 1.0f; break;
        }
    }
}

static void test_encoders(void)
{
    enum { N = 4096 };
    static float x[N], y[N], z[N];
    static uint8_t q[N], q2[N];
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        const uint32_t t = k_types[ti];
        const int bits = sl_lowbit_bits(t), G = sl_lowbit_group(t), L = (1 << bits) - 1;
        double worst = 0, rms_steps = 0;
        int beyond = 0, worse = 0;
        for (int kind = 0; kind < 5; kind++) {
            fill(x, N, kind);
            sl_lowbit_quantize(t, SL_LOWBIT_FIT_MINMAX, x, q, N);
            sl_lowbit_quantize(t, SL_LOWBIT_FIT_SEARCH, x, q2, N);
            g_ref->to_float[t](q, y, N);
            g_ref->to_float[t](q2, z, N);
            double sq = 0;
            for (int64_t b = 0; b < N; b += G) {
                float lo = x[b], hi = x[b];
                for (int e = 1; e < G; e++) {
                    lo = fminf(lo, x[b + e]);
                    hi = fmaxf(hi, x[b + e]);
                }
                /* Nearest of the stored levels, except what the f16
                 * rounding of d and m can push past the end levels. */
                const double d = (double)(hi - lo) / L;
                const double bound = 0.5 * (d + u16(d)) + u16(lo) + L * u16(d) + 1e-6 * (fabs(lo) + fabs(hi));
                double emm = 0, esr = 0;
                for (int e = 0; e < G; e++) {
                    const double err = fabs((double)y[b + e] - x[b + e]);
                    beyond += err > bound;
                    worst = fmax(worst, bound > 0 ? err / bound : 0);
                    emm += err * err;
                    esr += ((double)z[b + e] - x[b + e]) * ((double)z[b + e] - x[b + e]);
                    sq += d > 0 ? (err / d) * (err / d) : 0;
                }
                /* The search includes the min-max pair: never worse. */
                worse += esr > emm * (1 + 1e-12) + 1e-30;
            }
            if (kind < 3)
                rms_steps = fmax(rms_steps, sqrt(sq / N));
        }
        CHECK(beyond == 0, "%s: %d min-max errors beyond the bound", sl_dtype_name(t), beyond);
        CHECK(worse == 0, "%s: the search is worse than min-max in %d groups", sl_dtype_name(t), worse);
        /* Round to nearest: errors spread over +-step/2, rms 0.29 steps. */
        CHECK(rms_steps <= 0.35, "%s: min-max rms error %.3f steps", sl_dtype_name(t), rms_steps);
        printf("  %-7s min-max err/bound %.3f, rms %.3f steps\n", sl_dtype_name(t), worst, rms_steps);
        /* Zeros and constants come back exactly (d = 0, m = the value). */
        for (int fit = 0; fit < 2; fit++) {
            for (int v = 0; v < 2; v++) {
                for (int i = 0; i < 256; i++)
                    x[i] = v ? 0.375f : 0.0f;
                sl_lowbit_quantize(t, (sl_lowbit_fit)fit, x, q, 256);
                g_ref->to_float[t](q, y, 256);
                bool same = true;
                for (int i = 0; i < 256; i++)
                    same = same && y[i] == x[i];
                CHECK(same, "%s fit %d: %g does not round-trip", sl_dtype_name(t), fit, x[0]);
            }
        }
        /* The extremes of a min-max group are levels 0 and L. */
        fill(x, G, 0);
        x[3] = -1.0f;
        x[G - 2] = 1.0f;
        sl_lowbit_quantize(t, SL_LOWBIT_FIT_MINMAX, x, q, G);
        g_ref->to_float[t](q, y, G);
        CHECK(fabsf(y[3] + 1.0f) < 1e-3f && fabsf(y[G - 2] - 1.0f) < 1e-3f, "%s: extremes %g %g",
              sl_dtype_name(t), y[3], y[G - 2]);
    }
}

/* ---- the variant against the reference ------------------------------------------------ */

/* Named tolerances, in units of 2^-24 * (terms on a path) * the sum of the
 * magnitudes of the terms (|d q_i| + |m|) |x_i|: both sides sum exact or
 * once-rounded products; they differ in the order of float additions, and
 * the native dots apply d and m once per group (or block) instead of per
 * element. */
#define DOT_ULPS 2.0
#define GEMM_ULPS 4.0

/* sum over i of (|d q_i| + |m|) |x_i| for one row (the float path). */
static double dot_mag(uint32_t t, const uint8_t *w, const float *x, int64_t n)
{
    const int G = sl_lowbit_group(t);
    const size_t bb = sl_dtype_get(t)->block_bytes;
    float q[128];
    double s = 0;
    for (int64_t b = 0; b < n / G; b++, w += bb) {
        uint8_t blk[80];
        memcpy(blk, w, bb);
        const uint16_t h[2] = {sl_f32_to_f16(1.0f), 0};
        uint16_t dm[2];
        memcpy(dm, w, 4);
        memcpy(blk, h, 4);
        g_ref->to_float[t](blk, q, G); /* the quants themselves */
        const double d = fabs(sl_f16_to_f32(dm[0])), m = fabs(sl_f16_to_f32(dm[1]));
        for (int e = 0; e < G; e++)
            s += (d * q[e] + m) * fabs((double)x[b * G + e]);
    }
    return s;
}

static void test_to_float_and_dot(void)
{
    static const int64_t groups[] = {1, 2, 3, 8, 33};
    double worst = 0;
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        const uint32_t t = k_types[ti];
        const int G = sl_lowbit_group(t);
        for (size_t gi = 0; gi < sizeof groups / sizeof groups[0]; gi++) {
            const int64_t n = groups[gi] * G;
            const size_t bytes = (size_t)sl_dtype_bytes(t, (uint64_t)n);
            /* Rows start 2 bytes past an aligned address: blocks need only
             * keep their f16 fields aligned. */
            uint8_t *buf = malloc(bytes + 2);
            float *x = malloc((size_t)n * sizeof *x), *a = malloc((size_t)n * sizeof *a),
                  *b = malloc((size_t)n * sizeof *b);
            SL_ASSERT(buf && x && a && b);
            uint8_t *w = buf + 2;
            for (int rep = 0; rep < 4; rep++) {
                random_blocks(t, w, n);
                g_ref->to_float[t](w, a, n);
                g_k->to_float[t](w, b, n);
                CHECK(memcmp(a, b, (size_t)n * sizeof *a) == 0, "%s n=%lld: to_float differs from the reference",
                      sl_dtype_name(t), (long long)n);
                random_acts(x, n);
                const double r = g_ref->dot[t](w, x, n), k = g_k->dot[t](w, x, n);
                const double bound = DOT_ULPS * 0x1p-24 * (double)(G + n / G + 16) * dot_mag(t, w, x, n);
                CHECK(fabs(r - k) <= bound, "%s n=%lld dot: %.9g vs reference %.9g (bound %.3g)", sl_dtype_name(t),
                      (long long)n, k, r, bound);
                if (bound > 0)
                    worst = fmax(worst, fabs(r - k) / bound);
            }
            free(buf);
            free(x);
            free(a);
            free(b);
        }
    }
    printf("  to_float identical; dot err/tol %.3g\n", worst);
}

/* sum over i of (|d q_i| + |m|) |dx p_i| for one row and one activation row. */
static double gemm_mag(uint32_t t, const uint8_t *w, const uint8_t *a, int64_t n)
{
    const float *dx = sl_act_q8_0_d(a, n);
    float *xf = malloc((size_t)n * sizeof *xf);
    SL_ASSERT(xf);
    for (int64_t i = 0; i < n; i++)
        xf[i] = dx[i / 32] * (float)((const int8_t *)a)[i];
    const double s = dot_mag(t, w, xf, n);
    free(xf);
    return s;
}

static void test_gemm(void)
{
    enum { NR = 5, NT = 9 };
    double worst = 0;
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        const uint32_t t = k_types[ti];
        const int G = sl_lowbit_group(t);
        /* The variant may take the same quants in its own order (SL_ACT_Q8_0P). */
        const uint32_t kact = g_k->act[t];
        CHECK(g_ref->act[t] == SL_ACT_Q8_0 && (kact == SL_ACT_Q8_0 || kact == SL_ACT_Q8_0P),
              "%s: activation format %u", sl_dtype_name(t), kact);
        const int64_t sizes[] = {G, 3 * G, 7 * G, 4096, 11008 / G * G};
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            const int64_t n = sizes[si];
            const size_t row = (size_t)sl_dtype_bytes(t, (uint64_t)n), ws = row + 2;
            const size_t as = sl_quant_act_row_bytes(SL_ACT_Q8_0, n);
            SL_ASSERT(sl_quant_act_row_bytes(kact, n) == as);
            uint8_t *wbuf = malloc(ws * NR + 2), *abuf = aligned_alloc(64, as * NT), *kbuf = aligned_alloc(64, as * NT);
            float *x = malloc((size_t)n * sizeof *x);
            SL_ASSERT(wbuf && abuf && kbuf && x);
            uint8_t *w = wbuf + 2;
            for (int r = 0; r < NR; r++)
                random_blocks(t, w + r * ws, n);
            for (int k = 0; k < NT; k++) {
                random_acts(x, n);
                g_ref->quantize[SL_ACT_Q8_0](x, abuf + k * as, n);
                g_k->quantize[kact](x, kbuf + k * as, n);
            }
            float ref[NT][NR], one[NT][NR], tile[NT][NR];
            for (int k = 0; k < NT; k++)
                for (int r = 0; r < NR; r++) {
                    g_ref->gemm[t](n, w + r * ws, ws, 1, abuf + k * as, as, 1, &ref[k][r], 1);
                    g_k->gemm[t](n, w + r * ws, ws, 1, kbuf + k * as, as, 1, &one[k][r], 1);
                    const double bound =
                        GEMM_ULPS * 0x1p-24 * (double)(n / 32 + 16) * gemm_mag(t, w + r * ws, abuf + k * as, n);
                    const double err = fabs((double)one[k][r] - ref[k][r]);
                    CHECK(err <= bound, "%s n=%lld row %d token %d: %.9g vs reference %.9g (bound %.3g)",
                          sl_dtype_name(t), (long long)n, r, k, one[k][r], ref[k][r], bound);
                    if (bound > 0)
                        worst = fmax(worst, err / bound);
                }
            int mismatches = 0;
            for (int nr = 1; nr <= NR; nr++)
                for (int nt = 1; nt <= NT; nt++) {
                    for (int k = 0; k < NT; k++)
                        for (int r = 0; r < NR; r++)
                            tile[k][r] = NAN;
                    g_k->gemm[t](n, w, ws, nr, kbuf, as, nt, &tile[0][0], NR);
                    for (int k = 0; k < NT; k++)
                        for (int r = 0; r < NR; r++) {
                            const bool inside = k < nt && r < nr;
                            if (inside ? memcmp(&tile[k][r], &one[k][r], sizeof(float)) != 0 : !isnan(tile[k][r]))
                                mismatches++;
                        }
                }
            CHECK(mismatches == 0, "%s n=%lld: %d outputs differ between tile shapes (or were written outside)",
                  sl_dtype_name(t), (long long)n, mismatches);
            free(wbuf);
            free(abuf);
            free(kbuf);
            free(x);
        }
    }
    printf("  gemm err/tol %.3g\n", worst);
}

/* ---- requant --------------------------------------------------------------------------- */

static void test_requant(void)
{
    const sl_requant_opts g4 = {SL_G4_128, SL_REQUANT_DEFAULT, SL_REQUANT_DEFAULT, SL_LOWBIT_FIT_SEARCH};
    const int64_t mat[2] = {4096, 11008}, small[2] = {64, 512}, odd[2] = {172, 64}, vec[1] = {4096};
    CHECK(sl_requant_choose(&g4, "blk.0.ffn_up.weight", 2, mat, SL_F32, false) == SL_G4_128, "matrix");
    CHECK(sl_requant_choose(&g4, "blk.0.attn_q.weight", 2, small, SL_F16, false) == SL_G4_64, "64 columns");
    CHECK(sl_requant_choose(&g4, "blk.0.ffn_down.weight", 2, odd, SL_F32, false) == SL_F16, "172 columns");
    CHECK(sl_requant_choose(&g4, "blk.0.attn_norm.weight", 1, vec, SL_F32, false) == SL_F32, "norm");
    CHECK(sl_requant_choose(&g4, "blk.0.ffn_gate_inp.weight", 2, mat, SL_F32, false) == SL_F32, "router");
    CHECK(sl_requant_choose(&g4, "output.weight", 2, mat, SL_F32, false) == SL_Q8_0, "output");
    CHECK(sl_requant_choose(&g4, "token_embd.weight", 2, mat, SL_F32, false) == SL_G4_128, "untied embedding");
    CHECK(sl_requant_choose(&g4, "token_embd.weight", 2, mat, SL_F32, true) == SL_Q8_0, "tied embedding");
    const sl_requant_opts q4k = {SL_Q4_K, SL_G2_64, SL_F16, SL_LOWBIT_FIT_SEARCH};
    CHECK(sl_requant_choose(&q4k, "blk.0.attn_q.weight", 2, small, SL_F32, false) == SL_Q4_1, "Q4_K -> Q4_1");
    CHECK(sl_requant_choose(&q4k, "output.weight", 2, mat, SL_F32, false) == SL_G2_64, "--output-type");
    CHECK(sl_requant_choose(&q4k, "token_embd.weight", 2, mat, SL_F32, false) == SL_F16, "--embd-type");
    const sl_requant_opts f16 = {SL_F16, SL_REQUANT_DEFAULT, SL_REQUANT_DEFAULT, SL_LOWBIT_FIT_SEARCH};
    CHECK(sl_requant_choose(&f16, "output.weight", 2, mat, SL_F32, false) == SL_F16, "no Q8_0 below F16");
    CHECK(sl_requant_can_encode(SL_G3_32) && sl_requant_can_encode(SL_Q6_K) && !sl_requant_can_encode(SL_Q2_K),
          "encodable types");

    /* Conversions: through floats, or a copy for the same type. */
    enum { N = 256 };
    float x[N], y[N], tmp[N];
    uint8_t a[N * 4], b[N * 4];
    fill(x, N, 0);
    CHECK(sl_requant_convert(SL_F32, x, SL_G4_128, a, N, SL_LOWBIT_FIT_MINMAX, tmp) == 0, "F32 -> G4");
    sl_lowbit_quantize(SL_G4_128, SL_LOWBIT_FIT_MINMAX, x, b, N);
    CHECK(memcmp(a, b, 2 * 68) == 0, "convert = quantize");
    CHECK(sl_requant_convert(SL_G4_128, a, SL_G4_128, b, N, SL_LOWBIT_FIT_SEARCH, tmp) == 0 &&
              memcmp(a, b, 2 * 68) == 0,
          "same type: a copy");
    CHECK(sl_requant_convert(SL_G4_128, a, SL_F32, y, N, SL_LOWBIT_FIT_SEARCH, tmp) == 0, "G4 -> F32");
    g_ref->to_float[SL_G4_128](a, tmp, N);
    CHECK(memcmp(y, tmp, sizeof y) == 0, "G4 -> F32 is the dequantization");
    sl_log_set_level(SL_LOG_OFF); /* the failures below are meant to log */
    x[7] = INFINITY;
    CHECK(sl_requant_convert(SL_F32, x, SL_BF16, a, N, SL_LOWBIT_FIT_SEARCH, tmp) == -SL_ERANGE, "inf");
    x[7] = 70000.0f;
    CHECK(sl_requant_convert(SL_F32, x, SL_G2_32, a, N, SL_LOWBIT_FIT_SEARCH, tmp) == -SL_ERANGE, "f16 range");
    CHECK(sl_requant_convert(SL_F32, x, SL_BF16, a, N, SL_LOWBIT_FIT_SEARCH, tmp) == 0, "BF16 has the range");
    sl_log_set_level(SL_LOG_WARN);
}

int main(void)
{
    g_ref = sl_kernels_generic();
    g_k = sl_kernels_get();
    if (!g_k) {
        static const char *known[] = {"generic", "avx2", "avx512", "neon"};
        const char *want = getenv("SL_CPU");
        for (size_t i = 0; want && i < sizeof known / sizeof known[0]; i++) {
            if (strcmp(want, known[i]) == 0) {
                printf("SL_CPU=%s: variant not available here; skipped\n", want);
                return SKIP;
            }
        }
        CHECK(0, "SL_CPU=%s is not a kernel variant", want ? want : "(unset)");
        return sl_test_finish();
    }
    printf("low-bit kernels: %s against generic\n", g_k->name);
    test_layout();
    test_encoders();
    test_to_float_and_dot();
    test_gemm();
    test_requant();
    return sl_test_finish();
}
