/* Tests of the tensor types: reference dequantization against the reference
 * toolchain's dumps of every tiny-* model, the dot products against
 * dequantize-then-dot in double, quantizer round trips (and byte identity
 * with the reference toolchain's quantized files), f16/bf16 conversion edge
 * cases, and the kernel dispatch. */
#include <dirent.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/half.h"
#include "common/log.h"
#include "compute/kernels.h"
#include "compute/quant.h"
#include "model/dtype.h"
#include "model/gguf.h"
#include "tests/testutil.h"

/* Every type with kernels, in the order results are reported. */
static const uint32_t k_types[] = {SL_F32,  SL_F16,  SL_BF16, SL_Q8_0, SL_Q4_0, SL_Q4_1, SL_Q5_0,
                                   SL_Q5_1, SL_Q2_K, SL_Q3_K, SL_Q4_K, SL_Q5_K, SL_Q6_K};
#define N_TYPES (sizeof k_types / sizeof k_types[0])

/* Worst error seen per type, reported at the end. */
static double g_dequant_err[SL_DTYPE_COUNT]; /* relative, against the reference dumps */
static double g_dot_err[SL_DTYPE_COUNT];     /* (|dot - exact| / sum |w x|) / tolerance */
static double g_rt_err[SL_DTYPE_COUNT];      /* round-trip error / its bound */

/* ---- deterministic random numbers ------------------------------------------ */

static uint64_t g_rng = 0x5eed5eed12345678ull;

