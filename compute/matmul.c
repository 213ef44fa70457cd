/* Batched matrix-vector products over the pool; see matmul.h. */
#include "compute/matmul.h"

#include <stddef.h>

#include "common/log.h"

/* Rows per tile: the tile's weight rows stay in cache while every token of
 * the batch passes over them, and each token's activations stay in L1 while
 * the tile's rows pass over them. */
#define ROW_TILE 8

typedef struct job {
    const sl_kernels *k;
    const sl_matmul_op *ops;
    uint32_t n_ops;
    uint32_t n;
    int64_t first_row[SL_MATMUL_MAX_OPS + 1]; /* op i owns global rows [first_row[i], first_row[i+1]) */
} job;

static void run_rows(const job *j, const sl_matmul_op *op, int64_t r0, int64_t r1)
{
    const sl_tensor *w = op->w;
    const sl_dot_fn dot = j->k->dot[w->type];
    const int64_t cols = w->ne[0], rows = w->ne[1];
    const size_t row_bytes = sl_tensor_row_bytes(w);
    const uint8_t *base = w->data;
    for (int64_t t0 = r0; t0 < r1; t0 += ROW_TILE) {
        int64_t t1 = t0 + ROW_TILE < r1 ? t0 + ROW_TILE : r1;
        for (uint32_t t = 0; t < j->n; t++) {
            const float *x = op->x + (size_t)t * (size_t)cols;
            float *y = op->y + (size_t)t * (size_t)rows;
            for (int64_t r = t0; r < t1; r++)
                y[r] = dot(base + (size_t)r * row_bytes, x, cols);
        }
    }
}

static void run_chunk(void *ctx, int64_t begin, int64_t end, uint32_t worker)
{
    (void)worker;
    const job *j = ctx;
    for (uint32_t i = 0; i < j->n_ops; i++) {
        int64_t lo = j->first_row[i], hi = j->first_row[i + 1];
        int64_t b = begin > lo ? begin : lo, e = end < hi ? end : hi;
        if (b < e)
            run_rows(j, &j->ops[i], b - lo, e - lo);
    }
}

void sl_matmul(sl_pool *pool, const sl_kernels *k, const sl_matmul_op *ops, uint32_t n_ops, uint32_t n)
{
    SL_ASSERT(n_ops >= 1 && n_ops <= SL_MATMUL_MAX_OPS);
    job j = {.k = k, .ops = ops, .n_ops = n_ops, .n = n};
    j.first_row[0] = 0;
    for (uint32_t i = 0; i < n_ops; i++) {
        const sl_tensor *w = ops[i].w;
        SL_ASSERT(w->data != NULL && w->type < SL_DTYPE_COUNT && k->dot[w->type] != NULL);
        j.first_row[i + 1] = j.first_row[i] + w->ne[1];
    }
    sl_pool_run(pool, j.first_row[n_ops], run_chunk, &j);
}
