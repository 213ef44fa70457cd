/* sluice-compute: a compute worker process.
 *
 * Attaches to a pipeline's shared memory (coordinator/layout.h), registers
 * in its process table, and runs every step the coordinator posts on the
 * board: layer by layer, out of pinned units and READY ring slots, with the
 * KV caches and activations in shared memory, so that a worker that dies
 * loses nothing but the step in progress. After each streamed unit it asks
 * for the unit ring_slots positions ahead in the same slot, which keeps the
 * loaders ahead of compute. */
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
#include "shm/futex.h"
#include "shm/proc.h"

#define WAIT_NS 200000000ll /* wake at least this often to heartbeat and check for stop */

static volatile int g_stop; /* set by SIGTERM / SIGINT */
static void on_signal(int sig) { (void)sig; g_stop = 1; }

typedef struct worker {
    sl_layout *l;
    sl_model *m;
    uint32_t rid;      /* role id: our holder bit in slot words */
    uint32_t *pos_of;  /* unit -> index among streamed units (UINT32_MAX if pinned) */
    uint32_t held_slot;
} worker;

static bool should_stop(const worker *w)
{
    return g_stop || atomic_load(&w->l->board->stop);
}

static const void *unit_acquire(void *ctx, uint32_t unit)
{
    worker *w = ctx;
    const void *pinned = sl_layout_pinned_unit(w->l, unit);
    if (pinned) {
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
            w->held_slot = slot;
            return (const uint8_t *)sl_slots_data(w->l->slots, slot) + (lu->offset - lu->io_offset);
        }
        if (rc != SL_SLOTS_TIMEOUT || should_stop(w) || sl_proctab_heartbeat(w->l->procs, SL_ROLE_WORKER, w->rid))
            return NULL;
    }
}

static void unit_release(void *ctx, uint32_t unit)
{
    worker *w = ctx;
    const sl_layout_plan *p = w->l->plan;
    uint32_t k = w->pos_of[unit];
    if (k == UINT32_MAX)
        return;
    sl_slots_release(w->l->slots, w->rid, w->held_slot);
    /* The slot now serves the streamed unit ring_slots positions ahead. */
    sl_slots_want(w->l->slots, w->held_slot, p->streamed[(k + p->ring_slots) % p->n_streamed], NULL);
    sl_proctab_heartbeat(w->l->procs, SL_ROLE_WORKER, w->rid);
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
    sl_unit_source src = {unit_acquire, unit_release, w};
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
    if ((rc = sl_model_open(p->model_path, &w.m)))
        goto out;
    if (sl_gguf_file_size(sl_model_gguf(w.m)) != p->model_size) {
        SL_ERROR("%s changed size since the coordinator planned it", p->model_path);
        goto out;
    }
    w.pos_of = malloc(p->n_units * sizeof *w.pos_of);
    if (!w.pos_of || sl_pool_new((uint32_t)threads, &pool))
        goto out;
    for (uint32_t u = 0; u < p->n_units; u++)
        w.pos_of[u] = UINT32_MAX;
    for (uint32_t k = 0; k < p->n_streamed; k++)
        w.pos_of[p->streamed[k]] = k;
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
    status = 0;
out:
    if (registered)
        sl_proctab_deregister(w.l->procs, SL_ROLE_WORKER, w.rid);
    sl_pool_free(pool);
    free(w.pos_of);
    sl_model_close(w.m);
    sl_layout_close(w.l);
    return status;
}
