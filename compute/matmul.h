/* Matrix times a batch of vectors, rows split across the thread pool.
 *
 * y[t][r] = dot(row r of W, x[t]) for every token t < n and row r, where W is
 * a weight view of any supported type (model/tensor.h), x holds n rows of
 * ne[0] floats and y receives n rows of ne[1] floats. Each output element is
 * one call of the dispatch table's dot kernel, whichever thread computes it
 * and however many tokens are in the batch, so the result does not depend
 * on the thread count or the batch size: bit for bit. */
#ifndef SL_COMPUTE_MATMUL_H
#define SL_COMPUTE_MATMUL_H

#include <stdint.h>

#include "compute/kernels.h"
#include "compute/pool.h"
#include "model/tensor.h"

/* One product of a dispatch. */
typedef struct sl_matmul_op {
    const sl_tensor *w; /* ne[1] rows of ne[0] elements */
    const float *x;     /* n rows of w->ne[0] floats */
    float *y;           /* n rows of w->ne[1] floats; must not overlap x */
} sl_matmul_op;

#define SL_MATMUL_MAX_OPS 4

/* Computes every op (n_ops <= SL_MATMUL_MAX_OPS) for n tokens in one pool
 * dispatch, so that independent products of the same input (Q, K and V; gate
 * and up) cost one synchronisation. Weight types must have a dot kernel in
 * `k` (asserted; the model checked it). Blocks until done; never fails or
 * allocates. */
void sl_matmul(sl_pool *pool, const sl_kernels *k, const sl_matmul_op *ops, uint32_t n_ops, uint32_t n);

#endif
