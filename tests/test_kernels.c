/* The kernel table chosen for this CPU (or by SL_CPU) against the portable
 * reference, on random data:
 *  - activation quantizers: byte-identical rows;
 *  - tile products of every quantized type: each output within a named
 *    tolerance of the reference (the integer block sums are exact in both;
 *    only the float combination of blocks differs), and bit-identical
 *    whatever the tile's shape (the matmul contract);
 *  - float-activation dot products (F32, F16, BF16) and the float vector
 *    operations: within named tolerances.
 * Exits 77 (ctest's SKIP_RETURN_CODE) when SL_CPU names a variant this build
 * or CPU does not have, so the same ctest entry is honest everywhere. */
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/half.h"
#include "common/log.h"
#include "compute/kernels.h"
#include "compute/quant.h"
#include "compute/vec.h"
#include "model/dtype.h"
#include "tests/testutil.h"

#define SKIP 77

static const sl_kernels *g_k;   /* under test */
static const sl_kernels *g_ref; /* generic */

/* ---- deterministic random numbers ------------------------------------------ */

static uint64_t g_rng = 0x243f6a8885a308d3ull;

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

/* Activations like a model's: normal, with a per-32 magnitude drawn over
 * four decades, some outliers, and an all-zero block now and then. */
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

/* A random finite f16 of magnitude 2^-14 .. 2^-2, either sign. */
static uint16_t rng_scale(bool positive)
{
    const float v = (float)pow(2.0, -14.0 + 12.0 * rng_unit());
    return sl_f32_to_f16(positive || rng_u64() % 2 ? v : -v);
}

/* Random blocks of a quantized type: random quant bytes, sane f16 scales
 * (the fields a block type keeps its f16 factors in). */
static void random_blocks(uint32_t type, void *dst, int64_t n)
{
    const sl_dtype_info *info = sl_dtype_get(type);
    const int64_t nb = n / info->block;
    uint8_t *p = dst;
    for (int64_t i = 0; i < nb * (int64_t)info->block_bytes; i++)
        p[i] = (uint8_t)rng_u64();
    for (int64_t i = 0; i < nb; i++) {
        uint8_t *b = p + i * info->block_bytes;
        uint16_t h[2] = {rng_scale(false), rng_scale(true)};
        switch (type) {
        case SL_Q4_0:
        case SL_Q5_0:
        case SL_Q8_0:
            memcpy(b, h, 2);
            break;
        case SL_Q4_1:
        case SL_Q5_1:
            memcpy(b, h, 4);
            break;
        case SL_Q2_K:
            memcpy(b + offsetof(sl_block_q2_k, d), h, 4);
            break;
        case SL_Q3_K:
            memcpy(b + offsetof(sl_block_q3_k, d), h, 2);
            break;
        case SL_Q4_K:
        case SL_Q5_K:
            h[0] = rng_scale(true); /* d and dmin are non-negative in these types */
            memcpy(b, h, 4);
            break;
        case SL_Q6_K:
            memcpy(b + offsetof(sl_block_q6_k, d), h, 2);
            break;
        default:
            SL_ASSERT(!"not a quantized type");
        }
    }
}

/* ---- dispatch ------------------------------------------------------------------ */

static void test_table(void)
{
    const char *want = getenv("SL_CPU");
    if (want && *want)
        CHECK(strcmp(g_k->name, want) == 0, "SL_CPU=%s chose %s", want, g_k->name);
    CHECK(sl_kernels_find("generic") == g_ref, "find(generic)");
    CHECK(sl_kernels_find(g_k->name) == g_k, "find(%s)", g_k->name);
    CHECK(sl_kernels_find("z80") == NULL && sl_kernels_find("") == NULL, "unknown variants");
    for (uint32_t t = 0; t < SL_DTYPE_COUNT; t++) {
        const sl_dtype_info *info = sl_dtype_get(t);
        const bool sup = info && info->supported;
        CHECK((g_k->dot[t] != NULL) == sup && (g_k->to_float[t] != NULL) == sup, "%s: entries",
              sl_dtype_name(t));
        if (!sup)
            continue;
        const uint32_t act = g_k->act[t];
        CHECK(act < SL_ACT_COUNT, "%s: act %u", sl_dtype_name(t), act);
        if (act != SL_ACT_F32 && act < SL_ACT_COUNT) {
            CHECK(g_k->gemm[t] != NULL && g_k->quantize[act] != NULL, "%s: gemm and quantizer",
                  sl_dtype_name(t));
            CHECK(info->block % sl_quant_act_block(act) == 0 || sl_quant_act_block(act) % info->block == 0,
                  "%s: block sizes", sl_dtype_name(t));
        }
    }
    CHECK(g_k->vdot && g_k->axpy && g_k->attn_scores && g_k->attn_wsum && g_k->silu_mul && g_k->exp_sum &&
              g_k->rms_norm,
          "float ops");
}

