/* A step over several sequences with units from a ring of copies gives
 * bit-identical logits to the in-process engine running each sequence
 * alone, and visits the units once, in order. For a mixture of experts,
 * the experts come from copies too, handed over in another order than the
 * engine computes them, and each needed expert is asked for once per layer
 * per step. */
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "compute/engine.h"
#include "compute/step.h"
#include "tests/testutil.h"

#define RING 2
#define THREADS 2

/* A source that copies each unit from the mapped file into one of RING
 * buffers, scribbling over the buffer first, as a loader filling a slot. */
typedef struct ring_src {
    const sl_model *m;
    const uint8_t *file;
    uint64_t file_size;
    uint8_t *slots[RING];
    uint32_t next_unit, acquired, released, fail_at;
    int order_ok;
} ring_src;

static const void *ring_acquire(void *ctx, uint32_t unit)
{
    ring_src *r = ctx;
    const sl_hparams *hp = sl_model_hparams(r->m);
    r->order_ok &= unit == r->next_unit && r->acquired == r->released;
    r->next_unit = (unit + 1) % (hp->n_layer + 1);
    if (unit == r->fail_at)
        return NULL;
    const sl_unit *u = unit < hp->n_layer ? sl_model_layer_unit(r->m, unit) : sl_model_head_unit(r->m);
    uint8_t *slot = r->slots[r->acquired % RING];
    memset(slot, 0x5A, u->image_bytes);
    sl_unit_image_copy(u, r->file, r->file_size, slot);
    r->acquired++;
    return sl_unit_base(u, slot);
}

/* Experts copied into one buffer each time, highest index first (the engine
 * goes lowest first). */
typedef struct exp_src {
    const sl_model *m;
    const uint8_t *file;
    uint64_t file_size;
    uint8_t *slot;
    uint32_t layer, pending[SL_MAX_EXPERTS], n_pending;
    uint32_t needs, handed, released, held, prefetches, predicted, used;
    uint8_t want[SL_MAX_EXPERTS];
    int ok;
} exp_src;

static int exp_need(void *ctx, uint32_t layer, const uint32_t *counts)
{
    exp_src *x = ctx;
    const sl_hparams *hp = sl_model_hparams(x->m);
    x->ok &= x->n_pending == 0 && x->held == 0;
    x->layer = layer;
    x->needs++;
    for (uint32_t e = hp->n_expert; e-- > 0;)
        if (counts[e]) {
            x->pending[x->n_pending++] = e;
            x->predicted += x->want[e];
            x->used++;
        }
    return 0;
}

static const void *exp_next(void *ctx, uint32_t layer, uint32_t *expert)
{
    exp_src *x = ctx;
    x->ok &= layer == x->layer && x->n_pending > 0 && x->held == 0;
    if (!x->n_pending)
        return NULL;
    uint32_t e = x->pending[0];
    memmove(x->pending, x->pending + 1, --x->n_pending * sizeof *x->pending);
    sl_unit u;
    sl_model_expert_unit(x->m, layer, e, &u);
    memset(x->slot, 0x5A, u.image_bytes);
    sl_unit_image_copy(&u, x->file, x->file_size, x->slot);
    x->handed++;
    x->held = 1;
    *expert = e;
    return sl_unit_base(&u, x->slot);
}

static void exp_release(void *ctx, uint32_t layer, uint32_t expert)
{
    exp_src *x = ctx;
    (void)expert;
    x->ok &= layer == x->layer && x->held == 1;
    x->held = 0;
    x->released++;
}

static void exp_prefetch(void *ctx, uint32_t layer, const uint8_t *want)
{
    exp_src *x = ctx;
    (void)layer;
    memcpy(x->want, want, sl_model_hparams(x->m)->n_expert);
    x->prefetches++;
}

static void ring_release(void *ctx, uint32_t unit)
{
    ring_src *r = ctx;
    (void)unit;
    r->released++;
}

