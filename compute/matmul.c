/* Batched matrix-vector products over the pool; see matmul.h. */
#include "compute/matmul.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/log.h"
#include "compute/quant.h"

/* Float path: rows per tile. The tile's weight rows stay in cache while
 * every token of the batch passes over them. */
#define ROW_TILE 8

/* Quantized path, several tokens: rows go in tiles of TILE_ROWS (a few
 * hundred KiB of weights, read from memory once), and for each tile the
 * tokens in chunks whose activation rows fill about a quarter of a core's L2
 * (CHUNK_BYTES), handed to the gemm kernel GEMM_ROWS rows at a time (it
 * blocks further for registers). Both the tile and the chunk stay in L2
 * while they meet; the activations of the whole batch come again from the
 * shared cache for every tile, far less traffic than the weights would be. */
#define TILE_ROWS 64
#define GEMM_ROWS 16
#define CHUNK_BYTES (256 * 1024)

/* One distinct quantized input of a dispatch. */
typedef struct qinput {
    const float *x;
    uint32_t act;
    int64_t cols;
    uint8_t *rows; /* n activation rows, `stride` bytes apart */
    size_t stride;
} qinput;

typedef struct job {
    const sl_kernels *k;
    const sl_matmul_op *ops;
    uint32_t n_ops;
    uint32_t n;
    int64_t first_row[SL_MATMUL_MAX_OPS + 1]; /* op i owns global rows [first_row[i], first_row[i+1]) */
    int64_t grain;                            /* rows a worker claims at a time (at least) */
    int64_t unit;                             /* claims are whole multiples of this */
    int64_t share;                            /* decode: claim 1/share of the rows left; 0: grain */
    _Atomic int64_t next;                     /* first row nobody has claimed */
    const qinput *in[SL_MATMUL_MAX_OPS];      /* op i's quantized input; NULL on the float path */
    qinput inputs[SL_MATMUL_MAX_OPS];
    uint32_t n_inputs;
} job;

static size_t round64(size_t v)
{
    return (v + 63) / 64 * 64;
}

size_t sl_matmul_scratch_bytes(int64_t max_cols, uint32_t n, uint32_t n_inputs)
{
    if (max_cols <= 0 || max_cols > INT64_MAX / 2)
        return 0;
    const int64_t cols = (max_cols + SL_QK_K - 1) / SL_QK_K * SL_QK_K;
    size_t row = 0;
    for (uint32_t a = 0; a < SL_ACT_COUNT; a++) {
        if (a == SL_ACT_F32)
            continue; /* floats are used in place */
        size_t b = sl_quant_act_row_bytes(a, cols);
        row = b > row ? b : row;
    }
    const size_t per_input = row * n;
    if (n && per_input / n != row)
        return 0;
    const size_t total = per_input * n_inputs;
    if (n_inputs && total / n_inputs != per_input)
        return 0;
    return total;
}

/* Items are (input, token) pairs: input = item / n, token = item % n. */
static void quantize_job(void *ctx, int64_t begin, int64_t end, uint32_t worker)
{
    (void)worker;
    const job *j = ctx;
    for (int64_t it = begin; it < end; it++) {
        const qinput *q = &j->inputs[it / j->n];
        const uint32_t t = (uint32_t)(it % j->n);
        j->k->quantize[q->act](q->x + (size_t)t * (size_t)q->cols, q->rows + (size_t)t * q->stride, q->cols);
    }
}

static void run_rows_float(const job *j, const sl_matmul_op *op, int64_t r0, int64_t r1)
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

static void run_rows_quant(const job *j, const sl_matmul_op *op, const qinput *q, int64_t r0, int64_t r1)
{
    const sl_tensor *w = op->w;
    const sl_gemm_fn gemm = j->k->gemm[w->type];
    const int64_t cols = w->ne[0];
    const size_t rows = (size_t)w->ne[1], row_bytes = sl_tensor_row_bytes(w);
    const uint8_t *base = w->data;
    if (j->n == 1) {
        /* A decode step streams its rows in one call: nothing to reuse. */
        gemm(cols, base + (size_t)r0 * row_bytes, row_bytes, (int)(r1 - r0), q->rows, q->stride, 1,
             op->y + r0, rows);
        return;
    }
    uint32_t chunk = (uint32_t)(CHUNK_BYTES / q->stride);
    chunk = chunk < 4 ? 4 : chunk / 4 * 4;
    for (int64_t a = r0; a < r1; a += TILE_ROWS) {
        const int64_t a1 = a + TILE_ROWS < r1 ? a + TILE_ROWS : r1;
        /* Ask for the next tile's rows, in address order, while this one
         * computes: the kernel walks a tile's rows side by side, which the
         * hardware prefetchers follow poorly from memory. */
        const int64_t next = r1 - a1 < TILE_ROWS ? r1 - a1 : TILE_ROWS;
        const uint8_t *pf = base + (size_t)a1 * row_bytes;
        for (size_t off = 0; off < (size_t)next * row_bytes; off += 64)
            __builtin_prefetch(pf + off, 0, 2);
        for (uint32_t t = 0; t < j->n; t += chunk) {
            const int nt = (int)(j->n - t < chunk ? j->n - t : chunk);
            for (int64_t b = a; b < a1; b += GEMM_ROWS) {
                const int nr = (int)(a1 - b < GEMM_ROWS ? a1 - b : GEMM_ROWS);
                gemm(cols, base + (size_t)b * row_bytes, row_bytes, nr, q->rows + (size_t)t * q->stride,
                     q->stride, nt, op->y + (size_t)t * rows + (size_t)b, rows);
            }
        }
    }
}