/* ---- activation quantizers: identical bytes -------------------------------------- */

static void test_quantize(void)
{
    static const int64_t sizes[] = {256, 512, 768, 4096, 11008, 2816};
    for (uint32_t act = SL_ACT_Q8_0; act < SL_ACT_COUNT; act++) {
        int64_t rows = 0, same = 0;
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            const int64_t n = sizes[si];
            if (n % sl_quant_act_block(act))
                continue;
            const size_t bytes = sl_quant_act_row_bytes(act, n);
            float *x = malloc((size_t)n * sizeof *x);
            uint8_t *a = aligned_alloc(64, bytes), *b = aligned_alloc(64, bytes);
            SL_ASSERT(x && a && b);
            for (int rep = 0; rep < 8; rep++) {
                random_acts(x, n);
                memset(a, 0x5a, bytes);
                memset(b, 0x5a, bytes);
                g_ref->quantize[act](x, a, n);
                g_k->quantize[act](x, b, n);
                rows++;
                same += memcmp(a, b, bytes) == 0;
            }
            free(x);
            free(a);
            free(b);
        }
        CHECK(same == rows, "act format %u: %lld of %lld rows identical to the reference", act,
              (long long)same, (long long)rows);
        printf("  quantize act %u: %lld/%lld rows byte-identical\n", act, (long long)same, (long long)rows);
    }
}

/* ---- tile products ---------------------------------------------------------------- */

/* Named tolerances. The reference and a native kernel both compute every
 * block's integer dot exactly and differ only in how the float block terms
 * are rounded and summed (lanes, fused multiply-adds, the order of the
 * scale products). Bound: |native - reference| <= ULPS * eps * (nb + 16) *
 * sum_i |w_i x_i|, eps = 2^-24, nb the blocks in the row. The k-quants
 * convert larger integer sums (up to ~2^25) to float, one more rounding. */
static const struct {
    uint32_t type;
    double ulps;
} k_gemm_tol[] = {
    {SL_Q4_0, 4}, {SL_Q4_1, 4}, {SL_Q5_0, 4}, {SL_Q5_1, 4}, {SL_Q8_0, 4},
    {SL_Q2_K, 8}, {SL_Q3_K, 8}, {SL_Q4_K, 8}, {SL_Q5_K, 8}, {SL_Q6_K, 8},
};

/* sum |w_i x_i| over a row, from the dequantized weights and activations. */
static double abs_dot(uint32_t type, const void *w, const void *a, int64_t n, float *wf)
{
    g_ref->to_float[type](w, wf, n);
    const uint32_t act = g_ref->act[type];
    const int8_t *q = a;
    double s = 0;
    for (int64_t i = 0; i < n; i++) {
        const float d = act == SL_ACT_Q8_0 ? sl_act_q8_0_d(a, n)[i / 32] : sl_act_q8_k_d(a, n)[i / 256];
        s += fabs((double)wf[i] * (double)d * q[i]);
    }
    return s;
}

