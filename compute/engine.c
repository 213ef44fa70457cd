/* In-process runner over the mapped model; see engine.h. */
#include "compute/engine.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/log.h"
#include "compute/forward.h"
#include "compute/moe.h"
#include "compute/pool.h"
#include "model/gguf.h"

struct sl_engine {
    const sl_model *model;
    const sl_hparams *hp;
    sl_pool *pool;
    sl_forward fwd;
    uint32_t n_ctx, n_batch, pos;
    float *kv; /* per layer: K cache then V cache */
    size_t k_floats, v_floats;
    float *scratch;
    float *x;                 /* residual stream, [n_batch][n_embd] */
    sl_layer_weights *layers; /* views into the mapping, bound once */
    sl_global_weights globals;
};

/* Maps every page of the model file into the process now, so that the
 * first forward pass (a prompt) does not pay a page fault per page of
 * weights: hundreds of thousands of faults, a second or more on a virtual
 * machine, that have nothing to do with computing. Best effort: without
 * MADV_POPULATE_READ (Linux 5.14), or if it fails, the pages are touched
 * one by one. */
static void prefault(const sl_model *model)
{
    const sl_gguf *g = sl_model_gguf(model);
    const uint8_t *base = sl_gguf_base(g);
    const size_t size = (size_t)sl_gguf_file_size(g);
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
#ifdef MADV_POPULATE_READ
    const uintptr_t start = (uintptr_t)base / page * page;
    if (madvise((void *)start, size + ((uintptr_t)base - start), MADV_POPULATE_READ) == 0)
        return;
#endif
    volatile uint8_t sink = 0;
    for (size_t off = 0; off < size; off += page)
        sink ^= base[off];
    (void)sink;
}

/* 64-byte aligned, zeroed allocation of n floats; NULL on failure. From
 * 2 MiB up, in huge pages where the kernel gives them: a decode step writes
 * and reads the head-major KV cache n_ctx rows apart, a page per head in 4
 * KiB pages. */
static float *alloc_floats(size_t n)
{
    void *p = NULL;
    const size_t huge = (size_t)2 << 20;
    if (n > SIZE_MAX / sizeof(float) ||
        posix_memalign(&p, n * sizeof(float) >= huge ? huge : 64, n * sizeof(float)) != 0)
        return NULL;
#ifdef MADV_HUGEPAGE
    if (n * sizeof(float) >= huge)
        madvise(p, n * sizeof(float), MADV_HUGEPAGE); /* best effort */
#endif
    memset(p, 0, n * sizeof(float));
    return p;
}

int sl_engine_new(const sl_model *model, uint32_t n_ctx, uint32_t n_batch, uint32_t n_threads,
                  sl_engine **out)
{
    *out = NULL;
    if (!model || !n_ctx || !n_batch || !n_threads) {
        SL_ERROR("invalid arguments: model %p n_ctx %u n_batch %u n_threads %u", (const void *)model, n_ctx,
                 n_batch, n_threads);
        return -SL_EINVAL;
    }
    const sl_hparams *hp = sl_model_hparams(model);
    if (n_ctx > hp->n_ctx_train)
        SL_WARN("n_ctx = %u exceeds the trained context length %u", n_ctx, hp->n_ctx_train);
    if (n_batch > n_ctx)
        n_batch = n_ctx;

    sl_engine *e = calloc(1, sizeof *e);
    if (!e) {
        SL_ERROR("out of memory");
        return -SL_ENOMEM;
    }
    e->model = model;
    e->hp = hp;
    e->n_ctx = n_ctx;
    e->n_batch = n_batch;
    int rc = sl_pool_new(n_threads, &e->pool);
    if (rc < 0)
        goto fail;

    e->k_floats = sl_forward_k_floats(hp, n_ctx);
    e->v_floats = sl_forward_v_floats(hp, n_ctx);
    size_t per_layer = e->k_floats + e->v_floats;
    size_t scratch = sl_forward_scratch_floats(hp, n_batch, n_ctx, n_threads);
    if (scratch == 0 || per_layer > SIZE_MAX / sizeof(float) / hp->n_layer) {
        SL_ERROR("buffers for n_ctx = %u, n_batch = %u do not fit in memory", n_ctx, n_batch);
        rc = -SL_ERANGE;
        goto fail;
    }
    e->kv = alloc_floats(per_layer * hp->n_layer);
    e->scratch = alloc_floats(scratch);
    e->x = alloc_floats((size_t)n_batch * hp->n_embd);
    e->layers = calloc(hp->n_layer, sizeof *e->layers);
    if (!e->kv || !e->scratch || !e->x || !e->layers) {
        SL_ERROR("cannot allocate %zu MiB of KV cache and scratch",
                 (per_layer * hp->n_layer + scratch) * sizeof(float) >> 20);
        rc = -SL_ENOMEM;
        goto fail;
    }
    if ((rc = sl_forward_init(&e->fwd, hp, e->pool, n_batch, n_ctx, e->scratch)) < 0)
        goto fail;
    for (uint32_t il = 0; il < hp->n_layer; il++)
        sl_model_layer_weights(model, il, &e->layers[il]);
    sl_model_global_weights(model, &e->globals);
    prefault(model);
    *out = e;
    return 0;
fail:
    sl_engine_free(e);
    return rc;
}

