/* The NEON kernel table (compute/kernels_neon.h) against the portable
 * reference, entry by entry, for every supported type:
 *   - to_float must be bit-identical to the reference (both round one exact
 *     product per element, see kernels_neon.c);
 *   - dot must be within a named tolerance per type of the reference:
 *     |neon - generic| <= tol(type) * sum |w_i x_i|.
 * Inputs are random blocks (every bit pattern of the quants and packed
 * scales, finite f16 scales of both signs, rows starting off 16-byte
 * alignment) and every tensor of the reference models in ../shared/testdata.
 * The quantized path and float operations are test_kernels.c's (run with
 * SL_CPU=neon). Also checks that every entry of the table is NEON's own,
 * the dispatch (SL_CPU=neon, and NEON as the default on aarch64) and, when
 * SL_TEST_EXPECT_DOTPROD is set (ctest sets it beside QEMU_CPU), that the
 * integer tiles use SDOT exactly when the CPU has it. Built and run only on
 * aarch64 (natively or under qemu-user). */
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
#include "compute/kernels_neon.h"
#include "compute/quant.h"
#include "model/dtype.h"
#include "model/gguf.h"
#include "tests/testutil.h"

/* Named tolerances for dot, relative to sum |w_i x_i|. Both kernels round
 * O(B + n/B) times along any product's path (B the block size, quant.h),
 * typically with cancelling signs: over the rows here (n <= 8192) the
 * difference stays below 3e-7, and a wrong element, scale or offset shows up
 * as 1e-3 or more. The types with a minimum (Q4_1, Q5_1, Q2_K, Q4_K, Q5_K)
 * sum scale * q * x and min * x separately, terms that can cancel, so they
 * get twice the room. */
static const struct {
    uint32_t type;
    double dot_tol;
} k_types[] = {
    {SL_F32, 2e-6},  {SL_F16, 2e-6},  {SL_BF16, 2e-6}, {SL_Q8_0, 2e-6}, {SL_Q4_0, 2e-6},
    {SL_Q4_1, 4e-6}, {SL_Q5_0, 2e-6}, {SL_Q5_1, 4e-6}, {SL_Q2_K, 4e-6}, {SL_Q3_K, 2e-6},
    {SL_Q4_K, 4e-6}, {SL_Q5_K, 4e-6}, {SL_Q6_K, 2e-6},
};
#define N_TYPES (sizeof k_types / sizeof k_types[0])

/* Worst dot error seen per type, as a fraction of its tolerance. */
static double g_worst[SL_DTYPE_COUNT];
static long g_dots[SL_DTYPE_COUNT];

/* ---- deterministic random numbers -------------------------------------------- */

static uint64_t g_rng = 0x6e656f6e2d6b726eull;