/* The rows a worker claims when `left` are unclaimed. */
static int64_t claim_size(const job *j, int64_t left)
{
    int64_t size = j->share ? (left / j->share + j->unit - 1) / j->unit * j->unit : j->grain;
    return size < j->grain ? j->grain : size;
}

/* Workers claim blocks of rows until none are left, rather than taking a
 * fixed share: on a machine where a core is also running something else, the
 * other cores take up its slack. Which worker computes a row does not change
 * its value. */
static void run_chunk(void *ctx, int64_t begin, int64_t end, uint32_t worker)
{
    (void)begin;
    (void)end;
    (void)worker;
    job *j = ctx;
    const int64_t total = j->first_row[j->n_ops];
    for (;;) {
        int64_t b0 = atomic_load_explicit(&j->next, memory_order_relaxed), size;
        do {
            if (b0 >= total)
                return;
            size = claim_size(j, total - b0);
        } while (!atomic_compare_exchange_weak_explicit(&j->next, &b0, b0 + size, memory_order_relaxed,
                                                        memory_order_relaxed));
        const int64_t e0 = b0 + size < total ? b0 + size : total;
        for (uint32_t i = 0; i < j->n_ops; i++) {
            int64_t lo = j->first_row[i], hi = j->first_row[i + 1];
            int64_t b = b0 > lo ? b0 : lo, e = e0 < hi ? e0 : hi;
            if (b >= e)
                continue;
            if (j->in[i])
                run_rows_quant(j, &j->ops[i], j->in[i], b - lo, e - lo);
            else
                run_rows_float(j, &j->ops[i], b - lo, e - lo);
        }
    }
}

void sl_matmul(sl_pool *pool, const sl_kernels *k, const sl_matmul_op *ops, uint32_t n_ops, uint32_t n,
               void *scratch, size_t scratch_bytes)
{
    SL_ASSERT(n_ops >= 1 && n_ops <= SL_MATMUL_MAX_OPS && n >= 1);
    SL_ASSERT((uintptr_t)scratch % 64 == 0);
    job j = {.k = k, .ops = ops, .n_ops = n_ops, .n = n};
    size_t used = 0;
    j.first_row[0] = 0;
    for (uint32_t i = 0; i < n_ops; i++) {
        const sl_tensor *w = ops[i].w;
        SL_ASSERT(w->data != NULL && w->type < SL_DTYPE_COUNT && k->dot[w->type] != NULL);
        j.first_row[i + 1] = j.first_row[i] + w->ne[1];
        const uint32_t act = k->act[w->type];
        if (act == SL_ACT_F32)
            continue;
        SL_ASSERT(k->gemm[w->type] != NULL && k->quantize[act] != NULL);
        /* Ops that read the same input in the same format share it. */
        qinput *q = NULL;
        for (uint32_t g = 0; g < j.n_inputs && !q; g++)
            if (j.inputs[g].x == ops[i].x && j.inputs[g].act == act)
                q = &j.inputs[g];
        if (!q) {
            q = &j.inputs[j.n_inputs++];
            *q = (qinput){.x = ops[i].x, .act = act, .cols = w->ne[0]};
            q->stride = round64(sl_quant_act_row_bytes(act, w->ne[0]));
            q->rows = (uint8_t *)scratch + used;
            used += q->stride * n;
            SL_ASSERT(used <= scratch_bytes);
        }
        SL_ASSERT(q->cols == w->ne[0]);
        j.in[i] = q;
    }
    if (j.n_inputs)
        sl_pool_run(pool, (int64_t)j.n_inputs * n, quantize_job, &j);
    /* A batch claims blocks of whole row tiles, about 16 per thread: enough
     * to even out a slow core. A decode step streams memory, and the longer
     * the run of memory a core reads, the closer the hardware prefetchers
     * keep it to the read bandwidth: each claim takes half of a thread's
     * share of the rows left (the first claims a quarter of the product on
     * two threads), down to 1/32 of a thread's share at the end, which still
     * evens out a slow core. A 4096 x 4096 Q4_0 product streamed at 71-77% of
     * the plain read rate in blocks of 1/16, at 82-91% this way (sl-kbench,
     * bench/RESULTS.md). */
    const int64_t total = j.first_row[n_ops], threads = sl_pool_size(pool);
    j.unit = n == 1 ? 16 : TILE_ROWS;
    j.share = n == 1 ? 2 * threads : 0;
    const int64_t blocks = n == 1 ? 32 : 16;
    j.grain = (total / (blocks * threads) + j.unit - 1) / j.unit * j.unit;
    j.grain = j.grain < j.unit ? j.unit : j.grain;
    atomic_init(&j.next, 0);
    sl_pool_run(pool, threads, run_chunk, &j);
}