static void test_gemm_type(uint32_t type, double ulps, int64_t n, double *worst)
{
    const sl_dtype_info *info = sl_dtype_get(type);
    /* The variant may encode the same activation quants in its own order
     * (same block size, same values): both rows come from the same floats. */
    const uint32_t act = g_ref->act[type], kact = g_k->act[type];
    CHECK(sl_quant_act_block(kact) == sl_quant_act_block(act) &&
              sl_quant_act_row_bytes(kact, n) == sl_quant_act_row_bytes(act, n),
          "%s: the variant's activation format %u does not match %u", info->name, kact, act);
    enum { NR = 5, NT = 9 };
    const size_t row_bytes = (size_t)(n / info->block) * info->block_bytes;
    /* Odd stride and offset: weight rows need not be aligned (slots give 4). */
    const size_t w_stride = row_bytes + 4;
    uint8_t *wbuf = malloc(w_stride * NR + 8);
    const size_t a_stride = sl_quant_act_row_bytes(act, n);
    uint8_t *abuf = aligned_alloc(64, a_stride * NT), *kbuf = aligned_alloc(64, a_stride * NT);
    float *x = malloc((size_t)n * sizeof *x), *wf = malloc((size_t)n * sizeof *wf);
    SL_ASSERT(wbuf && abuf && kbuf && x && wf);
    uint8_t *w = wbuf + 4;
    for (int r = 0; r < NR; r++)
        random_blocks(type, w + r * w_stride, n);
    for (int t = 0; t < NT; t++) {
        random_acts(x, n);
        g_ref->quantize[act](x, abuf + t * a_stride, n);
        g_k->quantize[kact](x, kbuf + t * a_stride, n);
    }
    float ref[NT][NR], one[NT][NR], tile[NT][NR];
    for (int t = 0; t < NT; t++)
        for (int r = 0; r < NR; r++) {
            g_ref->gemm[type](n, w + r * w_stride, w_stride, 1, abuf + t * a_stride, a_stride, 1, &ref[t][r],
                              1);
            g_k->gemm[type](n, w + r * w_stride, w_stride, 1, kbuf + t * a_stride, a_stride, 1, &one[t][r],
                            1);
            const double bound = ulps * 0x1p-24 * (double)(n / sl_quant_act_block(act) + 16) *
                                 abs_dot(type, w + r * w_stride, abuf + t * a_stride, n, wf);
            const double err = fabs((double)one[t][r] - (double)ref[t][r]);
            CHECK(err <= bound, "%s n=%lld row %d token %d: %.9g vs reference %.9g (err %.3g > %.3g)",
                  info->name, (long long)n, r, t, one[t][r], ref[t][r], err, bound);
            if (bound > 0)
                *worst = fmax(*worst, err / bound);
        }
    /* Every tile shape gives every output bit for bit. */
    int mismatches = 0;
    for (int nr = 1; nr <= NR; nr++)
        for (int nt = 1; nt <= NT; nt++) {
            for (int t = 0; t < NT; t++)
                for (int r = 0; r < NR; r++)
                    tile[t][r] = NAN;
            g_k->gemm[type](n, w, w_stride, nr, kbuf, a_stride, nt, &tile[0][0], NR);
            for (int t = 0; t < NT; t++)
                for (int r = 0; r < NR; r++) {
                    const bool inside = t < nt && r < nr;
                    if (inside ? memcmp(&tile[t][r], &one[t][r], sizeof(float)) != 0 : !isnan(tile[t][r]))
                        mismatches++;
                }
        }
    CHECK(mismatches == 0, "%s n=%lld: %d outputs differ between tile shapes (or were written outside)",
          info->name, (long long)n, mismatches);
    free(wbuf);
    free(abuf);
    free(kbuf);
    free(x);
    free(wf);
}

static void test_gemm(void)
{
    printf("  %-5s %16s\n", "type", "gemm err/tol");
    for (size_t i = 0; i < sizeof k_gemm_tol / sizeof k_gemm_tol[0]; i++) {
        const uint32_t type = k_gemm_tol[i].type;
        const int64_t block = sl_quant_act_block(g_ref->act[type]);
        /* One block, an odd number of blocks, and model-sized rows. */
        const int64_t sizes[] = {block, 3 * block, 7 * block, 4096, 11008 / block * block};
        double worst = 0;
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++)
            test_gemm_type(type, k_gemm_tol[i].ulps, sizes[si], &worst);
        printf("  %-5s %16.3g\n", sl_dtype_name(type), worst);
    }
}

/* ---- float-activation dots and float vector operations ------------------------------ */

/* Float dots: the reference sums spans of 256 in order, a native kernel in
 * lanes; both are within (n + 16) eps sum |w x| of the exact value, so of
 * each other within twice that. */