static uint64_t rng_u64(void)
{
    /* splitmix64 */
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [-1, 1). */
static float rng_sym(void)
{
    return (float)((double)(rng_u64() >> 11) * 0x1p-52 - 1.0);
}

static double tol_of(uint32_t type)
{
    for (size_t i = 0; i < N_TYPES; i++)
        if (k_types[i].type == type)
            return k_types[i].dot_tol;
    return 0.0;
}

/* ---- comparing one row ------------------------------------------------------------ */

/* Checks both entries of `k` for type `t` on one row of n elements at w
 * (a valid encoding) with activations x; `what` names the row in messages.
 * `deq` and `deq_ref` are scratch of n floats. */
static void check_row(const sl_kernels *k, uint32_t t, const void *w, const float *x, int64_t n, float *deq,
                      float *deq_ref, const char *what)
{
    const sl_kernels *gen = sl_kernels_generic();
    k->to_float[t](w, deq, n);
    gen->to_float[t](w, deq_ref, n);
    int64_t bad = -1;
    for (int64_t i = 0; i < n && bad < 0; i++)
        if (memcmp(&deq[i], &deq_ref[i], sizeof(float)) != 0)
            bad = i;
    CHECK(bad < 0, "%s %s: to_float differs at %lld: %.9g vs reference %.9g", sl_dtype_name(t), what,
          (long long)bad, bad >= 0 ? (double)deq[bad] : 0.0, bad >= 0 ? (double)deq_ref[bad] : 0.0);

    double mag = 0.0;
    for (int64_t i = 0; i < n; i++)
        mag += fabs((double)deq_ref[i] * (double)x[i]);
    const float got = k->dot[t](w, x, n);
    const float want = gen->dot[t](w, x, n);
    const double err = fabs((double)got - (double)want);
    const double lim = tol_of(t) * mag;
    CHECK(err <= lim, "%s %s n=%lld: dot %.9g vs reference %.9g (error %.3g, limit %.3g)", sl_dtype_name(t),
          what, (long long)n, (double)got, (double)want, err, lim);
    if (mag > 0.0 && err / lim > g_worst[t])
        g_worst[t] = err / lim;
    g_dots[t]++;
}

/* ---- random rows ---------------------------------------------------------------------- */

/* Byte offsets of the f16 fields in a block of type t (scales, minimums);
 * every other byte of a block is quants or packed integer scales, where any
 * bit pattern is valid. Returns how many there are. */
static int f16_fields(uint32_t t, size_t off[2])
{
    switch (t) {
    case SL_Q4_0:
    case SL_Q5_0:
    case SL_Q8_0:
        off[0] = 0;
        return 1;
    case SL_Q4_1:
    case SL_Q5_1:
    case SL_Q4_K:
    case SL_Q5_K:
        off[0] = 0;
        off[1] = 2;
        return 2;
    case SL_Q2_K:
        off[0] = offsetof(sl_block_q2_k, d);
        off[1] = offsetof(sl_block_q2_k, dmin);
        return 2;
    case SL_Q3_K:
        off[0] = offsetof(sl_block_q3_k, d);
        return 1;
    case SL_Q6_K:
        off[0] = offsetof(sl_block_q6_k, d);
        return 1;
    default:
        return 0;
    }
}

/* A finite f16 of random sign and magnitude; one in eight is subnormal so
 * that the vector conversions see those too. */
static uint16_t random_f16(float scale)
{
    if (rng_u64() % 8 == 0)
        return (uint16_t)((rng_u64() & 0x83ff) | 1); /* sign, zero exponent, mantissa != 0 */
    return sl_f32_to_f16(rng_sym() * scale);
}

/* Fills `bytes` bytes at w with a random valid row of n elements of type t. */
static void random_row(uint32_t t, void *w, int64_t n)
{
    const sl_dtype_info *info = sl_dtype_get(t);
    uint8_t *p = w;
    if (t == SL_F32) {
        for (int64_t i = 0; i < n; i++) {
            float v = rng_sym() * 4.0f;
            memcpy(p + 4 * i, &v, sizeof v);
        }
        return;
    }
    if (t == SL_F16 || t == SL_BF16) {
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = t == SL_F16 ? random_f16(4.0f) : sl_f32_to_bf16(rng_sym() * 4.0f);
            memcpy(p + 2 * i, &h, sizeof h);
        }
        return;
    }
    const int64_t nb = n / info->block;
    for (size_t i = 0; i < (size_t)nb * info->block_bytes; i++)
        p[i] = (uint8_t)rng_u64();
    size_t off[2];
    const int nf = f16_fields(t, off);
    SL_ASSERT(nf > 0);
    for (int64_t b = 0; b < nb; b++) {
        for (int f = 0; f < nf; f++) {
            uint16_t h = random_f16(0.05f);
            memcpy(p + (size_t)b * info->block_bytes + off[f], &h, sizeof h);
        }
    }
}

