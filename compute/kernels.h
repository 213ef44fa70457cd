/* The kernel dispatch table: one place where per-CPU variants are chosen.
 *
 * Every operation has a portable reference implementation (the "generic"
 * table: compute/quant.c for the tensor types, compute/vec.c for the float
 * vector operations); native variants (AVX2, AVX-512, NEON) start from a
 * copy of the generic table and overwrite the entries they specialise, so
 * whatever a variant does not provide is the reference. The table is chosen
 * once, at start-up, from the CPU's features (or forced with
 * SL_CPU=generic|avx2|avx512|neon), and never changes afterwards, so callers
 * may cache the pointer.
 *
 * Matrix products take one of two paths per weight type (see act[]):
 *  - float activations (SL_ACT_F32): one dot[type] call per output;
 *  - quantized activations: each token's activations are re-encoded once per
 *    product into an 8-bit activation row (quantize[act[type]]; layouts in
 *    compute/quant.h), and gemm[type] computes tiles of outputs with integer
 *    dot products, as the reference toolchain does for its quantized types. */
#ifndef SL_COMPUTE_KERNELS_H
#define SL_COMPUTE_KERNELS_H

#include <stdint.h>
#include <stddef.h>

#include "model/dtype.h"

/* Formats a matmul gives a weight type's activations in. */
typedef enum sl_act {
    SL_ACT_F32 = 0,  /* the floats as they are; products via dot[type] */
    SL_ACT_Q8_0 = 1, /* 8-bit, blocks of 32 with a float scale and the block sum */
    SL_ACT_Q8_K = 2, /* 8-bit, blocks of 256 with a float scale and sums of each 16 */
    SL_ACT_Q8_0P = 3, /* SL_ACT_Q8_0 with the quants of each 4 blocks in nibble order */
    SL_ACT_COUNT
} sl_act;

/* Dequantizes n elements (n a multiple of the type's block size) from `src`
 * (n / block blocks) into dst. Never fails, never allocates. */
typedef void (*sl_to_float_fn)(const void *src, float *dst, int64_t n);

/* Dot product of one row of n weights of the type (n a multiple of the block
 * size) with n float activations. Accumulates in float; never allocates. */
typedef float (*sl_dot_fn)(const void *w, const float *x, int64_t n);

/* Re-encodes n finite floats (n a multiple of the format's block size) as one
 * activation row of the format at dst (sl_quant_act_row_bytes bytes, 64-byte
 * aligned). Deterministic: every variant writes the same bytes. Never fails,
 * never allocates. */
typedef void (*sl_quantize_fn)(const float *x, void *dst, int64_t n);

/* A tile of products of quantized activations: for r < nr and t < nt,
 *   y[t * y_stride + r] = (weight row r) . (activation row t)
 * where weight row r starts at w + r * w_stride (any alignment; the rows of
 * a tensor), activation row t at a + t * a_stride (64-byte aligned, the
 * format act[type]), and rows hold n elements (a multiple of the type's
 * block size). Each output depends only on its two rows, never on nr, nt or
 * its place in the tile: bit for bit, which is what makes results
 * independent of batch size and thread count. Never fails or allocates. */
typedef void (*sl_gemm_fn)(int64_t n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride,
                           int nt, float *y, size_t y_stride);

/* Float vector operations of the forward pass. Each result depends only on
 * its inputs (not on which thread calls or how work is split). */

/* Returns sum a[i] * b[i] for i < n (attention scores). */
typedef float (*sl_vdot_fn)(const float *a, const float *b, int64_t n);

/* y[i] += a * x[i] for i < n (attention's weighted sum of values). */
typedef void (*sl_axpy_fn)(float *y, float a, const float *x, int64_t n);

/* Attention scores of one query q[dim] against n keys stored as consecutive
 * rows of dim floats: s[j] = scale * (q . k[j]) for j < n. Returns the
 * largest s[j] (-INFINITY when n == 0). */
typedef float (*sl_attn_scores_fn)(const float *q, const float *k, int64_t n, int64_t dim, float scale, float *s);

/* Attention output: o[i] = sum over j < n of (p[j] * c) * v[j][i], i < dim,
 * for n value rows of dim floats stored consecutively, the terms added in
 * row order. o is overwritten (all zeros when n == 0). */
typedef void (*sl_attn_wsum_fn)(float *o, const float *p, float c, const float *v, int64_t n, int64_t dim);

/* g[i] = silu(g[i]) * u[i] = g[i] / (1 + exp(-g[i])) * u[i], for i < n. */
typedef void (*sl_silu_mul_fn)(float *g, const float *u, int64_t n);

/* s[i] = exp(s[i] - m) for i < n; returns the sum of the new s[i],
 * accumulated in double (softmax numerator and denominator). */
typedef double (*sl_exp_sum_fn)(float *s, float m, int64_t n);

/* y[i] = x[i] / sqrt(mean(x^2) + eps) * w[i], the mean accumulated in
 * double; y may equal x. */
typedef void (*sl_rms_norm_fn)(const float *x, const float *w, float *y, int64_t n, float eps);

typedef struct sl_kernels {
    const char *name;                        /* "generic", "avx2", ... */
    sl_to_float_fn to_float[SL_DTYPE_COUNT]; /* NULL for unsupported types */
    sl_dot_fn dot[SL_DTYPE_COUNT];           /* NULL for unsupported types */
    /* Activation format (sl_act) of each supported type's matmul. A variant
     * may keep a type on floats (SL_ACT_F32, then dot[] is used) or use a
     * quantized format with its gemm[]. */
    uint8_t act[SL_DTYPE_COUNT];
    sl_gemm_fn gemm[SL_DTYPE_COUNT];       /* for act[type] != SL_ACT_F32 */
    sl_quantize_fn quantize[SL_ACT_COUNT]; /* NULL for SL_ACT_F32 */
    sl_vdot_fn vdot;
    sl_axpy_fn axpy;
    sl_attn_scores_fn attn_scores;
    sl_attn_wsum_fn attn_wsum;
    sl_silu_mul_fn silu_mul;
    sl_exp_sum_fn exp_sum;
    sl_rms_norm_fn rms_norm;
} sl_kernels;

/* The portable reference table. Static; never NULL. */
const sl_kernels *sl_kernels_generic(void);

/* The table for this CPU, chosen on the first call (thread-safe): the most
 * capable variant the build and CPU have, or the one the environment
 * variable SL_CPU names. An SL_CPU naming a variant this build lacks or this
 * CPU cannot run logs an error and returns NULL; callers treat that as fatal
 * at start-up. Never blocks after the first call. */
const sl_kernels *sl_kernels_get(void);

/* The table of variant `name` ("generic", "avx2", ...) without consulting
 * SL_CPU, for tests that compare variants. Returns NULL (not logged) when
 * this build lacks the variant or this CPU cannot run it. Static. */
const sl_kernels *sl_kernels_find(const char *name);

#endif
