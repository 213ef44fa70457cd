/* sluice-compute: a compute worker process.
 *
 * Attaches to a pipeline's shared memory (coordinator/layout.h), registers
 * in its process table, and runs every step the coordinator posts on the
 * board: layer by layer, out of pinned units and READY ring slots, with the
 * KV caches and activations in shared memory, so that a worker that dies
 * loses nothing but the step in progress. After each streamed unit it asks
 * for the unit ring_slots positions ahead in the same slot, which keeps the
 * loaders ahead of compute. For a mixture-of-experts model it also runs
 * the expert cache (compute/expcache.h): once a layer's router has chosen,
 * it asks for the chosen experts the expert slots lack and computes each as
 * a loader makes it ready. A worker outlives a restart of its coordinator
 * (the new one takes the same segments over); when the segments are made
 * anew instead, it attaches to the new ones. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "compute/forward.h"
#include "compute/pool.h"
#include "compute/step.h"
#include "coordinator/layout.h"
#include "model/source.h"
#include "shm/futex.h"
#include "shm/proc.h"

#define WAIT_NS 200000000ll /* wake at least this often to heartbeat and check for stop */
#define SERVE_AGAIN 3        /* serve(): the segments were replaced */

static volatile int g_stop; /* set by SIGTERM / SIGINT */
static void on_signal(int sig) { (void)sig; g_stop = 1; }

typedef struct worker {
    sl_layout *l;
    sl_model *m;
    uint32_t rid;      /* role id: our holder bit in slot words */
    uint32_t *pos_of;  /* unit -> index among streamed units (UINT32_MAX if pinned) */
    uint32_t plan_gen; /* the plan's plan_gen when pos_of was computed */
    uint32_t held_slot;
    uint32_t held_eslot; /* the expert slot the step computes from */
} worker;

/* Reads which units stream, and in which order, from the plan in effect
 * (it changes between steps when the budget does: coordinator/layout.h). */
static void read_plan(worker *w)
{
    const sl_layout_plan *p = w->l->plan;
    w->plan_gen = atomic_load_explicit(&w->l->plan->plan_gen, memory_order_acquire);
    for (uint32_t u = 0; u < p->n_units; u++)
        w->pos_of[u] = UINT32_MAX;
    for (uint32_t k = 0; k < p->n_streamed; k++)
        w->pos_of[p->streamed[k]] = k;
}

/* Stop, or leave these segments: they were replaced (a coordinator that
 * could not take over its predecessor's made new ones) and serve() is
 * called again to attach to the new ones. */
static bool should_stop(const worker *w)
{
    return g_stop || atomic_load(&w->l->board->stop) || sl_layout_replaced(w->l);
}

static const void *unit_acquire(void *ctx, uint32_t unit)
{
    worker *w = ctx;
    const void *pinned = sl_layout_pinned_unit(w->l, unit);
    if (pinned) {
        atomic_fetch_add_explicit(&w->l->board->hits, 1, memory_order_relaxed);
        /* A step over pinned units waits for nothing, so beat here: a long
         * step (a big prompt, the first touch of a large pinned region on a
         * busy machine) must not look like a hung worker. A worker that was
         * declared dead anyway gives up the step. */
        return sl_proctab_heartbeat(w->l->procs, SL_ROLE_WORKER, w->rid) ? NULL : pinned;
    }
    const sl_layout_unit *lu = &sl_layout_units(w->l->plan)[unit];
    for (;;) {
        uint32_t slot, gen;
        int rc = sl_slots_acquire(w->l->slots, w->rid, unit, WAIT_NS, &slot, &gen);
        if (rc == SL_SLOTS_OK) {
            atomic_fetch_add_explicit(&w->l->board->misses, 1, memory_order_relaxed);
            w->held_slot = slot;
            return (const uint8_t *)sl_slots_data(w->l->slots, slot) + (lu->offset - lu->io_offset);
        }
        /* A fault (a shard that cannot be loaded) means the unit never comes. */
        if (rc != SL_SLOTS_TIMEOUT || should_stop(w) || sl_layout_fault(w->l, NULL) ||
            sl_proctab_heartbeat(w->l->procs, SL_ROLE_WORKER, w->rid))
            return NULL;
    }
}

static void unit_release(void *ctx, uint32_t unit)
{
    worker *w = ctx;
    const sl_layout_plan *p = w->l->plan;
    uint32_t k = w->pos_of[unit];
    atomic_fetch_add_explicit(&w->l->board->units_done, 1, memory_order_relaxed);
    if (k == UINT32_MAX)
        return;
    sl_slots_release(w->l->slots, w->rid, w->held_slot);
    /* The slot now serves the streamed unit ring_slots positions ahead. */
    sl_slots_want(w->l->slots, w->held_slot, p->streamed[(k + p->ring_slots) % p->n_streamed], NULL);
    sl_proctab_heartbeat(w->l->procs, SL_ROLE_WORKER, w->rid);
}

