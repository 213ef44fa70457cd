/* The kernel dispatch table: one place where per-CPU variants are chosen.
 *
 * Every operation has a portable reference implementation (the "generic"
 * table, compute/quant.c and friends); native variants (AVX2, AVX-512, NEON)
 * fill the same table with their own functions, falling back to the generic
 * entry for whatever they do not specialise. The table is chosen once, at
 * start-up, from the CPU's features (or forced with SL_CPU=generic|...), and
 * never changes afterwards, so callers may cache the pointer. */
#ifndef SL_COMPUTE_KERNELS_H
#define SL_COMPUTE_KERNELS_H

#include <stdint.h>

#include "model/dtype.h"

/* Dequantizes n elements (n a multiple of the type's block size) from `src`
 * (n / block blocks) into dst. Never fails, never allocates. */
typedef void (*sl_to_float_fn)(const void *src, float *dst, int64_t n);

/* Dot product of one row of n weights of the type (n a multiple of the block
 * size) with n float activations. Accumulates in float; never allocates. */
typedef float (*sl_dot_fn)(const void *w, const float *x, int64_t n);

typedef struct sl_kernels {
    const char *name;                        /* "generic", "avx2", ... */
    sl_to_float_fn to_float[SL_DTYPE_COUNT]; /* NULL for unsupported types */
    sl_dot_fn dot[SL_DTYPE_COUNT];           /* NULL for unsupported types */
} sl_kernels;

/* The portable reference table. Static; never NULL. */
const sl_kernels *sl_kernels_generic(void);

/* The table for this CPU, chosen on the first call (thread-safe) from the
 * CPU's features, or from the environment variable SL_CPU when set. An
 * SL_CPU naming a variant this build or CPU lacks logs an error and returns
 * NULL; callers treat that as fatal at start-up. */
const sl_kernels *sl_kernels_get(void);

#endif
