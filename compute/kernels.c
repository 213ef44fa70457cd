/* Kernel dispatch: builds the generic table from the reference kernels and
 * picks, once per process, the table for this CPU (see kernels.h). */
#include "compute/kernels.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "compute/quant.h"
#include "compute/vec.h"
#if defined(__x86_64__)
#include "compute/kernels_x86.h"
#endif
#if defined(__aarch64__)
#include "compute/kernels_neon.h"
#endif

static sl_kernels g_generic;
static pthread_once_t g_generic_once = PTHREAD_ONCE_INIT;

static void generic_init(void)
{
    g_generic.name = "generic";
    for (uint32_t t = 0; t < SL_DTYPE_COUNT; t++) {
        g_generic.to_float[t] = sl_quant_to_float(t);
        g_generic.dot[t] = sl_quant_dot(t);
        g_generic.act[t] = (uint8_t)sl_quant_act_of(t);
        g_generic.gemm[t] = sl_quant_gemm(t);
        const sl_dtype_info *info = sl_dtype_get(t);
        /* dtype.c and quant.c must agree on which types have kernels. */
        SL_ASSERT((info && info->supported) == (g_generic.to_float[t] != NULL));
        SL_ASSERT((g_generic.to_float[t] != NULL) == (g_generic.dot[t] != NULL));
        SL_ASSERT((g_generic.act[t] != SL_ACT_F32) == (g_generic.gemm[t] != NULL));
    }
    for (uint32_t a = 0; a < SL_ACT_COUNT; a++)
        g_generic.quantize[a] = sl_quant_quantize(a);
    g_generic.vdot = sl_vec_dot_f32;
    g_generic.axpy = sl_vec_axpy;
    g_generic.attn_scores = sl_vec_attn_scores;
    g_generic.attn_wsum = sl_vec_attn_wsum;
    g_generic.silu_mul = sl_vec_silu_mul;
    g_generic.exp_sum = sl_vec_exp_sum;
    g_generic.rms_norm = sl_vec_rms_norm;
}

const sl_kernels *sl_kernels_generic(void)
{
    int rc = pthread_once(&g_generic_once, generic_init);
    SL_ASSERT(rc == 0);
    return &g_generic;
}

/* The variants this build contains, most capable first. `probe` says whether
 * the running CPU can execute it (NULL: always). "generic" stays last so
 * that it is the fallback. The #ifs here are the only place that knows
 * which architectures have which variants. */
#if defined(__x86_64__)
#include <cpuid.h>

/* __builtin_cpu_supports also checks that the OS saves the wider registers
 * (XCR0), so a "yes" means the instructions can run. */
static bool avx2_runs(void)
{
    __builtin_cpu_init();
    /* clang 14 does not know "f16c" as a feature name: ask CPUID leaf 1
     * (ECX bit 29) directly. AVX2 implies the OS saves the YMM registers. */
    unsigned a, b, c, d;
    bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
}

static bool avx512_runs(void)
{
    return avx2_runs() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vbmi");
}

#endif

typedef struct variant {
    const char *name;
    bool (*probe)(void);
    const sl_kernels *(*table)(void);
} variant;

static const variant k_variants[] = {
#if defined(__x86_64__)
    {"avx512", avx512_runs, sl_kernels_avx512},
    {"avx2", avx2_runs, sl_kernels_avx2},
#endif
#if defined(__aarch64__)
    {"neon", NULL, sl_kernels_neon}, /* Advanced SIMD is part of every aarch64 CPU */
#endif
    {"generic", NULL, sl_kernels_generic},
};
#define N_VARIANTS (sizeof k_variants / sizeof k_variants[0])

static const sl_kernels *g_chosen;
static pthread_once_t g_chosen_once = PTHREAD_ONCE_INIT;

static bool variant_runs_here(const variant *v)
{
    return v->probe == NULL || v->probe();
}

const sl_kernels *sl_kernels_find(const char *name)
{
    for (size_t i = 0; i < N_VARIANTS; i++)
        if (strcmp(name, k_variants[i].name) == 0)
            return variant_runs_here(&k_variants[i]) ? k_variants[i].table() : NULL;
    return NULL;
}

static void choose_variant(void)
{
    const char *want = getenv("SL_CPU");
    if (want == NULL || want[0] == '\0') {
        for (size_t i = 0; i < N_VARIANTS; i++) {
            if (variant_runs_here(&k_variants[i])) {
                g_chosen = k_variants[i].table();
                SL_DEBUG("kernels: %s", g_chosen->name);
                return;
            }
        }
        SL_ASSERT(!"the generic variant always runs"); /* unreachable */
    }
    for (size_t i = 0; i < N_VARIANTS; i++) {
        if (strcmp(want, k_variants[i].name) != 0)
            continue;
        if (!variant_runs_here(&k_variants[i])) {
            SL_ERROR("SL_CPU=%s: this CPU lacks the features that variant needs", want);
            return;
        }
        g_chosen = k_variants[i].table();
        SL_DEBUG("kernels: %s (from SL_CPU)", g_chosen->name);
        return;
    }
    /* Name every variant of this build, so the user can correct the value. */
    char names[256];
    size_t used = 0;
    names[0] = '\0';
    for (size_t i = 0; i < N_VARIANTS && used < sizeof names; i++) {
        int w = snprintf(names + used, sizeof names - used, "%s%s", i ? ", " : "", k_variants[i].name);
        if (w < 0)
            break;
        used += (size_t)w;
    }
    SL_ERROR("SL_CPU=%s is not a kernel variant of this build; valid values: %s", want, names);
}

const sl_kernels *sl_kernels_get(void)
{
    int rc = pthread_once(&g_chosen_once, choose_variant);
    SL_ASSERT(rc == 0);
    return g_chosen;
}