#define FLOAT_DOT_ULPS 2.0

static void test_float_dots(void)
{
    static const uint32_t types[] = {SL_F32, SL_F16, SL_BF16};
    static const int64_t sizes[] = {1, 7, 16, 31, 64, 172, 256, 1000, 4096};
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const uint32_t type = types[ti];
        double worst = 0;
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            const int64_t n = sizes[si];
            float *wf = malloc((size_t)n * sizeof *wf), *x = malloc((size_t)n * sizeof *x);
            void *w = malloc((size_t)n * 4);
            SL_ASSERT(wf && x && w);
            random_acts(wf, n);
            random_acts(x, n);
            sl_quant_from_float(type)(wf, w, n);
            g_ref->to_float[type](w, wf, n);
            double abs = 0;
            for (int64_t i = 0; i < n; i++)
                abs += fabs((double)wf[i] * x[i]);
            const float a = g_ref->dot[type](w, x, n), b = g_k->dot[type](w, x, n);
            const double bound = FLOAT_DOT_ULPS * 0x1p-24 * (double)(n + 16) * abs;
            CHECK(fabs((double)a - b) <= bound, "%s dot n=%lld: %.9g vs %.9g", sl_dtype_name(type),
                  (long long)n, b, a);
            if (bound > 0)
                worst = fmax(worst, fabs((double)a - b) / bound);
            free(wf);
            free(x);
            free(w);
        }
        printf("  %-5s %16.3g\n", sl_dtype_name(type), worst);
    }
}

/* Element-wise results: relative error in units of float epsilon. */
#define EXP_ULPS 4.0  /* exp approximations against the C library's expf */
#define NORM_ULPS 4.0 /* rms_norm: the double sum's order, then 3 roundings */
#define AXPY_ULPS 2.0 /* of 2^-24 (|y| + |a x|): one rounding against two */
#define VDOT_ULPS 2.0 /* as the float dots */

static double rel_ulps(float got, float want)
{
    if (got == want)
        return 0;
    return fabs((double)got - want) / (fabs((double)want) * 0x1p-23 + 1e-37);
}