static void check_random(const sl_kernels *k)
{
    /* Block counts for block types; lengths for the float types (any n,
     * so the vector loops' tails are covered). */
    static const int64_t k_blocks[] = {1, 2, 3, 8, 32};
    static const int64_t k_float_n[] = {1, 3, 4, 5, 15, 16, 17, 31, 64, 255, 256, 257, 1000, 4096};
    enum { MAX_N = 8192, REPEATS = 4 };
    /* +2: rows start 2 bytes past a 16-byte boundary (f16 fields stay
     * 2-aligned, as quant.h requires of every tensor). */
    uint8_t *wbuf = malloc(MAX_N * sizeof(float) + 16);
    float *x = malloc(MAX_N * sizeof *x);
    float *deq = malloc(MAX_N * sizeof *deq), *deq_ref = malloc(MAX_N * sizeof *deq_ref);
    SL_ASSERT(wbuf && x && deq && deq_ref);
    void *w = wbuf + 2;
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        const uint32_t t = k_types[ti].type;
        const sl_dtype_info *info = sl_dtype_get(t);
        const bool is_float = info->block == 1;
        const size_t n_cases = is_float ? sizeof k_float_n / sizeof k_float_n[0] : sizeof k_blocks / sizeof k_blocks[0];
        for (size_t c = 0; c < n_cases; c++) {
            const int64_t n = is_float ? k_float_n[c] : k_blocks[c] * info->block;
            SL_ASSERT(n <= MAX_N);
            for (int r = 0; r < REPEATS; r++) {
                random_row(t, w, n);
                for (int64_t i = 0; i < n; i++)
                    x[i] = rng_sym();
                check_row(k, t, w, x, n, deq, deq_ref, "random row");
            }
        }
    }
    free(wbuf);
    free(x);
    free(deq);
    free(deq_ref);
}

/* ---- the reference models' tensors --------------------------------------------------- */

/* Every supported tensor of models/<stem>.gguf: the whole tensor through
 * to_float, and up to 64 rows, spread over the tensor, through dot. */
static void check_model(const sl_kernels *k, const char *stem)
{
    char path[1024], rel[256];
    snprintf(rel, sizeof rel, "models/%s.gguf", stem);
    sl_gguf *g = NULL;
    int rc = sl_gguf_open(sl_testdata_path(path, sizeof path, rel), &g);
    CHECK(rc == 0, "%s: open: %s", stem, sl_strerror(rc));
    if (rc != 0)
        return;
    const uint8_t *base = sl_gguf_base(g);
    int n_tensors = 0;
    for (uint64_t i = 0; i < sl_gguf_tensor_count(g); i++) {
        const sl_gguf_tensor *t = sl_gguf_tensor_at(g, i);
        const sl_dtype_info *info = sl_dtype_get(t->type);
        if (!info || !info->supported)
            continue;
        const int64_t ne0 = (int64_t)t->ne[0];
        const uint64_t row_bytes = sl_dtype_bytes(t->type, (uint64_t)ne0);
        SL_ASSERT(row_bytes > 0 && t->nbytes % row_bytes == 0);
        const int64_t rows = (int64_t)(t->nbytes / row_bytes);
        const int64_t n_all = rows * ne0;
        const uint8_t *data = base + t->offset;

        float *deq = malloc((size_t)n_all * sizeof *deq), *deq_ref = malloc((size_t)n_all * sizeof *deq_ref);
        float *x = malloc((size_t)ne0 * sizeof *x);
        SL_ASSERT(deq && deq_ref && x);
        char what[320];
        snprintf(what, sizeof what, "%s %.*s", stem, (int)t->name.len, t->name.ptr);
        k->to_float[t->type](data, deq, n_all);
        sl_kernels_generic()->to_float[t->type](data, deq_ref, n_all);
        CHECK(memcmp(deq, deq_ref, (size_t)n_all * sizeof *deq) == 0, "%s: whole-tensor to_float differs", what);

        for (int64_t i = 0; i < ne0; i++)
            x[i] = rng_sym();
        const int64_t step = rows > 64 ? rows / 64 : 1;
        for (int64_t r = 0; r < rows; r += step)
            check_row(k, t->type, data + (size_t)r * row_bytes, x, ne0, deq, deq_ref, what);
        free(deq);
        free(deq_ref);
        free(x);
        n_tensors++;
    }
    CHECK(n_tensors > 0, "%s: no tensors checked", stem);
    sl_gguf_close(g);
}

/* ---- dispatch and feature probe ------------------------------------------------------------ */