static uint64_t rng_u64(void)
{
    /* splitmix64: good enough and trivially reproducible */
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_unit(void)
{
    return (double)(rng_u64() >> 11) * 0x1p-53;
} /* [0, 1) */

static float rng_normal(void)
{
    double u = rng_unit(), v = rng_unit();
    return (float)(sqrt(-2.0 * log(1.0 - u)) * cos(6.283185307179586 * v));
}

/* ---- layouts and tables ------------------------------------------------------ */

static void test_layouts(void)
{
    static const struct {
        uint32_t type;
        size_t size;
    } blocks[] = {
        {SL_Q4_0, sizeof(sl_block_q4_0)}, {SL_Q4_1, sizeof(sl_block_q4_1)}, {SL_Q5_0, sizeof(sl_block_q5_0)},
        {SL_Q5_1, sizeof(sl_block_q5_1)}, {SL_Q8_0, sizeof(sl_block_q8_0)}, {SL_Q2_K, sizeof(sl_block_q2_k)},
        {SL_Q3_K, sizeof(sl_block_q3_k)}, {SL_Q4_K, sizeof(sl_block_q4_k)}, {SL_Q5_K, sizeof(sl_block_q5_k)},
        {SL_Q6_K, sizeof(sl_block_q6_k)},
    };
    for (size_t i = 0; i < sizeof blocks / sizeof blocks[0]; i++) {
        const sl_dtype_info *info = sl_dtype_get(blocks[i].type);
        CHECK(info && info->block_bytes == blocks[i].size, "%s: struct %zu bytes vs dtype %u",
              sl_dtype_name(blocks[i].type), blocks[i].size, info ? info->block_bytes : 0);
    }
    const sl_kernels *k = sl_kernels_generic();
    CHECK(k != NULL && strcmp(k->name, "generic") == 0, "generic table");
    for (uint32_t t = 0; t < SL_DTYPE_COUNT; t++) {
        const sl_dtype_info *info = sl_dtype_get(t);
        bool sup = info && info->supported;
        CHECK((k->to_float[t] != NULL) == sup && (k->dot[t] != NULL) == sup,
              "type %u (%s): table entries vs supported=%d", t, sl_dtype_name(t), sup);
        CHECK(k->to_float[t] == sl_quant_to_float(t) && k->dot[t] == sl_quant_dot(t),
              "type %u: generic table is filled from quant.c", t);
    }
    /* The layout helpers, on bytes packed by hand from the layout comments
     * in quant.h; the values use the top two bits of the 6-bit fields. */
    uint8_t sc[8], mn[8], packed[12];
    for (int j = 0; j < 8; j++) {
        sc[j] = (uint8_t)(63 - 5 * j);
        mn[j] = (uint8_t)(17 + 6 * j);
    }
    for (int j = 0; j < 4; j++) {
        packed[j] = (uint8_t)(sc[j] | (sc[j + 4] >> 4) << 6);
        packed[j + 4] = (uint8_t)(mn[j] | (mn[j + 4] >> 4) << 6);
        packed[j + 8] = (uint8_t)((sc[j + 4] & 15) | (mn[j + 4] & 15) << 4);
    }
    for (int j = 0; j < 8; j++) {
        uint8_t s, m;
        sl_quant_k4_scale_min(j, packed, &s, &m);
        CHECK(s == sc[j] && m == mn[j], "k4 scale/min %d: got %u/%u want %u/%u", j, s, m, sc[j], mn[j]);
    }
    /* Q3_K: scale k stored as 6 bits u[k]; the helper returns u[k] - 32. */
    uint8_t u[16], q3[12] = {0};
    for (int k = 0; k < 16; k++)
        u[k] = (uint8_t)((k * 37 + 11) & 63);
    for (int k = 0; k < 16; k++) {
        q3[k % 8] |= (uint8_t)((u[k] & 15) << (k < 8 ? 0 : 4));
        q3[8 + k % 4] |= (uint8_t)((u[k] >> 4) << (2 * (k / 4)));
    }
    for (int k = 0; k < 16; k++)
        CHECK(sl_quant_q3_k_scale(k, q3) == (int)u[k] - 32, "q3_k scale %d: got %d want %d", k,
              sl_quant_q3_k_scale(k, q3), (int)u[k] - 32);
}

/* ---- dequantization against the reference dumps ------------------------------ */

static uint32_t type_by_name(const char *name)
{
    for (uint32_t t = 0; t < SL_DTYPE_COUNT; t++)
        if (sl_dtype_get(t) && strcmp(sl_dtype_name(t), name) == 0)
            return t;
    return UINT32_MAX;
}

static double rel(double a, double b)
{
    return fabs(a - b) / fmax(fabs(b), 1e-30);
}

/* Dequantizes every tensor of models/<stem>.gguf and compares it with
 * refs/<stem>.dequant.json. */
static void check_model(const char *stem)
{
    char path[1024], rel_path[512];
    snprintf(rel_path, sizeof rel_path, "refs/%s.dequant.json", stem);
    cJSON *ref = sl_test_load_json(sl_testdata_path(path, sizeof path, rel_path));
    CHECK(ref != NULL, "%s: reference dump", stem);
    if (!ref)
        return;
    snprintf(rel_path, sizeof rel_path, "models/%s.gguf", stem);
    sl_gguf *g = NULL;
    int rc = sl_gguf_open(sl_testdata_path(path, sizeof path, rel_path), &g);
    CHECK(rc == 0, "%s: open: %d", stem, rc);
    if (rc != 0) {
        cJSON_Delete(ref);
        return;
    }
    const sl_kernels *k = sl_kernels_generic();
    const cJSON *tensors = cJSON_GetObjectItemCaseSensitive(ref, "tensors");
    CHECK(cJSON_GetArraySize(tensors) == (int)sl_gguf_tensor_count(g), "%s: %d tensors in dump, %llu in file",
          stem, cJSON_GetArraySize(tensors), (unsigned long long)sl_gguf_tensor_count(g));
    int n_checked = 0;
    const cJSON *jt;
    cJSON_ArrayForEach(jt, tensors)
    {
        const char *name = cJSON_GetObjectItemCaseSensitive(jt, "name")->valuestring;
        const char *tname = cJSON_GetObjectItemCaseSensitive(jt, "type")->valuestring;
        const sl_gguf_tensor *t = sl_gguf_tensor_find(g, name);
        CHECK(t != NULL, "%s: tensor %s missing", stem, name);
        if (!t)
            continue;
        CHECK(t->type == type_by_name(tname), "%s %s: type %s, dump says %s", stem, name,
              sl_dtype_name(t->type), tname);
        const cJSON *jne = cJSON_GetObjectItemCaseSensitive(jt, "ne");
        int64_t nel = 1;
        bool ne_ok = cJSON_GetArraySize(jne) <= SL_GGUF_MAX_DIMS;
        for (int d = 0; d < SL_GGUF_MAX_DIMS; d++) {
            int64_t want = d < cJSON_GetArraySize(jne) ? (int64_t)cJSON_GetArrayItem(jne, d)->valuedouble : 1;
            ne_ok = ne_ok && t->ne[d] == want;
            nel *= t->ne[d];
        }
        CHECK(ne_ok, "%s %s: dims differ from the dump", stem, name);
        sl_to_float_fn f = t->type < SL_DTYPE_COUNT ? k->to_float[t->type] : NULL;
        CHECK(f != NULL, "%s %s: no dequantizer for %s", stem, name, sl_dtype_name(t->type));
        if (!f || !ne_ok)
            continue;
        float *y = malloc((size_t)nel * sizeof *y);
        SL_ASSERT(y != NULL);
        f(sl_gguf_tensor_data(g, t), y, nel);

        double sum = 0, sumsq = 0;
        for (int64_t i = 0; i < nel; i++) {
            sum += y[i];
            sumsq += (double)y[i] * y[i];
        }
        double want_sum = cJSON_GetObjectItemCaseSensitive(jt, "sum")->valuedouble;
        double want_sumsq = cJSON_GetObjectItemCaseSensitive(jt, "sumsq")->valuedouble;
        /* Both sides sum the same floats in double, so they agree to ~1e-15
         * unless a value is wrong. */
        double sum_err = rel(sum, want_sum);
        CHECK(sum_err <= 1e-6, "%s %s: sum %.12g, dump %.12g", stem, name, sum, want_sum);
        CHECK(rel(sumsq, want_sumsq) <= 1e-6, "%s %s: sumsq %.12g, dump %.12g", stem, name, sumsq,
              want_sumsq);
        double worst = fmax(sum_err, rel(sumsq, want_sumsq));

        const cJSON *rows = cJSON_GetObjectItemCaseSensitive(jt, "rows");
        int64_t nrows = nel / t->ne[0];
        CHECK(cJSON_GetArraySize(rows) == (nrows < 2 ? nrows : 2), "%s %s: %d rows in dump", stem, name,
              cJSON_GetArraySize(rows));
        for (int r = 0; r < cJSON_GetArraySize(rows) && r < nrows; r++) {
            const cJSON *row = cJSON_GetArrayItem(rows, r);
            CHECK(cJSON_GetArraySize(row) == t->ne[0], "%s %s row %d: length", stem, name, r);
            if (cJSON_GetArraySize(row) != t->ne[0])
                continue;
            double rms = 0;
            const cJSON *v;
            cJSON_ArrayForEach(v, row) rms += v->valuedouble * v->valuedouble;
            rms = sqrt(rms / (double)t->ne[0]);
            int i = 0, bad = 0;
            double row_worst = 0;
            cJSON_ArrayForEach(v, row)
            {
                /* Near 0, relative error is meaningless: floor the scale at
                 * the row's rms. */
                double e =
                    fabs((double)y[r * t->ne[0] + i] - v->valuedouble) / fmax(fabs(v->valuedouble), rms);
                if (e > 1e-6 && bad++ == 0)
                    fprintf(stderr, "  %s %s row %d [%d]: %.9g vs dump %.9g\n", stem, name, r, i,
                            y[r * t->ne[0] + i], v->valuedouble);
                row_worst = fmax(row_worst, e);
                i++;
            }
            CHECK(bad == 0, "%s %s row %d: %d values off by more than 1e-6 (worst %.3g)", stem, name, r, bad,
                  row_worst);
            worst = fmax(worst, row_worst);
        }
        g_dequant_err[t->type] = fmax(g_dequant_err[t->type], worst);
        free(y);
        n_checked++;
    }
    printf("  %-22s %d tensors\n", stem, n_checked);
    sl_gguf_close(g);
    cJSON_Delete(ref);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_reference_models(void)
{
    char path[1024];
    DIR *dir = opendir(sl_testdata_path(path, sizeof path, "models"));
    CHECK(dir != NULL, "cannot list %s", path);
    if (!dir)
        return;
    char *stems[64];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL && n < 64) {
        size_t len = strlen(e->d_name);
        if (strncmp(e->d_name, "tiny-", 5) == 0 && len > 5 && strcmp(e->d_name + len - 5, ".gguf") == 0)
            stems[n++] = strndup(e->d_name, len - 5);
    }
    closedir(dir);
    qsort(stems, (size_t)n, sizeof stems[0], cmp_str);
    /* Guard against the glob silently matching nothing. */
    CHECK(n >= 16, "found only %d tiny-* models", n);
    for (int i = 0; i < n; i++) {
        check_model(stems[i]);
        free(stems[i]);
    }
}

/* ---- quantizers against the reference toolchain's bytes ----------------------
 * The tiny-llama-<type> models hold the same seeded weights as tiny-llama-f32,
 * quantized by the reference toolchain. The legacy types and F16/BF16 have a
 * single deterministic round-to-nearest encoder there, so quantizing the F32
 * tensors must give the same bytes. */
static void test_reference_bytes(void)
{
    static const uint32_t types[] = {SL_F16, SL_BF16, SL_Q8_0, SL_Q4_0, SL_Q4_1, SL_Q5_0, SL_Q5_1};
    char path[1024];
    sl_gguf *src = NULL;
    int rc = sl_gguf_open(sl_testdata_path(path, sizeof path, "models/tiny-llama-f32.gguf"), &src);
    CHECK(rc == 0, "open tiny-llama-f32: %d", rc);
    if (rc != 0)
        return;
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        uint32_t type = types[ti];
        char rel_path[256], lower[16];
        snprintf(lower, sizeof lower, "%s", sl_dtype_name(type));
        for (char *c = lower; *c; c++)
            *c = (char)(*c >= 'A' && *c <= 'Z' ? *c - 'A' + 'a' : *c);
        snprintf(rel_path, sizeof rel_path, "models/tiny-llama-%s.gguf", lower);
        sl_gguf *q = NULL;
        rc = sl_gguf_open(sl_testdata_path(path, sizeof path, rel_path), &q);
        CHECK(rc == 0, "open %s: %d", rel_path, rc);
        if (rc != 0)
            continue;
        sl_from_float_fn from = sl_quant_from_float(type);
        uint64_t blocks = 0, same = 0;
        int n_tensors = 0;
        for (uint64_t i = 0; i < sl_gguf_tensor_count(q); i++) {
            const sl_gguf_tensor *tq = sl_gguf_tensor_at(q, i);
            if (tq->type != type)
                continue;
            char name[256];
            snprintf(name, sizeof name, "%.*s", (int)tq->name.len, tq->name.ptr);
            const sl_gguf_tensor *tf = sl_gguf_tensor_find(src, name);
            CHECK(tf && tf->type == SL_F32 &&
                      tf->nbytes / 4 ==
                          tq->nbytes / sl_dtype_get(type)->block_bytes * sl_dtype_get(type)->block,
                  "%s: %s has no F32 twin", rel_path, name);
            if (!tf)
                continue;
            int64_t nel = (int64_t)(tf->nbytes / 4);
            uint8_t *buf = malloc(tq->nbytes);
            SL_ASSERT(buf != NULL);
            from(sl_gguf_tensor_data(src, tf), buf, nel);
            const uint8_t *want = sl_gguf_tensor_data(q, tq);
            uint32_t bb = sl_dtype_get(type)->block_bytes;
            for (uint64_t b = 0; b < tq->nbytes / bb; b++) {
                blocks++;
                same += memcmp(buf + b * bb, want + b * bb, bb) == 0;
            }
            free(buf);
            n_tensors++;
        }
        CHECK(n_tensors > 0 && same == blocks, "%s: %llu of %llu blocks identical", rel_path,
              (unsigned long long)same, (unsigned long long)blocks);
        printf("  quantize %-5s: %llu/%llu blocks byte-identical to the reference (%d tensors)\n",
               sl_dtype_name(type), (unsigned long long)same, (unsigned long long)blocks, n_tensors);
        sl_gguf_close(q);
    }
    sl_gguf_close(src);
}