static void test_float_ops(void)
{
    static const int64_t sizes[] = {1, 5, 16, 33, 128, 172, 1000};
    double w_exp = 0, w_silu = 0, w_norm = 0, w_axpy = 0, w_vdot = 0;
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        const int64_t n = sizes[si];
        float *a = malloc((size_t)n * sizeof *a), *b = malloc((size_t)n * sizeof *b);
        float *c = malloc((size_t)n * sizeof *c), *d = malloc((size_t)n * sizeof *d);
        float *u = malloc((size_t)n * sizeof *u);
        SL_ASSERT(a && b && c && d && u);
        for (int64_t i = 0; i < n; i++) {
            a[i] = rng_normal() * 8.0f; /* scores and gates over a wide range */
            u[i] = rng_normal();
        }
        /* exp_sum */
        memcpy(c, a, (size_t)n * sizeof *a);
        memcpy(d, a, (size_t)n * sizeof *a);
        float mx = a[0];
        for (int64_t i = 1; i < n; i++)
            mx = fmaxf(mx, a[i]);
        const double s0 = g_ref->exp_sum(c, mx, n), s1 = g_k->exp_sum(d, mx, n);
        for (int64_t i = 0; i < n; i++) {
            /* Values far below the maximum are tiny: judge them on the sum's scale. */
            const double e = fabs((double)c[i] - d[i]) / (fabs((double)c[i]) * 0x1p-23 + 1e-30);
            w_exp = fmax(w_exp, c[i] > 1e-30f ? e : 0);
        }
        CHECK(fabs(s0 - s1) <= EXP_ULPS * 0x1p-23 * s0, "exp_sum n=%lld: %.9g vs %.9g", (long long)n, s1, s0);
        /* silu_mul */
        memcpy(c, a, (size_t)n * sizeof *a);
        memcpy(d, a, (size_t)n * sizeof *a);
        g_ref->silu_mul(c, u, n);
        g_k->silu_mul(d, u, n);
        for (int64_t i = 0; i < n; i++)
            w_silu = fmax(w_silu, rel_ulps(d[i], c[i]));
        /* rms_norm (in place for the variant, as forward.c uses it too) */
        g_ref->rms_norm(a, u, c, n, 1e-5f);
        memcpy(d, a, (size_t)n * sizeof *a);
        g_k->rms_norm(d, u, d, n, 1e-5f);
        for (int64_t i = 0; i < n; i++)
            w_norm = fmax(w_norm, rel_ulps(d[i], c[i]));
        /* axpy: judged on the scale of the terms */
        for (int64_t i = 0; i < n; i++)
            c[i] = d[i] = u[i];
        g_ref->axpy(c, 0.37f, a, n);
        g_k->axpy(d, 0.37f, a, n);
        for (int64_t i = 0; i < n; i++) {
            const double scale = fabs((double)u[i]) + fabs(0.37 * a[i]);
            w_axpy = fmax(w_axpy, fabs((double)c[i] - d[i]) / (scale * 0x1p-24));
        }
        /* vdot */
        double abs = 0;
        for (int64_t i = 0; i < n; i++)
            abs += fabs((double)a[i] * u[i]);
        const float v0 = g_ref->vdot(a, u, n), v1 = g_k->vdot(a, u, n);
        w_vdot = fmax(w_vdot, fabs((double)v0 - v1) / (0x1p-24 * (double)(n + 16) * abs));
        free(a);
        free(b);
        free(c);
        free(d);
        free(u);
    }
    CHECK(w_exp <= EXP_ULPS, "exp_sum values: %.3g ulps > %g", w_exp, EXP_ULPS);
    CHECK(w_silu <= EXP_ULPS + 2, "silu_mul: %.3g ulps > %g", w_silu, EXP_ULPS + 2);
    CHECK(w_norm <= NORM_ULPS, "rms_norm: %.3g ulps > %g", w_norm, NORM_ULPS);
    CHECK(w_axpy <= AXPY_ULPS, "axpy: %.3g half-ulps of the terms > %g", w_axpy, AXPY_ULPS);
    CHECK(w_vdot <= VDOT_ULPS, "vdot: %.3g > %g", w_vdot, VDOT_ULPS);
    printf("  float ops (ulps): exp %.2g  silu_mul %.2g  rms_norm %.2g  axpy %.2g  vdot %.2g (of tol)\n",
           w_exp, w_silu, w_norm, w_axpy, w_vdot);
}

/* Attention's two fused operations against the reference: scores within the
 * float dots' bound of each row's exact value (times the scale), and each
 * output element of the weighted sum within (n + 16) eps of the sum of its
 * terms' magnitudes (the reference adds in row order, a native one in
 * fused multiply-adds). Row counts and head sizes cover the tails. */
