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

static sl_kernels g_generic;
static pthread_once_t g_generic_once = PTHREAD_ONCE_INIT;

static void generic_init(void)
{
    g_generic.name = "generic";
    for (uint32_t t = 0; t < SL_DTYPE_COUNT; t++) {
        g_generic.to_float[t] = sl_quant_to_float(t);
        g_generic.dot[t] = sl_quant_dot(t);
        const sl_dtype_info *info = sl_dtype_get(t);
        /* dtype.c and quant.c must agree on which types have kernels. */
        SL_ASSERT((info && info->supported) == (g_generic.to_float[t] != NULL));
        SL_ASSERT((g_generic.to_float[t] != NULL) == (g_generic.dot[t] != NULL));
    }
}

const sl_kernels *sl_kernels_generic(void)
{
    int rc = pthread_once(&g_generic_once, generic_init);
    SL_ASSERT(rc == 0);
    return &g_generic;
}

/* The variants this build contains, most capable first. `probe` says whether
 * the running CPU can execute it (NULL: always). Native variants (AVX-512,
 * AVX2, NEON) go above "generic", each under the #if for its architecture,
 * with a probe that reads the CPU's features; "generic" stays last so that
 * it is the fallback. */
typedef struct variant {
    const char *name;
    bool (*probe)(void);
    const sl_kernels *(*table)(void);
} variant;

static const variant k_variants[] = {
    {"generic", NULL, sl_kernels_generic},
};
#define N_VARIANTS (sizeof k_variants / sizeof k_variants[0])

static const sl_kernels *g_chosen;
static pthread_once_t g_chosen_once = PTHREAD_ONCE_INIT;

static bool variant_runs_here(const variant *v)
{
    return v->probe == NULL || v->probe();
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