/* ---- dot products ---------------------------------------------------------------
 * The generic dot sums B products per block sequentially in float, then the
 * n/B block sums sequentially (B = 256 for the float types' spans). The
 * standard bound for such a sum is |error| <= gamma_k * sum |w_i x_i| with
 * k = B + n/B + 1 terms on any path and gamma_k ~ k * 2^-24; one extra ulp
 * covers the products' own rounding. The per-type tolerance is that bound. */
static double dot_tolerance(uint32_t type, int64_t n)
{
    int64_t b = sl_dtype_get(type)->block > 1 ? sl_dtype_get(type)->block : 256;
    int64_t k = (n < b ? n : b) + (n + b - 1) / b + 2;
    return (double)k * 0x1p-24 * 1.01;
}

/* A random but plausible f16 scale: magnitude in [2^-10, 2^-4). */
static uint16_t rand_scale(bool allow_negative)
{
    float v = (float)ldexp(1.0 + rng_unit(), -10 + (int)(rng_u64() % 6));
    if (allow_negative && (rng_u64() & 1))
        v = -v;
    return sl_f32_to_f16(v);
}

/* Fills the n / block blocks of `type` at dst with random bits, then gives every f16 field
 * a finite, plausible value (random bits there would be inf/nan). */
static void random_blocks(uint32_t type, void *dst, int64_t n)
{
    const sl_dtype_info *info = sl_dtype_get(type);
    uint8_t *p = dst;
    int64_t nb = n / info->block;
    for (int64_t i = 0; i < nb * info->block_bytes; i++)
        p[i] = (uint8_t)rng_u64();
    for (int64_t i = 0; i < nb; i++) {
        void *b = p + i * info->block_bytes;
        switch (type) {
        case SL_F32:
            *(float *)b = rng_normal();
            break;
        case SL_F16:
            *(uint16_t *)b = sl_f32_to_f16(rng_normal());
            break;
        case SL_BF16:
            *(uint16_t *)b = sl_f32_to_bf16(rng_normal());
            break;
        case SL_Q4_0:
            ((sl_block_q4_0 *)b)->d = rand_scale(true);
            break;
        case SL_Q5_0:
            ((sl_block_q5_0 *)b)->d = rand_scale(true);
            break;
        case SL_Q8_0:
            ((sl_block_q8_0 *)b)->d = rand_scale(true);
            break;
        case SL_Q3_K:
            ((sl_block_q3_k *)b)->d = rand_scale(true);
            break;
        case SL_Q6_K:
            ((sl_block_q6_k *)b)->d = rand_scale(true);
            break;
        case SL_Q4_1:
            ((sl_block_q4_1 *)b)->d = rand_scale(false);
            ((sl_block_q4_1 *)b)->m = rand_scale(true);
            break;
        case SL_Q5_1:
            ((sl_block_q5_1 *)b)->d = rand_scale(false);
            ((sl_block_q5_1 *)b)->m = rand_scale(true);
            break;
        case SL_Q2_K:
            ((sl_block_q2_k *)b)->d = rand_scale(false);
            ((sl_block_q2_k *)b)->dmin = rand_scale(false);
            break;
        case SL_Q4_K:
            ((sl_block_q4_k *)b)->d = rand_scale(false);
            ((sl_block_q4_k *)b)->dmin = rand_scale(false);
            break;
        case SL_Q5_K:
            ((sl_block_q5_k *)b)->d = rand_scale(false);
            ((sl_block_q5_k *)b)->dmin = rand_scale(false);
            break;
        default:
            SL_ASSERT(!"unexpected type");
        }
    }
}