static void test_attention_ops(void)
{
    static const int64_t dims[] = {8, 13, 64, 128, 200, 256, 300};
    static const int64_t rows[] = {0, 1, 7, 100};
    double w_scores = 0, w_wsum = 0;
    for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++)
        for (size_t ri = 0; ri < sizeof rows / sizeof rows[0]; ri++) {
            const int64_t dim = dims[di], n = rows[ri];
            float *q = malloc((size_t)dim * sizeof *q), *kv = malloc((size_t)(n * dim + 1) * sizeof *kv);
            float *s0 = malloc((size_t)(n + 1) * sizeof *s0), *s1 = malloc((size_t)(n + 1) * sizeof *s1);
            float *o0 = malloc((size_t)dim * sizeof *o0), *o1 = malloc((size_t)dim * sizeof *o1);
            SL_ASSERT(q && kv && s0 && s1 && o0 && o1);
            for (int64_t i = 0; i < dim; i++)
                q[i] = rng_normal();
            for (int64_t i = 0; i < n * dim; i++)
                kv[i] = rng_normal();
            const float scale = 0.125f;
            const float m0 = g_ref->attn_scores(q, kv, n, dim, scale, s0);
            const float m1 = g_k->attn_scores(q, kv, n, dim, scale, s1);
            CHECK(n > 0 || (isinf(m0) && m0 < 0 && isinf(m1) && m1 < 0), "scores of no rows: max %g, %g", m0,
                  m1);
            float mx = -INFINITY;
            for (int64_t j = 0; j < n; j++) {
                double abs = 0;
                for (int64_t i = 0; i < dim; i++)
                    abs += fabs((double)q[i] * kv[j * dim + i]);
                const double bound = 0x1p-24 * (double)(dim + 16) * abs * scale + 1e-30;
                w_scores = fmax(w_scores, fabs((double)s0[j] - s1[j]) / bound);
                mx = fmaxf(mx, s1[j]);
            }
            CHECK(n == 0 || m1 == mx, "scores: the returned maximum %g is not the largest score %g", m1, mx);
            /* weights: the reference's scores, made positive */
            for (int64_t j = 0; j < n; j++)
                s0[j] = fabsf(s0[j]) + 0.01f;
            g_ref->attn_wsum(o0, s0, 0.3f, kv, n, dim);
            for (int64_t i = 0; i < dim; i++)
                o1[i] = NAN; /* overwritten, never read */
            g_k->attn_wsum(o1, s0, 0.3f, kv, n, dim);
            for (int64_t i = 0; i < dim; i++) {
                double abs = 0;
                for (int64_t j = 0; j < n; j++)
                    abs += fabs((double)(s0[j] * 0.3f) * kv[j * dim + i]);
                const double err = fabs((double)o0[i] - o1[i]);
                CHECK(err <= 2.0 * 0x1p-24 * (double)(n + 16) * abs, "wsum n=%lld dim=%lld [%lld]: %.9g vs %.9g",
                      (long long)n, (long long)dim, (long long)i, o1[i], o0[i]);
                if (abs > 0)
                    w_wsum = fmax(w_wsum, err / (0x1p-24 * (double)(n + 16) * abs));
            }
            free(q);
            free(kv);
            free(s0);
            free(s1);
            free(o0);
            free(o1);
        }
    CHECK(w_scores <= VDOT_ULPS, "attention scores: %.3g > %g", w_scores, VDOT_ULPS);
    printf("  attention (of tol): scores %.2g  weighted sum %.2g\n", w_scores, w_wsum);
}

/* Element-wise operations give every element the same value whatever range
 * the call covers: forward.c splits rows across threads and batches at
 * arbitrary points, and results must not depend on that (bit for bit). */
static void test_split_invariance(void)
{
    enum { N = 203 };
    float g[N], u[N], whole[N], parts[N], s_whole[N], s_parts[N];
    for (int i = 0; i < N; i++) {
        g[i] = rng_normal() * 6.0f;
        u[i] = rng_normal();
    }
    int bad = 0;
    for (int cut = 1; cut < 40; cut += 3) {
        memcpy(whole, g, sizeof g);
        memcpy(parts, g, sizeof g);
        g_k->silu_mul(whole, u, N);
        g_k->silu_mul(parts, u, cut);
        g_k->silu_mul(parts + cut, u + cut, N - cut);
        bad += memcmp(whole, parts, sizeof whole) != 0;
        memcpy(s_whole, g, sizeof g);
        memcpy(s_parts, g, sizeof g);
        g_k->exp_sum(s_whole, 3.0f, N);
        g_k->exp_sum(s_parts, 3.0f, cut);
        g_k->exp_sum(s_parts + cut, 3.0f, N - cut);
        bad += memcmp(s_whole, s_parts, sizeof s_whole) != 0;
        memcpy(whole, u, sizeof u);
        memcpy(parts, u, sizeof u);
        g_k->axpy(whole, 0.7f, g, N);
        g_k->axpy(parts, 0.7f, g, cut);
        g_k->axpy(parts + cut, 0.7f, g + cut, N - cut);
        bad += memcmp(whole, parts, sizeof whole) != 0;
    }
    CHECK(bad == 0, "%d element-wise results changed with where the call was split", bad);
}

int main(void)
{
    g_ref = sl_kernels_generic();
    g_k = sl_kernels_get();
    if (!g_k) {
        /* sl_kernels_get logged why. A variant sluice has on some
         * architecture but this build or CPU cannot run is a skip (the same
         * test list runs everywhere); any other name is a failure. */
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
    printf("kernels: %s against generic\n", g_k->name);
    test_table();
    test_quantize();
    test_gemm();
    test_float_dots();
    test_float_ops();
    test_attention_ops();
    test_split_invariance();
    return sl_test_finish();
}
