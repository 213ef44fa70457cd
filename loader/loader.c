/* sluice-loader: a loader process.
 *
 * Attaches to a pipeline's shared memory, registers in its process table,
 * and fills ring slots: it claims the oldest WANTED slot, reads the unit's
 * byte range from the model file with direct I/O straight into the slot,
 * and marks it READY. Several loaders share the work by claiming different
 * slots. A loader that dies mid-fill is harmless: the coordinator reclaims
 * its slot, and the generation in the slot word makes a late completion by
 * a reclaimed claim fail. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/log.h"
#include "coordinator/layout.h"
#include "loader/reader.h"
#include "shm/proc.h"

#define WAIT_NS 200000000ll /* wake at least this often to heartbeat and check for stop */

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

/* Fills one claimed slot. Returns 0 or a negative error (slot given back). */
static int fill(sl_layout *l, sl_reader *r, uint32_t owner, uint32_t slot, uint32_t unit, uint32_t gen)
{
    const sl_layout_unit *u = &sl_layout_units(l->plan)[unit];
    size_t skip;
    int rc = sl_reader_read(r, u->offset, u->nbytes, sl_slots_data(l->slots, slot),
                            sl_slots_slot_size(l->slots), &skip);
    if (rc == 0 && skip != u->offset - u->io_offset) {
        SL_ERROR("unit %u landed at %zu bytes into its slot, expected %llu", unit, skip,
                 (unsigned long long)(u->offset - u->io_offset));
        rc = -SL_EFORMAT;
    }
    if (rc) {
        sl_slots_fill_fail(l->slots, slot, owner, gen);
        return rc;
    }
    /* A refused completion means the claim was reclaimed: the bytes are
     * someone else's business now. */
    sl_slots_fill_done(l->slots, slot, owner, gen);
    return 0;
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

    sl_layout *l = NULL;
    sl_reader *r = NULL;
    uint32_t rid = 0;
    bool registered = false;
    int status = 1;
    if (sl_layout_attach_wait(instance, 30.0, &g_stop, &l))
        return 1;
    if (sl_proctab_register(l->procs, SL_ROLE_LOADER, &rid))
        goto out;
    registered = true;
    const uint32_t owner = sl_proctab_owner_id(l->procs, SL_ROLE_LOADER, rid);
    if (sl_reader_open(l->plan->model_path, &ro, &r))
        goto out;
    if (sl_reader_size(r) != l->plan->model_size) {
        SL_ERROR("%s changed size since the coordinator planned it", l->plan->model_path);
        goto out;
    }
    SL_INFO("loader %u of '%s' ready (%s)", rid, instance, sl_reader_direct(r) ? "direct I/O" : "buffered I/O");
    while (!g_stop && !atomic_load(&l->board->stop)) {
        if (sl_proctab_heartbeat(l->procs, SL_ROLE_LOADER, rid))
            goto out;
        if (!l->slots) { /* everything is pinned: nothing to stream */
            usleep(200000);
            continue;
        }
        uint32_t seen = sl_slots_seq(l->slots), slot, unit, gen;
        if (sl_slots_claim_fill(l->slots, owner, &slot, &unit, &gen) == SL_SLOTS_OK) {
            if (unit >= l->plan->n_units) {
                SL_ERROR("slot %u wants unit %u of %u", slot, unit, l->plan->n_units);
                sl_slots_fill_fail(l->slots, slot, owner, gen);
                goto out;
            }
            fill(l, r, owner, slot, unit, gen);
            continue;
        }
        sl_slots_wait_change(l->slots, seen, WAIT_NS);
    }
    status = 0;
out:
    if (registered)
        sl_proctab_deregister(l->procs, SL_ROLE_LOADER, rid);
    sl_reader_close(r);
    sl_layout_close(l);
    return status;
}