static void test_dot(void)
{
    static const int64_t sizes[] = {32, 96, 256, 768, 4096, 11008};
    const sl_kernels *k = sl_kernels_generic();
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        uint32_t type = k_types[ti];
        const sl_dtype_info *info = sl_dtype_get(type);
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            int64_t n = sizes[si];
            if (n % info->block != 0)
                continue;
            for (int rep = 0; rep < 8; rep++) {
                void *w = malloc((size_t)sl_dtype_bytes(type, (uint64_t)n));
                float *wf = malloc((size_t)n * sizeof *wf);
                float *x = malloc((size_t)n * sizeof *x);
                SL_ASSERT(w && wf && x);
                random_blocks(type, w, n);
                /* Activations with a spread of magnitudes, some sign-biased
                 * so the sums do not all cancel. */
                float bias = rep % 2 ? 0.5f : 0.0f;
                for (int64_t i = 0; i < n; i++)
                    x[i] = (rng_normal() + bias) * (float)ldexp(1.0, (int)(rng_u64() % 5) - 2);
                k->to_float[type](w, wf, n);
                double exact = 0, mag = 0;
                for (int64_t i = 0; i < n; i++) {
                    exact += (double)wf[i] * x[i];
                    mag += fabs((double)wf[i] * x[i]);
                }
                float got = k->dot[type](w, x, n);
                double err = fabs(got - exact) / fmax(mag, 1e-30);
                double tol = dot_tolerance(type, n);
                CHECK(err <= tol, "%s dot n=%lld: %.9g vs exact %.9g (err %.3g > tol %.3g)", info->name,
                      (long long)n, got, exact, err, tol);
                g_dot_err[type] = fmax(g_dot_err[type], err / tol);
                free(w);
                free(wf);
                free(x);
            }
        }
    }
}

