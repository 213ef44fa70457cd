/* Reference float vector operations: the generic entries of the kernel
 * table's float operations (compute/kernels.h gives their contracts).
 *
 * They follow the formulas literally, in element order, with the C library's
 * expf; native variants are tested against them. */
#ifndef SL_COMPUTE_VEC_H
#define SL_COMPUTE_VEC_H

#include <stdint.h>

/* sum a[i] * b[i], accumulated in float in order. Never fails. */
float sl_vec_dot_f32(const float *a, const float *b, int64_t n);

/* y[i] += a * x[i]. Never fails. */
void sl_vec_axpy(float *y, float a, const float *x, int64_t n);

/* s[j] = sl_vec_dot_f32(q, k + j * dim, dim) * scale for j < n; returns the
 * largest (-INFINITY for n == 0). Never fails. */
float sl_vec_attn_scores(const float *q, const float *k, int64_t n, int64_t dim, float scale, float *s);

/* o = 0, then for each row j in order o[i] += (p[j] * c) * v[j][i]. Never
 * fails. */
void sl_vec_attn_wsum(float *o, const float *p, float c, const float *v, int64_t n, int64_t dim);

/* g[i] = g[i] / (1 + expf(-g[i])) * u[i]. Never fails. */
void sl_vec_silu_mul(float *g, const float *u, int64_t n);

/* s[i] = expf(s[i] - m); returns the sum of the results in double, in
 * order. Never fails. */
double sl_vec_exp_sum(float *s, float m, int64_t n);

/* y = x / sqrt(mean(x^2) + eps) * w, squares summed in double in order; y
 * may equal x. Never fails. */
void sl_vec_rms_norm(const float *x, const float *w, float *y, int64_t n, float eps);

#endif
