/* Matrix times a batch of vectors, rows split across the thread pool.
 *
 * y[t][r] = dot(row r of W, x[t]) for every token t < n and row r, where W is
 * a weight view of any supported type (model/tensor.h), x holds n rows of
 * ne[0] floats and y receives n rows of ne[1] floats.
 *
 * For weight types whose activation format (kernels.h, act[]) is quantized,
 * each distinct input is first re-encoded once per token into caller-given
 * scratch, then tiles of rows x tokens go to the table's gemm kernel, so a
 * tile's weights are read once for all the tokens of a prompt batch. Float
 * types take one dot kernel call per output. Either way an output's value
 * depends only on its weight row and its token's input (the kernels'
 * contract), not on the thread count or the batch size: bit for bit. */
#ifndef SL_COMPUTE_MATMUL_H
#define SL_COMPUTE_MATMUL_H

#include <stddef.h>
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

/* Bytes of scratch sl_matmul needs for batches of up to n tokens when the
 * inputs that are quantized have at most max_cols elements and one call's
 * ops quantize at most n_inputs distinct (input, activation format) pairs
 * (ops sharing an input and format share its quantized copy). Covers every
 * activation format, whatever kernel table is used. Returns 0 when the size
 * overflows a size_t. Never fails otherwise. */
size_t sl_matmul_scratch_bytes(int64_t max_cols, uint32_t n, uint32_t n_inputs);

/* Computes every op (n_ops <= SL_MATMUL_MAX_OPS) for n tokens, so that
 * independent products of the same input (Q, K and V; gate and up) share
 * one quantization and one synchronisation. Weight types must have kernels
 * in `k` (asserted; the model checked the types). `scratch` (64-byte
 * aligned, scratch_bytes long, as sl_matmul_scratch_bytes sized it) holds
 * the quantized inputs; too small is an assertion failure. Blocks until
 * done; never fails or allocates. */
void sl_matmul(sl_pool *pool, const sl_kernels *k, const sl_matmul_op *ops, uint32_t n_ops, uint32_t n,
               void *scratch, size_t scratch_bytes);

#endif