/* ---- quantizer round trips --------------------------------------------------------
 * For each quantizer, a bound on |x - dequant(quant(x))| per element that
 * follows from the encoding, computed from the input block alone (never from
 * the encoder's output), and a nominal step for the rms check. u16(v) is the
 * largest error of rounding v to f16 (relative 2^-11, absolute 2^-25 among
 * the subnormals); scales stored as f16 contribute that error times the
 * largest quant. */

static double u16(double v)
{
    return fmax(fabs(v) * 0x1p-11, 0x1p-25);
}

static void block_min_max(const float *x, int n, double *lo, double *hi, double *amax)
{
    *lo = x[0];
    *hi = x[0];
    *amax = 0;
    for (int j = 0; j < n; j++) {
        *lo = fmin(*lo, x[j]);
        *hi = fmax(*hi, x[j]);
        *amax = fmax(*amax, fabs(x[j]));
    }
}

/* Writes the per-element bound and the nominal step for block `x` (of the
 * type's block size) into bound[] and step[]. */
static void rt_bounds(uint32_t type, const float *x, double *bound, double *step)
{
    double lo, hi, amax;
    int bs = (int)sl_dtype_get(type)->block;
    block_min_max(x, bs, &lo, &hi, &amax);
    double slack = amax * 0x1p-20; /* float rounding inside the encoder */
    double d;
    switch (type) {
    case SL_F16:
        bound[0] = fmax(fabs(x[0]) * 0x1p-11, 0x1p-25);
        step[0] = fmax(fabs(x[0]) * 0x1p-10, 0x1p-24);
        return;
    case SL_BF16:
        bound[0] = fmax(fabs(x[0]) * 0x1p-8, 0x1p-134);
        step[0] = fmax(fabs(x[0]) * 0x1p-7, 0x1p-133);
        return;
    case SL_Q8_0: /* d = amax/127; round to nearest */
        d = amax / 127;
        for (int j = 0; j < bs; j++) {
            bound[j] = 0.5 * d + 127 * u16(d) + slack;
            step[j] = d;
        }
        return;
    case SL_Q4_0: /* d = amax/8; the side opposite the extreme clips by up to one step */
    case SL_Q5_0: /* d = amax/16; likewise */
        d = amax / (type == SL_Q4_0 ? 8 : 16);
        for (int j = 0; j < bs; j++) {
            bound[j] = d + (type == SL_Q4_0 ? 8 : 16) * u16(d) + slack;
            step[j] = d;
        }
        return;
    case SL_Q4_1:   /* d = (max-min)/15, offset min */
    case SL_Q5_1: { /* d = (max-min)/31 */
        int qmax = type == SL_Q4_1 ? 15 : 31;
        d = (hi - lo) / qmax;
        for (int j = 0; j < bs; j++) {
            bound[j] = 0.5 * d + qmax * u16(d) + u16(lo) + slack;
            step[j] = d;
        }
        return;
    }
    case SL_Q4_K: {
        /* Sub-block j: offset dmin*m covers -min(0, lo_j) with at most one
         * dmin to spare; its step d*sc covers the rest in 15 steps with at
         * most one d to spare. dmin and d are rounded up to f16, by at most
         * one f16 ulp (2 * u16). */
        double slo[8], shi[8], max_off = 0, max_span = 0;
        for (int j = 0; j < 8; j++) {
            double a;
            block_min_max(x + 32 * j, 32, &slo[j], &shi[j], &a);
            slo[j] = fmin(slo[j], 0);
            max_off = fmax(max_off, -slo[j]);
            max_span = fmax(max_span, shi[j] - slo[j]);
        }
        double dmin_ub = max_off / 63 + 2 * u16(max_off / 63);
        double dr = (max_span + dmin_ub) / (15 * 63);
        double d_ub = dr + 2 * u16(dr);
        for (int j = 0; j < 8; j++) {
            double st = (shi[j] - slo[j] + dmin_ub) / 15 + d_ub;
            for (int l = 0; l < 32; l++) {
                bound[32 * j + l] = 0.5 * st + slack;
                step[32 * j + l] = st;
            }
        }
        return;
    }
    case SL_Q6_K: {
        /* Sub-block k needs a step of max(-lo/32, hi/31); it gets that
         * rounded up to a multiple of d, which is max need / 127 rounded up
         * to f16. */
        double need[16], max_need = 0;
        for (int k = 0; k < 16; k++) {
            double l2, h2, a;
            block_min_max(x + 16 * k, 16, &l2, &h2, &a);
            need[k] = fmax(fmax(-l2 / 32, h2 / 31), 0);
            max_need = fmax(max_need, need[k]);
        }
        double d_ub = max_need / 127 + 2 * u16(max_need / 127);
        for (int k = 0; k < 16; k++)
            for (int l = 0; l < 16; l++) {
                bound[16 * k + l] = 0.5 * (need[k] + d_ub) + slack;
                step[16 * k + l] = need[k] + d_ub;
            }
        return;
    }
    default:
        SL_ASSERT(!"no round-trip bound for this type");
    }
}

/* Test inputs: `kind` selects a distribution. */
static void fill_input(float *x, int64_t n, int kind)
{
    for (int64_t i = 0; i < n; i++) {
        switch (kind) {
        case 0:
            x[i] = rng_normal();
            break; /* weights-like */
        case 1:
            x[i] = (float)(rng_unit() * 2 - 1) * 1e-3f;
            break; /* small: f16 subnormal scales */
        case 2:
            x[i] = rng_normal() * 0.02f + 0.05f;
            break; /* all positive */
        case 3:
            x[i] = -(float)rng_unit() * 7.0f;
            break; /* all negative */
        default:   /* mostly small with rare large outliers */
            x[i] = rng_normal() * ((rng_u64() % 64) == 0 ? 30.0f : 0.1f);
            break;
        }
    }
}