/* ---- experts (compute/step.h sl_expert_source) --------------------------- */

static int expert_need(void *ctx, uint32_t layer, const uint32_t *counts)
{
    worker *w = ctx;
    sl_expcache_need(w->l->ecache, layer, counts);
    return 0;
}

static const void *expert_next(void *ctx, uint32_t layer, uint32_t *expert)
{
    worker *w = ctx;
    const sl_layout_plan *p = w->l->plan;
    const uint64_t t0 = sl_proc_clock_ns();
    /* Beat per expert: a layer's experts can keep the worker busy for
     * longer than the hang timeout when they are all ready at once. */
    if (sl_proctab_heartbeat(w->l->procs, SL_ROLE_WORKER, w->rid))
        return NULL;
    for (;;) {
        uint32_t seen = sl_slots_seq(w->l->eslots), slot, n;
        if (sl_expcache_take(w->l->ecache, w->rid, expert, &slot) == SL_SLOTS_OK) {
            sl_expcache_add_wait(w->l->ecache, sl_proc_clock_ns() - t0);
            w->held_eslot = slot;
            const sl_layout_range *r = sl_layout_unit_ranges(w->l, p->n_units + layer * p->n_expert + *expert, &n);
            return (const uint8_t *)sl_slots_data(w->l->eslots, slot) + r[0].offset % SL_UNIT_IO_ALIGN;
        }
        if (should_stop(w) || sl_layout_fault(w->l, NULL) || sl_proctab_heartbeat(w->l->procs, SL_ROLE_WORKER, w->rid))
            return NULL;
        sl_slots_wait_change(w->l->eslots, seen, WAIT_NS);
    }
}

static void expert_release(void *ctx, uint32_t layer, uint32_t expert)
{
    worker *w = ctx;
    (void)layer;
    (void)expert;
    sl_expcache_release(w->l->ecache, w->rid, w->held_eslot);
}

static void expert_prefetch(void *ctx, uint32_t layer, const uint8_t *want)
{
    worker *w = ctx;
    sl_expcache_prefetch(w->l->ecache, layer, want);
}

static int run_step(worker *w, const sl_forward *f, const sl_tensor *tok_embd)
{
    sl_layout *l = w->l;
    sl_layout_board *b = l->board;
    const sl_layout_plan *p = l->plan;
    sl_step_seq seqs[SL_LAYOUT_MAX_SEQS];
    if (b->n_seqs == 0 || b->n_seqs > SL_LAYOUT_MAX_SEQS)
        return -SL_EFORMAT;
    for (uint32_t i = 0; i < b->n_seqs; i++) {
        const sl_layout_seq *s = &b->seqs[i];
        if (s->session >= p->max_sessions || s->tok_off > p->n_batch || s->n_tokens > p->n_batch - s->tok_off) {
            SL_ERROR("step sequence %u is malformed (session %u, tokens %u at %u)", i, s->session, s->n_tokens,
                     s->tok_off);
            return -SL_EFORMAT;
        }
        seqs[i] = (sl_step_seq){b->tokens + s->tok_off, s->n_tokens, s->pos0, l->kv + s->session * p->kv_floats,
                                l->logits + (size_t)i * p->n_vocab};
    }
    sl_expert_source esrc = {expert_need, expert_next, expert_release, NULL, w};
    sl_unit_source src = {.acquire = unit_acquire, .release = unit_release, .ctx = w};
    if (l->ecache) {
        uint32_t tokens = 0;
        for (uint32_t i = 0; i < b->n_seqs; i++)
            tokens += b->seqs[i].n_tokens;
        sl_expcache_step(l->ecache, tokens);
        if (sl_expcache_prefetching(l->ecache))
            esrc.prefetch = expert_prefetch;
        src.experts = &esrc;
    }
    atomic_store_explicit(&b->units_done, 0, memory_order_relaxed);
    return sl_step_run(w->m, f, tok_embd, &src, seqs, b->n_seqs, l->x);
}

static void usage(FILE *out)
{
    fprintf(out, "usage: sluice-compute --instance NAME [--threads N]\n\n"
                 "A compute worker of the sluice pipeline named NAME: runs the forward\n"
                 "steps its coordinator posts in shared memory.\n\n"
                 "  -i, --instance NAME  pipeline instance (shared-memory names)\n"
                 "  -t, --threads N      compute threads (default and maximum: the coordinator's plan)\n"
                 "  -h, --help           this text\n");
}

/* Attaches to the pipeline `instance` and runs its steps until told to
 * stop (returns 0), until its segments are replaced (SERVE_AGAIN), or a
 * failure (1, logged). */
