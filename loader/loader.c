/* sluice-loader: a loader process.
 *
 * Attaches to a pipeline's shared memory, registers in its process table,
 * and fills ring slots: it claims the oldest WANTED slot, reads the unit's
 * byte range from the model file with direct I/O straight into the slot,
 * and marks it READY (the expert slots of a mixture-of-experts model
 * first, then the ring); from a packed model (model/pack.h) the unit's shard,
 * checksummed and decompressed (loader/fetch.h). A shard that fails its
 * checksum or is cut short is recorded on the board as a fault, never
 * retried and never marked READY: the pipeline fails requests with its
 * name instead of computing with it. Several loaders share the work by
 * claiming different
 * slots. A loader that dies mid-fill is harmless: the coordinator reclaims
 * its slot, and the generation in the slot word makes a late completion by
 * a reclaimed claim fail. A loader outlives a restart of its coordinator
 * (the new one takes the same segments over); when the segments are made
 * anew instead, it attaches to the new ones. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/log.h"
#include "coordinator/layout.h"
#include "loader/fetch.h"
#include "shm/proc.h"

#define WAIT_NS 200000000ll /* wake at least this often to heartbeat and check for stop */
#define SERVE_AGAIN 3        /* serve(): the segments were replaced */

static volatile int g_stop; /* set by SIGTERM / SIGINT */
static void on_signal(int sig) { (void)sig; g_stop = 1; }

static void usage(FILE *out)
{
    fprintf(out, "usage: sluice-loader --instance NAME [--io-threads N]\n\n"
                 "A loader of the sluice pipeline named NAME: streams weights from the\n"
                 "model file into shared-memory slots with direct I/O.\n\n"
                 "  -i, --instance NAME   pipeline instance (shared-memory names)\n"
                 "      --io-threads N    reads in flight besides the main thread (default %u)\n"
                 "  -h, --help            this text\n",
            SL_READER_DEFAULT_THREADS);
}

/* Fills one claimed slot of `arena` (the ring, or the expert slots).
 * Returns 0 or a negative error (slot given back). */
static int fill(sl_layout *l, sl_slots *arena, sl_fetcher *f, uint32_t owner, uint32_t slot, uint32_t unit,
                uint32_t gen)
{
    /* The unit's image: its first byte lands offset % 4096 bytes into the
     * slot, where workers look for it (coordinator/layout.h). */
    int rc = sl_layout_fetch_unit(l, f, unit, sl_slots_data(arena, slot), sl_slots_slot_size(arena));
    if (rc) {
        /* A corrupted, truncated or mismatched shard fails every time:
         * record it rather than retry it forever. */
        if (sl_fetcher_packed(f) && (rc == -SL_EFORMAT || rc == -SL_EIO || rc == -SL_ENOTFOUND))
            sl_layout_fault_set(l, rc, sl_fetcher_why(f));
        sl_slots_fill_fail(arena, slot, owner, gen);
        return rc;
    }
    /* A refused completion means the claim was reclaimed: the bytes are
     * someone else's business now. */
    if (sl_slots_fill_done(arena, slot, owner, gen) == SL_SLOTS_OK) {
        uint32_t n;
        uint64_t bytes = 0;
        const sl_layout_range *r = sl_layout_unit_ranges(l, unit, &n);
        for (uint32_t i = 0; i < n; i++)
            bytes += r[i].nbytes;
        atomic_fetch_add_explicit(&l->board->loaded_bytes, bytes, memory_order_relaxed);
        atomic_fetch_add_explicit(&l->board->loaded_units, 1, memory_order_relaxed);
    }
    return 0;
}

/* Attaches to the pipeline `instance` and fills its slots until told to
 * stop (returns 0), until its segments are replaced (SERVE_AGAIN), or a
 * failure (1, logged). */
