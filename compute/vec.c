/* Reference float vector operations; see vec.h. */
#include "compute/vec.h"

#include <math.h>

float sl_vec_dot_f32(const float *a, const float *b, int64_t n)
{
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

void sl_vec_axpy(float *y, float a, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] += a * x[i];
}

float sl_vec_attn_scores(const float *q, const float *k, int64_t n, int64_t dim, float scale, float *s)
{
    float mx = -INFINITY;
    for (int64_t j = 0; j < n; j++) {
        s[j] = sl_vec_dot_f32(q, k + j * dim, dim) * scale;
        mx = s[j] > mx ? s[j] : mx;
    }
    return mx;
}

void sl_vec_attn_wsum(float *o, const float *p, float c, const float *v, int64_t n, int64_t dim)
{
    for (int64_t i = 0; i < dim; i++)
        o[i] = 0.0f;
    for (int64_t j = 0; j < n; j++)
        sl_vec_axpy(o, p[j] * c, v + j * dim, dim);
}

void sl_vec_silu_mul(float *g, const float *u, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

double sl_vec_exp_sum(float *s, float m, int64_t n)
{
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        s[i] = expf(s[i] - m);
        sum += (double)s[i];
    }
    return sum;
}

void sl_vec_rms_norm(const float *x, const float *w, float *y, int64_t n, float eps)
{
    double ss = 0.0;
    for (int64_t i = 0; i < n; i++)
        ss += (double)(x[i] * x[i]);
    const float scale = 1.0f / sqrtf((float)(ss / (double)n) + eps);
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] * scale * w[i];
}