/* Runs sl_kernels_get() in a child with SL_CPU set to `value` (NULL: unset)
 * and returns 2 when it chose the NEON table, 1 for generic, 0 for NULL. */
static int chosen_with(const char *value)
{
    pid_t pid = fork();
    if (pid == 0) {
        if (value)
            setenv("SL_CPU", value, 1);
        else
            unsetenv("SL_CPU");
        sl_log_set_level(SL_LOG_OFF); /* an unknown name is meant to log */
        const sl_kernels *k = sl_kernels_get();
        _exit(k == NULL ? 0 : k == sl_kernels_neon() ? 2 : k == sl_kernels_generic() ? 1 : 3);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
        return -1;
    return WEXITSTATUS(status);
}

static void check_dispatch(const sl_kernels *k)
{
    CHECK(strcmp(k->name, "neon") == 0, "table name %s", k->name);
    CHECK(chosen_with("neon") == 2, "SL_CPU=neon selects the NEON table");
    CHECK(chosen_with(NULL) == 2, "NEON is the default on aarch64");
    CHECK(chosen_with("generic") == 1, "SL_CPU=generic still selects generic");
    CHECK(chosen_with("avx2") == 0, "an x86 variant is not part of an aarch64 build");
    /* Every type the reference supports has both entries, and no other;
     * every entry is NEON's own, none left to the reference. */
    const sl_kernels *gen = sl_kernels_generic();
    for (uint32_t t = 0; t < SL_DTYPE_COUNT; t++) {
        CHECK((k->to_float[t] != NULL) == (gen->to_float[t] != NULL) && (k->dot[t] != NULL) == (gen->dot[t] != NULL),
              "type %u (%s): entries present in one table only", t, sl_dtype_name(t));
        if (gen->to_float[t])
            CHECK(k->to_float[t] != gen->to_float[t] && k->dot[t] != gen->dot[t], "%s: generic to_float/dot",
                  sl_dtype_name(t));
        if (gen->gemm[t])
            CHECK(k->gemm[t] && k->gemm[t] != gen->gemm[t], "%s: generic gemm", sl_dtype_name(t));
    }
    for (uint32_t a = 0; a < SL_ACT_COUNT; a++)
        CHECK(k->quantize[a] == NULL ? gen->quantize[a] == NULL : k->quantize[a] != gen->quantize[a],
              "activation format %u: generic quantizer", a);
    CHECK(k->vdot != gen->vdot && k->axpy != gen->axpy && k->silu_mul != gen->silu_mul &&
              k->exp_sum != gen->exp_sum && k->rms_norm != gen->rms_norm,
          "float vector operations left generic");

    const bool dp = sl_kernels_neon_uses_sdot();
    const char *expect = getenv("SL_TEST_EXPECT_DOTPROD");
    if (expect && expect[0])
        CHECK(dp == (expect[0] == '1'), "integer tiles use SDOT=%d, expected %s", dp, expect);
    printf("integer tiles: %s\n", dp ? "SDOT" : "without SDOT");
}

int main(void)
{
    const sl_kernels *k = sl_kernels_neon();
    check_dispatch(k);
    check_random(k);
    static const char *const models[] = {
        "stories260K",     "tiny-llama-f32",  "tiny-llama-f16",  "tiny-llama-bf16",   "tiny-llama-q8_0",
        "tiny-llama-q4_0", "tiny-llama-q4_1", "tiny-llama-q5_0", "tiny-llama-q5_1",   "tiny-llama-q2_k",
        "tiny-llama-q3_k", "tiny-llama-q4_k", "tiny-llama-q5_k", "tiny-llama-q6_k",   "tiny-llama-q4_k_m",
        "tiny-qwen2-q4_k_m",
    };
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++)
        check_model(k, models[i]);
    for (size_t i = 0; i < N_TYPES; i++) {
        uint32_t t = k_types[i].type;
        printf("%-5s dot: %5ld rows, worst error %.3f of tolerance %.0e\n", sl_dtype_name(t), g_dots[t],
               g_worst[t], k_types[i].dot_tol);
    }
    return sl_test_finish();
}