static void test_round_trip(void)
{
    static const uint32_t types[] = {SL_F32,  SL_F16,  SL_BF16, SL_Q8_0, SL_Q4_0,
                                     SL_Q4_1, SL_Q5_0, SL_Q5_1, SL_Q4_K, SL_Q6_K};
    const int64_t n = 4096;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    uint8_t *q = malloc((size_t)sl_dtype_bytes(SL_F32, n));
    double *bound = malloc(n * sizeof *bound), *step = malloc(n * sizeof *step);
    SL_ASSERT(x && y && q && bound && step);
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        uint32_t type = types[ti];
        sl_from_float_fn from = sl_quant_from_float(type);
        CHECK(from != NULL, "%s: no quantizer", sl_dtype_name(type));
        if (!from)
            continue;
        int bs = (int)sl_dtype_get(type)->block;
        for (int kind = 0; kind < 5; kind++) {
            fill_input(x, n, kind);
            from(x, q, n);
            sl_quant_to_float(type)(q, y, n);
            if (type == SL_F32) {
                CHECK(memcmp(x, y, n * sizeof *x) == 0, "F32 round trip is not exact");
                continue;
            }
            int bad = 0;
            double rms = 0, worst = 0;
            for (int64_t b = 0; b < n; b += bs) {
                rt_bounds(type, x + b, bound + b, step + b);
            }
            for (int64_t i = 0; i < n; i++) {
                double e = fabs((double)y[i] - x[i]);
                if (e > bound[i] && bad++ == 0)
                    fprintf(stderr, "  %s kind %d [%lld]: %.9g -> %.9g, err %.3g > bound %.3g\n",
                            sl_dtype_name(type), kind, (long long)i, x[i], y[i], e, bound[i]);
                worst = fmax(worst, bound[i] > 0 ? e / bound[i] : (e > 0 ? INFINITY : 0));
                rms += step[i] > 0 ? (e / step[i]) * (e / step[i]) : 0;
            }
            rms = sqrt(rms / (double)n);
            CHECK(bad == 0, "%s kind %d: %d elements beyond the bound", sl_dtype_name(type), kind, bad);
            /* Rounding to nearest leaves errors spread over +-step/2: rms
             * step/sqrt(12) = 0.29 step. Truncation would give 0.58. */
            CHECK(rms <= 0.35, "%s kind %d: rms error %.3f steps", sl_dtype_name(type), kind, rms);
            g_rt_err[type] = fmax(g_rt_err[type], worst);
        }
    }

    /* The scale choices themselves: the extreme element lands on the
     * extreme quant. */
    fill_input(x, 64, 0);
    x[5] = 9.0f;   /* block 0: positive extreme */
    x[40] = -9.0f; /* block 1: negative extreme */
    sl_block_q8_0 b8[2];
    sl_quant_from_float(SL_Q8_0)(x, b8, 64);
    CHECK(b8[0].qs[5] == 127 && b8[1].qs[8] == -127, "Q8_0 extremes: %d %d", b8[0].qs[5], b8[1].qs[8]);
    CHECK(sl_f16_to_f32(b8[0].d) == sl_f16_to_f32(sl_f32_to_f16(9.0f / 127)), "Q8_0 d = amax/127");
    sl_block_q4_0 b4[2];
    sl_quant_from_float(SL_Q4_0)(x, b4, 64);
    CHECK((b4[0].qs[5] & 15) == 0 && (b4[1].qs[8] & 15) == 0, "Q4_0 extreme -> -8");
    CHECK(sl_f16_to_f32(b4[0].d) == sl_f16_to_f32(sl_f32_to_f16(-9.0f / 8)) &&
              sl_f16_to_f32(b4[1].d) == sl_f16_to_f32(sl_f32_to_f16(9.0f / 8)),
          "Q4_0 d = max / -8");

    /* All-zero blocks reproduce exactly in every type. */
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        uint32_t type = types[ti];
        memset(x, 0, n * sizeof *x);
        sl_quant_from_float(type)(x, q, 256);
        sl_quant_to_float(type)(q, y, 256);
        bool zero = true;
        for (int i = 0; i < 256; i++)
            zero = zero && y[i] == 0.0f;
        CHECK(zero, "%s: zeros do not round-trip", sl_dtype_name(type));
    }
    /* A constant block is exact where the encoding stores its value
     * directly: the float types, and the offset m of Q4_1/Q5_1 (d = 0). */
    static const uint32_t exact_const[] = {SL_F16, SL_BF16, SL_Q4_1, SL_Q5_1};
    for (int i = 0; i < 32; i++)
        x[i] = 0.375f;
    for (size_t ti = 0; ti < sizeof exact_const / sizeof exact_const[0]; ti++) {
        uint32_t type = exact_const[ti];
        sl_quant_from_float(type)(x, q, 32);
        sl_quant_to_float(type)(q, y, 32);
        bool same = true;
        for (int i = 0; i < 32; i++)
            same = same && y[i] == 0.375f;
        CHECK(same, "%s: a constant block does not round-trip (got %g)", sl_dtype_name(type), y[0]);
    }
    free(x);
    free(y);
    free(q);
    free(bound);
    free(step);
}