void sl_engine_free(sl_engine *e)
{
    if (!e)
        return;
    sl_pool_free(e->pool);
    free(e->kv);
    free(e->scratch);
    free(e->x);
    free(e->layers);
    free(e);
}

int sl_engine_eval(sl_engine *e, const int32_t *tokens, uint32_t n, bool want_all_logits, float *logits_out)
{
    if (n == 0 || !tokens || !logits_out) {
        SL_ERROR("invalid arguments: %u tokens at %p, logits at %p", n, (const void *)tokens,
                 (void *)logits_out);
        return -SL_EINVAL;
    }
    if (n > e->n_ctx - e->pos) {
        SL_ERROR("context full: %u tokens at position %u exceed n_ctx = %u", n, e->pos, e->n_ctx);
        return -SL_ERANGE;
    }
    /* Check every token before touching the cache, so a bad one changes nothing. */
    for (uint32_t t = 0; t < n; t++) {
        if (tokens[t] < 0 || (uint32_t)tokens[t] >= e->hp->n_vocab) {
            SL_ERROR("token %d at index %u is outside the vocabulary [0, %u)", tokens[t], t, e->hp->n_vocab);
            return -SL_ERANGE;
        }
    }
    const size_t layer_floats = e->k_floats + e->v_floats;
    for (uint32_t done = 0; done < n;) {
        const uint32_t c = n - done < e->n_batch ? n - done : e->n_batch;
        int rc = sl_forward_embed(&e->fwd, &e->globals.t[SL_GW_TOKEN_EMBD], tokens + done, c, e->x);
        for (uint32_t il = 0; il < e->hp->n_layer && rc == 0; il++) {
            float *k = e->kv + il * layer_floats;
            if (e->hp->n_expert) { /* attention, then the routed experts from the mapping */
                rc = sl_forward_attention(&e->fwd, &e->layers[il], e->x, c, e->pos, k, k + e->k_floats);
                rc = rc ? rc : sl_moe_ffn(&e->fwd, e->model, il, &e->layers[il], e->x, c);
            } else {
                rc = sl_forward_layer(&e->fwd, &e->layers[il], e->x, c, e->pos, k, k + e->k_floats);
            }
        }
        /* Checked above: the forward pass cannot refuse these arguments. */
        SL_ASSERT(rc == 0);
        if (want_all_logits)
            rc = sl_forward_output(&e->fwd, &e->globals, e->x, c, true,
                                   logits_out + (size_t)done * e->hp->n_vocab);
        else if (done + c == n)
            rc = sl_forward_output(&e->fwd, &e->globals, e->x, c, false, logits_out);
        SL_ASSERT(rc == 0);
        e->pos += c;
        done += c;
    }
    return 0;
}

void sl_engine_reset(sl_engine *e)
{
    e->pos = 0;
}
uint32_t sl_engine_pos(const sl_engine *e)
{
    return e->pos;
}
uint32_t sl_engine_n_ctx(const sl_engine *e)
{
    return e->n_ctx;
}