static int serve(const char *instance, long threads)
{
    worker w = {0};
    sl_pool *pool = NULL;
    bool registered = false;
    int status = 1, rc;
    if ((rc = sl_layout_attach_wait(instance, 30.0, &g_stop, &w.l)))
        return 1;
    sl_layout_plan *p = w.l->plan;
    if (threads == 0 || (uint32_t)threads > p->n_threads)
        threads = p->n_threads; /* the scratch is sized for the plan's thread count */
    if ((rc = sl_proctab_register(w.l->procs, SL_ROLE_WORKER, &w.rid)))
        goto out;
    registered = true;
    /* A packed model: the description and the token embedding, which steps
     * read by row outside the slots; the rest comes through the slots. */
    if ((rc = sl_source_open_model(p->model_path, SL_SOURCE_EMBD, &w.m))) {
        /* A corrupted or truncated shard will not heal: say so on the board,
         * so that the coordinator fails requests instead of waiting. */
        if (sl_source_is_packed(p->model_path) && (rc == -SL_EFORMAT || rc == -SL_EIO)) {
            char msg[SL_LAYOUT_FAULT_MAX];
            snprintf(msg, sizeof msg, "a compute worker cannot load the packed model %.200s: %s (its log names the shard)",
                     p->model_path, sl_strerror(rc));
            sl_layout_fault_set(w.l, rc, msg);
        }
        goto out;
    }
    if (sl_gguf_file_size(sl_model_gguf(w.m)) != p->model_size) {
        SL_ERROR("%s changed size since the coordinator planned it", p->model_path);
        goto out;
    }
    w.pos_of = malloc(p->n_units * sizeof *w.pos_of);
    if (!w.pos_of || sl_pool_new((uint32_t)threads, &pool))
        goto out;
    read_plan(&w);
    sl_forward f;
    if (sl_forward_init(&f, sl_model_hparams(w.m), pool, p->n_batch, p->n_ctx, w.l->scratch))
        goto out;
    sl_global_weights gw;
    sl_model_global_weights(w.m, &gw);
    SL_INFO("worker %u of '%s' ready (%ld threads)", w.rid, instance, threads);

    sl_layout_board *b = w.l->board;
    const sl_proc_ident self = sl_proc_self();
    while (!should_stop(&w)) {
        if (sl_proctab_heartbeat(w.l->procs, SL_ROLE_WORKER, w.rid))
            goto out; /* declared dead: what we held belongs to others now */
        uint32_t posted = atomic_load_explicit(&b->post_seq, memory_order_acquire);
        uint64_t none = 0;
        if (posted != atomic_load(&b->done_seq) &&
            atomic_compare_exchange_strong(&b->claimed_by, &none, self)) {
            /* Re-check under the claim: the step may have finished meanwhile. */
            if (atomic_load_explicit(&b->post_seq, memory_order_acquire) != atomic_load(&b->done_seq)) {
                posted = atomic_load(&b->post_seq);
                if (atomic_load_explicit(&p->plan_gen, memory_order_acquire) != w.plan_gen)
                    read_plan(&w);
                rc = run_step(&w, &f, &gw.t[SL_GW_TOKEN_EMBD]);
                if (rc == -SL_EIO && should_stop(&w)) {
                    atomic_store(&b->claimed_by, 0);
                    break;
                }
                atomic_store(&b->status, rc);
                atomic_store(&b->claimed_by, 0);
                atomic_store_explicit(&b->done_seq, posted, memory_order_release);
                sl_futex_wake(&b->done_seq, INT32_MAX);
            } else {
                atomic_store(&b->claimed_by, 0);
            }
            continue;
        }
        sl_futex_wait(&b->post_seq, posted, WAIT_NS);
    }
    /* Left because the segments were replaced: attach again. */
    status = g_stop || atomic_load(&b->stop) ? 0 : SERVE_AGAIN;
out:
    if (registered)
        sl_proctab_deregister(w.l->procs, SL_ROLE_WORKER, w.rid);
    sl_pool_free(pool);
    free(w.pos_of);
    sl_model_close(w.m);
    sl_layout_close(w.l);
    return status;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"instance", required_argument, 0, 'i'},
                                         {"threads", required_argument, 0, 't'},
                                         {"help", no_argument, 0, 'h'},
                                         {0}};
    const char *instance = NULL;
    long threads = 0;
    int c;
    while ((c = getopt_long(argc, argv, "i:t:h", opts, NULL)) != -1) {
        if (c == 'i') {
            instance = optarg;
        } else if (c == 't') {
            char *end;
            threads = strtol(optarg, &end, 10);
            if (*end || threads < 1 || threads > 1024) {
                fprintf(stderr, "sluice-compute: --threads expects 1..1024, got '%s'\n", optarg);
                return 2;
            }
        } else if (c == 'h') {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (!instance || optind != argc) {
        usage(stderr);
        return 2;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    for (;;) {
        int rc = serve(instance, threads);
        if (rc != SERVE_AGAIN)
            return rc;
        SL_WARN("the shared memory of '%s' was made anew by a new coordinator: attaching to it", instance);
    }
}