/* ---- f16 / bf16 conversions -------------------------------------------------------- */

/* Value of every f16 bit pattern, computed independently of half.h. */
static double f16_value(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return s ? -v : v;
}

/* Round-to-nearest-even f32 -> f16 by search over the ordered positive f16
 * values, with infinity standing for 2^16 so that halfway to it rounds up
 * exactly as IEEE overflow does. */
static uint16_t f16_reference(float f)
{
    uint16_t sign = signbit(f) ? 0x8000 : 0;
    double a = fabs((double)f);
    if (isnan(f))
        return 0x7e00;
    if (a >= 65536.0)
        return sign | 0x7c00;
    unsigned lo = 0, hi = 0x7c00; /* val(lo) <= a < val(hi) */
    while (hi - lo > 1) {
        unsigned mid = (lo + hi) / 2;
        if ((mid == 0x7c00 ? 65536.0 : f16_value((uint16_t)mid)) <= a)
            lo = mid;
        else
            hi = mid;
    }
    double vlo = f16_value((uint16_t)lo), vhi = hi == 0x7c00 ? 65536.0 : f16_value((uint16_t)hi);
    unsigned r = a - vlo < vhi - a ? lo : a - vlo > vhi - a ? hi : (lo & 1 ? hi : lo);
    return (uint16_t)(sign | r);
}

static uint16_t bf16_reference(float f)
{
    uint32_t x = sl_f32_to_bits(f);
    uint32_t lo = x & 0xffff0000u, hi = lo + 0x10000u;
    double a = fabs((double)f), vlo = fabs((double)sl_bits_to_f32(lo));
    double vhi = (hi & 0x7fffffffu) >= 0x7f800000u ? 0x1p128 : fabs((double)sl_bits_to_f32(hi));
    uint32_t r = a - vlo < vhi - a ? lo : a - vlo > vhi - a ? hi : ((lo >> 16) & 1 ? hi : lo);
    return (uint16_t)(r >> 16);
}