static int serve(const char *instance, const sl_reader_opts *ro)
{
    sl_layout *l = NULL;
    sl_fetcher *f = NULL;
    uint32_t rid = 0;
    bool registered = false;
    int status = 1;
    if (sl_layout_attach_wait(instance, 30.0, &g_stop, &l))
        return 1;
    if (sl_proctab_register(l->procs, SL_ROLE_LOADER, &rid))
        goto out;
    registered = true;
    const uint32_t owner = sl_proctab_owner_id(l->procs, SL_ROLE_LOADER, rid);
    if (sl_fetcher_open(l->plan->model_path, l->plan->model_size, ro, &f))
        goto out;
    SL_INFO("loader %u of '%s' ready (%s)", rid, instance, sl_fetcher_packed(f) ? "packed model" : "GGUF file");
    /* Replaced segments: a coordinator that could not take over its
     * predecessor's made new ones; serve() is called again for them. */
    while (!g_stop && !atomic_load(&l->board->stop) && !sl_layout_replaced(l)) {
        if (sl_proctab_heartbeat(l->procs, SL_ROLE_LOADER, rid))
            goto out;
        /* Everything pinned: nothing to stream. A fault: nothing to do
         * until the pipeline is restarted. */
        if (!l->slots || sl_layout_fault(l, NULL)) {
            usleep(200000);
            continue;
        }
        /* Experts first: a worker is waiting for them now, while the ring
         * is filled ahead of need. Both arenas count their changes on the
         * ring's counter, so one wait covers both. */
        uint32_t seen = sl_slots_seq(l->slots), slot, unit, gen;
        const uint32_t n_units = l->plan->n_units, n_all = n_units + l->plan->n_expert_units;
        if (l->eslots && sl_slots_claim_fill(l->eslots, owner, &slot, &unit, &gen) == SL_SLOTS_OK) {
            if (unit < n_units || unit >= n_all) {
                SL_ERROR("expert slot %u wants unit %u, not an expert (%u..%u)", slot, unit, n_units, n_all - 1);
                sl_slots_fill_fail(l->eslots, slot, owner, gen);
                goto out;
            }
            fill(l, l->eslots, f, owner, slot, unit, gen);
            continue;
        }
        if (sl_slots_claim_fill(l->slots, owner, &slot, &unit, &gen) == SL_SLOTS_OK) {
            if (unit >= n_units) {
                SL_ERROR("slot %u wants unit %u of %u", slot, unit, n_units);
                sl_slots_fill_fail(l->slots, slot, owner, gen);
                goto out;
            }
            fill(l, l->slots, f, owner, slot, unit, gen);
            continue;
        }
        sl_slots_wait_change(l->slots, seen, WAIT_NS);
    }
    status = g_stop || atomic_load(&l->board->stop) ? 0 : SERVE_AGAIN;
out:
    if (registered)
        sl_proctab_deregister(l->procs, SL_ROLE_LOADER, rid);
    sl_fetcher_close(f);
    sl_layout_close(l);
    return status;
}

int main(int argc, char **argv)
{
    enum { OPT_IO = 256 };
    static const struct option opts[] = {{"instance", required_argument, 0, 'i'},
                                         {"io-threads", required_argument, 0, OPT_IO},
                                         {"help", no_argument, 0, 'h'},
                                         {0}};
    const char *instance = NULL;
    sl_reader_opts ro = {SL_READER_DEFAULT_THREADS, SL_READER_DEFAULT_CHUNK, 0};
    int c;
    while ((c = getopt_long(argc, argv, "i:h", opts, NULL)) != -1) {
        if (c == 'i') {
            instance = optarg;
        } else if (c == OPT_IO) {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || v < 0 || v > SL_READER_MAX_THREADS) {
                fprintf(stderr, "sluice-loader: --io-threads expects 0..%u, got '%s'\n", SL_READER_MAX_THREADS,
                        optarg);
                return 2;
            }
            ro.n_threads = (uint32_t)v;
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
        int rc = serve(instance, &ro);
        if (rc != SERVE_AGAIN)
            return rc;
        SL_WARN("the shared memory of '%s' was made anew by a new coordinator: attaching to it", instance);
    }
}