static void check_model(const char *name)
{
    char path[512], rel[128];
    snprintf(rel, sizeof rel, "models/%s.gguf", name);
    sl_model *m = NULL;
    if (sl_model_open(sl_testdata_path(path, sizeof path, rel), &m)) {
        CHECK(0, "open %s", name);
        return;
    }
    const sl_hparams *hp = sl_model_hparams(m);
    const uint32_t n_ctx = 32, n_batch = 16, nv = hp->n_vocab;
    const uint8_t *file = sl_gguf_base(sl_model_gguf(m));
    const uint64_t file_size = sl_gguf_file_size(sl_model_gguf(m));
    ring_src r = {.m = m, .file = file, .file_size = file_size, .fail_at = UINT32_MAX, .order_ok = 1};
    uint64_t biggest = sl_model_head_unit(m)->image_bytes, ebiggest = 0;
    for (uint32_t il = 0; il < hp->n_layer; il++) {
        const sl_unit *u = sl_model_layer_unit(m, il);
        biggest = u->image_bytes > biggest ? u->image_bytes : biggest;
        for (uint32_t e = 0; e < hp->n_expert; e++) {
            sl_unit eu;
            sl_model_expert_unit(m, il, e, &eu);
            ebiggest = eu.image_bytes > ebiggest ? eu.image_bytes : ebiggest;
        }
    }
    for (int i = 0; i < RING; i++)
        CHECK(posix_memalign((void **)&r.slots[i], 4096, biggest) == 0, "slot");
    exp_src xs = {.m = m, .file = file, .file_size = file_size, .ok = 1};
    const sl_expert_source esrc = {exp_need, exp_next, exp_release, exp_prefetch, &xs};
    if (hp->n_expert)
        CHECK(posix_memalign((void **)&xs.slot, 4096, ebiggest) == 0, "expert slot");
    sl_unit_source src = {.acquire = ring_acquire, .release = ring_release, .ctx = &r,
                          .experts = hp->n_expert ? &esrc : NULL};

    sl_pool *pool;
    CHECK(sl_pool_new(THREADS, &pool) == 0, "pool");
    float *scratch, *x = malloc((size_t)n_batch * hp->n_embd * sizeof *x);
    CHECK(posix_memalign((void **)&scratch, 64,
                         sl_forward_scratch_floats(hp, n_batch, n_ctx, THREADS) * sizeof(float)) == 0, "scratch");
    sl_forward f;
    CHECK(sl_forward_init(&f, hp, pool, n_batch, n_ctx, scratch) == 0, "forward");
    sl_global_weights gw;
    sl_model_global_weights(m, &gw);
    size_t kv_floats = hp->n_layer * (sl_forward_k_floats(hp, n_ctx) + sl_forward_v_floats(hp, n_ctx));

    /* Two sequences with different prompts, decoded greedily side by side,
     * against one engine per sequence. */
    int32_t prompts[2][6] = {{1, 403, 407, 261, 378, 12}, {1, 29, 300}};
    uint32_t plen[2] = {6, 3};
    sl_engine *e[2];
    float *want = malloc(nv * sizeof *want), *got[2], *kv[2];
    sl_step_seq seqs[2];
    int32_t next[2];
    for (int s = 0; s < 2; s++) {
        for (uint32_t i = 0; i < plen[s]; i++)
            prompts[s][i] %= (int32_t)nv;
        CHECK(sl_engine_new(m, n_ctx, n_batch, THREADS, &e[s]) == 0, "engine");
        got[s] = malloc(nv * sizeof(float));
        kv[s] = calloc(kv_floats, sizeof(float));
        seqs[s] = (sl_step_seq){prompts[s], plen[s], 0, kv[s], got[s]};
    }
    double worst = 0;
    for (int step = 0; step < 6; step++) {
        CHECK(sl_step_run(m, &f, &gw.t[SL_GW_TOKEN_EMBD], &src, seqs, 2, x) == 0, "%s step %d", name, step);
        for (int s = 0; s < 2; s++) {
            CHECK(sl_engine_eval(e[s], seqs[s].tokens, seqs[s].n_tokens, false, want) == 0, "engine eval");
            for (uint32_t i = 0; i < nv; i++) {
                double d = (double)got[s][i] - want[i];
                worst = d * d > worst ? d * d : worst;
            }
            uint32_t best = 0;
            for (uint32_t i = 1; i < nv; i++)
                best = got[s][i] > got[s][best] ? i : best;
            next[s] = (int32_t)best;
            seqs[s].pos0 += seqs[s].n_tokens;
            seqs[s].tokens = &next[s];
            seqs[s].n_tokens = 1;
        }
    }
    CHECK(worst == 0, "%s: step logits differ from the engine's (max squared diff %g)", name, worst);
    CHECK(r.order_ok && r.acquired == 6 * (hp->n_layer + 1) && r.released == r.acquired,
          "%s: units visited once each, in order, released before the next", name);
    if (hp->n_expert) {
        CHECK(xs.ok && xs.needs == 6 * hp->n_layer && xs.prefetches == xs.needs && xs.handed == xs.used &&
                  xs.released == xs.handed && xs.n_pending == 0,
              "%s: experts asked for once per layer and step, each needed one handed over and released once", name);
        printf("%s: %u expert loads over 6 steps; the prefetch guess named %u of them\n", name, xs.used,
               xs.predicted);
    }

    /* A source that gives up makes the step fail, to be redone. */
    r.fail_at = 1;
    r.next_unit = 0;
    sl_log_set_level(SL_LOG_OFF);
    CHECK(sl_step_run(m, &f, &gw.t[SL_GW_TOKEN_EMBD], &src, seqs, 2, x) == -SL_EIO, "%s: lost unit", name);
    seqs[0].pos0 = n_ctx;
    CHECK(sl_step_run(m, &f, &gw.t[SL_GW_TOKEN_EMBD], &src, seqs, 2, x) == -SL_ERANGE, "%s: past n_ctx", name);
    seqs[0].pos0 = 0;
    int32_t bad = (int32_t)nv;
    seqs[0].tokens = &bad;
    CHECK(sl_step_run(m, &f, &gw.t[SL_GW_TOKEN_EMBD], &src, seqs, 2, x) == -SL_ERANGE, "%s: bad token", name);
    CHECK(sl_step_run(m, &f, &gw.t[SL_GW_TOKEN_EMBD], &src, seqs, 0, x) == -SL_EINVAL, "%s: no sequence", name);
    sl_log_set_level(SL_LOG_WARN);

    for (int s = 0; s < 2; s++) {
        sl_engine_free(e[s]);
        free(got[s]);
        free(kv[s]);
    }
    for (int i = 0; i < RING; i++)
        free(r.slots[i]);
    free(xs.slot);
    free(want);
    free(x);
    free(scratch);
    sl_pool_free(pool);
    sl_model_close(m);
}

int main(void)
{
    check_model("stories260K");
    check_model("tiny-llama-q4_k_m");
    check_model("tiny-qwen2-q4_k_m");
    check_model("tiny-moe-q8_0");
    return sl_test_finish();
}