static bool f16_is_nan(uint16_t h)
{
    return (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0;
}
static bool bf16_is_nan(uint16_t b)
{
    return (b & 0x7f80) == 0x7f80 && (b & 0x7f) != 0;
}

static void test_half(void)
{
    /* Every f16 pattern: exact value, and back to the same bits. */
    int bad_val = 0, bad_rt = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = sl_f16_to_f32((uint16_t)h);
        double want = f16_value((uint16_t)h);
        if (isnan(want) ? !isnan(f) : (double)f != want || (signbit(f) != 0) != (h >> 15 != 0))
            bad_val++;
        uint16_t back = sl_f32_to_f16(f);
        if (f16_is_nan((uint16_t)h) ? !f16_is_nan(back) : back != h)
            bad_rt++;
    }
    CHECK(bad_val == 0, "%d f16 patterns convert to the wrong float", bad_val);
    CHECK(bad_rt == 0, "%d f16 patterns do not round-trip", bad_rt);

    /* Named edge cases. */
    static const struct {
        float f;
        uint16_t h;
    } cases[] = {
        {0x1p-24f, 0x0001},     /* smallest subnormal */
        {0x1p-25f, 0x0000},     /* half of it: tie to even (0) */
        {0x1.8p-24f, 0x0002},   /* 1.5 ulp: tie to even (2) */
        {0x1.4p-24f, 0x0001},   /* 1.25 ulp: down */
        {0x1p-26f, 0x0000},     /* underflow */
        {0x1.ff8p-15f, 0x03ff}, /* largest subnormal */
        {0x1.ffcp-15f, 0x0400}, /* halfway to the smallest normal: rounds up (even) */
        {0x1p-14f, 0x0400},     /* smallest normal */
        {1.0f, 0x3c00},
        {1.0f + 0x1p-11f, 0x3c00},   /* tie, to even */
        {1.0f + 0x1.8p-10f, 0x3c02}, /* tie at odd: up */
        {1.0f + 0x1.2p-11f, 0x3c01}, /* just over half: up */
        {65504.0f, 0x7bff},          /* max */
        {65519.99f, 0x7bff},         /* below halfway to 2^16 */
        {65520.0f, 0x7c00},          /* halfway: overflow to inf */
        {1e10f, 0x7c00},
        {-2.0f, 0xc000},
        {-0.0f, 0x8000},
        {INFINITY, 0x7c00},
        {-INFINITY, 0xfc00},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK(sl_f32_to_f16(cases[i].f) == cases[i].h, "f16(%a) = 0x%04x, want 0x%04x", cases[i].f,
              sl_f32_to_f16(cases[i].f), cases[i].h);
    CHECK(f16_is_nan(sl_f32_to_f16(NAN)) && f16_is_nan(sl_f32_to_f16(-NAN)), "f16(nan) is nan");
    CHECK(f16_is_nan(sl_f32_to_f16(sl_bits_to_f32(0x7f800001u))), "f16(nan, low payload) is nan");

    /* Every halfway point between neighbouring f16 values (exact in float),
     * and one float ulp either side. */
    int bad_tie = 0;
    for (uint32_t h = 0; h < 0x7bff; h++) {
        float mid = (float)((f16_value((uint16_t)h) + f16_value((uint16_t)(h + 1))) / 2);
        float probes[3] = {mid, nextafterf(mid, 0), nextafterf(mid, INFINITY)};
        for (int p = 0; p < 3; p++) {
            bad_tie += sl_f32_to_f16(probes[p]) != f16_reference(probes[p]);
            bad_tie += sl_f32_to_f16(-probes[p]) != f16_reference(-probes[p]);
        }
    }
    CHECK(bad_tie == 0, "%d halfway-point conversions to f16 differ from round-to-nearest-even", bad_tie);

    /* Random floats across the f16 range and beyond. */
    int bad_rand = 0;
    for (int i = 0; i < 1000000; i++) {
        uint32_t e = 100 + (uint32_t)(rng_u64() % 50); /* 2^-27 .. 2^22 */
        uint32_t bits = (uint32_t)(rng_u64() & 0x807fffffu) | e << 23;
        float f = sl_bits_to_f32(bits);
        bad_rand += sl_f32_to_f16(f) != f16_reference(f);
    }
    CHECK(bad_rand == 0, "%d random conversions to f16 differ from round-to-nearest-even", bad_rand);

    /* bf16: every pattern round-trips; rounding by reference. */
    int bad_bf = 0;
    for (uint32_t b = 0; b < 65536; b++) {
        float f = sl_bf16_to_f32((uint16_t)b);
        uint16_t back = sl_f32_to_bf16(f);
        bad_bf += bf16_is_nan((uint16_t)b) ? !bf16_is_nan(back) : back != b;
        bad_bf += sl_f32_to_bits(f) != b << 16;
    }
    CHECK(bad_bf == 0, "%d bf16 patterns do not convert exactly or round-trip", bad_bf);
    static const struct {
        uint32_t bits;
        uint16_t b;
    } bcases[] = {
        {0x3f808000u, 0x3f80}, /* 1 + 2^-8: tie, to even */
        {0x3f818000u, 0x3f82}, /* 1 + 3*2^-8: tie at odd, up */
        {0x3f808001u, 0x3f81}, /* just over half */
        {0x00008000u, 0x0000}, /* subnormal tie to even */
        {0x00018000u, 0x0002}, /* subnormal tie at odd */
        {0x7f7fffffu, 0x7f80}, /* FLT_MAX rounds to inf */
        {0x7f800000u, 0x7f80}, /* inf */
        {0xff800000u, 0xff80}, /* -inf */
        {0x80000000u, 0x8000}, /* -0 */
    };
    for (size_t i = 0; i < sizeof bcases / sizeof bcases[0]; i++) {
        uint16_t got = sl_f32_to_bf16(sl_bits_to_f32(bcases[i].bits));
        CHECK(got == bcases[i].b, "bf16(0x%08x) = 0x%04x, want 0x%04x", bcases[i].bits, got, bcases[i].b);
    }
    CHECK(bf16_is_nan(sl_f32_to_bf16(sl_bits_to_f32(0x7f800001u))) &&
              bf16_is_nan(sl_f32_to_bf16(sl_bits_to_f32(0xffc00000u))),
          "bf16(nan) stays nan, even with the payload only in the dropped bits");
    int bad_brand = 0;
    for (int i = 0; i < 1000000; i++) {
        uint32_t bits = (uint32_t)rng_u64();
        if ((bits & 0x7f800000u) == 0x7f800000u)
            continue; /* inf/nan covered above */
        bad_brand += sl_f32_to_bf16(sl_bits_to_f32(bits)) != bf16_reference(sl_bits_to_f32(bits));
    }
    CHECK(bad_brand == 0, "%d random conversions to bf16 differ from round-to-nearest-even", bad_brand);
}

/* ---- dispatch ------------------------------------------------------------------------ */

/* Runs sl_kernels_get() in a child with SL_CPU set to `value` (NULL: unset),
 * since the choice is made once per process. Returns 0 for NULL, 1 for the
 * generic table, 2 for another table, -1 when the child failed. */
static int kernels_get_with(const char *value)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (value)
            setenv("SL_CPU", value, 1);
        else
            unsetenv("SL_CPU");
        const sl_kernels *k = sl_kernels_get();
        const sl_kernels *again = sl_kernels_get();
        if (k != again)
            _exit(3);
        _exit(k == NULL ? 0 : k == sl_kernels_generic() ? 1 : 2);
    }
    int status;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
        return -1;
    return WEXITSTATUS(status);
}

static void test_dispatch(void)
{
    /* The default is the most capable variant this CPU runs (generic or a
     * native one: test_kernels checks them); SL_CPU=generic forces the
     * reference. */
    int dflt = kernels_get_with(NULL);
    CHECK(dflt == 1 || dflt == 2, "default choice");
    CHECK(kernels_get_with("generic") == 1, "SL_CPU=generic");
    CHECK(kernels_get_with("") == dflt, "empty SL_CPU means unset");
    CHECK(kernels_get_with("pentium4") == 0, "an unknown SL_CPU gives NULL (and logs)");
    CHECK(kernels_get_with("GENERIC") == 0, "names are exact");
}

int main(void)
{
    test_layouts();
    test_reference_models();
    test_reference_bytes();
    test_dot();
    test_round_trip();
    test_half();
    test_dispatch();

    printf("  %-5s %14s %14s %16s\n", "type", "dequant-rel", "dot-err/tol", "roundtrip/bound");
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        uint32_t t = k_types[ti];
        printf("  %-5s %14.3g %14.3g", sl_dtype_name(t), g_dequant_err[t], g_dot_err[t]);
        if (sl_quant_from_float(t))
            printf(" %16.3g\n", g_rt_err[t]);
        else
            printf(" %16s\n", "-");
    }
    return sl_test_finish();
}
